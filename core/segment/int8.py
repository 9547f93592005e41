"""``--precision int8``: int8 models made from a model file, calibrated on its tiles.

``segment``, ``segment-many`` and ``evaluate`` with ``--precision int8`` run the network
as an int8 ONNX graph on ONNX Runtime; ``export-onnx --precision int8`` writes one.

1. A ``.pt`` model (or run folder) is exported to a float32 ONNX file first
   (:func:`core.models.onnx_export.export_onnx`, checked against PyTorch); an fp32
   ``.onnx`` file is used as it is; an int8 ``.onnx`` file runs as it is.
2. Calibration tiles (:func:`calibration_plan`): ``N`` tiles (``--calibration-tiles``,
   default 64) of the model's training dataset as recorded in the model file (its
   ``train`` split, reproduced as ``evaluate`` does), or of the dataset folder given with
   ``--calibration DIR`` (every tile), in a seeded random order (seed 0).
3. Each tile becomes the network's input through segmentation's own code
   (:func:`.inputs.network_inputs`: band selection, validity, ``(band - mean) / std``,
   reflect padding, bicubic upscaling), one window per tile fitted to its size, so
   calibration sees what inference sees.
4. :func:`core.models.quantize.quantize_onnx` quantises the graph on those inputs and
   records the calibration and its agreement with fp32 in the file.

:func:`int8_model` keeps the result in a cache (``int8/`` of :func:`core.io.cache_dir`), keyed by the model
file's SHA-256, the chosen tiles (names, sizes, times) and the recipe; a second run with
the same model and calibration reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingInputError, Problem, UserError, raise_problems
from ..io import cache_dir, file_sha256
from ..models.meta import ModelMeta, min_input_side, read_model_meta, resolve_model_path
from ..models.onnx_metadata import is_int8_file
from ..models.quantize import QuantSettings, quantize_onnx
from ..progress import Progress, ProgressFn, no_progress
from .inputs import network_inputs, plan_raster
from .options import DEFAULT_CALIBRATION_TILES, SegmentOptions

CALIBRATION_SEED = 0  # order in which calibration tiles are drawn
CALIBRATION_BATCH = 8  # inputs of one shape per calibration run


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
    from ..evaluation.model_split import SplitMismatchError, split_of_model

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
        calibration_options(meta, plan.images[0])  # the first tile reads as the model needs
    except UserError as exc:
        key = "calibration_tiles" if getattr(exc, "field", None) == "calibration_tiles" else None
        return [Problem(key or "calibration", str(exc), exc)]
    return []


def int8_problems(
    model_path: str | Path,
    meta: ModelMeta,
    calibration: str | Path | None,
    tiles: int = DEFAULT_CALIBRATION_TILES,
) -> list[Problem]:
    """Why ``--precision int8`` cannot run with ``model_path`` (no calibration tiles, too
    few tiles...); none for an int8 ONNX file, which needs no calibration, or for
    ``tiles`` < 1 (the options' own check reports it). segment, segment-many, evaluate."""
    if tiles < 1 or is_int8_file(model_path):
        return []
    return calibration_problems(meta, calibration, tiles)


def calibration_options(meta: ModelMeta, image: Path) -> SegmentOptions:
    """Segment options of one calibration window: the tile's own size, fitted to the
    model's pad multiple (a raster larger than the model's tile gets its tile)."""
    from ..data.rasters import raster_info

    info = raster_info(image)
    up = max(1, int(meta.upscale))
    step = meta.pad_multiple // math.gcd(meta.pad_multiple, up)
    side = max(info.height, info.width, -(-min_input_side(meta.arch) // up))
    tile = min(-(-side // step) * step, max(step, meta.tile_size // step * step))
    options = SegmentOptions(tile_size=tile, overlap=0)
    try:
        plan_raster(image, meta, options)  # bands, tile checks: segmentation's own
    except UserError as exc:
        raise CalibrationError(f"calibration tile {image}: {exc}") from None
    return options


def calibration_inputs(meta: ModelMeta, plan: CalibrationPlan) -> Iterator[np.ndarray]:
    """Network inputs of the calibration tiles, made by segmentation's own preprocessing
    (one window per tile, the middle one of a larger raster), batched by shape
    (consecutive tiles of one shape, at most CALIBRATION_BATCH)."""
    pending: list[np.ndarray] = []
    for image in plan.images:
        windows = list(network_inputs(image, meta, calibration_options(meta, image), 1))
        x = windows[len(windows) // 2]
        if pending and (pending[0].shape != x.shape or len(pending) == CALIBRATION_BATCH):
            yield np.concatenate(pending)
            pending = []
        pending.append(x)
    if pending:
        yield np.concatenate(pending)


def quantize_with_plan(
    fp32_path: Path,
    out_path: Path,
    meta: ModelMeta,
    plan: CalibrationPlan,
    settings: QuantSettings | None = None,
    progress: ProgressFn = no_progress,
) -> Path:
    """:func:`~core.models.quantize.quantize_onnx` on ``plan``'s tiles, prepared here."""
    n = len(plan.images)
    progress(Progress("quantize", 0.0, f"int8: reading {n} calibration tile(s) from {plan.source}"))
    batches = list(calibration_inputs(meta, plan))
    return quantize_onnx(
        fp32_path, out_path, batches, meta.threshold, plan.record(), settings, progress
    )


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
    missing) in ``cache`` (default ``int8/`` in :func:`core.io.cache_dir`)."""
    path = Path(model_path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise MissingInputError(f"{path}: ONNX file not found", "model")
        if is_int8_file(path):
            return path
    else:
        path = resolve_model_path(path)
    from .backends import read_meta

    settings = settings or QuantSettings()
    meta = read_meta(path)
    plan = calibration_plan(meta, calibration, tiles)
    recipe = json.dumps({"tiles": plan.key(), **plan.record(), **settings.record(),
                         "extra": settings.extra}, sort_keys=True)  # fmt: skip
    key = file_sha256(path)[:16] + "-" + hashlib.sha256(recipe.encode()).hexdigest()[:12]
    stem = path.parent.name if path.name == "model.pt" else path.stem
    out = Path(cache or cache_dir() / "int8") / f"{stem}-{key}.int8.onnx"
    if out.is_file() and is_int8_file(out):
        progress(Progress("quantize", 1.0, f"int8: cached {out}"))
        return out
    if path.suffix.lower() == ".onnx":
        return quantize_with_plan(path, out, meta, plan, settings, progress)
    from ..models.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="solarseg-fp32-") as tmp:
        progress(Progress("quantize", 0.0, "int8: exporting the fp32 ONNX graph"))
        fp32 = export_onnx(path, Path(tmp) / "model.onnx")
        return quantize_with_plan(fp32, out, meta, plan, settings, progress)


def model_for_precision(
    model_path: str | Path,
    precision: str,
    calibration: str | Path | None = None,
    tiles: int = DEFAULT_CALIBRATION_TILES,
    cache: str | Path | None = None,
    progress: ProgressFn = no_progress,
) -> Path:
    """The model file to load for ``precision``: :func:`int8_model` for int8, else
    ``model_path`` unchanged. segment, segment-many and evaluate call it before
    :func:`.backends.load_backend`, which loads int8 files only."""
    if precision != "int8":
        return Path(model_path)
    return int8_model(model_path, calibration, tiles, cache, progress=progress)


def check_export_int8(
    model_path: str | Path,
    profile: str = "solarseg",
    calibration: str | Path | None = None,
    tiles: int = DEFAULT_CALIBRATION_TILES,
) -> list[Problem]:
    """The check of ``export-onnx --precision int8``: the fp32 export's check, then
    the calibration's (``calibration``, ``calibration_tiles``)."""
    from ..models.onnx_export import check_export_onnx

    problems = check_export_onnx(model_path, profile, "int8")
    if profile == "deepness":
        problems.append(Problem("precision", "int8 export is for the solarseg profile only"))
    if tiles < 1:
        problems.append(
            Problem("calibration_tiles", f"calibration tiles must be >= 1, got {tiles}")
        )
    if not problems:
        problems += calibration_problems(read_model_meta(model_path), calibration, tiles)
    return problems


def export_int8(
    model_path: str | Path,
    out_path: str | Path,
    calibration: str | Path | None = None,
    tiles: int = DEFAULT_CALIBRATION_TILES,
    opset: int = 17,
    tile_size: int | None = None,
    overlap: int | None = None,
    resolution_cm: float | None = None,
    profile: str = "solarseg",
    progress: ProgressFn = no_progress,
) -> Path:
    """``export-onnx --precision int8``: the fp32 export into a temporary folder,
    quantised into ``out_path`` (only the int8 file is written). ``profile`` is checked:
    int8 is for the solarseg profile only."""
    from ..models.onnx_export import export_onnx
    from .backends import read_meta

    raise_problems(check_export_int8(model_path, profile, calibration, tiles))
    with tempfile.TemporaryDirectory(prefix="solarseg-fp32-") as tmp:
        progress(Progress("export", 0.0, "exporting the fp32 ONNX graph"))
        fp32 = export_onnx(model_path, Path(tmp) / "model.onnx", opset, tile_size, overlap,
                           resolution_cm)  # fmt: skip
        meta = read_meta(fp32)  # with the tile size and overlap asked for
        plan = calibration_plan(meta, calibration, tiles)
        return quantize_with_plan(fp32, Path(out_path), meta, plan, progress=progress)
