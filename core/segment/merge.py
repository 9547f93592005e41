"""All scenes' panel polygons in one GeoPackage, each plant counted once.

Scenes of a large job overlap (neighbouring tiles of a grid, or images of the same area
from different dates), so the same plant can be segmented in two or more scenes. The
rule implemented here:

1. **Owner.** A polygon found in scene S is *owned* when, among all the scenes whose
   footprint contains the polygon's centroid, S is the one where that centroid lies
   farthest from the scene's edge (distance in metres, on each scene's own grid; ties
   go to the scene listed first). A plant seen by scenes A and B has nearly the same
   centroid in both, so one copy is owned: the one from the scene that saw the plant
   with the most context around it (least cut by an edge, least affected by the
   reflect padding at raster borders).
2. **Once.** Polygons that are away from every other scene's footprint are kept as
   they are. The others (*contested*) are taken owned first, then the rest, each in
   scene order; one is kept unless it overlaps (by more than 1 % of the smaller
   polygon's area) a polygon already kept from another scene. So the owned copy wins;
   a copy whose centroid fell on the other side of the equidistant line from its twin
   (both or neither owned) is still kept exactly once; and a plant found only by a
   scene that is not the deepest one there is kept too.

Polygons are never cut or dissolved, so each keeps its own scene, shape and area.
Polygons of one scene never compete with each other. Scenes without georeferencing
keep all their polygons.

The merged layer is in the scenes' CRS when they all share one, else in EPSG:4326.
Fields: ``scene`` (the scene's name: its output folder), ``area_m2`` and ``area_ha``
(copied from the scene's own ``panels.gpkg``, where they were measured in metres).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..data.rasters import RasterError
from .polygons import LAYER_NAME, _scratch_gpkg, _srs_from_wkt

# Metres per degree of latitude (mean): a geographic scene's pixel size in metres.
METRES_PER_DEGREE = 111_320.0


@dataclass
class SceneFootprint:
    """A finished scene: its name, its polygons and its grid."""

    name: str
    polygons: Path
    width: int
    height: int
    crs_wkt: str | None
    geotransform: tuple[float, ...] | None


@dataclass
class MergeSummary:
    path: Path
    count: int  # polygons kept
    area_m2: float
    kept: dict[str, int]  # scene name -> polygons of that scene kept


class _Grid:
    """A georeferenced scene's grid: depth of a point below the scene's edge."""

    def __init__(self, scene: SceneFootprint):
        from osgeo import osr

        self.scene = scene
        self.srs = _srs_from_wkt(scene.crs_wkt)
        gt = scene.geotransform
        self.gt = gt
        det = gt[1] * gt[5] - gt[2] * gt[4]
        self.inv = (gt[5] / det, -gt[2] / det, -gt[4] / det, gt[1] / det)
        pixel = math.sqrt(abs(det))  # CRS units per pixel side
        if self.srs.IsGeographic():
            lat = gt[3] + gt[5] * scene.height / 2
            pixel *= METRES_PER_DEGREE * math.sqrt(max(math.cos(math.radians(lat)), 1e-6))
        else:
            pixel *= float(self.srs.GetLinearUnits())
        self.pixel_m = pixel
        self.unit_m = pixel / math.sqrt(abs(det))  # metres per CRS unit (about)
        wgs84 = osr.SpatialReference()
        wgs84.ImportFromEPSG(4326)
        wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        self.to_wgs84 = osr.CoordinateTransformation(self.srs, wgs84)
        corners = [(0, 0), (scene.width, 0), (0, scene.height), (scene.width, scene.height)]
        corners += [(scene.width / 2, 0), (scene.width / 2, scene.height)]
        corners += [(0, scene.height / 2), (scene.width, scene.height / 2)]
        lonlat = [self.to_wgs84.TransformPoint(*self.xy(c, r))[:2] for c, r in corners]
        lons, lats = zip(*lonlat, strict=True)
        margin = 0.01  # degrees: footprints are curved in lon/lat; a generous box
        self.bbox = (min(lons) - margin, min(lats) - margin, max(lons) + margin, max(lats) + margin)

    def xy(self, col: float, row: float) -> tuple[float, float]:
        gt = self.gt
        return gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]

    def signed_depth_m(self, x: float, y: float) -> float:
        """Distance in metres from (x, y) (this scene's CRS) to the nearest scene edge,
        negative outside the scene."""
        dx, dy = x - self.gt[0], y - self.gt[3]
        col = self.inv[0] * dx + self.inv[1] * dy
        row = self.inv[2] * dx + self.inv[3] * dy
        w, h = self.scene.width, self.scene.height
        return min(col, w - col, row, h - row) * self.pixel_m

    def depth_m(self, x: float, y: float) -> float | None:
        """Distance in metres from (x, y) (this scene's CRS) to the nearest scene edge;
        None when the point is outside the scene."""
        dx, dy = x - self.gt[0], y - self.gt[3]
        col = self.inv[0] * dx + self.inv[1] * dy
        row = self.inv[2] * dx + self.inv[3] * dy
        w, h = self.scene.width, self.scene.height
        if not (0 <= col <= w and 0 <= row <= h):
            return None
        return min(col, w - col, row, h - row) * self.pixel_m


def _common_srs(grids: list[_Grid]):
    from osgeo import osr

    if grids and all(g.srs.IsSame(grids[0].srs) for g in grids[1:]):
        return grids[0].srs
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return wgs84


# A contested polygon is dropped when it overlaps a kept one by more than this share of
# the smaller polygon's area.
OVERLAP_SHARE = 0.01


def merge_scene_polygons(scenes: list[SceneFootprint], out_path: str | Path) -> MergeSummary:
    """Write every scene's kept polygons (see the module docstring) to ``out_path``
    (replaced atomically: built under a scratch name, renamed when closed)."""
    from osgeo import ogr, osr

    out_path = Path(out_path)
    georef = [s for s in scenes if s.crs_wkt and s.geotransform]
    grids = {s.name: _Grid(s) for s in georef}
    srs = _common_srs(list(grids.values())) if grids else None
    transforms: dict[tuple[str, str], object] = {}
    index = {s.name: i for i, s in enumerate(scenes)}

    def transform(src: _Grid, dst_srs, key: str):
        if (src.scene.name, key) not in transforms:
            transforms[src.scene.name, key] = osr.CoordinateTransformation(src.srs, dst_srs)
        return transforms[src.scene.name, key]

    def classify(scene: SceneFootprint, geom) -> tuple[bool, bool]:
        """(owned, contested) for a polygon of ``scene`` (its own CRS)."""
        grid = grids.get(scene.name)
        if grid is None:
            return True, False
        c = geom.Centroid()
        x, y = c.GetX(), c.GetY()
        own = grid.depth_m(x, y)
        best, best_depth = scene.name, 0.0 if own is None else own
        x0, x1, y0, y1 = geom.GetEnvelope()
        reach = math.hypot(x1 - x0, y1 - y0) * grid.unit_m  # metres, generous
        lon, lat = grid.to_wgs84.TransformPoint(x, y)[:2]
        contested = False
        for other in georef:
            if other.name == scene.name:
                continue
            g = grids[other.name]
            b = g.bbox
            if not (b[0] <= lon <= b[2] and b[1] <= lat <= b[3]):
                continue
            ox, oy = transform(grid, g.srs, other.name).TransformPoint(x, y)[:2]
            depth = g.signed_depth_m(ox, oy)
            if depth > -reach:
                contested = True
            if depth >= 0 and (
                depth > best_depth or (depth == best_depth and index[other.name] < index[best])
            ):
                best, best_depth = other.name, depth
        return best == scene.name, contested

    kept = {s.name: 0 for s in scenes}
    driver = ogr.GetDriverByName("GPKG")
    count, total = 0, 0.0
    with _scratch_gpkg(out_path) as scratch:
        out = driver.CreateDataSource(str(scratch))
        if out is None:
            raise RasterError(f"{out_path}: cannot create GeoPackage")
        layer = out.CreateLayer(LAYER_NAME, srs=srs, geom_type=ogr.wkbPolygon)
        layer.CreateField(ogr.FieldDefn("scene", ogr.OFTString))
        for name in ("area_m2", "area_ha"):
            layer.CreateField(ogr.FieldDefn(name, ogr.OFTReal))
        defn = layer.GetLayerDefn()

        def write(scene_name: str, geom, area: float) -> None:
            nonlocal count, total
            new = ogr.Feature(defn)
            new.SetGeometry(geom)
            new.SetField("scene", scene_name)
            new.SetField("area_m2", area)
            new.SetField("area_ha", area / 10_000.0)
            if layer.CreateFeature(new) != 0:
                raise RasterError(f"{out_path}: writing a polygon failed")
            kept[scene_name] += 1
            count += 1
            total += area

        # (not owned, scene index, order, scene, geometry in the output CRS, area)
        contested: list[tuple[int, int, int, str, object, float]] = []
        layer.StartTransaction()
        for scene in scenes:
            src = ogr.Open(str(scene.polygons))
            if src is None:
                raise RasterError(f"{scene.polygons}: cannot open the scene's polygons")
            src_layer = src.GetLayer(LAYER_NAME) or src.GetLayer(0)
            grid = grids.get(scene.name)
            to_out = (
                transform(grid, srs, "<out>") if grid is not None and not grid.srs.IsSame(srs)
                else None
            )  # fmt: skip
            for feat in src_layer:
                geom = feat.GetGeometryRef()
                if geom is None:
                    continue
                owned, is_contested = classify(scene, geom)
                geom = geom.Clone()
                if to_out is not None and geom.Transform(to_out) != 0:
                    raise RasterError(f"{scene.polygons}: cannot reproject a polygon")
                area = float(feat.GetField("area_m2"))
                if is_contested:
                    item = (int(not owned), index[scene.name], len(contested), scene.name)
                    contested.append((*item, geom, area))
                else:
                    write(scene.name, geom, area)
            src = src_layer = None
        for scene_name, geom, area in _once(contested):
            write(scene_name, geom, area)
        if layer.CommitTransaction() != 0:
            raise RasterError(f"{out_path}: writing polygons failed")
        layer = out = None  # close (flush)
        os.replace(scratch, out_path)
    return MergeSummary(path=out_path, count=count, area_m2=total, kept=kept)


def _once(contested: list[tuple]) -> list[tuple[str, object, float]]:
    """Step 2 of the rule: contested polygons, owned first, each kept unless it overlaps
    one already kept from another scene."""
    contested.sort(key=lambda c: c[:3])
    cells: dict[tuple[int, int], list[int]] = {}
    accepted: list[tuple[str, object, float]] = []
    envelopes = [c[4].GetEnvelope() for c in contested]
    spans = [max(e[1] - e[0], e[3] - e[2]) for e in envelopes]
    cell = max(sorted(spans)[len(spans) // 2] * 4, 1e-9) if spans else 1.0

    def keys(e):
        for i in range(int(e[0] // cell), int(e[1] // cell) + 1):
            for j in range(int(e[2] // cell), int(e[3] // cell) + 1):
                yield i, j

    for (_, _, _, scene_name, geom, area), env in zip(contested, envelopes, strict=True):
        g_area = geom.GetArea()
        seen: set[int] = set()
        clash = False
        for k in keys(env):
            for a in cells.get(k, ()):
                if a in seen:
                    continue
                seen.add(a)
                other_scene, other, _ = accepted[a]
                if other_scene == scene_name or not geom.Intersects(other):
                    continue
                inter = geom.Intersection(other)  # may be lines or points (touching)
                share = inter.GetArea() if inter is not None and inter.GetDimension() == 2 else 0.0
                if share > OVERLAP_SHARE * min(g_area, other.GetArea()):
                    clash = True
                    break
            if clash:
                break
        if clash:
            continue
        accepted.append((scene_name, geom, area))
        for k in keys(env):
            cells.setdefault(k, []).append(len(accepted) - 1)
    return accepted
