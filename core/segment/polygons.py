"""Panel polygons from the mask raster, written to a GeoPackage in the source CRS.

``gdal.Polygonize`` traces 4-connected regions of mask value 1 (panel) straight from the
mask GeoTIFF, reading it line by line, so memory depends on the polygons, not on the
raster. Background (0) and nodata (255) pixels are excluded through a VRT lookup table
used as the polygonize mask, so no huge background polygon is ever built.

Each polygon gets ``area_m2`` and ``area_ha``. Areas are in metres whatever the CRS:

- projected CRS: planar area in the CRS times the square of its linear unit (metres,
  feet, ...). For UTM and similar conformal zones this is the ground area to within the
  projection's scale error (<= 0.1 %), and equals pixel count x pixel area;
- geographic CRS (degrees), and Mercator / Web Mercator (whose planar areas are
  inflated by 1/cos^2(latitude)): the polygon is reprojected to a Lambert azimuthal
  equal-area projection centred on the raster (on the CRS's own datum) and measured
  there. Equal-area means the area is exact wherever the polygon lies; only shapes
  distort far from the centre;
- no CRS: the transform's units are assumed to be metres.

Polygons smaller than ``min_area_m2`` are dropped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from ..errors import RasterError
from ..progress import CancelFn, Cancelled, never_cancel
from .writers import gdal_call

LAYER_NAME = "panels"

AreaFn = Callable[["object"], float]  # ogr.Geometry -> square metres


@dataclass
class PolygonSummary:
    """What was written: number of polygons kept and their total area."""

    path: Path
    count: int
    area_m2: float

    @property
    def area_ha(self) -> float:
        return self.area_m2 / 10_000.0


def _srs_from_wkt(wkt: str | None):
    from osgeo import osr

    if not wkt:
        return None
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(wkt) != 0:
        raise RasterError(f"cannot read the raster's CRS: {wkt[:80]}...")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # x = easting/longitude
    return srs


def _needs_equal_area(srs) -> bool:
    if srs.IsGeographic():
        return True
    projection = (srs.GetAttrValue("PROJECTION") or "").lower()
    return "mercator" in projection and not any(k in projection for k in ("transverse", "oblique"))


def area_function(crs_wkt: str | None, center_xy: tuple[float, float]) -> AreaFn:
    """geometry -> area in m² for geometries in ``crs_wkt`` (see module docstring).

    ``center_xy`` is the raster centre in CRS coordinates; it centres the equal-area
    projection used for geographic and Mercator CRSs.
    """
    from osgeo import osr

    srs = _srs_from_wkt(crs_wkt)
    if srs is None:
        return lambda geom: float(geom.GetArea())
    if not _needs_equal_area(srs):
        factor = float(srs.GetLinearUnits()) ** 2
        return lambda geom: float(geom.GetArea()) * factor
    geog = srs.CloneGeogCS()
    geog.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat = center_xy
    if not srs.IsGeographic():
        lon, lat, _ = osr.CoordinateTransformation(srs, geog).TransformPoint(*center_xy)
    laea = osr.SpatialReference()
    laea.CopyGeogCSFrom(geog)
    laea.SetLAEA(lat, lon, 0.0, 0.0)
    laea.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_laea = osr.CoordinateTransformation(srs, laea)

    def area(geom) -> float:
        g = geom.Clone()
        if g.Transform(to_laea) != 0:
            raise RasterError("cannot reproject a polygon to measure its area")
        return float(g.GetArea())

    return area


def raster_area_m2(
    crs_wkt: str | None, geotransform: tuple[float, ...] | None, width: int, height: int
) -> float:
    """Ground area of a raster's footprint in m² (same rules as polygon areas)."""
    from osgeo import ogr

    gt = geotransform or (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

    def xy(col: float, row: float) -> tuple[float, float]:
        return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]

    ring = ogr.Geometry(ogr.wkbLinearRing)
    n = 16  # densify edges: footprint edges are curves in an equal-area projection
    edge = [(i / n, 0) for i in range(n)] + [(1, i / n) for i in range(n)]
    edge += [(1 - i / n, 1) for i in range(n)] + [(0, 1 - i / n) for i in range(n)]
    for fx, fy in [*edge, edge[0]]:
        ring.AddPoint_2D(*xy(fx * width, fy * height))
    footprint = ogr.Geometry(ogr.wkbPolygon)
    footprint.AddGeometry(ring)
    return area_function(crs_wkt, xy(width / 2, height / 2))(footprint)


def _panel_only_vrt(mask_path: Path, width: int, height: int) -> str:
    """VRT XML: 1 where the mask is 1, 0 for background (0) and nodata (255)."""
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        '<VRTRasterBand dataType="Byte" band="1"><ComplexSource>'
        f'<SourceFilename relativeToVRT="0">{escape(str(mask_path))}</SourceFilename>'
        "<SourceBand>1</SourceBand><LUT>0:0,1:1,2:0,255:0</LUT>"
        "</ComplexSource></VRTRasterBand></VRTDataset>"
    )


@contextlib.contextmanager
def _scratch_gpkg(near: Path) -> Iterator[Path]:
    """A hidden scratch GeoPackage path beside ``near``, removed afterwards."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{near.name}.", suffix=".scratch.gpkg", dir=near.parent)
    os.close(fd)
    os.unlink(name)  # GDAL must create the SQLite file itself
    path = Path(name)
    try:
        yield path
    finally:
        for p in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)


def polygonize_mask(
    mask_path: str | Path,
    out_path: str | Path,
    min_area_m2: float = 0.0,
    cancel: CancelFn = never_cancel,
    progress: Callable[[float], None] | None = None,
) -> PolygonSummary:
    """Write the panel polygons of ``mask_path`` (1 = panel) to a new GeoPackage.

    ``out_path`` must not exist yet or be an empty placeholder (the engine passes a
    fresh temporary name). The GeoPackage is built under a ``.gpkg`` scratch name (the
    GPKG driver wants that extension) and renamed to ``out_path`` once closed. Raises
    :class:`Cancelled` when ``cancel()`` becomes true during polygonizing.
    """
    from osgeo import gdal, ogr

    mask_path, out_path = Path(mask_path), Path(out_path)
    if out_path.exists() and out_path.stat().st_size:
        raise ValueError(f"{out_path}: already exists")
    if min_area_m2 < 0:
        raise ValueError(f"minimum area must be >= 0 m², got {min_area_m2}")
    src = gdal_call(lambda: gdal.Open(str(mask_path)), "opening mask", mask_path)
    if src is None:
        raise RasterError(f"{mask_path}: cannot open mask ({gdal.GetLastErrorMsg()})")
    width, height = src.RasterXSize, src.RasterYSize
    gt = src.GetGeoTransform()
    crs_wkt = src.GetProjection() or None
    srs = _srs_from_wkt(crs_wkt)
    center = (
        gt[0] + gt[1] * width / 2 + gt[2] * height / 2,
        gt[3] + gt[4] * width / 2 + gt[5] * height / 2,
    )
    area_of = area_function(crs_wkt, center)
    only_panels = gdal.Open(_panel_only_vrt(mask_path, width, height))
    if only_panels is None:
        raise RasterError(f"{mask_path}: cannot build the panel mask ({gdal.GetLastErrorMsg()})")

    last = [-1.0]

    def callback(fraction: float, _msg: str, _data: object) -> int:
        if progress is not None and (fraction >= last[0] + 0.02 or fraction >= 1.0 > last[0]):
            last[0] = fraction
            progress(fraction)
        return 0 if cancel() else 1

    driver = ogr.GetDriverByName("GPKG")
    with _scratch_gpkg(out_path) as scratch_path, _scratch_gpkg(out_path) as final_path:
        scratch = driver.CreateDataSource(str(scratch_path))
        if scratch is None:
            raise RasterError(f"{scratch_path}: cannot create GeoPackage")
        raw = scratch.CreateLayer("raw", srs=srs, geom_type=ogr.wkbPolygon)
        raw.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
        raw.StartTransaction()
        err = gdal.Polygonize(
            src.GetRasterBand(1), only_panels.GetRasterBand(1), raw, 0, [], callback=callback
        )
        raw.CommitTransaction()
        if cancel():
            raise Cancelled("cancelled by user")
        if err != 0:
            raise RasterError(f"{mask_path}: polygonizing failed ({gdal.GetLastErrorMsg()})")

        out = driver.CreateDataSource(str(final_path))
        if out is None:
            raise RasterError(f"{out_path}: cannot create GeoPackage ({gdal.GetLastErrorMsg()})")
        layer = out.CreateLayer(LAYER_NAME, srs=srs, geom_type=ogr.wkbPolygon)
        for name in ("area_m2", "area_ha"):
            layer.CreateField(ogr.FieldDefn(name, ogr.OFTReal))
        defn = layer.GetLayerDefn()
        count, total = 0, 0.0
        layer.StartTransaction()
        raw.ResetReading()
        for feat in raw:
            geom = feat.GetGeometryRef()
            area = area_of(geom)
            if area < min_area_m2:
                continue
            new = ogr.Feature(defn)
            new.SetGeometry(geom)
            new.SetField("area_m2", area)
            new.SetField("area_ha", area / 10_000.0)
            if layer.CreateFeature(new) != 0:
                raise RasterError(f"{out_path}: writing a polygon failed")
            count += 1
            total += area
        if layer.CommitTransaction() != 0:
            raise RasterError(f"{out_path}: writing polygons failed ({gdal.GetLastErrorMsg()})")
        raw = scratch = layer = out = None  # close (flush) both GeoPackages
        os.replace(final_path, out_path)
    return PolygonSummary(path=out_path, count=count, area_m2=total)
