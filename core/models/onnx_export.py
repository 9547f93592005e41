"""Export a SolarSeg model file to ONNX so that the ONNX file alone is enough to segment.

The exported graph takes ``input``: float32 (N, C, H, W) tiles normalised as
``(band - mean) / std`` (the model's band order; H and W multiples of the model's
``pad_multiple``) and returns ``output``: float32 (N, 1, H, W) **probabilities** — the
sigmoid is part of the graph, so tools that read the ONNX file get probabilities and
SolarSeg's ONNX backend applies no second sigmoid. Batch, height and width are dynamic.

``metadata_props`` carries:

- ``solarseg``: the full :class:`~core.models.build.ModelMeta` as JSON (band selection,
  normalisation, threshold, upscale, pad multiple, tile size, overlap, training config
  and metrics) plus ``"output": "probability"``; SolarSeg reads only this key.
- keys in the style of the Deepness QGIS plugin, for other tools: ``model_type``
  (``Segmentor``), ``class_names`` (``{"0": "background", "1": "solar_panel"}``),
  ``tiles_size`` and ``resolution`` (cm/px, only when known) *at the network's input
  scale*, i.e. multiplied / divided by the model's upscale factor, ``tiles_overlap``
  (percent), ``seg_thresh`` and ``threshold``, ``standardization_mean`` /
  ``standardization_std`` (JSON lists in the raster's own units, no prior /255 scaling),
  and ``bands`` (JSON list, 1-based).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import atomic_path
from .build import load_model
from .meta import ONNX_META_KEY, ModelMeta

ONNX_FORMAT = "solarseg-onnx"
ONNX_FORMAT_VERSION = 1
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
) -> Path:
    """Write ``model_path`` (run folder or model file) as an ONNX file at ``out_path``.

    ``tile_size``/``overlap`` (source pixels) override the values stored in the model
    file's metadata; ``resolution_cm`` is the source imagery's pixel size, written only
    when given. The export is checked with ONNX Runtime against PyTorch on a tile shape
    different from the traced one (proves the dynamic axes work) before the file is
    renamed into place.
    """
    model, meta = load_model(model_path, "cpu")
    meta = _override(meta, tile_size, overlap)
    net = _WithSigmoid(model).eval()  # eval() on the wrapper too, or BN uses batch stats
    side = meta.tile_size * meta.upscale
    dummy = torch.zeros(1, meta.in_channels, side, side)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        _export_graph(net, dummy, tmp, opset)
        _add_metadata(tmp, meta, resolution_cm)
        _check_export(net, tmp, meta)
    return out_path


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


def _export_graph(net, dummy, path: Path, opset: int) -> None:
    """Legacy TorchScript exporter (simple, dynamic_axes); torch.export (dynamo) if the
    legacy one fails."""
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
    axes = {0: "batch", 2: "height", 3: "width"}
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
                dynamic_shapes=({0: dim, 2: dim, 3: dim},),
                **names,
            )
            program.save(str(path), external_data=False)
        except Exception as dynamo_exc:
            raise RuntimeError(
                f"ONNX export failed with both exporters: legacy: {legacy_exc}; "
                f"dynamo: {dynamo_exc}"
            ) from None


def deepness_metadata(meta: ModelMeta, resolution_cm: float | None = None) -> dict[str, str]:
    """The metadata_props written beside ``solarseg`` (all values are strings)."""
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
    import onnx

    graph = onnx.load(str(path))
    solarseg = {
        **meta.to_dict(),
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "output": "probability",
    }
    props = {ONNX_META_KEY: json.dumps(solarseg), **deepness_metadata(meta, resolution_cm)}
    del graph.metadata_props[:]
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.doc_string = (
        "SolarSeg solar-panel segmentation. input: float32 NCHW (band - mean) / std; "
        "output: float32 N1HW probabilities (sigmoid included)."
    )
    onnx.save(graph, str(path))


def _check_export(net, path: Path, meta: ModelMeta) -> None:
    """Run the file with ONNX Runtime on a small untraced shape; compare with PyTorch."""
    import onnxruntime as ort

    pad = meta.pad_multiple
    shape = (2, meta.in_channels, 2 * pad, 3 * pad)
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
