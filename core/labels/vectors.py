"""Reference polygons: read a vector layer, group polygons into plants, and burn them
onto a raster's grid.

Any vector format GDAL/OGR reads works (GeoPackage, Shapefile, GeoJSON...), in any
CRS: each polygon is reprojected onto the raster's CRS before it is rasterised there.
The library is GDAL's own ``osgeo.ogr``/``osr`` (the GDAL the engine already reads
rasters with; fiona, pyogrio and shapely are not installed, and nothing new is needed).

**Pixel rule.** By default a pixel belongs to a polygon when its *centre* lies inside
the polygon (GDAL's rasterize default); with ``all_touched`` every pixel the outline
touches is taken too. The pixel-centre rule neither grows nor shrinks a plant on
average; all-touched grows every outline by up to one pixel.

**Plants.** A plant is either the set of polygons sharing one value of a chosen field
(``group_field``, e.g. OSM's ``id``), or, without a field, a set of polygons that touch
or overlap each other (merged transitively). A polygon whose field is empty is its own
plant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingInputError, UserError


class LabelsError(UserError, ValueError):
    """The polygon layer cannot be used; the message names the file and the problem."""


@dataclass
class RasterGrid:
    """Where a raster's pixels lie: CRS (WKT), GDAL geotransform and size."""

    crs_wkt: str
    geotransform: tuple[float, ...]
    width: int
    height: int
    name: str = ""

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the grid in its own CRS (north-up or not)."""
        gt = self.geotransform
        xs, ys = [], []
        for c, r in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height)):
            xs.append(gt[0] + c * gt[1] + r * gt[2])
            ys.append(gt[3] + c * gt[4] + r * gt[5])
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class Polygon:
    """One reference feature: its FID, its field value and its geometry (labels CRS)."""

    fid: int
    key: str | None
    geometry: object  # ogr.Geometry, owned (a clone)


@dataclass
class Plants:
    """Polygons grouped into plants: ``plant_of[fid]`` is a 0-based plant index,
    ``names[i]`` the plant's name (its field value, or ``fid<N>`` of its first polygon)."""

    names: list[str]
    plant_of: dict[int, int] = field(default_factory=dict)


def srs_of(wkt: str):
    """An osr.SpatialReference in x=easting/longitude order."""
    from osgeo import osr

    srs = osr.SpatialReference()
    if srs.ImportFromWkt(wkt) != 0:
        raise InputError(f"cannot read the CRS {wkt[:60]}...")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def crs_name(srs) -> str:
    """``EPSG:32633`` when the CRS has an EPSG code, else its name."""
    auth, code = srs.GetAuthorityName(None), srs.GetAuthorityCode(None)
    return f"{auth}:{code}" if auth and code else (srs.GetName() or "unnamed CRS")


def fmt_extent(b: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


class LabelLayer:
    """An opened polygon layer with its CRS, optional attribute filter and group field.

    ``path`` may be ``file.gpkg`` with ``layer``, or ``file.gpkg|layername=NAME`` as
    QGIS writes it. Refuses a layer without a CRS, an unknown layer or field and a
    filter OGR cannot parse, each naming the file.
    """

    def __init__(
        self,
        path: str | Path,
        layer: str | None = None,
        where: str | None = None,
        group_field: str | None = None,
    ) -> None:
        self.ds = self.layer = None
        try:
            self._open(path, layer, where, group_field)
        except BaseException:
            # An exception's traceback keeps ``self`` alive, possibly until the
            # interpreter exits; GDAL handles must not outlive GDAL itself.
            self.close()
            raise

    def close(self) -> None:
        """Release the OGR handles, the layer before its data source (the bindings of
        GDAL 3.6 do not keep a data source alive for its layers)."""
        self.layer = None
        self.ds = None

    def __del__(self) -> None:
        self.close()

    def _open(self, path, layer, where, group_field) -> None:
        from osgeo import gdal, ogr

        text = str(path)
        m = re.match(r"^(.*)\|layername=(.+)$", text)
        if m and layer is None:
            text, layer = m.group(1), m.group(2)
        self.path = Path(text)
        if not self.path.exists():
            raise MissingInputError(f"{self.path}: polygon file not found", field="labels")
        gdal.ErrorReset()
        self.ds = ogr.Open(str(self.path))
        if self.ds is None:
            raise LabelsError(
                f"{self.path}: not a vector file GDAL can read ({gdal.GetLastErrorMsg() or 'no driver'})",
                field="labels",
            )
        names = [self.ds.GetLayerByIndex(i).GetName() for i in range(self.ds.GetLayerCount())]
        if layer is None:
            if len(names) != 1:
                raise LabelsError(
                    f"{self.path}: holds {len(names)} layers {names}; choose one with --layer",
                    field="layer",
                )
            layer = names[0]
        self.layer = self.ds.GetLayerByName(layer)
        if self.layer is None:
            raise LabelsError(f"{self.path}: no layer {layer!r}; layers: {names}", field="layer")
        self.layer_name = layer
        srs = self.layer.GetSpatialRef()
        if srs is None:
            raise LabelsError(
                f"{self.path}: layer {layer!r} has no CRS, so its polygons cannot be placed on "
                "the rasters; assign one (e.g. ogr2ogr -a_srs EPSG:4326)",
                field="labels",
            )
        srs = srs.Clone()
        from osgeo import osr

        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        self.srs = srs
        defn = self.layer.GetLayerDefn()
        self.fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        if group_field is not None and group_field not in self.fields:
            raise LabelsError(
                f"{self.path}: layer {layer!r} has no field {group_field!r}; fields: {self.fields}",
                field="group_field",
            )
        self.group_field = group_field
        self.where = where
        if where:
            # Some drivers (GeoPackage) only parse the filter when reading: read one.
            gdal.ErrorReset()
            gdal.PushErrorHandler("CPLQuietErrorHandler")
            try:
                err = self.layer.SetAttributeFilter(where)
                if err == 0:
                    self.layer.ResetReading()
                    self.layer.GetNextFeature()
                    self.layer.ResetReading()
                    err = int(gdal.GetLastErrorType() >= gdal.CE_Failure)
                msg = " ".join(gdal.GetLastErrorMsg().split())[:160]
            except RuntimeError as exc:
                err, msg = 1, str(exc)
            finally:
                gdal.PopErrorHandler()
            if err != 0:
                raise LabelsError(
                    f"{self.path}: filter {where!r} is not valid for layer {layer!r} ({msg})",
                    field="where",
                )

    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the (filtered) layer in its own CRS."""
        self.layer.SetSpatialFilter(None)
        xmin, xmax, ymin, ymax = self.layer.GetExtent(force=1)
        return xmin, ymin, xmax, ymax

    def count(self) -> int:
        self.layer.SetSpatialFilter(None)
        return int(self.layer.GetFeatureCount())

    def grid_bounds(self, grid: RasterGrid) -> tuple[float, float, float, float]:
        """A raster's extent in the layer's CRS (edges densified, so curved edges fit)."""
        from osgeo import osr

        to_layer = osr.CoordinateTransformation(srs_of(grid.crs_wkt), self.srs)
        xmin, ymin, xmax, ymax = to_layer.TransformBounds(*grid.bounds(), 21)
        return xmin, ymin, xmax, ymax

    def polygons_near(self, grid: RasterGrid) -> list[Polygon]:
        """The (filtered) polygons whose envelope meets the raster's extent."""
        xmin, ymin, xmax, ymax = self.grid_bounds(grid)
        self.layer.SetSpatialFilterRect(xmin, ymin, xmax, ymax)
        out = []
        self.layer.ResetReading()
        for feat in self.layer:
            geom = feat.GetGeometryRef()
            if geom is None or geom.IsEmpty():
                continue
            key = None
            if self.group_field is not None and feat.IsFieldSetAndNotNull(self.group_field):
                key = str(feat.GetField(self.group_field))
            out.append(Polygon(int(feat.GetFID()), key, geom.Clone()))
        self.layer.SetSpatialFilter(None)
        return out


def _natural(text: str) -> tuple:
    """Sort key putting ``fid2`` before ``fid10`` and ``9`` before ``10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def group_plants(polygons: list[Polygon], by_field: bool) -> Plants:
    """Group polygons into plants (see the module docstring).

    ``by_field``: polygons with the same key are one plant. Otherwise polygons that
    touch or overlap are merged transitively (union-find over envelope-prefiltered
    ``Intersects`` tests).
    """
    parent = {p.fid: p.fid for p in polygons}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    if by_field:
        first: dict[str, int] = {}
        for p in polygons:
            if p.key is not None:
                union(p.fid, first.setdefault(p.key, p.fid))
    else:
        envs = [(p, p.geometry.GetEnvelope()) for p in polygons]  # (minx, maxx, miny, maxy)
        envs.sort(key=lambda pe: pe[1][0])
        for i, (p, e) in enumerate(envs):
            for q, f in envs[i + 1 :]:
                if f[0] > e[1]:
                    break
                if f[2] <= e[3] and f[3] >= e[2] and p.geometry.Intersects(q.geometry):
                    union(p.fid, q.fid)
    members: dict[int, list[Polygon]] = {}
    for p in polygons:
        members.setdefault(find(p.fid), []).append(p)

    def name(ps: list[Polygon]) -> str:
        keys = sorted({p.key for p in ps if p.key is not None}, key=_natural)
        return keys[0] if by_field and keys else f"fid{min(p.fid for p in ps)}"

    named = sorted(((name(ps), ps) for ps in members.values()), key=lambda t: _natural(t[0]))
    plants = Plants(names=[n for n, _ in named])
    for i, (_, ps) in enumerate(named):
        for p in ps:
            plants.plant_of[p.fid] = i
    return plants


def burn_plants(
    polygons: list[Polygon],
    plants: Plants,
    layer_srs,
    grid: RasterGrid,
    all_touched: bool = False,
) -> np.ndarray:
    """int32 (H, W) array on ``grid``: 0 background, ``i + 1`` for pixels of plant ``i``.

    Each polygon is reprojected from ``layer_srs`` to the grid's CRS and burnt with
    ``gdal.RasterizeLayer`` (pixel centre, or all touched). Where polygons of two
    plants overlap, the later plant in ``plants.names`` order wins the pixel; the
    binary mask (value > 0) does not depend on that order.
    """
    from osgeo import gdal, ogr, osr

    target = srs_of(grid.crs_wkt)
    transform = osr.CoordinateTransformation(layer_srs, target)
    mem = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(grid.geotransform)
    mem.SetProjection(grid.crs_wkt)
    vec = ogr.GetDriverByName("Memory").CreateDataSource("plants")
    lyr = vec.CreateLayer("plants", srs=target, geom_type=ogr.wkbMultiPolygon)
    lyr.CreateField(ogr.FieldDefn("plant", ogr.OFTInteger))
    defn = lyr.GetLayerDefn()
    for p in sorted(polygons, key=lambda p: (plants.plant_of[p.fid], p.fid)):
        g = p.geometry.Clone()
        if g.Transform(transform) != 0:
            raise LabelsError(f"polygon fid {p.fid} cannot be reprojected to {crs_name(target)}")
        f = ogr.Feature(defn)
        f.SetGeometry(g)
        f.SetField("plant", plants.plant_of[p.fid] + 1)
        lyr.CreateFeature(f)
    options = ["ATTRIBUTE=plant"] + (["ALL_TOUCHED=TRUE"] if all_touched else [])
    gdal.ErrorReset()
    err = gdal.RasterizeLayer(mem, [1], lyr, options=options)
    if err != 0:
        raise LabelsError(
            f"{grid.name}: rasterising the polygons failed ({gdal.GetLastErrorMsg()})"
        )
    return mem.GetRasterBand(1).ReadAsArray().astype(np.int32)
