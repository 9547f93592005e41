"""Plant matching on hand-made masks with known answers, and CRS-correct hectares."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from core.evaluation.plants import (
    NO_CRS_NOTE,
    PlantMetrics,
    connected_components,
    match_plants,
    pixel_areas_m2,
    tile_plants,
    write_plants_csv,
)


def test_components_are_8_connected_and_numbered_row_major():
    m = np.array(
        [
            [1, 1, 0, 0, 1],
            [0, 0, 1, 0, 1],  # (1,2) touches (0,1) diagonally
            [1, 0, 0, 0, 0],
            [1, 0, 1, 1, 0],
        ],
        bool,
    )
    labels, n = connected_components(m)
    assert n == 4
    assert labels.tolist() == [
        [1, 1, 0, 0, 2],
        [0, 0, 1, 0, 2],
        [3, 0, 0, 0, 0],
        [3, 0, 4, 4, 0],
    ]
    u = np.zeros((5, 7), bool)  # a U shape: two arms joined at the bottom row
    u[:, 0] = u[:, 6] = u[4, :] = True
    assert connected_components(u)[1] == 1
    assert connected_components(np.zeros((3, 3), bool))[1] == 0


def test_components_match_scipy_on_random_masks():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    for _ in range(5):
        m = rng.random((40, 55)) < 0.35
        ours, n = connected_components(m)
        theirs, n2 = ndimage.label(m, structure=np.ones((3, 3)))
        assert n == n2 and np.array_equal(ours, theirs)


def hand_made() -> tuple[np.ndarray, np.ndarray]:
    """Four plants and a prediction with every case of the rule.

    - plant A (rows 0-3, cols 0-3, 16 px): split between two objects, 4 + 6 px: found;
    - plants B and C (4 px each) under one object covering both and 4 px between: found;
    - plant D (9 px): covered 4 px (< half): missed;
    - one object far from any plant (3 px): false detection.
    """
    ref = np.zeros((12, 16), np.uint8)
    pred = np.zeros((12, 16), bool)
    ref[0:4, 0:4] = 1  # A
    pred[0:1, 0:4] = True  # 4 px of A (object 1)
    pred[2:4, 0:3] = True  # 6 px of A (object 2, a gap row between them)
    ref[0:2, 8:10] = 1  # B
    ref[0:2, 12:14] = 1  # C
    pred[0:2, 8:14] = True  # one object over B, the gap and C: 12 px
    ref[6:9, 0:3] = 1  # D
    pred[6:8, 0:2] = True  # 4 of D's 9 px
    pred[10:11, 10:13] = True  # false detection, 3 px
    return ref, pred


def test_hand_made_plants_found_missed_and_false():
    ref, pred = hand_made()
    m = tile_plants(ref, pred, None, 100.0, "t")
    assert (m.plants, m.found, m.missed) == (4, 3, 1)
    assert (m.predicted_objects, m.false_detections) == (5, 1)
    assert m.recall == pytest.approx(3 / 4) and m.precision == pytest.approx(4 / 5)
    assert m.f1 == pytest.approx(2 * 0.8 * 0.75 / 1.55)
    rows = {r.id: r for r in m.rows}
    a, b, c, d = rows["t#1"], rows["t#2"], rows["t#3"], rows["t#4"]
    assert (a.reference_pixels, a.covered_pixels, a.predicted_pixels) == (16, 10, 10)
    assert a.found and a.iou == pytest.approx(10 / 16) and a.coverage == pytest.approx(10 / 16)
    assert (b.covered_pixels, b.predicted_pixels, b.found) == (4, 12, True)
    assert b.iou == pytest.approx(4 / 12) and c.iou == pytest.approx(4 / 12)
    assert (d.reference_pixels, d.covered_pixels, d.found) == (9, 4, False)
    assert d.iou == pytest.approx(4 / 9)
    # 10 m pixels: 16 px = 0.16 ha; totals: 33 reference px, 4+6+12+4+3 = 29 predicted px.
    assert a.reference_ha == pytest.approx(0.16) and a.predicted_ha == pytest.approx(0.10)
    assert m.reference_ha == pytest.approx(0.33) and m.predicted_ha == pytest.approx(0.29)


def test_invalid_pixels_are_not_plants_nor_predictions():
    ref, pred = hand_made()
    valid = np.ones(ref.shape, bool)
    valid[10:, :] = False  # hides the false detection
    valid[6:9, 0:3] = False  # hides plant D
    m = tile_plants(ref, pred, valid, 100.0, "t")
    assert (m.plants, m.found, m.predicted_objects, m.false_detections) == (3, 3, 3, 0)


def test_empty_cases_follow_the_pixel_metrics_convention():
    nothing = np.zeros((4, 4), bool)
    m = tile_plants(nothing, nothing, None, 100.0, "t")
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    only_pred = tile_plants(nothing, ~nothing, None, 100.0, "t")
    assert (only_pred.precision, only_pred.recall, only_pred.false_detections) == (0.0, 0.0, 1)


def test_named_plants_overlapping_scene_labels():
    plants = np.zeros((4, 6), np.int32)
    plants[0:2, 0:2] = 1
    plants[0:2, 3:6] = 2
    pred = np.zeros((4, 6), bool)
    pred[0:2, 3:5] = True
    m = match_plants(plants, pred, None, 100.0, names=["p1", "p2"])
    assert [(r.id, r.found) for r in m.rows] == [("p1", False), ("p2", True)]


def test_sum_over_tiles_and_csv_lists_missed_first(tmp_path):
    ref, pred = hand_made()
    total = PlantMetrics() + tile_plants(ref, pred, None, 100.0, "a")
    total += tile_plants(ref, pred, None, 100.0, "b")
    assert (total.plants, total.found, total.false_detections) == (8, 6, 2)
    write_plants_csv(total, tmp_path / "plants.csv")
    with open(tmp_path / "plants.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows[:2]] == ["a#4", "b#4"] and rows[0]["found"] == "0"
    assert rows[0]["reference_ha"] == "0.09" and len(rows) == 8


def test_pixel_areas_utm_geographic_and_no_crs():
    from osgeo import osr

    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32633)
    areas, note = pixel_areas_m2(utm.ExportToWkt(), (500000, 10, 0, 5300000, 0, -10), 3, 4)
    assert note is None and areas == pytest.approx([100.0] * 3, rel=1e-9)
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    # 0.001 degree pixels at 60 N and at the equator: cos(60) = 0.5 of the area.
    north, _ = pixel_areas_m2(wgs.ExportToWkt(), (10, 0.001, 0, 60.0005, 0, -0.001), 1, 1)
    equator, _ = pixel_areas_m2(wgs.ExportToWkt(), (10, 0.001, 0, 0.0005, 0, -0.001), 1, 1)
    assert north[0] / equator[0] == pytest.approx(111.412 * 55.800 / (110.574 * 111.320), rel=1e-3)
    assert equator[0] == pytest.approx(110.574 * 111.320, rel=1e-3)  # m per 0.001 deg
    areas, note = pixel_areas_m2(None, None, 2, 2)
    assert note == NO_CRS_NOTE and areas.tolist() == [100.0, 100.0]


def test_real_austria_chips_perfect_and_empty_predictions(tmp_path):
    """Plants of the 26 real Austria tiles (chips of the 25 rasters + OSM polygons):
    a perfect prediction finds every plant; areas are 10 m UTM pixels in hectares."""
    from core.data.discovery import find_dataset
    from core.data.tiles import read_tile
    from core.evaluation.evaluate import TilePrediction
    from core.evaluation.plants import plants_of_predictions
    from core.labels.chips import ChipSettings, make_chips
    from tests.conftest import DATA

    austria = DATA / "austria-pv"
    make_chips([austria / "images"], austria / "photovoltaic_osm.gpkg", tmp_path / "chips",
               ChipSettings(tile=64, group_field="id"))  # fmt: skip
    preds = []
    for pair in find_dataset(tmp_path / "chips").pairs:
        tile = read_tile(pair, [4, 3, 2, 8])
        preds.append(TilePrediction(pair, tile, tile.mask.astype(np.float32)))
    perfect = plants_of_predictions(preds, 0.5)
    assert perfect.plants == perfect.found == perfect.predicted_objects
    assert perfect.false_detections == 0 and perfect.area_notes == set()
    assert perfect.plants == 27  # 8-connected components: 26 tiles, one of them holds two
    # Every chip pixel is valid, so the plant pixels are the manifest's 6,783.
    assert sum(r.reference_pixels for r in perfect.rows) == 6783
    assert perfect.reference_ha == pytest.approx(67.83, rel=1e-3)  # 100 m² pixels (UTM)
    assert perfect.predicted_ha == pytest.approx(perfect.reference_ha)
    empty = plants_of_predictions(preds, 1.5)
    assert (empty.found, empty.predicted_objects, empty.recall) == (0, 0, 0.0)
