"""``predict-split``: a split's probabilities as numpy files the plugin reads without the
engine, equal to the in-process prediction; a tiny real run (24 tiles, 1 epoch)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.config import load_config
from core.data.rasters import read_image
from core.evaluation import split_files
from core.evaluation.evaluate import evaluate_predictions, predict_split
from core.evaluation.plants import plant_records, plants_of_predictions, plants_of_split
from core.training.loop import train
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tiny_run(solafune, tmp_path_factory):
    overrides = [f"data.path={solafune}", "data.limit=24", "data.bands=[4,3,2,8]",
                 "train.epochs=1", "train.batch_size=8", "train.threads=2",
                 "train.early_stop.enabled=false", "train.eval_test_each_epoch=false",
                 f"out_dir={tmp_path_factory.mktemp('runs')}", "name=ps"]  # fmt: skip
    return train(load_config(None, overrides)).run_dir


def engine(*args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "core", "--jsonl", *args], cwd=REPO, text=True,
        capture_output=True, timeout=300,
    )  # fmt: skip
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_predict_split_files_equal_the_engine(tiny_run, tmp_path):
    out = tmp_path / "pred"
    code, events, err = engine("predict-split", str(tiny_run), "--out", str(out), "--device", "cpu")
    assert code == 0, err
    result = events[-1]
    assert result["event"] == "result" and result["command"] == "predict-split"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    index = split_files.read_index(out)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "plants.csv", "tiles"]
    assert not list(tmp_path.glob(".pred*"))

    meta, preds = predict_split(tiny_run, split="test", device="cpu")
    assert [t["id"] for t in index["tiles"]] == [p.tile_id for p in preds]
    assert index["threshold"] == meta.threshold and index["rgb_bands"] == [4, 3, 2]
    engine_metrics = evaluate_predictions(preds, meta.threshold).metrics
    assert index["metrics"] == pytest.approx(engine_metrics)
    assert result["data"]["metrics"] == pytest.approx(engine_metrics)
    # plants.csv: the engine's plants of the split at the model's threshold, missed first
    plants = plants_of_predictions(preds, meta.threshold)
    assert index["plants_csv"] == "plants.csv"
    assert index["plants"] == plants.summary()
    rows = split_files.read_plants(out, index)
    assert len(rows) == plants.plants and sum(r["found"] for r in rows) == plants.found
    assert [r["found"] for r in rows] == sorted(r["found"] for r in rows)
    by_id = {r.id: r for r in plants.rows}
    for r in rows:
        assert r["reference_pixels"] == by_id[r["id"]].reference_pixels
    # Counted again from the files alone (numpy + GDAL, what Inspect Errors does at a
    # new threshold): at the model's threshold, plants.csv row for row.
    again = plant_records(plants_of_split(split_files.load_tiles(out, index), meta.threshold))
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    for a, r in zip(again, rows, strict=True):
        assert a == pytest.approx(r, abs=1e-6)
    assert plants_of_split(split_files.load_tiles(out, index), 1.5).predicted_objects == 0

    tiles = split_files.load_tiles(out, index)
    assert len(tiles) == len(preds) == result["data"]["tiles"]
    for tile, pred, entry in zip(tiles, preds, index["tiles"], strict=True):
        h, w = pred.mask.shape
        assert tile.prob.dtype == np.float32 and tile.prob.shape == (h, w)
        np.testing.assert_allclose(tile.prob, pred.prob, atol=1e-3)  # float16 tolerance at most
        assert np.array_equal(tile.mask, pred.mask) and tile.mask.dtype == np.uint8
        assert np.array_equal(tile.valid, pred.valid) and tile.valid.dtype == bool
        rgb = tile.rgb()
        image, image_valid = read_image(pred.pair.image, [4, 3, 2])
        shown = image_valid & pred.valid
        assert rgb.shape == (3, h, w) and rgb.dtype == np.float32
        assert np.array_equal(np.isfinite(rgb).all(0), shown)
        assert np.array_equal(rgb[:, shown], image[:, shown])
        assert (entry["height"], entry["width"]) == (h, w)
        assert entry["crs_wkt"] is None  # the Solafune tiles have no CRS
        assert len(entry["geotransform"]) == 6
    # the plugin scores the files with the same code: same numbers at any threshold
    for th in (0.05, 0.3, 0.8):
        a = evaluate_predictions(tiles, th)
        b = evaluate_predictions(preds, th)
        assert a.metrics == b.metrics and a.rows == b.rows

    # --reuse keeps a folder made from the same model and request
    stamp = (out / "index.json").stat().st_mtime_ns
    code, events, err = engine("predict-split", str(tiny_run), "--out", str(out), "--reuse")
    assert code == 0, err
    assert events[-1]["data"]["reused"] and (out / "index.json").stat().st_mtime_ns == stamp
    # another request replaces it whole
    code, events, err = engine("predict-split", str(tiny_run), "--out", str(out), "--rgb",
                               "2,3,4", "--reuse", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert not events[-1]["data"]["reused"]
    assert split_files.read_index(out)["rgb_bands"] == [2, 3, 4]


def test_predict_split_refuses_a_foreign_folder_and_bad_bands(tiny_run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, events, _ = engine("predict-split", str(tiny_run), "--out", str(foreign))
    assert code == 2 and events[-1]["event"] == "error" and str(foreign) in events[-1]["message"]
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "bands"
    code, events, _ = engine("predict-split", str(tiny_run), "--out", str(out), "--rgb", "4,3,13",
                             "--device", "cpu")  # fmt: skip
    assert code == 2 and "13" in events[-1]["message"]
    assert not out.exists() and not list(tmp_path.glob(".bands*"))


def test_reader_scoring_and_plants_import_no_torch_or_rasterio():
    code = (
        "import sys; import core.evaluation.split_files, core.evaluation.scoring, "
        "core.evaluation.plants, core.data.masks, core.models.meta; "
        "from osgeo import osr; srs = osr.SpatialReference(); srs.ImportFromEPSG(32633); "
        "a, _ = core.evaluation.plants.pixel_areas_m2(srs.ExportToWkt(), (0, 10, 0, 0, 0, -10), 2, 2); "
        "assert abs(a[0] - 100) < 1e-6, a; "
        "bad = {'torch', 'rasterio', 'segmentation_models_pytorch', 'onnxruntime'} & "
        "set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_model_meta_without_torch(tiny_run, tmp_path):
    """The plugin's dialogs read a model's metadata without torch: same as torch.load,
    and a pickle naming any other global is refused without running it."""
    import pickle
    import zipfile

    from core.models.build import read_model_file
    from core.models.meta import ModelFileError, read_model_meta

    assert read_model_meta(tiny_run) == read_model_file(tiny_run)[0]
    hostile = tmp_path / "model.pt"
    with zipfile.ZipFile(hostile, "w") as z:
        z.writestr("archive/data.pkl", b"cos\nsystem\n(S'touch " + str(tmp_path).encode()
                   + b"/pwned'\ntR.")  # fmt: skip
    with pytest.raises(ModelFileError, match="refused global os.system"):
        read_model_meta(hostile)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.pt"):
        read_model_meta(tmp_path / "junk.pt")
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"format": "something else"}))
    with pytest.raises(ModelFileError, match="not a SolarSeg model file"):
        read_model_meta(other)
