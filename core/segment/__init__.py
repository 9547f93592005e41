"""Segment whole rasters: streaming tiled inference, seamless blending, georeferenced
outputs (probability, mask, polygons) with PyTorch or ONNX Runtime.

The engine's names are loaded on first use, so ``core.segment.options`` (pure Python)
can be imported without rasterio or torch (the QGIS plugin does).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SegmentOptions", "SegmentResult", "segment_raster", "segment_with_backend"]


def __getattr__(name: str) -> Any:
    if name == "SegmentOptions":
        from .options import SegmentOptions

        return SegmentOptions
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
