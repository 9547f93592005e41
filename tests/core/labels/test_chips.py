"""Chips from rasters + polygons: synthetic edge cases and the real Austria data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.cli.main import main
from core.config import SplitConfig
from core.data.discovery import find_dataset
from core.data.rasters import RasterError
from core.data.splits import check_leakage, split_pairs
from core.errors import InputError, UserError
from core.labels.chips import ChipSettings, OutputExistsError, make_chips, window_offsets
from core.labels.vectors import LabelsError
from core.progress import Cancelled
from tests.conftest import DATA
from tests.rasters import write_raster

AUSTRIA = DATA / "austria-pv"
X0, Y0 = 500000.0, 5300000.0  # upper-left corner of the synthetic UTM rasters


def utm_raster(path: Path, w: int = 20, h: int = 20, bands: int = 3, crs: str = "EPSG:32633",
               x0: float = X0, y0: float = Y0, nodata: float | None = -9999.0) -> Path:  # fmt: skip
    data = np.arange(bands * h * w, dtype=np.float32).reshape(bands, h, w) + 1
    return write_raster(path, data, crs=crs, transform=from_origin(x0, y0, 10, 10), nodata=nodata)


def pixel_box(c0: float, r0: float, c1: float, r1: float, x0: float = X0, y0: float = Y0):
    """Ring of a box given in pixel columns/rows of a 10 m grid at (x0, y0)."""
    return [(x0 + c0 * 10, y0 - r0 * 10), (x0 + c1 * 10, y0 - r0 * 10),
            (x0 + c1 * 10, y0 - r1 * 10), (x0 + c0 * 10, y0 - r1 * 10)]  # fmt: skip


def write_polygons(path: Path, rings: list, epsg: int | None = 32633, src_epsg: int = 32633,
                   fields: dict[str, list] | None = None, driver: str = "GPKG") -> Path:  # fmt: skip
    """Write polygons given in ``src_epsg`` coordinates into a layer in ``epsg``
    (None: no CRS at all)."""
    from osgeo import ogr, osr

    def srs(code: int):
        s = osr.SpatialReference()
        s.ImportFromEPSG(code)
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return s

    ds = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    lyr = ds.CreateLayer("plants", srs=srs(epsg) if epsg else None, geom_type=ogr.wkbPolygon)
    for name in fields or {}:
        lyr.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    tr = (
        osr.CoordinateTransformation(srs(src_epsg), srs(epsg))
        if epsg and epsg != src_epsg
        else None
    )
    for i, ring in enumerate(rings):
        r = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in [*ring, ring[0]]:
            r.AddPoint_2D(x, y)
        g = ogr.Geometry(ogr.wkbPolygon)
        g.AddGeometry(r)
        if tr is not None:
            g.Transform(tr)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(g)
        for name, values in (fields or {}).items():
            f.SetField(name, values[i])
        lyr.CreateFeature(f)
    ds = None
    return path


def manifest_rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


# --- windows -------------------------------------------------------------------------


def test_window_offsets_cover_the_edge_and_keep_small_sides_whole():
    assert window_offsets(67, 64, 64) == [(0, 64), (3, 64)]
    assert window_offsets(128, 64, 64) == [(0, 64), (64, 64)]
    assert window_offsets(100, 40, 30) == [(0, 40), (30, 40), (60, 40)]
    assert window_offsets(13, 64, 64) == [(0, 13)]


def test_raster_smaller_than_a_tile_is_one_whole_tile(tmp_path):
    src = utm_raster(tmp_path / "small.tif", w=17, h=13)
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(2, 2, 6, 5)])
    res = make_chips([src], labels, tmp_path / "out", ChipSettings(tile=64))
    assert (res.tiles, res.positive_tiles, res.positive_pixels) == (1, 1, 12)
    row = manifest_rows(tmp_path / "out")[0]
    assert (row["window_width"], row["window_height"], row["positive_pixels"]) == ("17", "13", "12")
    assert np.array_equal(read(tmp_path / "out" / row["image"]), read(src))
    with rasterio.open(tmp_path / "out" / row["mask"]) as m, rasterio.open(src) as s:
        assert m.crs == s.crs and m.transform == s.transform and m.dtypes[0] == "uint8"


# --- pixel rule and reprojection ------------------------------------------------------


def test_pixel_centre_and_all_touched_counts(tmp_path):
    src = utm_raster(tmp_path / "r.tif")
    # Box from column/row 2.2 to 5.2: centres 2.5, 3.5, 4.5 inside (3x3 = 9); touched
    # pixels 2..5 (4x4 = 16).
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(2.2, 2.2, 5.2, 5.2)])
    centre = make_chips([src], labels, tmp_path / "c", ChipSettings(tile=20))
    touched = make_chips([src], labels, tmp_path / "t", ChipSettings(tile=20, all_touched=True))
    assert (centre.positive_pixels, touched.positive_pixels) == (9, 16)
    mask = read(tmp_path / "c" / "masks" / "r_r0_c0.tif")[0]
    assert mask[2:5, 2:5].all() and mask.sum() == 9


def test_labels_in_4326_onto_rasters_in_two_utm_zones(tmp_path):
    utm_raster(tmp_path / "rasters" / "a.tif", crs="EPSG:32633")
    # A raster in zone 32 beyond its eastern edge (x 970 km), a few km from raster a.
    utm_raster(tmp_path / "rasters" / "b.tif", crs="EPSG:32632", x0=970000.0)
    rings = [pixel_box(2, 2, 6, 5)]  # 4 x 3 pixels on raster a
    ring_b = pixel_box(10, 10, 13, 12, x0=970000.0)  # 3 x 2 pixels on raster b
    labels = write_polygons(tmp_path / "p.gpkg", rings, epsg=4326, src_epsg=32633,
                            fields={"id": ["A"]})  # fmt: skip
    extra = write_polygons(tmp_path / "b.gpkg", [ring_b], epsg=4326, src_epsg=32632,
                           fields={"id": ["B"]})  # fmt: skip
    from osgeo import gdal

    merged = tmp_path / "both.gpkg"
    gdal.VectorTranslate(str(merged), str(labels), layerName="plants")
    gdal.VectorTranslate(str(merged), str(extra), accessMode="append", layerName="plants")
    res = make_chips([tmp_path / "rasters"], merged, tmp_path / "out",
                     ChipSettings(tile=32, group_field="id"))  # fmt: skip
    rows = {r["id"]: r for r in manifest_rows(tmp_path / "out")}
    assert (rows["a_r0_c0"]["positive_pixels"], rows["a_r0_c0"]["group"]) == ("12", "A")
    assert (rows["b_r0_c0"]["positive_pixels"], rows["b_r0_c0"]["group"]) == ("6", "B")
    assert (res.plants, res.groups) == (2, 2)
    mask_b = read(tmp_path / "out" / "masks" / "b_r0_c0.tif")[0]
    assert mask_b[10:12, 10:13].all() and mask_b.sum() == 6
    with rasterio.open(tmp_path / "out" / "images" / "b_r0_c0.tif") as img:
        assert img.crs.to_epsg() == 32632


# --- groups, background, validity -----------------------------------------------------


def test_touching_polygons_form_one_plant_and_tiles_join_plants(tmp_path):
    src = utm_raster(tmp_path / "r.tif", w=40, h=20)
    rings = [pixel_box(2, 2, 5, 5), pixel_box(5, 2, 8, 5),  # touch at column 5
             pixel_box(12, 2, 14, 4), pixel_box(25, 10, 28, 13)]  # fmt: skip
    labels = write_polygons(tmp_path / "p.gpkg", rings, fields={"name": ["a", "b", "c", "d"]})
    res = make_chips([src], labels, tmp_path / "touch", ChipSettings(tile=20))
    rows = manifest_rows(tmp_path / "touch")
    assert [r["plants"] for r in rows] == ["fid1;fid3", "fid4"]
    assert [r["group"] for r in rows] == ["fid1+1", "fid4"]
    assert (res.plants, res.groups) == (3, 2)
    by_field = make_chips([src], labels, tmp_path / "field",
                          ChipSettings(tile=20, group_field="name"))  # fmt: skip
    rows = manifest_rows(tmp_path / "field")
    assert [r["plants"] for r in rows] == ["a;b;c", "d"]
    assert [r["group"] for r in rows] == ["a+2", "d"]
    assert (by_field.plants, by_field.groups) == (4, 2)


def test_background_tiles_kept_by_seed_and_invalid_tiles_dropped(tmp_path):
    data = np.ones((2, 64, 64), np.float32)
    data[:, 48:, 48:] = -9999  # the last 16x16 tile is all nodata
    data[:, 32:40, 0:16] = -9999  # half of tile (row 32, col 0) is nodata
    src = write_raster(tmp_path / "r.tif", data, crs="EPSG:32633",
                       transform=from_origin(X0, Y0, 10, 10), nodata=-9999)  # fmt: skip
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(1, 1, 4, 4)])
    s = ChipSettings(tile=16, keep_background=4, seed=7, min_valid=0.5)
    res = make_chips([src], labels, tmp_path / "a", s)
    assert (res.tiles, res.positive_tiles, res.background_tiles) == (5, 1, 4)
    assert (res.background_dropped, res.invalid_dropped) == (10, 1)  # 16 - 1 - 1 - 4
    again = make_chips([src], labels, tmp_path / "b", s)
    assert [r["id"] for r in manifest_rows(tmp_path / "a")] == [
        r["id"] for r in manifest_rows(tmp_path / "b")
    ]
    assert again.tiles == 5
    assert all(r["group"] == "" for r in manifest_rows(tmp_path / "a")[1:])
    strict = make_chips([src], labels, tmp_path / "c", ChipSettings(tile=16, min_valid=0.6))
    assert strict.invalid_dropped == 2 and strict.tiles == 14


# --- refusals ---------------------------------------------------------------------------


def test_labels_without_crs_are_refused(tmp_path):
    src = utm_raster(tmp_path / "r.tif")
    shp = write_polygons(tmp_path / "p.shp", [pixel_box(1, 1, 3, 3)], epsg=None,
                         driver="ESRI Shapefile")  # fmt: skip
    with pytest.raises(LabelsError, match=r"p\.shp: layer 'p' has no CRS"):
        make_chips([src], shp, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_overlap_names_both_extents(tmp_path):
    src = utm_raster(tmp_path / "r.tif")
    far = pixel_box(0, 0, 3, 3, x0=X0 + 100_000)
    labels = write_polygons(tmp_path / "p.gpkg", [far])
    with pytest.raises(InputError) as exc:
        make_chips([src], labels, tmp_path / "out")
    msg = str(exc.value)
    assert "p.gpkg" in msg and "r.tif (500000, 5.2998e+06, 500200, 5.3e+06)" in msg
    assert "polygons extent (600000, 5.29997e+06, 600030, 5.3e+06) in EPSG:32633" in msg
    assert "\n" not in msg and not (tmp_path / "out").exists()


def test_polygon_between_pixel_centres_is_no_overlap(tmp_path):
    src = utm_raster(tmp_path / "r.tif")
    sliver = write_polygons(tmp_path / "p.gpkg", [pixel_box(2.6, 2.6, 2.9, 2.9)])
    with pytest.raises(InputError, match="none of the 1 nearby polygons"):
        make_chips([src], sliver, tmp_path / "out")
    assert make_chips([src], sliver, tmp_path / "t", ChipSettings(all_touched=True)).tiles == 1


def test_different_band_counts_are_refused(tmp_path):
    a = utm_raster(tmp_path / "a.tif", bands=3)
    b = utm_raster(tmp_path / "b.tif", bands=4)
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(1, 1, 3, 3)])
    with pytest.raises(RasterError, match=r"different band counts \(a\.tif 3, b\.tif 4\)"):
        make_chips([a, b], labels, tmp_path / "out")


def test_bad_filter_and_field_name_the_file(tmp_path):
    src = utm_raster(tmp_path / "r.tif")
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(1, 1, 3, 3)], fields={"kind": ["pv"]})
    with pytest.raises(LabelsError, match=r"p\.gpkg: filter 'kind ==== 1' is not valid"):
        make_chips([src], labels, tmp_path / "o", ChipSettings(where="kind ==== 1"))
    with pytest.raises(LabelsError, match=r"p\.gpkg: layer 'plants' has no field 'id'"):
        make_chips([src], labels, tmp_path / "o", ChipSettings(group_field="id"))
    res = make_chips([src], labels, tmp_path / "o", ChipSettings(where="kind = 'pv'"))
    assert res.positive_pixels == 4
    with pytest.raises(InputError, match="no polygon"):
        make_chips([src], labels, tmp_path / "x", ChipSettings(where="kind = 'wind'"))


def test_existing_dataset_refused_unless_overwrite(tmp_path):
    src = utm_raster(tmp_path / "r.tif")
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(1.2, 1.2, 3.2, 3.2)])  # 4 or 9 px
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    make_chips([src], labels, out)
    before = (out / "manifest.csv").read_text()
    with pytest.raises(
        OutputExistsError, match=r"out: already holds a dataset \(manifest\.csv, images, masks\)"
    ):
        make_chips([src], labels, out, ChipSettings(all_touched=True))
    assert (out / "manifest.csv").read_text() == before
    res = make_chips([src], labels, out, ChipSettings(all_touched=True, overwrite=True))
    assert res.positive_pixels == 9 and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.csv", "masks", "notes.txt"]


def test_cancel_leaves_nothing_behind(tmp_path):
    src = utm_raster(tmp_path / "r.tif", w=64, h=64)
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(1, 1, 60, 60)])
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 20  # after pass 1, during writing

    with pytest.raises(Cancelled):
        make_chips([src], labels, tmp_path / "out", ChipSettings(tile=8), cancel=cancel)
    assert not (tmp_path / "out").exists()


def test_cli_one_line_error_and_result(tmp_path, capsys):
    src = utm_raster(tmp_path / "r.tif")
    labels = write_polygons(tmp_path / "p.gpkg", [pixel_box(1, 1, 3, 3)])
    assert main(["chips", str(src), "--labels", str(labels), "--out", str(tmp_path / "o"),
                 "--tile", "8"]) == 0  # fmt: skip
    assert "9 tiles from 1 raster(s): 1 with plant pixels" in capsys.readouterr().out
    assert main(["chips", str(src), "--labels", str(labels), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "already holds a dataset" in err[0]


# --- real data --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def austria_chips(tmp_path_factory) -> tuple[Path, object]:
    assert AUSTRIA.is_dir(), f"real data missing: {AUSTRIA}"
    out = tmp_path_factory.mktemp("austria") / "chips"
    res = make_chips([AUSTRIA / "images"], AUSTRIA / "photovoltaic_osm.gpkg", out,
                     ChipSettings(tile=64, group_field="id"))  # fmt: skip
    return out, res


def test_austria_counts_groups_and_split(austria_chips):
    out, res = austria_chips
    assert (res.rasters, res.tiles, res.positive_tiles, res.background_tiles) == (25, 26, 26, 0)
    assert (res.plants, res.groups, res.positive_pixels) == (35, 25, 6783)
    rows = {r["id"]: r for r in manifest_rows(out)}
    # The 67 px wide chip gives two 64 px windows (the second flush with the edge).
    assert [rows[k]["window_col"] for k in ("S2_2022_1933_r0_c0", "S2_2022_1933_r0_c3")] == [
        "0",
        "3",
    ]
    assert rows["S2_2022_31_r0_c0"]["group"] == "31+9"  # ten OSM polygons reach that chip
    # One raster is in UTM zone 32, the others in 33; the labels are in EPSG:4326.
    with rasterio.open(out / rows["S2_2022_102_r0_c0"]["image"]) as img:
        assert img.crs.to_epsg() == 32632
    assert rows["S2_2022_102_r0_c0"]["positive_pixels"] == "70"
    index = find_dataset(out)
    assert index.form == "manifest" and len(index.pairs) == 26
    pairs = split_pairs(index, SplitConfig(seed=42, val=0.2, test=0.2))
    check_leakage(pairs)
    splits = {p.split for p in pairs if p.group == "1939"}
    assert len(splits) == 1  # both tiles of that plant in one split


def test_austria_mask_equals_gdal_rasterize(austria_chips, tmp_path):
    """The chip mask of a real raster equals gdal.Rasterize of the reprojected layer."""
    from osgeo import gdal

    out, _ = austria_chips
    src = AUSTRIA / "images" / "S2_2022_31.tif"
    with rasterio.open(src) as s:
        bounds, epsg, shape, image = s.bounds, s.crs.to_epsg(), (s.height, s.width), s.read()
    projected = tmp_path / "utm.gpkg"
    gdal.VectorTranslate(str(projected), str(AUSTRIA / "photovoltaic_osm.gpkg"),
                         dstSRS=f"EPSG:{epsg}", reproject=True)  # fmt: skip
    burnt = gdal.Rasterize(str(tmp_path / "ref.tif"), str(projected), burnValues=[1],
                           outputBounds=list(bounds), xRes=10, yRes=10, outputType=gdal.GDT_Byte,
                           initValues=[0])  # fmt: skip
    expected = burnt.GetRasterBand(1).ReadAsArray()
    burnt = None
    mask = read(out / "masks" / "S2_2022_31_r0_c0.tif")[0]
    assert mask.shape == shape and int(mask.sum()) == 361
    assert np.array_equal(mask, expected)
    assert np.array_equal(read(out / "images" / "S2_2022_31_r0_c0.tif"), image)
    with rasterio.open(out / "images" / "S2_2022_31_r0_c0.tif") as img:
        assert img.nodata == -9999 and img.descriptions[3] == "B04" and img.count == 11


def test_user_errors_are_user_errors():
    assert issubclass(LabelsError, UserError) and issubclass(OutputExistsError, UserError)
