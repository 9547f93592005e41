"""``python -m core ensemble`` of two real training runs: threshold chosen on val by the
engine's scan, members recorded, and evaluate, info, segment (torch and ONNX) and
export-onnx work on the ensemble file."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from core.cli.main import main
from core.config import load_config
from core.data.discovery import find_dataset
from core.evaluation.evaluate import evaluate, predict_split
from core.evaluation.scoring import evaluate_predictions
from core.models.meta import read_model_meta
from core.training.loop import train


@pytest.fixture(scope="module")
def two_runs(solafune, tmp_path_factory):
    """Two short real training runs on the same split (other seeds)."""
    out = tmp_path_factory.mktemp("runs")
    runs = []
    for seed in (1, 2):
        cfg = load_config(None, [
            f"data.path={solafune}", "data.limit=40", "data.bands=[4,3,2,8]",
            "train.epochs=1", "train.batch_size=8", f"out_dir={out}", f"name=s{seed}",
            f"train.seed={seed}", "train.early_stop.enabled=false", "train.threads=2",
            "train.eval_test_each_epoch=false", "train.precision=fp32",
        ])  # fmt: skip
        runs.append(train(cfg).run_dir)
    return out, runs


def test_ensemble_command_on_two_real_runs(two_runs, solafune, capsys):
    out, runs = two_runs
    ens = out / "ens.pt"
    assert main(["ensemble", str(runs[0]), str(runs[1]), "-o", str(ens)]) == 0
    printed = capsys.readouterr().out
    assert "ensemble of 2 models" in printed and str(ens) in printed
    meta = read_model_meta(ens)
    assert meta.ensemble["size"] == 2 and meta.ensemble["threshold_from"] == "val"
    for m, run in zip(meta.ensemble["members"], runs, strict=True):
        member = read_model_meta(run)
        assert m["source"] == str((run / "model.pt").resolve())
        assert m["metrics"]["val"] == member.metrics["val"]
    assert meta.split == read_model_meta(runs[0]).split
    # The threshold is the engine's scan's best IoU on val, for the ensemble itself.
    _, val = predict_split(ens, split="val", device="cpu")
    threshold, _ = evaluate_predictions(val, 0.5, scan=True).scan.best("iou")
    assert meta.threshold == threshold
    # evaluate reproduces the metrics written into the model file exactly.
    result = evaluate(ens, split="test", device="cpu")
    for k in ("tp", "fp", "fn", "tn"):
        assert result.metrics[k] == meta.metrics["test"][k]
    # info shows the members
    assert main(["info", str(ens)]) == 0
    info = capsys.readouterr().out
    assert "ensemble    2 members, mean_probability" in info and str(runs[1]) in info
    # segment: the ensemble's probabilities are the mean of the members' on a real tile
    tile = find_dataset(solafune).pairs[0].image
    probs = []
    for k, model in enumerate([*runs, ens]):
        assert main(["segment", str(model), str(tile), "--out", str(out / f"seg{k}")]) == 0
        with rasterio.open(out / f"seg{k}" / "probability.tif") as src:
            probs.append(src.read(1))
    capsys.readouterr()
    assert np.abs(probs[0] - probs[1]).max() > 1e-3
    assert np.abs(probs[2] - (probs[0] + probs[1]) / 2).max() < 1e-5
    # one ONNX file; segment with it agrees with torch
    assert main(["export-onnx", str(ens), str(out / "ens.onnx")]) == 0
    assert main(["segment", str(out / "ens.onnx"), str(tile), "--out", str(out / "seg-onnx"),
                 "--backend", "onnx"]) == 0  # fmt: skip
    with rasterio.open(out / "seg-onnx" / "probability.tif") as src:
        assert np.abs(src.read(1) - probs[2]).max() < 1e-3
    # an existing output is not replaced without --overwrite
    assert main(["ensemble", str(runs[0]), str(runs[1]), "-o", str(ens)]) == 2
    assert "already exists" in capsys.readouterr().err
