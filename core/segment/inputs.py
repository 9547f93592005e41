"""A raster's windows as the network's inputs: what segmentation reads and how.

:func:`plan_raster` resolves the model, the raster and the options into a
:class:`RasterPlan` (bands, normalisation, tile, overlap, upscale, threshold), refusing
what cannot work with an error naming the option. :class:`WindowReader` reads windows of
it (validity, ``(band - mean) / std``, reflect padding) and :func:`network_input` upscales
them bicubically. :func:`network_inputs` chains these for a whole raster: the segment
engine (:mod:`.engine`) predicts those inputs, and int8 calibration (:mod:`.int8`) sees
exactly the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window as RioWindow

from ..data.rasters import RasterError, check_bands, normalize, open_raster, reading, valid_mask
from ..errors import InputError
from ..models.band_mapping import choose_bands
from ..models.meta import ModelMeta, min_input_side
from .options import SegmentOptions
from .resample import upscale_bicubic
from .windows import Window, WindowGrid, pad_to_tile
from .writers import RasterGrid


@dataclass
class RasterPlan:
    """Everything resolved from the model, the raster and the options."""

    raster_path: Path
    grid: RasterGrid
    nodata: float | None
    bands: list[int]
    mean: list[float]
    std: list[float]
    tile: int
    overlap: int
    upscale: int
    threshold: float
    # How ``bands`` were chosen (core.models.band_mapping): as given, by band name or by
    # the model's band numbers.
    band_source: str = "the model's band numbers"


def plan_raster(raster_path: Path, meta: ModelMeta, options: SegmentOptions) -> RasterPlan:
    with open_raster(raster_path) as src:
        grid = RasterGrid.from_rasterio(src)
        count, nodata, descriptions = src.count, src.nodata, tuple(src.descriptions or ())
    model_bands = list(meta.bands) if meta.bands else list(range(1, meta.in_channels + 1))
    if options.bands is not None:
        bands = [int(b) for b in options.bands]
        if len(bands) != meta.in_channels:
            raise InputError(
                f"the band mapping {bands} has {len(bands)} band(s) but the model takes "
                f"{meta.in_channels} input(s) (its own selection: bands {model_bands})",
                "bands",
            )
        try:
            bands = check_bands(bands, count, raster_path)
        except RasterError as exc:
            exc.field = "bands"  # the mapping is at fault, not the raster
            raise
        band_source = "as given"
    elif chosen := choose_bands(
        model_bands, meta.band_names, count, descriptions, str(raster_path)
    ):
        bands, band_source = chosen.bands, chosen.how
    else:
        bands, band_source = model_bands, "the model's band numbers"
        missing = [b for b in bands if b > count]
        if missing or len(bands) != meta.in_channels:
            raise RasterError(
                f"{raster_path}: the model needs bands {bands} ({meta.in_channels} inputs) "
                f"but the raster has {count} band(s) (band(s) {missing} not found); map the "
                f"raster's bands onto the model's inputs explicitly, e.g. bands="
                f"{[min(b, count) for b in bands]} (--bands "
                f"{','.join(str(min(b, count)) for b in bands)})",
                "bands",
            )
    tile = options.tile_size or meta.tile_size
    overlap = meta.overlap if options.overlap is None else options.overlap
    upscale = int(meta.upscale or 1)
    if (tile * upscale) % meta.pad_multiple:
        raise InputError(
            f"tile size {tile} x upscale {upscale} = {tile * upscale} must be a multiple of "
            f"the model's pad multiple {meta.pad_multiple} (e.g. tile size "
            f"{-(-tile * upscale // meta.pad_multiple) * meta.pad_multiple // upscale})",
            "tile_size",
        )
    if tile * upscale < min_input_side(meta.arch):
        raise InputError(f"tile size {tile} is too small for a {meta.arch} model", "tile_size")
    if not 0 <= overlap < tile:
        raise InputError(f"overlap must be in [0, tile size {tile}), got {overlap}", "overlap")
    threshold = meta.threshold if options.threshold is None else options.threshold
    return RasterPlan(
        raster_path=raster_path,
        grid=grid,
        nodata=nodata,
        bands=bands,
        mean=list(meta.mean),
        std=list(meta.std),
        tile=tile,
        overlap=overlap,
        upscale=upscale,
        threshold=float(threshold),
        band_source=band_source,
    )


@dataclass
class WindowBatch:
    windows: list[Window]
    x: np.ndarray  # (N, C, tile, tile) float32, normalised and padded
    valid: list[np.ndarray]  # per window (height, width) bool, inside the raster only


class WindowReader:
    """Reads, normalises and pads windows. Used only from the reader thread.

    The source is reopened for every grid row of windows: closing a dataset drops its
    blocks from GDAL's process-wide block cache, which would otherwise grow with the
    raster (up to 5% of RAM) and make peak memory depend on raster size.
    """

    def __init__(self, plan: RasterPlan):
        self.plan = plan
        self._src: Any = None
        self._row = -1

    def _dataset(self, row: int) -> Any:
        if row != self._row or self._src is None:
            self.close()
            self._src = open_raster(self.plan.raster_path)
            self._row = row
        return self._src

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        src = self._dataset(win.row)
        with reading(self.plan.raster_path):
            data = src.read(self.plan.bands, window=RioWindow(win.x, win.y, win.width, win.height))
        valid = valid_mask(data, self.plan.nodata)
        x = normalize(data.astype(np.float32, copy=False), valid, self.plan.mean, self.plan.std)
        return pad_to_tile(x, self.plan.tile), valid

    def read_batch(self, windows: list[Window]) -> WindowBatch:
        # A rasterio environment for this thread: GDAL then reports a failed block read
        # through Python logging (and the RasterError) instead of printing
        # "ERROR 1: ..." lines on stderr.
        with rasterio.Env():
            xs, valids = zip(*(self.read(w) for w in windows), strict=True)
        return WindowBatch(list(windows), np.stack(xs), list(valids))

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None


def network_input(x: np.ndarray, upscale: int) -> np.ndarray:
    """Normalised, padded windows -> the network's input: bicubic upscaling by the
    model's factor, the resampling training uses (:mod:`core.segment.resample`)."""
    return upscale_bicubic(x, upscale) if upscale > 1 else x


def network_inputs(
    raster_path: str | Path,
    meta: ModelMeta,
    options: SegmentOptions | None = None,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """The network inputs :func:`segment_with_backend` feeds for a raster, batch by
    batch: the windows of ``options`` (tile size, overlap, band mapping) read,
    validity-masked, normalised, reflect-padded and upscaled by the same code. int8
    calibration uses it, so calibration sees exactly what inference sees."""
    plan = plan_raster(Path(raster_path), meta, options or SegmentOptions())
    grid = WindowGrid(plan.grid.height, plan.grid.width, plan.tile, plan.overlap)
    reader = WindowReader(plan)
    try:
        for windows in batched(iter(grid), batch_size):
            yield network_input(reader.read_batch(windows).x, plan.upscale)
    finally:
        reader.close()


def batched(windows: Iterator[Window], size: int) -> Iterator[list[Window]]:
    while batch := list(islice(windows, size)):
        yield batch
