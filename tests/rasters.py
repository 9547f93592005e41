"""Small synthetic rasters for edge-case tests (real data is used elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = "EPSG:32723",
    transform=None,
    nodata: float | None = None,
) -> Path:
    """Write a (C,H,W) or (H,W) array as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    c, h, w = data.shape
    if transform is None:
        transform = from_origin(500000, 7500000, 10, 10) if crs else rasterio.Affine.identity()
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype,
        crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def make_folder_dataset(root: Path, n: int = 6, size: int = 24, bands: int = 4) -> Path:
    """``images/img_N.tif`` + ``masks/mask_N.tif`` with a known positive square."""
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.uniform(0, 1000, (bands, size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        mask[2 : 2 + i, 2 : 2 + i] = 1  # tile i has i*i positives; tile 0 is blank
        write_raster(root / "images" / f"img_{i}.tif", img)
        write_raster(root / "masks" / f"mask_{i}.tif", mask)
    return root
