"""``segment --reference``: plants of a scene against reference polygons, with a
per-pixel backend whose prediction is known exactly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from rasterio.transform import from_origin

from core.models.meta import ModelMeta
from core.segment import SegmentOptions, segment_with_backend
from core.segment.reference import ReferenceOptions
from tests.core.labels.test_chips import X0, Y0, pixel_box, write_polygons
from tests.rasters import write_raster


class BandOne:
    """Predicts 1 where the first (normalised) band is positive, else 0."""

    name = "band-one"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return (batch[:, :1] > 0).astype(np.float32)


META = ModelMeta(arch="Unet", encoder="resnet18", in_channels=1, bands=[1], mean=[0.0],
                 std=[1.0], threshold=0.5, tile_size=32, overlap=8)  # fmt: skip


@pytest.fixture()
def scene(tmp_path):
    """64 x 64 UTM scene (10 m): predicted where band 1 is 1.

    - plant "a" (polygon rows 4-11, cols 4-11, 64 px), fully predicted: found;
    - plant "b" (two touching polygons, rows 20-27 x cols 20-35, 128 px), 32 px
      predicted: missed;
    - a predicted 4 x 5 block at rows 50-53, cols 50-54 touching no plant: false.
    """
    band = np.zeros((1, 64, 64), np.float32) - 1
    band[0, 4:12, 4:12] = 1
    band[0, 20:24, 20:28] = 1
    band[0, 50:54, 50:55] = 1
    raster = write_raster(tmp_path / "scene.tif", band, crs="EPSG:32633",
                          transform=from_origin(X0, Y0, 10, 10))  # fmt: skip
    rings = [pixel_box(4, 4, 12, 12), pixel_box(20, 20, 28, 28), pixel_box(28, 20, 36, 28)]
    labels = write_polygons(tmp_path / "ref.gpkg", rings, epsg=4326, src_epsg=32633,
                            fields={"name": ["a", "b", "b"]})  # fmt: skip
    return raster, labels


def test_reference_plants_csv_and_gpkg(scene, tmp_path):
    from osgeo import ogr

    raster, labels = scene
    opts = SegmentOptions(reference=ReferenceOptions(str(labels), group_field="name"))
    result = segment_with_backend(BandOne(), META, raster, tmp_path / "out", opts)
    p = result.plants
    assert (p["plants"], p["found"], p["missed"]) == (2, 1, 1)
    assert (p["predicted_objects"], p["false_detections"]) == (3, 1)
    assert p["reference_ha"] == pytest.approx(1.92, rel=1e-6)  # 192 px of 100 m²
    assert p["predicted_ha"] == pytest.approx(1.16, rel=1e-6)  # 64 + 32 + 20 px
    with open(tmp_path / "out" / "plants.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["found"], r["covered_pixels"]) for r in rows] == [
        ("b", "0", "32"), ("a", "1", "64")]  # fmt: skip
    assert float(rows[0]["iou"]) == pytest.approx(0.25)
    ds = ogr.Open(str(tmp_path / "out" / "plants.gpkg"))
    plants = ds.GetLayerByName("plants")
    assert plants.GetSpatialRef().GetAuthorityCode(None) == "32633"
    got = sorted((f["plant"], f["found"], f["source_fid"]) for f in plants)
    assert got == [("a", 1, 1), ("b", 0, 2), ("b", 0, 3)]
    false = ds.GetLayerByName("false_detections")
    areas = [f["area_ha"] for f in false]
    assert areas == [pytest.approx(0.2)]
    assert "plants 2: found 1, missed 1" in result.plants_text


def test_reference_layer_errors_before_segmenting(scene, tmp_path):
    from core.errors import UserError
    from core.segment import segment_raster
    from core.segment.engine import check_segment

    raster, labels = scene
    opts = SegmentOptions(reference=ReferenceOptions(str(labels), group_field="nope"))
    problems, _ = check_segment(tmp_path / "no-model.pt", raster, tmp_path / "out", opts)
    assert [p.field for p in problems] == ["model", "reference"]
    assert problems[1].message.endswith(
        "ref.gpkg: layer 'plants' has no field 'nope'; fields: ['name']"
    )
    with pytest.raises(UserError):
        segment_raster(tmp_path / "no-model.pt", raster, tmp_path / "out", opts)
    assert not (tmp_path / "out").exists()
