"""int8 models (core.segment.int8, core.models.quantize): calibration on the model's
training tiles through segmentation's own preprocessing, agreement with fp32 on real Solafune
tiles the calibration never saw, metadata, cache, refusals keyed by field."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from core.data.discovery import find_dataset, write_manifest
from core.evaluation.model_split import split_of_model
from core.models.meta import read_model_meta
from core.models.onnx_export import export_onnx
from core.models.onnx_metadata import file_props, is_int8_file, solarseg_props
from core.segment.inputs import network_inputs
from core.segment.int8 import (
    CalibrationError,
    calibration_inputs,
    calibration_plan,
    calibration_problems,
    int8_model,
)
from core.segment.options import SegmentOptions
from tests.core.conftest import INT8_TILES

# int8 against fp32 on 40 real test tiles the calibration never saw (the fixture's
# briefly trained model, threshold 0.5): mask IoU at least, mean and max |probability
# difference| at most (measured 2026-12-01: IoU 0.972, mean 0.0025, max 0.118, 3.7 %
# panel pixels; the test prints its figures).
MASK_IOU_TOLERANCE = 0.95
MEAN_PROB_DIFF_TOLERANCE = 0.01
MAX_PROB_DIFF_TOLERANCE = 0.35


@pytest.fixture(scope="module")
def fp32_onnx(solafune_model, tmp_path_factory):
    return export_onnx(solafune_model, tmp_path_factory.mktemp("fp32") / "model.onnx")


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_int8_agrees_with_fp32_on_real_tiles_it_was_not_calibrated_on(
    solafune_model, solafune_int8, fp32_onnx
):
    meta = read_model_meta(solafune_model)
    test = [p for p in split_of_model(meta, None, "test") if p.split == "test"]
    calibrated = set(calibration_plan(meta, None, INT8_TILES).images)
    tiles = [p.image for p in test if p.image not in calibrated][:48]
    assert len(tiles) == 40  # the test split of 200 tiles
    opts = SegmentOptions(tile_size=32, overlap=0)  # one window per 22-26 px tile
    x = np.concatenate([next(network_inputs(t, meta, opts, 1)) for t in tiles])
    assert x.shape == (40, 4, 32, 32)
    fp32, int8 = _run(fp32_onnx, x), _run(solafune_int8, x)
    a, b = fp32 >= np.float32(meta.threshold), int8 >= np.float32(meta.threshold)
    iou = (a & b).sum() / (a | b).sum()
    diff = np.abs(fp32 - int8)
    print(f"int8 vs fp32 on 40 real test tiles: mask IoU {iou:.4f}, |prob diff| max "
          f"{diff.max():.4f} mean {diff.mean():.5f}, fp32 positives {a.mean():.3f}")  # fmt: skip
    assert 0.03 < a.mean() < 0.3  # a real share of panel pixels to agree on
    assert iou >= MASK_IOU_TOLERANCE
    assert diff.mean() <= MEAN_PROB_DIFF_TOLERANCE
    assert diff.max() <= MAX_PROB_DIFF_TOLERANCE


def test_int8_file_records_precision_quantisation_and_calibration(solafune_int8, solafune):
    props = file_props(solafune_int8)
    assert props["precision"] == "int8"
    meta = solarseg_props(props)
    assert meta["graph_precision"] == "int8" and meta["output"] == "probability"
    assert meta["precision"] == "fp32"  # ModelMeta's: what training ran in, kept
    assert meta["calibration"] == {
        "source": str(solafune), "split": "train", "tiles": INT8_TILES,
        "requested": INT8_TILES, "available": 140, "seed": 0,
    }  # fmt: skip
    q = meta["quantization"]
    assert (q["format"], q["per_channel"], q["activations"], q["weights"], q["method"]) == (
        "QDQ",
        True,
        "uint8",
        "int8",
        "minmax",
    )
    # Float32: the sigmoid, the head and the decoder's last stage (3 convolutions).
    assert q["float_tail_convs"] == 3 and q["float_nodes"][:2] == [
        "/Sigmoid", "/inner/segmentation_head/segmentation_head.0/Conv"
    ]  # fmt: skip
    assert len(q["float_nodes"]) == 6 and all("blocks.4" in n for n in q["float_nodes"][2:])
    check = meta["calibration_check"]
    assert 0 < check["max_prob_diff"] < MAX_PROB_DIFF_TOLERANCE
    assert check["mean_prob_diff"] < MEAN_PROB_DIFF_TOLERANCE
    assert check["mask_iou_vs_fp32"] >= MASK_IOU_TOLERANCE
    assert json.loads(props["calibration"])["tiles"] == INT8_TILES
    assert meta["bands"] == [4, 3, 2, 8]  # the fp32 file's metadata is kept


def test_calibration_reads_train_tiles_through_the_engine(solafune_model, solafune, tmp_path):
    meta = read_model_meta(solafune_model)
    plan = calibration_plan(meta, None, INT8_TILES)
    train = {p.image for p in split_of_model(meta, None, "train") if p.split == "train"}
    assert (plan.source, plan.split, plan.available) == (solafune, "train", 140)
    assert len(plan.images) == INT8_TILES and set(plan.images) <= train
    assert plan.images == calibration_plan(meta, None, INT8_TILES).images  # seeded
    batches = list(calibration_inputs(meta, plan))
    assert sum(len(b) for b in batches) == INT8_TILES
    # The engine's windows, exactly: the first tile as segment reads it.
    first = next(network_inputs(plan.images[0], meta, SegmentOptions(tile_size=32, overlap=0)))
    np.testing.assert_array_equal(batches[0][0], first[0])
    # Another dataset (here a manifest of 6 Solafune pairs): every tile is a candidate.
    pairs = find_dataset(solafune).pairs[1000:1006]
    write_manifest(pairs, tmp_path / "manifest.csv")
    other = calibration_plan(meta, tmp_path / "manifest.csv", 4)
    assert (other.split, other.available, len(other.images)) == ("all", 6, 4)
    assert set(other.images) <= {p.image for p in pairs}


def test_int8_is_cached_and_an_int8_file_is_recognised(solafune_model, solafune_int8, fp32_onnx):
    mtime = solafune_int8.stat().st_mtime_ns
    again = int8_model(solafune_model, tiles=INT8_TILES, cache=solafune_int8.parent)
    assert again == solafune_int8 and again.stat().st_mtime_ns == mtime  # not redone
    assert int8_model(solafune_int8) == solafune_int8  # already int8: used as it is
    assert is_int8_file(solafune_int8) and not is_int8_file(fp32_onnx)
    assert not is_int8_file(solafune_model)


def test_calibration_refusals_are_keyed_by_field(solafune_model, tmp_path):
    meta = read_model_meta(solafune_model)
    [p] = calibration_problems(meta, tmp_path / "nowhere", 8)
    assert p.field == "calibration" and "nowhere: calibration dataset not found" in p.message
    [p] = calibration_problems(meta, None, 0)
    assert p.field == "calibration_tiles" and ">= 1" in p.message
    from dataclasses import replace

    bare = replace(meta, config={}, split={})  # a model that records no dataset
    with pytest.raises(CalibrationError, match="records no training dataset") as err:
        calibration_plan(bare, None, 8)
    assert err.value.field == "calibration"
    (tmp_path / "empty").mkdir()
    [p] = calibration_problems(bare, tmp_path / "empty", 8)
    assert p.field == "calibration" and "calibration dataset" in p.message
