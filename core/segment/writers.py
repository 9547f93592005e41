"""Georeferenced outputs written block by block, under temporary names until complete.

Rasters are tiled (256 x 256), DEFLATE-compressed GeoTIFFs on the source's grid (CRS,
geotransform, width, height). Encodings:

- probability, ``float32``: 0..1, nodata NaN;
- probability, ``uint8``: ``round(p * 254)``, 0..254 (254 = 1.0), nodata 255. The band's
  GDAL scale is 1/254, so QGIS/GDAL "unscaled" values read back as probabilities. 255 is
  kept free for nodata, the same convention as the mask;
- mask, ``uint8``: 1 = panel (probability >= threshold), 0 = background, nodata 255.

Both rasters carry dataset metadata (GDAL's ``GDAL_METADATA`` TIFF tag, ``gdalinfo`` /
rasterio ``tags()``) saying how the network ran: ``SOLARSEG_BACKEND``,
``SOLARSEG_PRECISION`` (fp32, bf16, int8) and, for int8, ``SOLARSEG_CALIBRATION_SOURCE``,
``_SPLIT`` and ``_TILES``.

Every pixel that is nodata in the source (see ``core.data.rasters.valid_mask``) is nodata
in every output.

Memory stays bounded: rows are buffered until a whole row of 256-pixel blocks is complete,
written, and the dataset's block cache flushed (GDAL would otherwise keep every dirty block
of the file in its process-wide cache, up to 5% of RAM).

:func:`atomic_outputs` gives temporary names in the output folder; they are renamed to the
final names only when everything succeeded and are removed on any error or cancel, so no
half-written file ever appears under a final name. Existing outputs are refused unless
``overwrite=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RasterError, UserError
from ..io import atomic_path
from .options import PROBABILITY_DTYPES

PROBABILITY_FILENAME = "probability.tif"
MASK_FILENAME = "mask.tif"
POLYGONS_FILENAME = "panels.gpkg"
UINT8_NODATA = 255
UINT8_PROBABILITY_SCALE = 254
BLOCK_SIZE = 256
DEFLATE_LEVEL = 1  # 2-10x faster than the default 6; files a few % larger (measured)


class OutputExistsError(UserError, FileExistsError, ValueError):
    """An output file already exists and overwriting was not asked for."""


@dataclass(frozen=True)
class RasterGrid:
    """The source grid every output raster copies."""

    width: int
    height: int
    crs_wkt: str | None
    geotransform: tuple[float, ...] | None  # GDAL order; None when not georeferenced

    @classmethod
    def from_rasterio(cls, src: Any) -> RasterGrid:
        georef = src.crs is not None or not src.transform.is_identity
        return cls(
            width=src.width,
            height=src.height,
            crs_wkt=src.crs.to_wkt() if src.crs else None,
            geotransform=tuple(src.transform.to_gdal()) if georef else None,
        )


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to run when an output exists and ``overwrite`` is False."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output(s) already exist: {', '.join(existing)}; "
            "choose another folder or allow overwriting (--overwrite)"
        )


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[Path], overwrite: bool = False) -> Iterator[list[Path]]:
    """Temporary paths for ``paths``; all renamed into place when the block succeeds,
    all removed when it raises (including :class:`~core.progress.Cancelled`)."""
    check_outputs(paths, overwrite)
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in paths]
        yield tmps
        check_outputs(paths, overwrite)  # something appeared meanwhile: keep it


def gdal_call(fn: Callable[[], Any], what: str, path: Path | str) -> Any:
    """Run a GDAL binding call and turn a reported failure into a RasterError, whether
    or not ``gdal.UseExceptions()`` was enabled by someone else in this process."""
    from osgeo import gdal

    gdal.ErrorReset()
    try:
        result = fn()
    except RuntimeError as exc:
        raise RasterError(f"{path}: {what} failed: {exc}") from None
    if gdal.GetLastErrorType() >= gdal.CE_Failure:
        raise RasterError(f"{path}: {what} failed: {gdal.GetLastErrorMsg()}")
    return result


class GeoTiffWriter:
    """One-band tiled DEFLATE GeoTIFF written in increasing row order."""

    def __init__(
        self,
        path: Path,
        grid: RasterGrid,
        dtype: str,
        nodata: float,
        description: str = "",
        scale: float | None = None,
        tags: dict[str, str] | None = None,
    ):
        from osgeo import gdal

        gdal_types = {"float32": gdal.GDT_Float32, "uint8": gdal.GDT_Byte}
        if dtype not in gdal_types:
            raise ValueError(f"unsupported output dtype {dtype!r}")
        self.path = Path(path)
        self.grid = grid
        self.dtype = np.dtype(dtype)
        options = [
            "TILED=YES",
            f"BLOCKXSIZE={BLOCK_SIZE}",
            f"BLOCKYSIZE={BLOCK_SIZE}",
            "COMPRESS=DEFLATE",
            f"ZLEVEL={DEFLATE_LEVEL}",
            f"PREDICTOR={3 if dtype == 'float32' else 2}",
            "BIGTIFF=IF_SAFER",
        ]
        driver = gdal.GetDriverByName("GTiff")
        self._ds = gdal_call(
            lambda: driver.Create(
                str(self.path), grid.width, grid.height, 1, gdal_types[dtype], options
            ),
            "creating GeoTIFF",
            self.path,
        )
        if self._ds is None:
            raise RasterError(f"{self.path}: cannot create GeoTIFF ({gdal.GetLastErrorMsg()})")
        if grid.geotransform is not None:
            self._ds.SetGeoTransform(grid.geotransform)
        if grid.crs_wkt:
            self._ds.SetProjection(grid.crs_wkt)
        if tags:
            self._ds.SetMetadata({str(k): str(v) for k, v in tags.items()})
        self._band = self._ds.GetRasterBand(1)
        self._band.SetNoDataValue(float(nodata))
        if description:
            self._band.SetDescription(description)
        if scale is not None:
            self._band.SetScale(float(scale))
            self._band.SetOffset(0.0)
        self._pending: np.ndarray = np.empty((0, grid.width), self.dtype)
        self._pending_y = 0

    def write_rows(self, y0: int, rows: np.ndarray) -> None:
        """Append rows starting at raster row ``y0`` (must follow the previous rows)."""
        if y0 != self._pending_y + len(self._pending):
            raise ValueError(f"rows must be written in order: got row {y0}")
        if rows.shape[1] != self.grid.width:
            raise ValueError(f"rows must be {self.grid.width} wide, got {rows.shape[1]}")
        self._pending = np.concatenate([self._pending, rows.astype(self.dtype, copy=False)])
        end = self._pending_y + len(self._pending)
        boundary = end if end == self.grid.height else end // BLOCK_SIZE * BLOCK_SIZE
        if boundary > self._pending_y:
            n = boundary - self._pending_y
            self._write(self._pending[:n], self._pending_y)
            self._pending = self._pending[n:].copy()
            self._pending_y = boundary

    def _write(self, rows: np.ndarray, y0: int) -> None:
        err = gdal_call(lambda: self._band.WriteArray(rows, 0, y0), "writing rows", self.path)
        if err:
            raise RasterError(f"{self.path}: writing rows {y0}..{y0 + len(rows)} failed")
        gdal_call(self._ds.FlushCache, "flushing blocks", self.path)

    def close(self) -> None:
        """Write what is left and close; safe to call twice."""
        if self._ds is None:
            return
        try:
            if len(self._pending):
                self._write(self._pending, self._pending_y)
                self._pending_y += len(self._pending)
                self._pending = self._pending[:0]
            gdal_call(self._ds.FlushCache, "closing", self.path)
        finally:
            self._band = None
            self._ds = None

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_probability(prob: np.ndarray, valid: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in the chosen output encoding, nodata where ``valid`` is False."""
    if dtype == "float32":
        return np.where(valid, prob, np.float32(np.nan)).astype(np.float32, copy=False)
    scaled = np.rint(np.clip(prob, 0.0, 1.0) * UINT8_PROBABILITY_SCALE).astype(np.uint8)
    return np.where(valid, scaled, np.uint8(UINT8_NODATA))


def encode_mask(prob: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """1 where probability >= threshold, 0 elsewhere, 255 where not valid."""
    panel = (prob >= np.float32(threshold)).astype(np.uint8)  # as core.metrics: float32 >=
    return np.where(valid, panel, np.uint8(UINT8_NODATA))


class OutputRasters:
    """The probability and mask writers fed with the same blended rows."""

    def __init__(
        self,
        probability_path: Path,
        mask_path: Path,
        grid: RasterGrid,
        probability_dtype: str,
        threshold: float,
        tags: dict[str, str] | None = None,
    ):
        if probability_dtype not in PROBABILITY_DTYPES:
            raise ValueError(
                f"probability dtype must be one of {PROBABILITY_DTYPES}, "
                f"got {probability_dtype!r}"
            )
        self.probability_dtype = probability_dtype
        self.threshold = threshold
        uint8 = probability_dtype == "uint8"
        self.probability = GeoTiffWriter(
            probability_path,
            grid,
            probability_dtype,
            UINT8_NODATA if uint8 else float("nan"),
            "solar panel probability" + (" x 254 (255 = nodata)" if uint8 else ""),
            scale=1.0 / UINT8_PROBABILITY_SCALE if uint8 else None,
            tags=tags,
        )
        try:
            self.mask = GeoTiffWriter(
                mask_path,
                grid,
                "uint8",
                UINT8_NODATA,
                f"solar panel mask at threshold {threshold:g} (1 panel, 0 background, "
                "255 nodata)",
                tags=tags,
            )
        except Exception:
            self.probability.close()
            raise

    def write_rows(self, y0: int, prob: np.ndarray, valid: np.ndarray) -> None:
        self.probability.write_rows(y0, encode_probability(prob, valid, self.probability_dtype))
        self.mask.write_rows(y0, encode_mask(prob, valid, self.threshold))

    def close(self) -> None:
        try:
            self.probability.close()
        finally:
            self.mask.close()
