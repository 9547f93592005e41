"""Per-pixel LightGBM (model.arch lightgbm) on real tiles: the run record, exact
evaluation, segment, the pixel sample, refusals, and the blend with a network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from core.config import load_config
from core.data.discovery import find_dataset
from core.data.splits import split_pairs
from core.data.tiles import read_tile
from core.evaluation.combine import BLEND_WEIGHTS
from core.evaluation.evaluate import check_evaluate, evaluate
from core.models.meta import read_model_meta
from core.models.pixel_gbm import PixelModel
from core.segment import SegmentOptions, segment_raster
from core.segment.engine import check_segment
from core.training.checks import check_train
from core.training.loop import train
from core.training.pixels import sample_pixels

RUN_FILES = ["config.yaml", "split.csv", "stats.json", "dataset.json", "history.csv", "model.pt",
             "model.txt", "indices.json", "metrics.json", "threshold_scan.csv",
             "per_image_train.csv", "per_image_val.csv", "per_image_test.csv", "plants_test.csv",
             "run.json", "plots/loss.png", "plots/iou.png", "plots/probability_hist.png",
             "plots/confusion_matrix.png"]  # fmt: skip
COUNTS = ("tp", "fp", "fn", "tn")


def gbm_config(solafune, out, *extra, check=True):
    return load_config(None, [f"data.path={solafune}", "data.limit=60", "model.arch=lightgbm",
                              "data.indices=[ndvi,swir_nd,swir_red]", "gbm.rounds=40",
                              "gbm.num_leaves=15", "train.threads=1", f"out_dir={out}",
                              "name=gbm", *extra], check=check)  # fmt: skip


@pytest.fixture(scope="module")
def gbm_run(solafune, tmp_path_factory):
    return train(gbm_config(solafune, tmp_path_factory.mktemp("gbm")))


@pytest.fixture(scope="module")
def net_run(solafune, tmp_path_factory):
    """A tiny network on the same 60 tiles and split (seed 42) as the LightGBM run."""
    out = tmp_path_factory.mktemp("net")
    cfg = load_config(None, [f"data.path={solafune}", "data.limit=60", "data.bands=[4,3,2,8]",
                             "train.epochs=1", "train.batch_size=8", "train.threads=2",
                             "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}",
                             "data.pad_multiple=8", f"out_dir={out}", "name=net"])  # fmt: skip
    return train(cfg)


def test_lightgbm_run_is_a_complete_record(gbm_run):
    run = gbm_run.run_dir
    assert gbm_run.status in ("completed", "early_stopped")
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not (run / "checkpoint.pt").exists()
    meta = read_model_meta(run)  # torch-free
    assert meta.is_pixel_model and meta.arch == "lightgbm" and meta.bands == list(range(1, 13))
    assert [s["name"] for s in meta.indices] == ["ndvi", "swir_nd", "swir_red"]
    assert meta.model_params["features"][-3:] == ["ndvi", "swir_nd", "swir_red"]
    assert meta.threshold == gbm_run.threshold and meta.metrics["test"] == gbm_run.metrics["test"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"train", "val", "test"}
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:6] == ["epoch", "lr", "train_loss", "train_iou", "val_loss",
                                         "val_iou"]  # fmt: skip
    assert gbm_run.best_epoch <= len(history) - 1 <= 40
    assert gbm_run.metrics["val"]["iou"] > 0.3  # a real classifier, not noise
    model = PixelModel.load(run)
    assert model.booster.num_trees() == gbm_run.best_epoch


def test_lightgbm_evaluate_reproduces_the_run_exactly(gbm_run):
    result = evaluate(gbm_run.run_dir, split="test")
    assert {k: result.metrics[k] for k in COUNTS} == {k: gbm_run.metrics["test"][k] for k in COUNTS}


def test_lightgbm_segments_a_raster_as_it_evaluates(gbm_run, solafune, tmp_path):
    image = solafune / "s2_image" / "train_s2_image_7.tif"
    res = segment_raster(gbm_run.run_dir, image, tmp_path / "seg", SegmentOptions())
    assert res.backend == "lightgbm"
    with rasterio.open(res.probability_path) as src:
        got = src.read(1)
    pair = next(p for p in find_dataset(solafune).pairs if p.image.name == image.name)
    tile = read_tile(pair, None)
    want = PixelModel.load(gbm_run.run_dir).predict_image(tile.image, tile.valid)
    close = np.abs(got - want)[tile.valid] < 1e-4  # segment de-normalises its windows
    assert close.mean() > 0.99
    problems, _ = check_segment(gbm_run.run_dir, image, tmp_path / "o",
                                SegmentOptions(backend="onnx"))  # fmt: skip
    assert [p.field for p in problems] == ["backend"]


def test_pixel_sample_is_bounded_balanced_and_seeded(solafune):
    index = find_dataset(solafune)
    index.pairs = index.pairs[:60]
    train_pairs = [p for p in split_pairs(index, load_config().data.split) if p.split == "train"]
    tiles = [read_tile(p, [4, 3, 2, 8]) for p in train_pairs]
    valid = sum(int(t.valid.sum()) for t in tiles)
    pos = sum(int(t.mask[t.valid].sum()) for t in tiles)
    balance = {"valid_pixels": valid, "positive_pixels": pos}

    def sample(seed, share):
        rng = np.random.default_rng(seed)
        return sample_pixels(train_pairs, [4, 3, 2, 8], [], rng, 4000, share, balance)

    x, y = sample(42, None)
    assert x.shape[1] == 4 and x.dtype == np.float32 and 3500 < len(y) < 4500
    assert abs(y.mean() - pos / valid) < 0.03  # the data's own share
    x2, y2 = sample(42, None)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    _, yb = sample(42, 0.5)
    assert 3500 < len(yb) < 4500 and abs(yb.mean() - 0.5) < 0.05


def test_lightgbm_refusals(solafune, tmp_path, gbm_run):
    problems = check_train(gbm_config(solafune, tmp_path, "data.upscale=2", check=False))
    assert [p.field for p in problems] == ["data.upscale"]
    problems = check_train(gbm_config(solafune, tmp_path, "data.bands=[4,3,2,8]", check=False))
    assert [p.field for p in problems] == ["data.indices"]  # swir_nd needs B11, B12
    with pytest.raises(ValueError, match="cannot be resumed"):
        train(None, resume=gbm_run.run_dir)  # type: ignore[arg-type]


def test_blend_of_a_network_and_lightgbm(net_run, gbm_run):
    net, gbm = net_run.run_dir, gbm_run.run_dir
    blended = evaluate(net, split="test", blend=gbm)
    assert blended.metrics["blend_weight"] in BLEND_WEIGHTS
    assert blended.metrics["blend_val_iou"] >= max(
        net_run.metrics["val"]["iou"], gbm_run.metrics["val"]["iou"]
    )  # weights 0 and 1 (the models alone) are among the candidates on val
    # The ends of the blend are the models alone, count for count.
    alone = evaluate(net, split="test", blend=gbm, blend_weight=0.0, threshold=net_run.threshold)
    assert {k: alone.metrics[k] for k in COUNTS} == {k: net_run.metrics["test"][k] for k in COUNTS}
    alone = evaluate(net, split="test", blend=gbm, blend_weight=1.0, threshold=gbm_run.threshold)
    assert {k: alone.metrics[k] for k in COUNTS} == {k: gbm_run.metrics["test"][k] for k in COUNTS}


def test_blend_refuses_models_of_other_splits(solafune, tmp_path, gbm_run):
    other = train(gbm_config(solafune, tmp_path, "data.limit=40", "gbm.rounds=3"))
    problems = check_evaluate(gbm_run.run_dir, None, "test", blend=other.run_dir)
    assert [p.field for p in problems] == ["blend"]
    problems = check_evaluate(gbm_run.run_dir, None, "test", blend=gbm_run.run_dir,
                              blend_weight=1.5)  # fmt: skip
    assert [p.field for p in problems] == ["blend_weight"]
