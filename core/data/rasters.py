"""Reading rasters with rasterio: band selection, float32 conversion and validity.

A pixel is invalid when any selected band equals the raster's declared nodata, the
-9999 sentinel, or is NaN/inf. One validity mask per tile is used by statistics,
losses and metrics alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors

from ..errors import RasterError, UserError  # noqa: F401 (RasterError: public here too)

try:  # GDAL errors rasterio raises directly (CPLE_OpenFailedError, CPLE_AppDefinedError...)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - older/newer rasterio layouts
    CPLE_BaseError = rasterio.errors.RasterioError

# What rasterio/GDAL raise for a file that opens but whose blocks cannot be decoded.
GDAL_ERRORS = (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError, CPLE_BaseError)


NODATA_SENTINEL = -9999.0


@dataclass
class RasterInfo:
    path: Path
    count: int
    width: int
    height: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None
    # Each band's description (GDAL's, e.g. "B02"), None where a band has none.
    descriptions: tuple[str | None, ...] = ()


def short_reason(exc: BaseException, path: str | Path) -> str:
    """GDAL's message on one short line, without the file name (the caller gives it)."""
    text = str(exc)
    for name in (f"'{path}'", f'"{path}"', str(path)):
        text = text.replace(name, "")
    text = text.replace("Read or write failed.", "")
    text = re.sub(r"\s+", " ", text).strip(" ,.:;")
    text = re.sub(r"^(band \d+)\s*[,:]?\s*", r"\1: ", text)
    if len(text) > 160:
        text = text[:157] + "..."
    return text or type(exc).__name__


def read_error(path: str | Path, exc: BaseException) -> RasterError:
    """The RasterError for band data that cannot be read (truncated or damaged file)."""
    return RasterError(
        f"{path}: cannot read band data (file truncated or damaged: {short_reason(exc, path)})"
    )


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn rasterio/GDAL errors raised while reading blocks of ``path`` into a
    RasterError naming the file. A truncated GeoTIFF usually opens (its header is
    intact) and fails only when a missing block is read, so every read goes here."""
    try:
        yield
    except RasterError:
        raise
    except GDAL_ERRORS as exc:
        raise read_error(path, exc) from None


def open_raster(path: str | Path):
    """Open with rasterio, turning failures into a RasterError naming the file."""
    path = Path(path)
    if not path.exists():
        raise RasterError(f"{path}: file not found")
    # No warnings.catch_warnings() here: it is not thread-safe (QGIS tasks read from
    # background threads) and it resets Python's show-once record. Callers filter
    # rasterio's NotGeoreferencedWarning once (CLI, plugin, pytest configuration).
    try:
        return rasterio.open(path)
    except GDAL_ERRORS as exc:
        raise RasterError(f"{path}: not a readable raster ({short_reason(exc, path)})") from None


def raster_info(path: str | Path) -> RasterInfo:
    with open_raster(path) as src:
        return RasterInfo(
            path=Path(path),
            count=src.count,
            width=src.width,
            height=src.height,
            dtype=src.dtypes[0],
            crs=src.crs.to_string() if src.crs else None,
            transform=tuple(src.transform)[:6],
            nodata=src.nodata,
            descriptions=tuple(src.descriptions or ()),
        )


def check_bands(bands: list[int] | None, count: int, path: str | Path) -> list[int]:
    """Validate a 1-based band selection against a raster's band count."""
    if bands is None:
        return list(range(1, count + 1))
    bad = [b for b in bands if b < 1 or b > count]
    if bad:
        raise RasterError(
            f"{path}: has {count} band(s) but bands {bands} were asked for "
            f"(band(s) {bad} do not exist)"
        )
    return list(bands)


def valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Per-pixel validity (H, W) of a (C, H, W) array: False where any band is the
    declared nodata, -9999, NaN or inf."""
    invalid = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    invalid |= data == NODATA_SENTINEL
    if nodata is not None and np.isfinite(nodata):
        invalid |= data == nodata
    elif nodata is not None:  # declared NaN nodata is covered by isfinite
        pass
    return ~invalid.any(axis=0)


def read_image(
    path: str | Path, bands: list[int] | None = None, window=None
) -> tuple[np.ndarray, np.ndarray]:
    """Selected bands as float32 (C, H, W) and the validity mask (H, W).

    Invalid pixels are set to 0 in the returned array so they never leak NaN into
    arithmetic; use the validity mask to ignore them.
    """
    with open_raster(path) as src:
        sel = check_bands(bands, src.count, path)
        with reading(path):
            data = src.read(sel, window=window)
        valid = valid_mask(data, src.nodata)
    out = data.astype(np.float32, copy=False)
    if not valid.all():
        out = np.where(valid[None], out, np.float32(0))
    return out, valid


def normalize(
    image: np.ndarray, valid: np.ndarray, mean: np.ndarray | list, std: np.ndarray | list
) -> np.ndarray:
    """Per-band standardisation ``(x - mean) / std``; invalid pixels become 0."""
    mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, np.float32).reshape(-1, 1, 1)
    if mean.shape[0] != image.shape[0]:
        raise RasterError(
            f"normalisation has {mean.shape[0]} band(s) but the image has {image.shape[0]}"
        )
    out = (image - mean) / np.where(std > 0, std, np.float32(1))
    return np.where(valid[None], out, np.float32(0)).astype(np.float32, copy=False)
