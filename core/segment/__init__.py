"""Segment whole rasters: streaming tiled inference, seamless blending, georeferenced
outputs (probability, mask, polygons) with PyTorch or ONNX Runtime."""

from .engine import SegmentOptions, SegmentResult, segment_raster, segment_with_backend

__all__ = ["SegmentOptions", "SegmentResult", "segment_raster", "segment_with_backend"]
