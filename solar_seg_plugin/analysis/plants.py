"""Plant layers of a predicted split, for the error-analysis dock: the reference plants
(found or missed, with the engine's numbers from ``plants.csv``) and the false
detections, as polygons in one GeoPackage.

The engine counts plants (``predict-split`` writes ``plants.csv`` at the model's
threshold); here the same components are drawn: a tile's plants are the 8-connected
components of its valid reference pixels, numbered in row-major order of their first
pixel (``<tile>#k``, :func:`core.evaluation.plants.connected_components`, numpy only),
and a false detection is an 8-connected component of the predicted pixels
(``prob >= threshold``, valid) that touches no plant pixel. Polygons are traced with
QGIS's GDAL (``gdal.Polygonize``, 8-connected) on the tile's georeferencing (its own,
or its place on the synthetic grid) and written in one CRS: the first georeferenced
tile's, or the synthetic grid's when no tile has one (tiles without a CRS are then
left out of a split that has georeferenced ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from ..core.evaluation.plants import connected_components
from .rasters import GRID_CRS, TileGeoref

PLANTS_LAYER = "plants"
FALSE_LAYER = "false_detections"
PLANT_FIELDS = [("id", ogr.OFTString), ("tile", ogr.OFTString), ("found", ogr.OFTInteger),
                ("coverage", ogr.OFTReal), ("iou", ogr.OFTReal), ("reference_ha", ogr.OFTReal),
                ("predicted_ha", ogr.OFTReal)]  # fmt: skip
FALSE_FIELDS = [("tile", ogr.OFTString), ("object", ogr.OFTInteger), ("pixels", ogr.OFTInteger)]


@dataclass
class PlantLayers:
    path: Path
    plants: int  # plant features written
    false_detections: int
    crs_wkt: str


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.SetFromUserInput(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _polygons(labels: np.ndarray, georef: TileGeoref, wkt: str) -> dict[int, ogr.Geometry]:
    """label value -> (multi)polygon of its pixels, in the tile's CRS."""
    h, w = labels.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(georef.transform)
    mem.SetProjection(wkt)
    band = mem.GetRasterBand(1)
    band.WriteArray(labels.astype(np.int32))
    vec = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = vec.CreateLayer("p", srs=_srs(wkt), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    gdal.Polygonize(band, band, layer, 0, ["8CONNECTED=8"])
    out: dict[int, ogr.Geometry] = {}
    for f in layer:
        v, g = f.GetField(0), f.GetGeometryRef().Clone()
        out[v] = out[v].Union(g) if v in out else g
    return out


def write_plant_layers(
    path: Path,
    tiles: list,
    georefs: list[TileGeoref],
    rows: list[dict],
    threshold: float,
) -> PlantLayers:
    """Write ``path`` (a new GeoPackage) with the ``plants`` and ``false_detections``
    layers of ``tiles`` (``SplitTile``s) at ``threshold``; ``rows`` are the engine's
    plant rows (by id), whose numbers the plant features carry."""
    real = [g.crs for g in georefs if g.crs]
    target_wkt = real[0] if real else _srs(GRID_CRS).ExportToWkt()
    target = _srs(target_wkt)
    by_id = {str(r["id"]): r for r in rows}
    driver = ogr.GetDriverByName("GPKG")
    if path.exists():
        driver.DeleteDataSource(str(path))
    ds = driver.CreateDataSource(str(path))
    plants = ds.CreateLayer(PLANTS_LAYER, srs=target, geom_type=ogr.wkbMultiPolygon)
    false = ds.CreateLayer(FALSE_LAYER, srs=target, geom_type=ogr.wkbMultiPolygon)
    for name, kind in PLANT_FIELDS:
        plants.CreateField(ogr.FieldDefn(name, kind))
    for name, kind in FALSE_FIELDS:
        false.CreateField(ogr.FieldDefn(name, kind))
    n_plants = n_false = 0
    ds.StartTransaction()
    for tile, georef in zip(tiles, georefs, strict=True):
        if real and not georef.crs:
            continue
        wkt = georef.crs or target_wkt
        to_target = None if _srs(wkt).IsSame(target) else osr.CoordinateTransformation(
            _srs(wkt), target
        )  # fmt: skip
        valid = np.asarray(tile.valid, bool)
        ref_labels, _ = connected_components((np.asarray(tile.mask) > 0) & valid)
        pred = (np.asarray(tile.prob, np.float32) >= np.float32(threshold)) & valid
        obj_labels, _ = connected_components(pred)
        touching = np.unique(obj_labels[(ref_labels > 0) & (obj_labels > 0)])
        false_labels = np.where(np.isin(obj_labels, touching), 0, obj_labels)
        for k, geom in sorted(_polygons(ref_labels, georef, wkt).items()):
            pid = f"{tile.tile_id}#{k}"
            row = by_id.get(pid)
            f = ogr.Feature(plants.GetLayerDefn())
            f.SetField("id", pid)
            f.SetField("tile", str(tile.tile_id))
            if row is not None:
                f.SetField("found", int(bool(row["found"])))
                for key in ("coverage", "iou", "reference_ha", "predicted_ha"):
                    f.SetField(key, float(row[key]))
            if to_target is not None:
                geom.Transform(to_target)
            f.SetGeometry(ogr.ForceToMultiPolygon(geom))
            plants.CreateFeature(f)
            n_plants += 1
        for k, geom in sorted(_polygons(false_labels, georef, wkt).items()):
            f = ogr.Feature(false.GetLayerDefn())
            f.SetField("tile", str(tile.tile_id))
            f.SetField("object", int(k))
            f.SetField("pixels", int((false_labels == k).sum()))
            if to_target is not None:
                geom.Transform(to_target)
            f.SetGeometry(ogr.ForceToMultiPolygon(geom))
            false.CreateFeature(f)
            n_false += 1
    ds.CommitTransaction()
    ds = None
    return PlantLayers(path, n_plants, n_false, target_wkt)
