"""The Processing algorithms run through processing.run on real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingException, QgsVectorLayer

from .conftest import TINY_BANDS


@pytest.fixture()
def provider(qgis_processing):
    from solar_seg_plugin.processing.provider import SolarSegProvider

    registry = QgsApplication.processingRegistry()
    prov = SolarSegProvider()
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


def test_algorithms_are_listed(provider):
    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == ["solarseg:createtrainingdata", "solarseg:evaluatemodel", "solarseg:segmentmany",
                   "solarseg:segmentraster", "solarseg:trainmodel"]  # fmt: skip
    names = {a.id(): a.displayName() for a in provider.algorithms()}
    assert names["solarseg:segmentraster"] == "Segment raster"


def test_segment_raster(provider, scenes, tiny_run, tmp_path):
    import processing

    out = processing.run(
        "solarseg:segmentraster",
        {
            "INPUT": str(scenes / "rgbn_haiti_5m.tif"),
            "MODEL": str(tiny_run / "model.pt"),
            "BANDS": "1,2,3,4",
            "TILE_SIZE": 128,
            "OVERLAP": 32,
            "DEVICE": 1,
            "POLYGONS": True,
            "OUTPUT_FOLDER": str(tmp_path / "seg"),
        },
    )
    assert Path(out["PROBABILITY"]) == tmp_path / "seg" / "probability.tif"
    with rasterio.open(out["MASK"]) as mask, rasterio.open(scenes / "rgbn_haiti_5m.tif") as src:
        assert (mask.width, mask.height) == (src.width, src.height)
        assert mask.crs == src.crs and mask.transform == src.transform
    panels = QgsVectorLayer(out["PANELS"], "panels", "ogr")
    assert panels.isValid() and panels.featureCount() == out["PANEL_COUNT"]


def test_segment_many_rasters(provider, scenes, tiny_run, tmp_path):
    """Two crops of the real Haiti scene and the 3-band Landsat scene (fails, reported,
    the others go on) through the engine's segment-many on a 1-worker local cluster, in
    int8 (quantised once into OUT/.int8/, calibrated on the model's training tiles)."""
    import processing
    import rasterio

    from solar_seg_plugin.core.segment.options import PRECISIONS
    from tests.core.segment.helpers import crop_raster

    folder = tmp_path / "in"
    folder.mkdir()
    haiti = scenes / "rgbn_haiti_5m.tif"
    crop_raster(haiti, folder / "a.tif", 0, 0, 160, 180)
    crop_raster(haiti, folder / "b.tif", 100, 120, 160, 180)
    out = processing.run(
        "solarseg:segmentmany",
        {
            "INPUTS": [str(scenes / "landsat8_b2b3b4_foz_30m.tif")],
            "FOLDER": str(folder),
            "MODEL": str(tiny_run / "model.pt"),
            "BANDS": "1,2,3,4",
            "TILE_SIZE": 128,
            "OVERLAP": 32,
            "DEVICE": 1,
            "PRECISION": PRECISIONS.index("int8"),
            "WORKERS": 1,
            "OUTPUT_FOLDER": str(tmp_path / "many"),
        },
    )
    assert out["SCENES_FAILED"] == 1
    assert Path(out["SUMMARY"]) == tmp_path / "many" / "summary.csv"
    rows = {r.split(",")[0]: r for r in Path(out["SUMMARY"]).read_text().splitlines()[1:]}
    assert set(rows) == {"landsat8_b2b3b4_foz_30m", "a", "b"}
    assert ",done," in rows["a"] and ",done," in rows["b"] and "3 band" in rows[
        "landsat8_b2b3b4_foz_30m"]  # fmt: skip
    panels = QgsVectorLayer(out["PANELS"], "panels", "ogr")
    assert panels.isValid() and panels.featureCount() == out["PANEL_COUNT"]
    assert "scene" in panels.fields().names()
    assert (tmp_path / "many" / "a" / "mask.tif").is_file()
    with rasterio.open(tmp_path / "many" / "a" / "probability.tif") as src:
        assert src.tags()["SOLARSEG_PRECISION"] == "int8"
    assert len(list((tmp_path / "many" / ".int8").glob("*.int8.onnx"))) == 1


def test_segment_raster_reports_band_error(provider, scenes, tiny_run, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="3 band"):
        processing.run(
            "solarseg:segmentraster",
            {
                "INPUT": str(scenes / "landsat8_b2b3b4_foz_30m.tif"),
                "MODEL": str(tiny_run / "model.pt"),
                "OUTPUT_FOLDER": str(tmp_path / "seg"),
            },
        )
    assert not list((tmp_path / "seg").glob("*.tif")) if (tmp_path / "seg").exists() else True


def test_evaluate_model(provider, tiny_run):
    import json

    import processing

    out = processing.run(
        "solarseg:evaluatemodel",
        {"MODEL": str(tiny_run / "model.pt"), "SPLIT": 2, "DEVICE": 1, "OUTPUT": "memory:"},
    )
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert out["THRESHOLD_USED"] == pytest.approx(metrics["threshold"])
    assert out["IOU"] == pytest.approx(metrics["splits"]["test"]["iou"], abs=1e-9)
    assert out["TP"] == metrics["splits"]["test"]["tp"]
    table = out["OUTPUT"]
    if isinstance(table, str):
        from qgis.core import QgsProcessingContext, QgsProcessingUtils

        table = QgsProcessingUtils.mapLayerFromString(table, QgsProcessingContext())
    assert table.featureCount() == 12
    assert sum(f["tp"] for f in table.getFeatures()) == out["TP"]


def test_train_model(provider, solafune, tmp_path):
    import processing

    out = processing.run(
        "solarseg:trainmodel",
        {
            "DATASET": str(solafune),
            "BANDS": ",".join(str(b) for b in TINY_BANDS),
            "EPOCHS": 1,
            "BATCH_SIZE": 8,
            "LIMIT": 40,
            "DEVICE": 1,
            # Typed values reach the engine as they are: YAML would read "yes" as True
            # and cut the folder at " #".
            "NAME": "yes",
            "OVERRIDES": "train.threads=2; optim.scheduler=step",
            "OUTPUT_FOLDER": str(tmp_path / "runs #1"),
        },
    )
    run_dir = Path(out["RUN_DIR"])
    assert run_dir.parent == tmp_path / "runs #1" and run_dir.name.startswith("yes-")
    assert Path(out["MODEL"]).is_file()
    assert out["STATUS"] == "completed"
    assert 0.0 <= out["TEST_IOU"] <= 1.0
    assert "scheduler: step" in (run_dir / "config.yaml").read_text()


def test_train_model_refuses_bad_settings(provider, solafune, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="data.upscale"):
        processing.run(
            "solarseg:trainmodel",
            {"DATASET": str(solafune), "OVERRIDES": "data.upscale=3",
             "OUTPUT_FOLDER": str(tmp_path / "runs")},
        )  # fmt: skip
