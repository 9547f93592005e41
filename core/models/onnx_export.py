"""Export a SolarSeg model file to ONNX, in one of two profiles.

**Profile ``solarseg``** (the default; what ``segment --backend onnx`` runs). The graph
takes ``input``: float32 (N, C, H, W) tiles normalised as ``(band - mean) / std`` (the
model's band order; upscaled by the model's factor; H and W multiples of its
``pad_multiple``) and returns ``output``: float32 (N, 1, H, W) **probabilities** — the
sigmoid is part of the graph, so SolarSeg's ONNX backend applies no second sigmoid.
Batch, height and width are dynamic. ``metadata_props`` carries:

- ``solarseg``: the full :class:`~core.models.build.ModelMeta` as JSON (band selection,
  normalisation, threshold, upscale, pad multiple, tile size, overlap, training config
  and metrics) plus ``"output": "probability"``; SolarSeg reads only this key.
- informative keys: ``model_type`` (``Segmentor``), ``class_names``, ``tiles_size`` and
  ``resolution`` (cm/px, only when known) at the network's input scale, ``tiles_overlap``
  (percent), ``seg_thresh`` / ``threshold``, ``standardization_mean`` /
  ``standardization_std`` (raster units) and ``bands``. These are *not* loadable by the
  Deepness plugin (plain strings where Deepness calls ``json.loads``, dynamic height and
  width, no /255 convention): use the ``deepness`` profile for Deepness.

**Profile ``deepness``** (``export-onnx --profile deepness``): a file the Deepness QGIS
plugin (PUTvision/qgis-plugin-deepness) loads as a ``Segmentor``, read the way its
``ModelBase``/``Segmentor`` classes and ``MapProcessorSegmentation`` read it (commit
f450c6342d82a200af32022b2d977231d4f71d3c, src/deepness/processing/models/model_base.py,
segmentor.py, preprocessing_utils.py, processing/map_processor/
map_processor_segmentation.py, deepness_dockwidget.py):

- ``input``: float32 (N, C, T, T) with a **fixed** tile side T in *source* pixels (Deepness
  takes its tile size from the input shape and fails on a symbolic one); N is dynamic.
  The model's upscale is inside the graph (bicubic as in training), and so are the
  sigmoid and the area average back to source pixels: ``output`` is float32
  (N, 1, T, T) probabilities on the raster's own grid, the one-channel "sigmoid" layout
  Deepness thresholds with ``seg_thresh``.
- Deepness feeds ``(raw / 255 - standardization_mean) / standardization_std``; the file
  stores ``mean / 255`` and ``std / 255`` (std 0 stored as 1/255, as SolarSeg uses 1), so
  that equals SolarSeg's ``(raw - mean) / std`` (to float32 rounding) on the raw band
  values Deepness reads (uint8, uint16 or float reflectance alike).
- metadata values are JSON, as Deepness ``json.loads`` them: ``model_type``
  ``"Segmentor"``, ``class_names`` ``{"0": "background", "1": "solar_panel"}``,
  ``tile_size`` (the key Deepness's code reads) and ``tiles_size`` (the key its docs
  name) = T, ``tiles_overlap`` (percent), ``seg_thresh``, ``seg_small_segment`` 0 (no
  median filter: SolarSeg has none), ``standardization_mean`` / ``_std``, ``resolution``
  (source cm/px, when given), plus ``bands`` (1-based, for the user's channel mapping)
  and ``solarseg_deepness`` (the ModelMeta, for provenance). There is no ``solarseg``
  key: SolarSeg's own ONNX backend expects the other profile's input and refuses it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.transforms import downscale_probability, upscale
from ..errors import InputError, Problem, UserError, raise_problems
from ..io import atomic_path
from .build import load_model
from .meta import ONNX_META_KEY, ModelMeta, check_input_side, read_model_meta
from .onnx_metadata import GRAPH_PRECISION_KEY, write_metadata

ONNX_FORMAT = "solarseg-onnx"
ONNX_FORMAT_VERSION = 1
PROFILES = ("solarseg", "deepness")
# Metadata key of the deepness profile's provenance record (never read by SolarSeg).
DEEPNESS_META_KEY = "solarseg_deepness"
CLASS_NAMES = {"0": "background", "1": "solar_panel"}
# Largest |ONNX Runtime - PyTorch| probability accepted by the post-export check.
EXPORT_TOLERANCE = 1e-3


def export_onnx(
    model_path: str | Path,
    out_path: str | Path,
    opset: int = 17,
    tile_size: int | None = None,
    overlap: int | None = None,
    resolution_cm: float | None = None,
    profile: str = "solarseg",
) -> Path:
    """Write ``model_path`` (run folder or model file) as an ONNX file at ``out_path``.

    ``tile_size``/``overlap`` (source pixels) override the values stored in the model
    file's metadata; ``resolution_cm`` is the source imagery's pixel size, written only
    when given. ``profile`` is ``"solarseg"`` or ``"deepness"`` (see the module
    docstring). The export is checked with ONNX Runtime against PyTorch (for the
    solarseg profile on a tile shape different from the traced one, which proves the
    dynamic axes work) before the file is renamed into place.

    An int8 file: :func:`core.segment.int8.export_int8` (it needs calibration tiles,
    prepared as segmentation prepares its windows).
    """
    if profile not in PROFILES:
        raise InputError(f"unknown ONNX export profile {profile!r}; choose one of {PROFILES}")
    raise_problems(check_export_onnx(model_path, profile))
    model, meta = load_model(model_path, "cpu")
    meta = _override(meta, tile_size, overlap)
    if profile == "deepness":
        return _export_deepness(model, meta, Path(out_path), opset, resolution_cm)
    net = _WithSigmoid(model).eval()  # eval() on the wrapper too, or BN uses batch stats
    side = meta.tile_size * meta.upscale
    dummy = torch.zeros(1, meta.in_channels, side, side)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        _export_graph(net, dummy, tmp, opset)
        _add_metadata(tmp, meta, resolution_cm)
        _check_export(net, tmp, meta)
    return out_path


def check_export_onnx(
    model_path: str | Path, profile: str = "solarseg", precision: str = "fp32"
) -> list[Problem]:
    """The check of an fp32 export's inputs, keyed by field (``profile``, ``precision``,
    ``model``), before anything is written (int8: :func:`core.segment.int8.check_export_int8`,
    which calls this one)."""
    from .quantize import ONNX_BF16_REASON

    problems: list[Problem] = []
    if profile not in PROFILES:
        problems.append(
            Problem("profile", f"unknown ONNX export profile {profile!r}; choose one of {PROFILES}")
        )
    if precision == "bf16":
        problems.append(Problem("precision", f"{ONNX_BF16_REASON}: export fp32 or int8"))
    elif precision not in ("fp32", "int8"):
        problems.append(
            Problem("precision", f"export precision must be fp32 or int8, got {precision!r}")
        )
    try:
        read_model_meta(model_path)
    except UserError as exc:
        problems.append(Problem.of("model", exc))
    return problems


def _override(meta: ModelMeta, tile_size: int | None, overlap: int | None) -> ModelMeta:
    from dataclasses import replace

    tile = meta.tile_size if tile_size is None else int(tile_size)
    ovl = meta.overlap if overlap is None else int(overlap)
    if tile < 1 or (tile * meta.upscale) % meta.pad_multiple:
        raise InputError(
            f"tile size {tile} x upscale {meta.upscale} must be a positive multiple of the "
            f"model's pad multiple {meta.pad_multiple}"
        )
    if not 0 <= ovl < tile:
        raise InputError(f"overlap must be in [0, tile size {tile}), got {ovl}")
    return replace(meta, tile_size=tile, overlap=ovl)


class _WithSigmoid(torch.nn.Module):
    """The model's logits -> probabilities, so the exported graph outputs probabilities."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.inner(x))


class _NativeScale(torch.nn.Module):
    """Source-resolution tile -> source-resolution probabilities, as SolarSeg predicts:
    bicubic upscale by the model's factor (core.data.transforms.upscale, as in training),
    the network, sigmoid, area average back (downscale_probability)."""

    def __init__(self, inner: torch.nn.Module, factor: int):
        super().__init__()
        self.inner = inner
        self.factor = int(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(self.inner(upscale(x, self.factor)))
        return downscale_probability(prob, self.factor)


def _export_deepness(
    model: torch.nn.Module,
    meta: ModelMeta,
    out_path: Path,
    opset: int,
    resolution_cm: float | None,
) -> Path:
    side = meta.tile_size  # source pixels: the upscale is inside the graph
    check_input_side(meta.arch, side * meta.upscale, side * meta.upscale)
    net = _NativeScale(model, meta.upscale).eval()
    dummy = torch.zeros(1, meta.in_channels, side, side)
    with atomic_path(out_path) as tmp:
        _export_graph(net, dummy, tmp, opset, fixed_tile=True)
        provenance = {
            **meta.to_dict(),
            "format": ONNX_FORMAT,
            "format_version": ONNX_FORMAT_VERSION,
            "profile": "deepness",
            "output": "probability at source resolution",
        }
        props = {
            DEEPNESS_META_KEY: json.dumps(provenance),
            **deepness_profile_metadata(meta, resolution_cm),
        }
        doc = (
            f"SolarSeg solar-panel segmentation, Deepness profile. input: float32 "
            f"N x {meta.in_channels} x {side} x {side} at the source resolution, "
            "standardised by Deepness ((raw / 255 - mean) / std with the stored "
            "standardization_mean/std); output: float32 N x 1 x H x W probabilities "
            "(upscale, sigmoid and area average back to source pixels included)."
        )
        # The exporter's shape inference leaves the output's height and width symbolic
        # (and mislabelled) after Resize/AveragePool; state the static shape it has.
        write_metadata(tmp, props, doc, output_shape=("batch", 1, side, side))
        shape = (2, meta.in_channels, side, side)
        _check_export(net, tmp, meta, shape)
    return out_path


def deepness_profile_metadata(meta: ModelMeta, resolution_cm: float | None = None) -> dict:
    """The Deepness keys of the deepness profile, every value JSON-encoded (Deepness
    calls ``json.loads`` on each one it reads)."""
    tile = meta.tile_size
    std = [float(v) if float(v) > 0 else 1.0 for v in meta.std]  # SolarSeg's std-0 rule
    props = {
        "model_type": "Segmentor",
        "class_names": CLASS_NAMES,
        "tile_size": tile,
        "tiles_size": tile,
        "tiles_overlap": int(round(100 * meta.overlap / tile)),
        "seg_thresh": float(meta.threshold),
        "seg_small_segment": 0,
        "standardization_mean": [float(v) / 255.0 for v in meta.mean],
        "standardization_std": [v / 255.0 for v in std],
        "bands": [int(b) for b in meta.bands],
    }
    if resolution_cm is not None:
        props["resolution"] = float(resolution_cm)
    return {key: json.dumps(value) for key, value in props.items()}


def _export_graph(net, dummy, path: Path, opset: int, fixed_tile: bool = False) -> None:
    """Legacy TorchScript exporter (simple, dynamic_axes); torch.export (dynamo) if the
    legacy one fails. ``fixed_tile`` keeps height and width static (batch stays dynamic)."""
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
    axes = {0: "batch"} if fixed_tile else {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation notices
            torch.onnx.export(
                net,
                (dummy,),
                str(path),
                dynamo=False,
                dynamic_axes={"input": axes, "output": axes},
                **names,
            )
    except Exception as legacy_exc:  # noqa: BLE001 - any failure: try the other exporter
        dim = torch.export.Dim.DYNAMIC
        try:
            program = torch.onnx.export(
                net,
                (dummy,),
                dynamo=True,
                dynamic_shapes=({k: dim for k in axes},),
                **names,
            )
            program.save(str(path), external_data=False)
        except Exception as dynamo_exc:
            raise RuntimeError(
                f"ONNX export failed with both exporters: legacy: {legacy_exc}; "
                f"dynamo: {dynamo_exc}"
            ) from None


def deepness_metadata(meta: ModelMeta, resolution_cm: float | None = None) -> dict[str, str]:
    """The informative metadata_props of the solarseg profile, written beside
    ``solarseg`` (plain strings; not Deepness-loadable, see deepness_profile_metadata)."""
    props = {
        "model_type": "Segmentor",
        "class_names": json.dumps(CLASS_NAMES),
        "tiles_size": str(meta.tile_size * meta.upscale),
        "tiles_overlap": str(int(round(100 * meta.overlap / meta.tile_size))),
        "standardization_mean": json.dumps([float(v) for v in meta.mean]),
        "standardization_std": json.dumps([float(v) for v in meta.std]),
        "seg_thresh": str(float(meta.threshold)),
        "threshold": str(float(meta.threshold)),
        "bands": json.dumps([int(b) for b in meta.bands]),
    }
    if resolution_cm is not None:
        props["resolution"] = str(float(resolution_cm) / meta.upscale)
    return props


def _add_metadata(path: Path, meta: ModelMeta, resolution_cm: float | None) -> None:
    solarseg = {
        **meta.to_dict(),
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "output": "probability",
        GRAPH_PRECISION_KEY: "fp32",
    }
    props = {ONNX_META_KEY: json.dumps(solarseg), "precision": "fp32",
             **deepness_metadata(meta, resolution_cm)}  # fmt: skip
    doc = (
        "SolarSeg solar-panel segmentation. input: float32 NCHW (band - mean) / std; "
        "output: float32 N1HW probabilities (sigmoid included)."
    )
    write_metadata(path, props, doc)


def _check_export(net, path: Path, meta: ModelMeta, shape: tuple | None = None) -> None:
    """Run the file with ONNX Runtime on ``shape`` (default: a small untraced one, for
    the dynamic axes); compare with PyTorch."""
    import onnxruntime as ort

    pad = meta.pad_multiple
    shape = shape or (2, meta.in_channels, 2 * pad, 3 * pad)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff < EXPORT_TOLERANCE:
        raise RuntimeError(
            f"{path}: exported graph disagrees with PyTorch on a {shape} input "
            f"(max |difference| {diff:.3g}, shapes {got.shape} vs {want.shape})"
        )
