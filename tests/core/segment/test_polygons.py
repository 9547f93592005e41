from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr, osr
from rasterio.transform import from_origin

from core.progress import Cancelled
from core.segment.polygons import polygonize_mask, raster_area_m2
from tests.rasters import write_raster


def _mask() -> np.ndarray:
    """Three panels (1) of 20, 100 (an L of 10x12 minus 4x5) and 1 pixel, background (0)
    and a nodata block (255) touching the first panel."""
    m = np.zeros((60, 80), np.uint8)
    m[5:9, 5:10] = 1  # 4 x 5 = 20 px
    m[20:30, 30:42] = 1
    m[20:24, 37:42] = 0  # L-shape: 120 - 20 = 100 px
    m[50, 70] = 1  # 1 px
    m[9:15, 5:20] = 255  # nodata right below the first panel: not a panel
    return m


def _features(path: Path) -> tuple[list[dict], osr.SpatialReference]:
    ds = ogr.Open(str(path))
    layer = ds.GetLayerByName("panels")
    rows = [
        {
            "area_m2": f.GetField("area_m2"),
            "area_ha": f.GetField("area_ha"),
            "geom_area": f.GetGeometryRef().GetArea(),
        }
        for f in layer
    ]
    return rows, layer.GetSpatialRef().Clone()


def test_polygons_have_the_source_crs_and_pixel_exact_areas(tmp_path):
    mask = write_raster(
        tmp_path / "mask.tif",
        _mask(),
        crs="EPSG:32618",
        transform=from_origin(790000, 2050000, 10, 10),
        nodata=255,
    )
    summary = polygonize_mask(mask, tmp_path / "panels.gpkg")
    rows, srs = _features(tmp_path / "panels.gpkg")
    assert srs.GetAuthorityCode(None) == "32618"
    assert summary.count == len(rows) == 3
    areas = sorted(r["area_m2"] for r in rows)
    assert areas == pytest.approx([100.0, 2000.0, 10_000.0])  # pixels x 100 m²
    assert all(r["area_ha"] == pytest.approx(r["area_m2"] / 10_000) for r in rows)
    assert summary.area_m2 == pytest.approx(12_100.0) and summary.area_ha == pytest.approx(1.21)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "panels.gpkg"]  # no scratch


def test_min_area_filter_drops_small_polygons(tmp_path):
    mask = write_raster(
        tmp_path / "mask.tif",
        _mask(),
        crs="EPSG:32618",
        transform=from_origin(790000, 2050000, 10, 10),
        nodata=255,
    )
    summary = polygonize_mask(mask, tmp_path / "big.gpkg", min_area_m2=2000.0)
    rows, _ = _features(tmp_path / "big.gpkg")
    assert summary.count == 2 and sorted(r["area_m2"] for r in rows) == pytest.approx(
        [2000.0, 10_000.0]
    )
    summary = polygonize_mask(mask, tmp_path / "biggest.gpkg", min_area_m2=2000.1)
    assert summary.count == 1 and summary.area_m2 == pytest.approx(10_000.0)


def test_feet_units_are_converted_to_square_metres(tmp_path):
    # NAD83 / California zone 3 (ftUS): a 1 x 1 ft pixel is 0.0929 m²
    mask = write_raster(
        tmp_path / "mask.tif",
        _mask(),
        crs="EPSG:2227",
        transform=from_origin(6e6, 2e6, 1, 1),
        nodata=255,
    )
    summary = polygonize_mask(mask, tmp_path / "p.gpkg")
    assert summary.area_m2 == pytest.approx(121 * 0.3048006096**2, rel=1e-6)


def test_geographic_crs_areas_are_measured_on_an_equal_area_projection(tmp_path):
    """Degrees in, square metres out: compare with the same polygons measured in their
    UTM zone (conformal, scale error < 0.1 %)."""
    deg = 0.0001  # ~11 m at 45° N
    mask = write_raster(
        tmp_path / "mask.tif",
        _mask(),
        crs="EPSG:4326",
        transform=from_origin(9.0, 45.5, deg, deg),
        nodata=255,
    )
    summary = polygonize_mask(mask, tmp_path / "p.gpkg")
    rows, srs = _features(tmp_path / "p.gpkg")
    assert srs.GetAuthorityCode(None) == "4326"
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32632)
    for s in (srs, utm):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_utm = osr.CoordinateTransformation(srs, utm)
    ds = ogr.Open(str(tmp_path / "p.gpkg"))
    for feature in ds.GetLayerByName("panels"):
        g = feature.GetGeometryRef().Clone()
        g.Transform(to_utm)
        assert feature.GetField("area_m2") == pytest.approx(g.GetArea(), rel=2e-3)
    # 121 pixels of about 7.8 m x 11.1 m at 45.5° N
    assert summary.area_m2 == pytest.approx(
        121 * 0.0001 * 111_320 * np.cos(np.radians(45.497)) * 0.0001 * 111_132, rel=5e-3
    )
    assert raster_area_m2(srs.ExportToWkt(), (9.0, deg, 0, 45.5, 0, -deg), 80, 60) == pytest.approx(
        summary.area_m2 / 121 * 80 * 60, rel=1e-3
    )


def test_web_mercator_areas_are_ground_areas(tmp_path):
    # A 10 m Web Mercator pixel at 60° N covers only 5 m x 5 m of ground.
    y = 8_399_737.89  # 60° N in EPSG:3857
    mask = write_raster(
        tmp_path / "mask.tif",
        _mask(),
        crs="EPSG:3857",
        transform=from_origin(1_000_000, y, 10, 10),
        nodata=255,
    )
    summary = polygonize_mask(mask, tmp_path / "p.gpkg")
    assert summary.area_m2 == pytest.approx(121 * 100 * np.cos(np.radians(60.0)) ** 2, rel=1e-2)


def test_raster_area_of_a_projected_grid():
    wkt = osr.SpatialReference()
    wkt.ImportFromEPSG(32618)
    assert raster_area_m2(wkt.ExportToWkt(), (0, 5, 0, 0, 0, -5), 515, 403) == pytest.approx(
        515 * 403 * 25
    )


def test_cancel_while_polygonizing(tmp_path):
    mask = write_raster(tmp_path / "mask.tif", _mask(), nodata=255)
    with pytest.raises(Cancelled):
        polygonize_mask(mask, tmp_path / "p.gpkg", cancel=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]
