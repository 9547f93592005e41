"""Small GeoTIFFs for the error analysis, written with QGIS's own GDAL (``osgeo.gdal``)
and numpy: no rasterio, no engine package in QGIS's process.

Per tile: the RGB image (the display bands ``predict-split`` wrote, float32), the
ground truth, the prediction at the current threshold and the error overlay, all on
the tile's own grid. Tiles with no CRS (e.g. the Solafune tiles: identity transform, no
CRS) are put on a synthetic grid instead: tile ``i`` of the split sits in column
``i % columns`` and row ``i // columns`` of a regular layout with :data:`GRID_PIXEL`
map units per pixel and a gap between tiles, so that all tiles can be seen side by
side. Those files keep "no CRS" on disk; the plugin shows them in :data:`GRID_CRS` (a
plain metric frame, not a location on Earth).

Every file is written under a temporary name and renamed, so a layer never reads a
half-written file. A file is never rewritten once a layer may have it open: a new
threshold gets new files (:func:`fresh_path`), the layers are pointed at them, and the
old files are deleted once no layer uses them.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from ..core.data.masks import read_mask_values
from ..core.errors import RasterError
from ..core.evaluation.metrics import ConfusionCounts, confusion
from ..core.io import atomic_path
from .errors import NODATA, error_codes, predicted

GRID_PIXEL = 10.0  # map units per pixel on the synthetic grid (Sentinel-2: 10 m)
GRID_GAP = 4  # pixels between tiles on the synthetic grid
GRID_CRS = "EPSG:3857"

GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}


@dataclass
class TileGeoref:
    crs: str | None  # WKT; None: no CRS (synthetic grid position)
    transform: tuple[float, ...]  # GDAL geotransform: x0, dx, rx, y0, ry, dy
    width: int
    height: int

    @property
    def synthetic(self) -> bool:
        return self.crs is None

    def extent(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax in map units."""
        x0, dx, rx, y0, ry, dy = self.transform
        xs = [x0 + c * dx + r * rx for c, r in ((0, 0), (self.width, 0), (0, self.height),
                                                 (self.width, self.height))]  # fmt: skip
        ys = [y0 + c * ry + r * dy for c, r in ((0, 0), (self.width, 0), (0, self.height),
                                                 (self.width, self.height))]  # fmt: skip
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class TileFiles:
    """The files a tile's layers show now (prediction and errors change with the
    threshold: each threshold gets new files)."""

    tile_id: str
    folder: Path
    georef: TileGeoref
    stretch: list[tuple[float, float]]  # per RGB band: display min, max
    image: Path
    truth: Path
    prediction: Path
    errors: Path


class TileLayout:
    """Where each tile of a split goes: its own georeferencing, or the synthetic grid."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        """``sizes``: (height, width) of every tile of the split, in split order."""
        self.columns = max(1, math.ceil(math.sqrt(len(sizes))))
        self.cell_h = max((h for h, _ in sizes), default=1) + GRID_GAP
        self.cell_w = max((w for _, w in sizes), default=1) + GRID_GAP

    def grid_transform(self, index: int) -> tuple[float, ...]:
        col, row = index % self.columns, index // self.columns
        x0 = col * self.cell_w * GRID_PIXEL
        y0 = -row * self.cell_h * GRID_PIXEL
        return (x0, GRID_PIXEL, 0.0, y0, 0.0, -GRID_PIXEL)

    def georef(
        self, index: int, crs_wkt: str | None, transform: tuple[float, ...], shape: tuple[int, int]
    ) -> TileGeoref:
        """The tile's own georeferencing when it has a CRS, else its grid position."""
        h, w = shape
        if crs_wkt:
            return TileGeoref(crs_wkt, tuple(transform), w, h)
        return TileGeoref(None, self.grid_transform(index), w, h)


def _failure(what: str, path: Path) -> RasterError:
    reason = gdal.GetLastErrorMsg().strip() or "GDAL error"
    return RasterError(f"{path}: cannot {what} ({reason})")


def write_tiff(path: Path, array: np.ndarray, georef: TileGeoref, nodata: float) -> Path:
    """A (C, H, W) or (H, W) uint8/float32 array as a GeoTIFF, atomically."""
    array = array if array.ndim == 3 else array[None]
    gdal_type = GDAL_TYPES[array.dtype]
    path = Path(path)
    with atomic_path(path) as tmp:
        gdal.ErrorReset()
        try:
            ds = gdal.GetDriverByName("GTiff").Create(
                str(tmp), georef.width, georef.height, array.shape[0], gdal_type,
                options=["COMPRESS=DEFLATE"],
            )  # fmt: skip
            if ds is None:
                raise _failure("create the file", path)
            ds.SetGeoTransform(list(georef.transform))
            if georef.crs:
                ds.SetProjection(georef.crs)
            for i, band_data in enumerate(array, start=1):
                band = ds.GetRasterBand(i)
                band.SetNoDataValue(float(nodata))
                if band.WriteArray(band_data) != 0:
                    raise _failure("write band data", path)
            ds.FlushCache()
            ds = None  # closes the file
        except RuntimeError as exc:  # gdal.UseExceptions() set by someone else
            raise RasterError(f"{path}: cannot write ({exc})") from None
        if gdal.GetLastErrorType() >= gdal.CE_Failure:
            raise _failure("write", path)
    return path


def fresh_path(folder: Path, stem: str, taken: Collection[Path] = ()) -> Path:
    """``folder/stem.tif``, or ``stem_2.tif``, ``stem_3.tif``... : a name no file has
    and no pending write was given (``taken``), so nothing that is open is replaced."""
    path, n = folder / f"{stem}.tif", 1
    while path.exists() or path in taken:
        n += 1
        path = folder / f"{stem}_{n}.tif"
    return path


def display_stretch(image: np.ndarray) -> list[tuple[float, float]]:
    """2-98 % cumulative cut per band over the shown (finite) pixels."""
    out = []
    shown = np.isfinite(image).all(0)
    for band in image:
        values = band[shown]
        if values.size == 0:
            out.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, [2, 98])
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return out


def threshold_arrays(
    prob: np.ndarray, mask: np.ndarray, valid: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction (0/1, NODATA where not valid) and error codes at ``threshold``."""
    pred = np.where(valid, predicted(prob, threshold), NODATA).astype(np.uint8)
    return pred, error_codes(prob, mask, valid, threshold)


def threshold_stems(threshold: float) -> tuple[str, str]:
    return f"prediction_t{threshold:.3f}", f"errors_t{threshold:.3f}"


def write_threshold_files(
    prediction: Path,
    errors: Path,
    georef: TileGeoref,
    prob: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    threshold: float,
) -> None:
    """Prediction and error overlay at ``threshold``, into new files (any thread)."""
    pred, codes = threshold_arrays(prob, mask, valid, threshold)
    write_tiff(prediction, pred, georef, NODATA)
    write_tiff(errors, codes, georef, NODATA)


def write_tile(
    folder: Path,
    tile_id: str,
    rgb: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    georef: TileGeoref,
    taken: Collection[Path] = (),
) -> TileFiles:
    """Image (``rgb``: float32 (3, H, W), NaN where not shown), ground truth, prediction
    and error overlay of one tile, each under a name no file has yet."""
    folder.mkdir(parents=True, exist_ok=True)
    if rgb.shape[1:] != mask.shape:
        raise RasterError(f"tile {tile_id}: image is {rgb.shape[1:]} but its mask is {mask.shape}")
    image = write_tiff(fresh_path(folder, "image", taken), rgb.astype(np.float32), georef, np.nan)
    truth = np.where(valid, mask, NODATA).astype(np.uint8)
    truth_path = write_tiff(fresh_path(folder, "ground_truth", taken), truth, georef, NODATA)
    pred_stem, err_stem = threshold_stems(threshold)
    pred_path = fresh_path(folder, pred_stem, taken)
    err_path = fresh_path(folder, err_stem, {*taken, pred_path})
    write_threshold_files(pred_path, err_path, georef, prob, mask, valid, threshold)
    return TileFiles(tile_id, folder, georef, display_stretch(rgb), image, truth_path, pred_path,
                     err_path)  # fmt: skip


# --- a segmented scene against its ground truth ---------------------------------------
def _open(path: Path) -> gdal.Dataset:
    if not Path(path).exists():
        raise RasterError(f"{path}: file not found")
    gdal.ErrorReset()
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterError(f"{path}: not a readable raster ({exc})") from None
    if ds is None:
        raise _failure("open it as a raster", Path(path))
    return ds


def _read_band(ds: gdal.Dataset, path: Path) -> np.ndarray:
    try:
        data = ds.GetRasterBand(1).ReadAsArray()
    except RuntimeError as exc:
        raise RasterError(f"{path}: cannot read band data ({exc})") from None
    if data is None:
        raise _failure("read band data (file truncated or damaged?)", Path(path))
    return data


def read_probability(path: Path) -> tuple[np.ndarray, np.ndarray, TileGeoref]:
    """Probabilities (float32 0..1), their validity and the georeferencing of
    probability.tif (float32 with NaN nodata, or uint8 scaled by 1/254 with nodata 255)."""
    ds = _open(path)
    band = ds.GetRasterBand(1)
    data = _read_band(ds, path)
    nodata, scale = band.GetNoDataValue(), band.GetScale()
    valid = np.ones(data.shape, bool)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        valid &= data != nodata
    prob = data.astype(np.float32) * np.float32(scale or 1.0)
    georef = TileGeoref(ds.GetProjection() or None, tuple(ds.GetGeoTransform()),
                        ds.RasterXSize, ds.RasterYSize)  # fmt: skip
    return np.where(valid, prob, np.float32(0)), valid, georef


def same_crs(a: str, b: str) -> bool:
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    if sa.ImportFromWkt(a) != 0 or sb.ImportFromWkt(b) != 0:
        return a == b
    return bool(sa.IsSame(sb))


def write_scene_errors(
    probability_path: Path, truth_path: Path, threshold: float, out_dir: Path
) -> tuple[Path, ConfusionCounts]:
    """Error overlay of a segmented scene against a ground-truth mask on the same grid,
    written to a new ``errors.tif`` (``errors_2.tif``... if one exists: a layer may
    have it open)."""
    prob, valid, georef = read_probability(Path(probability_path))
    truth_path = Path(truth_path)
    src = _open(truth_path)
    if (src.RasterXSize, src.RasterYSize) != (georef.width, georef.height):
        raise RasterError(
            f"{truth_path}: ground truth is {src.RasterXSize}x{src.RasterYSize} but the "
            f"segmented raster is {georef.width}x{georef.height}"
        )
    truth_crs = src.GetProjection()
    if truth_crs and georef.crs and not same_crs(truth_crs, georef.crs):
        raise RasterError(f"{truth_path}: ground truth CRS differs from the segmented raster's")
    mask, mask_valid = read_mask_values(
        _read_band(src, truth_path), src.GetRasterBand(1).GetNoDataValue(), truth_path
    )
    valid &= mask_valid
    counts = confusion(prob, mask, valid, threshold)
    codes = error_codes(prob, mask, valid, threshold)
    path = write_tiff(fresh_path(Path(out_dir), "errors"), codes, georef, NODATA)
    return path, counts
