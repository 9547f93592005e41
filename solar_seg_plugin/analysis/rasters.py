"""Small GeoTIFFs for the error analysis (no QGIS here: numpy + rasterio only).

Per tile: the RGB image (the chosen bands, float32), the ground truth, the prediction at
the current threshold and the error overlay, all on the tile's own grid. Tiles with no
CRS (e.g. the Solafune tiles: identity transform, no CRS) are put on a synthetic grid
instead: tile ``i`` of the split sits in column ``i % columns`` and row
``i // columns`` of a regular layout with :data:`GRID_PIXEL` map units per pixel and a
gap between tiles, so that all tiles can be seen side by side. Those files keep "no
CRS" on disk; the plugin shows them in :data:`GRID_CRS` (a plain metric frame, not a
location on Earth).

Every file is written under a temporary name and renamed, so a layer never reads a
half-written file; rewriting (new threshold) replaces the file the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from ..core.data.rasters import RasterError, open_raster, read_image
from ..core.data.tiles import read_mask_values
from ..core.evaluation.metrics import ConfusionCounts, confusion
from ..core.io import atomic_path
from .errors import NODATA, error_codes, predicted

GRID_PIXEL = 10.0  # map units per pixel on the synthetic grid (Sentinel-2: 10 m)
GRID_GAP = 4  # pixels between tiles on the synthetic grid
GRID_CRS = "EPSG:3857"


@dataclass
class TileGeoref:
    crs: str | None  # None: synthetic grid position
    transform: Affine
    width: int
    height: int

    @property
    def synthetic(self) -> bool:
        return self.crs is None

    def extent(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax in map units."""
        x0, y0 = self.transform * (0, 0)
        x1, y1 = self.transform * (self.width, self.height)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


@dataclass
class TileFiles:
    tile_id: str
    folder: Path
    georef: TileGeoref
    stretch: list[tuple[float, float]]  # per RGB band: display min, max

    @property
    def image(self) -> Path:
        return self.folder / "image.tif"

    @property
    def truth(self) -> Path:
        return self.folder / "ground_truth.tif"

    @property
    def prediction(self) -> Path:
        return self.folder / "prediction.tif"

    @property
    def errors(self) -> Path:
        return self.folder / "errors.tif"


class TileLayout:
    """Where each tile of a split goes: its own georeferencing, or the synthetic grid."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        """``sizes``: (height, width) of every tile of the split, in split order."""
        self.columns = max(1, math.ceil(math.sqrt(len(sizes))))
        self.cell_h = max((h for h, _ in sizes), default=1) + GRID_GAP
        self.cell_w = max((w for _, w in sizes), default=1) + GRID_GAP

    def grid_transform(self, index: int) -> Affine:
        col, row = index % self.columns, index // self.columns
        x0 = col * self.cell_w * GRID_PIXEL
        y0 = -row * self.cell_h * GRID_PIXEL
        return Affine(GRID_PIXEL, 0.0, x0, 0.0, -GRID_PIXEL, y0)

    def georef(self, index: int, image_path: Path) -> TileGeoref:
        with open_raster(image_path) as src:
            if src.crs is not None:
                return TileGeoref(src.crs.to_string(), src.transform, src.width, src.height)
            return TileGeoref(None, self.grid_transform(index), src.width, src.height)


def _write(path: Path, array: np.ndarray, georef: TileGeoref, nodata: float) -> None:
    array = array if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff",
        "width": georef.width,
        "height": georef.height,
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "transform": georef.transform,
        "nodata": nodata,
    }
    if georef.crs:
        profile["crs"] = georef.crs
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)


def display_stretch(image: np.ndarray, valid: np.ndarray) -> list[tuple[float, float]]:
    """2-98 % cumulative cut per band over valid pixels (the stretch QGIS would pick)."""
    out = []
    for band in image:
        values = band[valid]
        if values.size == 0:
            out.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, [2, 98])
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return out


def write_tile(
    folder: Path,
    tile_id: str,
    image_path: Path,
    mask: np.ndarray,
    valid: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    rgb_bands: list[int],
    georef: TileGeoref,
) -> TileFiles:
    """Write image, ground truth, prediction and error overlay of one tile."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb, rgb_valid = read_image(image_path, rgb_bands)
    if rgb.shape[1:] != mask.shape:
        raise RasterError(f"{image_path}: image is {rgb.shape[1:]} but its mask is {mask.shape}")
    rgb_valid &= valid
    files = TileFiles(tile_id, folder, georef, display_stretch(rgb, rgb_valid))
    _write(files.image, np.where(rgb_valid[None], rgb, np.float32(np.nan)), georef, float("nan"))
    truth = np.where(valid, mask, NODATA).astype(np.uint8)
    _write(files.truth, truth, georef, NODATA)
    write_threshold_layers(files, prob, mask, valid, threshold)
    return files


def write_threshold_layers(
    files: TileFiles, prob: np.ndarray, mask: np.ndarray, valid: np.ndarray, threshold: float
) -> np.ndarray:
    """(Re)write prediction and error overlay at ``threshold``; returns the codes."""
    pred = np.where(valid, predicted(prob, threshold), NODATA).astype(np.uint8)
    _write(files.prediction, pred, files.georef, NODATA)
    codes = error_codes(prob, mask, valid, threshold)
    _write(files.errors, codes, files.georef, NODATA)
    return codes


def read_probability(path: Path) -> tuple[np.ndarray, np.ndarray, rasterio.profiles.Profile]:
    """Probabilities (float32 0..1), their validity and the profile of probability.tif
    (float32 with NaN nodata, or uint8 scaled by 1/254 with nodata 255)."""
    with open_raster(path) as src:
        data = src.read(1)
        profile = src.profile
        scale = src.scales[0] if src.scales else 1.0
        nodata = src.nodata
    valid = np.ones(data.shape, bool)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        valid &= data != nodata
    prob = data.astype(np.float32) * np.float32(scale or 1.0)
    return np.where(valid, prob, np.float32(0)), valid, profile


def write_scene_errors(
    probability_path: Path, truth_path: Path, threshold: float, out_dir: Path
) -> tuple[Path, ConfusionCounts]:
    """Error overlay of a segmented scene against a ground-truth mask on the same grid."""
    prob, valid, profile = read_probability(Path(probability_path))
    with open_raster(truth_path) as src:
        if (src.width, src.height) != (profile["width"], profile["height"]):
            raise RasterError(
                f"{truth_path}: ground truth is {src.width}x{src.height} but the segmented "
                f"raster is {profile['width']}x{profile['height']}"
            )
        if src.crs and profile.get("crs") and src.crs != profile["crs"]:
            raise RasterError(
                f"{truth_path}: ground truth CRS {src.crs} differs from {profile['crs']}"
            )
        mask, mask_valid = read_mask_values(src.read(1), src.nodata, truth_path)
    valid &= mask_valid
    counts = confusion(prob, mask, valid, threshold)
    codes = error_codes(prob, mask, valid, threshold)
    path = Path(out_dir) / "errors.tif"
    georef = TileGeoref(
        profile.get("crs").to_string() if profile.get("crs") else None,
        profile["transform"],
        profile["width"],
        profile["height"],
    )
    _write(path, codes, georef, NODATA)
    return path, counts
