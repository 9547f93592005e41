"""int8 models: ONNX Runtime static quantisation, calibrated on training tiles.

``--precision int8`` (``segment``, ``segment-many``, ``evaluate``, ``export-onnx``) runs
the network as an int8 ONNX graph on ONNX Runtime:

1. A ``.pt`` model (or run folder) is exported to a float32 ONNX file first
   (:func:`core.models.onnx_export.export_onnx`, checked against PyTorch); an fp32
   ``.onnx`` file is used as it is.
2. :func:`onnxruntime.quantization.quantize_static` quantises it (QDQ format, uint8
   activations, int8 weights per output channel: with QOperator, the fastest measured
   on an AVX-512 VNNI CPU, see ``QUANT_FORMAT`` and ``bench/quantize.py``) after ORT's
   own pre-processing
   (shape inference, graph optimisation). The end of the graph stays float32: the
   sigmoid, the segmentation head and the decoder's last, full-resolution stage
   (``FLOAT_TAIL_CONVS``), where 8-bit activations moved probabilities the most.
3. Activation ranges come from ``N`` calibration tiles (``--calibration-tiles``,
   default 64) of the model's training dataset, the one recorded in the model file
   (its ``train`` split, reproduced as ``evaluate`` does), or of the dataset folder
   given with ``--calibration DIR`` (every tile). Tiles are drawn in a seeded random
   order (seed 0), and each is turned into the network's input by the segment
   engine's own code (:func:`core.segment.engine.network_inputs`: band selection,
   validity, ``(band - mean) / std``, reflect padding to a window, bicubic upscaling),
   one window per tile fitted to its size.
4. The int8 file keeps the fp32 file's metadata and adds a ``precision: int8`` entry
   and, in the ``solarseg`` JSON, ``graph_precision: int8`` (fp32 exports say fp32;
   ModelMeta's ``precision`` keeps saying what training ran in), the quantisation
   settings, the calibration record (source, split, tiles, seed) and a check made right
   after quantising: max and mean |int8 - fp32| probability and the mask IoU on the
   calibration inputs.

An int8 file is recognised from its metadata (:func:`onnx_precision`) and runs as it is.
``segment --precision int8`` with a ``.pt`` or fp32 ``.onnx`` model quantises once and
keeps the result in a cache (:func:`cache_dir`), keyed by the model file's SHA-256, the
chosen calibration tiles (names, sizes, times) and these settings; a second run with
the same model and calibration reuses it. Quantising needs the calibration tiles;
``export-onnx --precision int8`` writes a self-contained int8 file for machines
without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingInputError, Problem, UserError
from ..io import atomic_path
from ..progress import Progress, ProgressFn, no_progress
from .meta import ONNX_META_KEY, ModelMeta, min_input_side, resolve_model_path

INT8 = "int8"
# Key of the ``solarseg`` metadata JSON saying what the graph computes in (fp32, int8);
# not ModelMeta's ``precision``, which says what training ran in.
GRAPH_PRECISION_KEY = "graph_precision"
DEFAULT_CALIBRATION_TILES = 64
CALIBRATION_SEED = 0  # order in which calibration tiles are drawn
CALIBRATION_BATCH = 8  # inputs of one shape per calibration run
# Measured on a Zen 4 EPYC (AVX-512 VNNI), trained Unet resnet18, 2 threads, load 4-6,
# x the fp32 graph on ONNX Runtime: bare sessions 1024² / 4 x 512²: QDQ per-channel
# 2.21 / 2.31, QOperator per-channel 2.27 / 2.27, QDQ per-tensor 2.16 / 2.17; end to
# end (bench/quantize.py, 512² mosaic, tile 128): 2.24, 2.32, 2.23. QDQ and QOperator
# are level (without the float tail below, QOperator per-channel was 1.85x against
# QDQ's 2.69x); QDQ is kept: ONNX Runtime's recommended format, which its other
# execution providers (CUDA, TensorRT) also run. Per-channel weights: as fast, finer.
QUANT_FORMAT = "qdq"
QUANT_FORMATS = ("qdq", "qoperator")
PER_CHANNEL = True
CALIBRATION_METHOD = "minmax"
# Convolutions kept float32 at the end of the graph (with everything after them): the
# head and the decoder's last, full-resolution stage of a Unet. Measured on a trained
# Unet resnet18 (96 test tiles): mask IoU vs fp32 0.945 -> 0.979, mean |prob diff|
# 0.0047 -> 0.0029, for about 4 % of the int8 speed (those convolutions are ~8 % of
# the arithmetic). Only the last stage mattered; any other block kept float: <= 0.001.
FLOAT_TAIL_CONVS = 3
# ORT's histogram calibrators (percentile, entropy) need inputs of one shape; the
# tiles' windows differ (22-26 px tiles); percentile gained less than the float tail
# below in an early measurement (mask IoU 0.757 vs 0.733 for minmax).
CALIBRATION_METHODS = ("minmax",)
QUANT_VERSION = 1  # bump when the recipe changes: invalidates cached files
CACHE_ENV = "SOLARSEG_CACHE"

#: Why ``--precision bf16`` is refused for ONNX Runtime (measured with onnxruntime 1.32
#: on this CPU: a bf16 Conv has no CPU kernel, fp16 runs at the fp32 speed).
ONNX_BF16_REASON = (
    "bf16 runs on the torch backend only: ONNX Runtime's CPU provider has no bf16 convolution"
)
ONNX_BF16_MESSAGE = f"{ONNX_BF16_REASON} (use --backend torch --precision bf16, or int8)"


class CalibrationError(MissingInputError):
    """No usable calibration tiles (``field`` is ``calibration``)."""

    field = "calibration"


@dataclass
class CalibrationPlan:
    """The tiles an int8 model is calibrated on."""

    source: Path  # dataset folder (or manifest)
    split: str  # "train" (the model's own dataset) or "all" (another dataset)
    images: list[Path]
    requested: int
    available: int = 0

    def record(self) -> dict[str, Any]:
        """What the outputs' metadata says about the calibration."""
        return {
            "source": str(self.source),
            "split": self.split,
            "tiles": len(self.images),
            "requested": self.requested,
            "available": self.available,
            "seed": CALIBRATION_SEED,
        }

    def key(self) -> str:
        """Identifies these tiles' content: names, sizes and modification times."""
        lines = []
        for p in self.images:
            st = p.stat()
            lines.append(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class QuantSettings:
    """The quantisation recipe (defaults: the measured fastest, see the module doc)."""

    quant_format: str = QUANT_FORMAT
    per_channel: bool = PER_CHANNEL
    method: str = CALIBRATION_METHOD
    float_tail_convs: int = FLOAT_TAIL_CONVS
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def record(self) -> dict[str, Any]:
        import onnxruntime

        return {
            "format": self.quant_format.upper() if self.quant_format == "qdq" else "QOperator",
            "per_channel": self.per_channel,
            "activations": "uint8",
            "weights": "int8",
            "method": self.method,
            "float_tail_convs": self.float_tail_convs,
            "onnxruntime": onnxruntime.__version__,
            "version": QUANT_VERSION,
        }


# ------------------------------------------------------------------------ metadata


def solarseg_props(props: dict[str, str]) -> dict[str, Any]:
    """The parsed ``solarseg`` JSON of an ONNX file's metadata_props ({} if absent or bad)."""
    try:
        return json.loads(props.get(ONNX_META_KEY, "{}"))
    except json.JSONDecodeError:
        return {}


def onnx_precision(props: dict[str, str]) -> str:
    """``int8`` for a file this module quantised, ``fp32`` for any other."""
    return str(solarseg_props(props).get(GRAPH_PRECISION_KEY, "fp32"))


def file_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props, read without loading its weights into a session."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def is_int8_file(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    try:
        return onnx_precision(file_props(path)) == INT8
    except Exception:  # noqa: BLE001 - not an ONNX file: the backend reports it
        return False


# --------------------------------------------------------------------- calibration


def _own_dataset(meta: ModelMeta) -> str | None:
    """The training dataset a model file records (absolute when it recorded its split)."""
    return meta.split.get("dataset") or (meta.config.get("data") or {}).get("path")


def calibration_plan(
    meta: ModelMeta, calibration: str | Path | None = None, tiles: int = DEFAULT_CALIBRATION_TILES
) -> CalibrationPlan:
    """The ``tiles`` calibration tiles: from ``calibration`` (a dataset folder or
    manifest; every tile) or, by default, the model's training dataset (its ``train``
    split as training made it; every tile if the dataset changed since). Raises
    :class:`CalibrationError` when there are none."""
    from ..data.discovery import find_dataset
    from ..evaluation.evaluate import SplitMismatchError, split_of_model

    if tiles < 1:
        raise InputError(f"calibration tiles must be >= 1, got {tiles}", "calibration_tiles")
    own = _own_dataset(meta)
    if calibration is None and own is None:
        raise CalibrationError(
            "int8 needs calibration tiles and the model file records no training dataset; "
            "pass --calibration DIR (a dataset folder)"
        )
    source = Path(calibration if calibration is not None else own)
    if not source.exists():
        hint = "" if calibration is not None else " (the model's training dataset)"
        raise CalibrationError(
            f"{source}: calibration dataset not found{hint}; int8 quantisation needs "
            "tiles: pass --calibration DIR (a dataset folder), or use an int8 file made "
            "with export-onnx --precision int8"
        )
    try:
        split = "all"
        if own is not None and source.resolve() == Path(own).resolve():
            try:
                pairs = [p for p in split_of_model(meta, None, "train") if p.split == "train"]
                split = "train"
            except SplitMismatchError:
                pairs = find_dataset(source).pairs
        else:
            pairs = find_dataset(source).pairs
    except UserError as exc:
        raise CalibrationError(f"calibration dataset: {exc}") from None
    if not pairs:
        raise CalibrationError(f"{source}: no tiles to calibrate on")
    order = np.random.default_rng(CALIBRATION_SEED).permutation(len(pairs))[:tiles]
    images = [Path(pairs[i].image) for i in order]
    return CalibrationPlan(source, split, images, tiles, len(pairs))


def calibration_problems(
    meta: ModelMeta, calibration: str | Path | None, tiles: int
) -> list[Problem]:
    """Why ``meta``'s model cannot be calibrated (``calibration``/``calibration_tiles``
    problems; the first tile is opened with the model's bands), before anything runs."""
    try:
        plan = calibration_plan(meta, calibration, tiles)
        _calibration_options(meta, plan.images[0])  # the first tile reads as the model needs
    except UserError as exc:
        key = "calibration_tiles" if getattr(exc, "field", None) == "calibration_tiles" else None
        return [Problem(key or "calibration", str(exc), exc)]
    return []


def _calibration_options(meta: ModelMeta, image: Path):
    """Segment options of one calibration window: the tile's own size, fitted to the
    model's pad multiple (a raster larger than the model's tile gets its tile)."""
    from ..data.rasters import raster_info
    from ..segment.engine import _plan
    from ..segment.options import SegmentOptions

    info = raster_info(image)
    up = max(1, int(meta.upscale))
    step = meta.pad_multiple // math.gcd(meta.pad_multiple, up)
    side = max(info.height, info.width, -(-min_input_side(meta.arch) // up))
    tile = min(-(-side // step) * step, max(step, meta.tile_size // step * step))
    options = SegmentOptions(tile_size=tile, overlap=0)
    try:
        _plan(image, meta, options)  # bands, tile checks: the engine's own
    except UserError as exc:
        raise CalibrationError(f"calibration tile {image}: {exc}") from None
    return options


def calibration_inputs(meta: ModelMeta, plan: CalibrationPlan) -> Iterator[np.ndarray]:
    """Network inputs of the calibration tiles, made by the segment engine's own
    preprocessing (one window per tile, the middle one of a larger raster), batched
    by shape (consecutive tiles of one shape, at most CALIBRATION_BATCH)."""
    from ..segment.engine import network_inputs

    pending: list[np.ndarray] = []
    for image in plan.images:
        windows = list(network_inputs(image, meta, _calibration_options(meta, image), 1))
        x = windows[len(windows) // 2]
        if pending and (pending[0].shape != x.shape or len(pending) == CALIBRATION_BATCH):
            yield np.concatenate(pending)
            pending = []
        pending.append(x)
    if pending:
        yield np.concatenate(pending)


# -------------------------------------------------------------------- quantisation


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantiser logs a warning per integer tensor and prints its calibration
    progress on stdout (which carries ``--jsonl`` events): silence both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _float_output_nodes(model, convs: int) -> list[str]:
    """The nodes kept float32: walking back from the graph output along each node's
    first input (the sigmoid, the segmentation head, the decoder's last stage...) until
    ``convs`` convolutions are collected or a node that merges branches (Concat, Add)
    is reached."""
    producers = {out: node for node in model.graph.node for out in node.output}
    keep: list[str] = []
    seen = 0
    name = model.graph.output[0].name
    while name in producers and seen < convs:
        node = producers[name]
        if node.op_type in ("Concat", "Add", "Sum"):
            break
        keep.append(node.name)
        seen += node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
        name = node.input[0]
    return keep


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over prepared inputs."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self.batches, self.input_name, self.i = batches, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def _agreement(fp32_path: Path, int8_path: Path, batches: list[np.ndarray], threshold: float):
    """Max / mean |int8 - fp32| probability and mask IoU on ``batches``."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (fp32_path, int8_path)
    ]
    name = sessions[0].get_inputs()[0].name
    max_diff, total, count, inter, union = 0.0, 0.0, 0, 0, 0
    for x in batches:
        a, b = (s.run(None, {name: x})[0] for s in sessions)
        d = np.abs(a - b)
        max_diff = max(max_diff, float(d.max()))
        total, count = total + float(d.sum()), count + d.size
        ma, mb = a >= np.float32(threshold), b >= np.float32(threshold)
        inter, union = inter + int((ma & mb).sum()), union + int((ma | mb).sum())
    return {
        "max_prob_diff": max_diff,
        "mean_prob_diff": total / max(count, 1),
        "mask_iou_vs_fp32": inter / union if union else 1.0,
    }


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    meta: ModelMeta,
    plan: CalibrationPlan,
    settings: QuantSettings | None = None,
    progress: ProgressFn = no_progress,
) -> Path:
    """Quantise the fp32 solarseg-profile ONNX file ``fp32_path`` into ``out_path``
    (written atomically), calibrated on ``plan``'s tiles; returns ``out_path``."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_export import _write_metadata

    settings = settings or QuantSettings()
    if settings.quant_format not in QUANT_FORMATS:
        raise InputError(f"quantisation format must be one of {QUANT_FORMATS}")
    if settings.method not in CALIBRATION_METHODS:
        raise InputError(f"calibration method must be one of {CALIBRATION_METHODS}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    props = file_props(fp32_path)
    if onnx_precision(props) != "fp32" or ONNX_META_KEY not in props:
        raise InputError(
            f"{fp32_path}: not an fp32 SolarSeg ONNX file (export-onnx, solarseg profile)"
        )
    n = len(plan.images)
    progress(Progress("quantize", 0.0, f"int8: reading {n} calibration tile(s) from {plan.source}"))
    batches = list(calibration_inputs(meta, plan))
    input_name = (
        ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
        .get_inputs()[0]
        .name
    )
    method = CalibrationMethod.MinMax
    with tempfile.TemporaryDirectory(prefix="solarseg-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        progress(Progress("quantize", 0.2, "int8: pre-processing the graph"))
        with _quiet():
            try:
                quant_pre_process(str(fp32_path), str(pre))
            except Exception:  # noqa: BLE001 - symbolic shape inference can fail: skip it
                pre = fp32_path
            keep = _float_output_nodes(onnx.load(str(pre)), settings.float_tail_convs)
            progress(Progress("quantize", 0.3, f"int8: calibrating on {n} tile(s)"))
            with atomic_path(out_path) as part:
                quantize_static(
                    str(pre),
                    str(part),
                    _Reader(batches, input_name),
                    quant_format=QuantFormat.QDQ
                    if settings.quant_format == "qdq"
                    else QuantFormat.QOperator,
                    per_channel=settings.per_channel,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=keep,
                    calibrate_method=method,
                    extra_options=dict(settings.extra),
                )
                progress(Progress("quantize", 0.9, "int8: checking against fp32"))
                check = _agreement(fp32_path, part, batches, meta.threshold)
                solarseg = solarseg_props(props)
                solarseg.update(
                    **{GRAPH_PRECISION_KEY: INT8},
                    quantization={**settings.record(), "float_nodes": keep},
                    calibration=plan.record(),
                    calibration_check=check,
                )
                new_props = {**props, ONNX_META_KEY: json.dumps(solarseg), "precision": INT8,
                             "calibration": json.dumps(plan.record())}  # fmt: skip
                doc = (
                    "SolarSeg solar-panel segmentation, int8 (ONNX Runtime static "
                    f"quantisation, {settings.record()['format']}). input: float32 NCHW "
                    "(band - mean) / std; output: float32 N1HW probabilities (sigmoid "
                    "included)."
                )
                _write_metadata(part, new_props, doc)
    progress(Progress("quantize", 1.0, f"int8: wrote {out_path.name}"))
    return out_path


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where quantised models are kept: ``$SOLARSEG_CACHE/int8``, else
    ``$XDG_CACHE_HOME/solarseg/int8``, else ``~/.cache/solarseg/int8``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "int8"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "solarseg" / "int8"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def int8_model(
    model_path: str | Path,
    calibration: str | Path | None = None,
    tiles: int = DEFAULT_CALIBRATION_TILES,
    cache: str | Path | None = None,
    settings: QuantSettings | None = None,
    progress: ProgressFn = no_progress,
) -> Path:
    """An int8 ONNX file for ``model_path`` (run folder, ``.pt``, fp32 or int8 ``.onnx``):
    the file itself when it is int8 already, else a cached quantisation (made now when
    missing) in ``cache`` (default :func:`cache_dir`)."""
    path = Path(model_path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise MissingInputError(f"{path}: ONNX file not found", "model")
        if is_int8_file(path):
            return path
    else:
        path = resolve_model_path(path)
    from ..segment.backends import read_meta

    settings = settings or QuantSettings()
    meta = read_meta(path)
    plan = calibration_plan(meta, calibration, tiles)
    recipe = json.dumps({"tiles": plan.key(), **plan.record(), **settings.record(),
                         "extra": settings.extra}, sort_keys=True)  # fmt: skip
    key = file_sha256(path)[:16] + "-" + hashlib.sha256(recipe.encode()).hexdigest()[:12]
    stem = path.parent.name if path.name == "model.pt" else path.stem
    out = Path(cache or cache_dir()) / f"{stem}-{key}.int8.onnx"
    if out.is_file() and is_int8_file(out):
        progress(Progress("quantize", 1.0, f"int8: cached {out}"))
        return out
    if path.suffix.lower() == ".onnx":
        return quantize_onnx(path, out, meta, plan, settings, progress)
    from .onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="solarseg-fp32-") as tmp:
        progress(Progress("quantize", 0.0, "int8: exporting the fp32 ONNX graph"))
        fp32 = export_onnx(path, Path(tmp) / "model.onnx")
        return quantize_onnx(fp32, out, meta, plan, settings, progress)
