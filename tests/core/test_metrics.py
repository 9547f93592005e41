"""Exact metrics: hand-made masks, edge cases, ThresholdScan == confusion()."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from core.evaluation.metrics import (
    ConfusionCounts,
    ThresholdScan,
    confusion,
    default_thresholds,
    per_image_row,
)

# A 4x4 case with tp=3, fp=2, fn=1, tn=10.
PRED = np.array(
    [
        [1, 1, 1, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)
TRUTH = np.array(
    [
        [1, 1, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)


def test_hand_counts_and_exact_metrics():
    prob = np.where(PRED == 1, 0.9, 0.1).astype(np.float32)
    c = confusion(prob, TRUTH)
    assert c == ConfusionCounts(tp=3, fp=2, fn=1, tn=10)
    assert c.total == 16
    m = c.metrics()
    assert m["accuracy"] == float(Fraction(13, 16))
    assert m["precision"] == float(Fraction(3, 5))
    assert m["recall"] == float(Fraction(3, 4))
    assert m["specificity"] == float(Fraction(10, 12))
    assert m["iou"] == float(Fraction(3, 6))
    assert m["f1"] == float(Fraction(6, 9))
    assert m["fp_fn_ratio"] == 2.0
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 10)


def test_torch_inputs_and_validity():
    prob = torch.where(torch.from_numpy(PRED) == 1, 0.9, 0.1)
    valid = torch.ones(4, 4, dtype=torch.bool)
    valid[0, 3] = False  # the only false negative
    valid[1, 0] = False  # a false positive
    c = confusion(prob, torch.from_numpy(TRUTH).float(), valid)
    assert c == ConfusionCounts(tp=3, fp=1, fn=0, tn=10)


def test_threshold_is_inclusive():
    prob = np.array([0.5, 0.49999, 0.75], dtype=np.float32)
    truth = np.array([1, 1, 0])
    assert confusion(prob, truth, threshold=0.5) == ConfusionCounts(tp=1, fp=1, fn=1, tn=0)
    assert confusion(prob, truth, threshold=0.75) == ConfusionCounts(tp=0, fp=1, fn=2, tn=0)


def test_add_counts():
    a = ConfusionCounts(1, 2, 3, 4) + ConfusionCounts(10, 20, 30, 40)
    assert a == ConfusionCounts(11, 22, 33, 44)


def test_edge_case_nothing_predicted_nothing_true():
    m = ConfusionCounts(tn=7).metrics()
    assert m["precision"] == m["recall"] == m["f1"] == m["iou"] == 1.0
    assert m["accuracy"] == 1.0 and m["specificity"] == 1.0
    assert m["fp_fn_ratio"] == 0.0


def test_edge_case_zero_denominators_otherwise_zero():
    only_fp = ConfusionCounts(fp=3, tn=2).metrics()  # truth empty, prediction not
    assert only_fp["recall"] == 0.0 and only_fp["iou"] == 0.0 and only_fp["f1"] == 0.0
    assert only_fp["precision"] == 0.0
    assert only_fp["fp_fn_ratio"] == math.inf
    only_fn = ConfusionCounts(fn=2).metrics()  # nothing predicted, truth not empty
    assert only_fn["precision"] == 0.0 and only_fn["recall"] == 0.0
    assert only_fn["specificity"] == 0.0  # no negatives at all
    assert only_fn["fp_fn_ratio"] == 0.0
    empty = ConfusionCounts().metrics()
    assert empty["accuracy"] == 0.0 and empty["iou"] == 1.0


def test_json_safe_maps_inf_to_none():
    m = ConfusionCounts(fp=3, tn=2).metrics(json_safe=True)
    assert m["fp_fn_ratio"] is None
    json.dumps(m, allow_nan=False)


def test_default_thresholds():
    ths = default_thresholds()
    assert ths == sorted(set(ths))
    assert len(ths) == 19 and ths[0] == 0.05 and ths[-1] == 0.95
    assert {0.25, 0.5, 0.75} <= set(ths)


def test_scan_matches_confusion_on_random_batches():
    rng = np.random.default_rng(0)
    scan = ThresholdScan()
    batches = []
    for i in range(4):
        prob = rng.random((2, 1, 16, 16)).astype(np.float32)
        # values exactly on thresholds, and just either side of them, exercise the >=.
        ths = np.asarray(scan.thresholds, dtype=np.float32)
        prob.flat[: len(ths)] = ths
        prob.flat[len(ths) : 2 * len(ths)] = np.nextafter(ths, np.float32(0))
        target = (rng.random(prob.shape) < 0.3).astype(np.float32)
        valid = rng.random(prob.shape) > 0.1
        if i % 2:  # torch tensors work too
            prob, target, valid = map(torch.from_numpy, (prob, target, valid))
        scan.update(prob, target, valid)
        batches.append((prob, target, valid))
    for t in scan.thresholds:
        total = ConfusionCounts()
        for prob, target, valid in batches:
            total = total + confusion(prob, target, valid, threshold=t)
        assert scan.counts(t) == total
    n_valid = sum(int(np.asarray(v).sum()) for _, _, v in batches)
    n_pos = sum(int((np.asarray(t) * np.asarray(v)).sum()) for _, t, v in batches)
    assert scan.hist_pos.sum() == n_pos
    assert scan.hist_neg.sum() == n_valid - n_pos
    assert scan.hist_pos.shape == (100,) and len(scan.hist_edges) == 101
    rows = scan.table()
    assert [r["threshold"] for r in rows] == scan.thresholds
    assert rows[0]["tp"] == scan.counts(scan.thresholds[0]).tp


def test_scan_unknown_threshold_raises():
    with pytest.raises(ValueError, match="not scanned"):
        ThresholdScan([0.5]).counts(0.3)


def test_best_threshold_and_tie_break():
    # IoU: 0.6 at 0.25 and at 0.3 (tie), 0.5 at 0.2 and 0.4, less elsewhere.
    prob = np.array([0.3, 0.4, 0.6, 0.2, 0.35, 0.45], dtype=np.float32)
    truth = np.array([1, 1, 1, 0, 0, 0])
    scan = ThresholdScan([0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
    scan.update(prob, truth)
    assert scan.counts(0.25).metrics()["iou"] == scan.counts(0.3).metrics()["iou"] == 0.6
    t, counts = scan.best("iou")
    assert t == 0.3
    assert counts == ConfusionCounts(tp=3, fp=2, fn=0, tn=1)
    # a perfectly separated case ties everywhere: 0.5 wins.
    perfect = ThresholdScan()
    perfect.update(np.array([0.99, 0.01]), np.array([1, 0]))
    assert perfect.best("f1")[0] == 0.5
    with pytest.raises(ValueError, match="unknown metric"):
        scan.best("fp_fn_ratio")


def test_per_image_row():
    prob = np.where(PRED == 1, 0.9, 0.1)
    valid = np.ones((4, 4), dtype=bool)
    valid[3, 3] = False
    row = per_image_row("tile_007", prob, TRUTH, valid, 0.5)
    assert row == {
        "tile_id": "tile_007",
        "iou": 0.5,
        "f1": float(Fraction(6, 9)),
        "precision": 0.6,
        "recall": 0.75,
        "tp": 3,
        "fp": 2,
        "fn": 1,
        "tn": 9,
        "positive_pixels": 4,
        "predicted_pixels": 5,
        "valid_pixels": 15,
    }
