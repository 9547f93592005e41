"""Plant-level results of a segmented scene against reference polygons
(``python -m core segment ... --reference POLYGONS``).

The reference polygons (any CRS, any format OGR reads) are grouped into plants and
burnt onto the scene's grid with the chips' rules (:mod:`core.labels.vectors`: pixel
centre unless all touched; plants by a field or touching polygons), then matched with
the predicted mask by :func:`core.evaluation.plants.match_plants` (found when at least
half covered; a predicted object touching no plant is a false detection). Nodata pixels
(mask value 255) are neither plant nor prediction.

Writes ``plants.csv`` (one row per plant, missed first) and ``plants.gpkg`` with two
layers in the scene's CRS: ``plants`` (the reference polygons with their plant's
``found``, ``coverage``, ``iou``, ``reference_ha``, ``predicted_ha``) and
``false_detections`` (the predicted objects that overlap no plant, 8-connected, with
``area_ha``). Plants whose polygons cover no valid pixel of the scene are left out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.rasters import RasterError, open_raster, reading
from ..evaluation.plants import (
    PlantMetrics,
    connected_components,
    match_plants,
    pixel_areas_m2,
    write_plants_csv,
)
from ..labels.vectors import (
    LabelLayer,
    Plants,
    Polygon,
    RasterGrid,
    burn_plants,
    group_plants,
    srs_of,
)
from .options import ReferenceOptions
from .polygons import _scratch_gpkg, area_function

PLANTS_CSV = "plants.csv"
PLANTS_GPKG = "plants.gpkg"
MASK_NODATA = 255


def open_reference(reference: ReferenceOptions) -> LabelLayer:
    """The reference layer, checked (file, layer, CRS, field, filter: one-line errors)."""
    return LabelLayer(reference.path, reference.layer, reference.where, reference.group_field)


def score_scene(
    mask_path: str | Path,
    reference: ReferenceOptions,
    csv_path: str | Path,
    gpkg_path: str | Path,
    name: str = "",
) -> PlantMetrics:
    """Match the scene's mask with the reference plants; write the CSV and GeoPackage."""
    mask_path = Path(mask_path)
    layer = open_reference(reference)
    with open_raster(mask_path) as src:
        if src.crs is None:
            raise RasterError(f"{mask_path}: the scene has no CRS, so reference polygons "
                              "cannot be placed on it")  # fmt: skip
        grid = RasterGrid(src.crs.to_wkt(), tuple(src.transform.to_gdal()), src.width,
                          src.height, name or str(mask_path))  # fmt: skip
        with reading(mask_path):
            mask = src.read(1)
    valid = mask != MASK_NODATA
    predicted = (mask == 1) & valid
    polygons = layer.polygons_near(grid)
    plants = group_plants(polygons, by_field=reference.group_field is not None)
    burnt = burn_plants(polygons, plants, layer.srs, grid, reference.all_touched)
    areas, note = pixel_areas_m2(grid.crs_wkt, grid.geotransform, grid.height, grid.width)
    result = match_plants(burnt, predicted, valid, areas, plants.names, name, note)
    write_plants_csv(result, csv_path)
    objects, _ = connected_components(predicted)
    touched = np.unique(objects[(burnt > 0) & valid & (objects > 0)])
    false_objects = np.where(np.isin(objects, touched), 0, objects)
    _write_gpkg(gpkg_path, grid, layer, polygons, plants, result, false_objects)
    return result


def _write_gpkg(
    path: str | Path,
    grid: RasterGrid,
    layer: LabelLayer,
    polygons: list[Polygon],
    plants: Plants,
    result: PlantMetrics,
    false_objects: np.ndarray,
) -> None:
    """plants.gpkg: the reference polygons with their plant's result, and the false
    detections as polygons (built under a scratch .gpkg name, renamed at the end)."""
    from osgeo import gdal, ogr, osr

    target = srs_of(grid.crs_wkt)
    to_grid = osr.CoordinateTransformation(layer.srs, target)
    gx, gy = grid.geotransform[0], grid.geotransform[3]
    area_of = area_function(grid.crs_wkt, (gx, gy))
    rows = {r.id: r for r in result.rows}
    path = Path(path)
    with _scratch_gpkg(path) as scratch:
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(scratch))
        if ds is None:
            raise RasterError(f"{path}: cannot create GeoPackage ({gdal.GetLastErrorMsg()})")
        out = ds.CreateLayer("plants", srs=target, geom_type=ogr.wkbMultiPolygon)
        for fname, ftype in (("plant", ogr.OFTString), ("found", ogr.OFTInteger),
                             ("coverage", ogr.OFTReal), ("iou", ogr.OFTReal),
                             ("reference_ha", ogr.OFTReal), ("predicted_ha", ogr.OFTReal),
                             ("source_fid", ogr.OFTInteger64)):  # fmt: skip
            out.CreateField(ogr.FieldDefn(fname, ftype))
        defn = out.GetLayerDefn()
        out.StartTransaction()
        for p in polygons:
            row = rows.get(plants.names[plants.plant_of[p.fid]])
            if row is None:
                continue
            g = p.geometry.Clone()
            g.Transform(to_grid)
            f = ogr.Feature(defn)
            f.SetGeometry(ogr.ForceToMultiPolygon(g))
            for k, v in (("plant", row.id), ("found", int(row.found)), ("coverage", row.coverage),
                         ("iou", row.iou), ("reference_ha", row.reference_ha),
                         ("predicted_ha", row.predicted_ha), ("source_fid", p.fid)):  # fmt: skip
                f.SetField(k, v)
            out.CreateFeature(f)
        out.CommitTransaction()
        false_layer = ds.CreateLayer("false_detections", srs=target, geom_type=ogr.wkbPolygon)
        false_layer.CreateField(ogr.FieldDefn("object", ogr.OFTInteger))
        if false_objects.any():
            mem = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Int32)
            mem.SetGeoTransform(grid.geotransform)
            mem.SetProjection(grid.crs_wkt)
            band = mem.GetRasterBand(1)
            band.WriteArray(false_objects.astype(np.int32))
            false_layer.StartTransaction()
            gdal.Polygonize(band, band, false_layer, 0, ["8CONNECTED=8"])
            false_layer.CommitTransaction()
        false_layer.CreateField(ogr.FieldDefn("area_ha", ogr.OFTReal))
        false_layer.StartTransaction()
        false_layer.ResetReading()
        for f in false_layer:
            f.SetField("area_ha", area_of(f.GetGeometryRef()) / 10_000)
            false_layer.SetFeature(f)
        false_layer.CommitTransaction()
        ds = out = false_layer = None
        os.replace(scratch, path)
