"""Mask values (numpy only, so QGIS's process can check a ground-truth mask read with GDAL)."""

from __future__ import annotations

import numpy as np

from ..errors import RasterError


def read_mask_values(mask: np.ndarray, nodata: float | None, path) -> tuple[np.ndarray, np.ndarray]:
    """Binary uint8 mask and its validity; reject non-binary values."""
    valid = np.ones(mask.shape, bool)
    if nodata is not None:
        valid &= ~(mask == nodata) if np.isfinite(nodata) else np.isfinite(mask)
    values = np.unique(mask[valid])
    if mask.dtype.kind == "f":
        valid &= np.isfinite(mask)
        values = np.unique(mask[valid])
    if np.isin(values, (0, 1)).all():
        out = mask
    elif np.isin(values, (0, 255)).all():
        out = mask // 255 if mask.dtype.kind in "iu" else mask / 255
    else:
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise RasterError(f"{path}: mask values must be 0/1 or 0/255, found {shown}")
    return np.where(valid, out, 0).astype(np.uint8), valid
