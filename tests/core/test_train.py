"""Training runs on a few dozen real tiles: the run record, cancel, resume, compare,
and evaluate reproducing the run's metrics exactly."""

import json
import subprocess
import sys

import pytest
import torch

from core.config import ConfigError, LossTerm, load_config
from core.models.build import read_model_file
from core.progress import Progress
from core.training.loop import train
from core.training.runs import compare
from tests.conftest import REPO

RUN_FILES = ["config.yaml", "split.csv", "stats.json", "dataset.json", "history.csv", "model.pt",
             "checkpoint.pt", "metrics.json", "threshold_scan.csv", "per_image_train.csv",
             "per_image_val.csv", "per_image_test.csv", "run.json", "plots/loss.png",
             "plots/iou.png", "plots/probability_hist.png", "plots/confusion_matrix.png"]  # fmt: skip


def small_config(solafune, out, **over):
    overrides = [f"data.path={solafune}", "data.limit=40", "data.bands=[4,3,2,8]",
                 "train.epochs=2", "train.batch_size=8", f"out_dir={out}",
                 "train.early_stop.enabled=false", "train.threads=2"]  # fmt: skip
    overrides += [f"{k}={v}" for k, v in over.items()]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def finished_run(solafune, tmp_path_factory):
    reports: list[Progress] = []
    cfg = small_config(solafune, tmp_path_factory.mktemp("runs"), **{"name": "a"})
    result = train(cfg, progress=reports.append)
    return result, reports


def test_run_folder_is_a_complete_record(finished_run):
    result, reports = finished_run
    assert result.status == "completed" and result.device == "cpu"
    for name in RUN_FILES:
        path = result.run_dir / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert list(result.run_dir.glob("**/*.part")) == []
    history = (result.run_dir / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:4] == ["epoch", "lr", "train_loss", "train_iou"]
    assert len(history) == 3  # header + 2 epochs
    split = (result.run_dir / "split.csv").read_text().splitlines()
    assert len(split) == 41 and split[0] == "id,image,mask,group,split"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"train", "val", "test"}
    assert metrics["threshold"] == result.threshold
    assert set(metrics["at_thresholds"]["test"]) == {"0.25", "0.5", "0.75"}
    test = metrics["splits"]["test"]
    total = sum(test[k] for k in ("tp", "fp", "fn", "tn"))
    assert total == sum(int(r.split(",")[-1]) for r in
                        (result.run_dir / "per_image_test.csv").read_text().splitlines()[1:])  # fmt: skip
    meta, _ = read_model_file(result.run_dir / "model.pt")
    assert meta.bands == [4, 3, 2, 8] and meta.threshold == result.threshold
    # Solafune tiles name no bands: 12 bands are the L2A order, so 4,3,2,8 are R,G,B,NIR
    assert meta.band_names == ["B4", "B3", "B2", "B8"]
    assert meta.metrics["test"]["iou"] == test["iou"]
    assert meta.config["data"]["limit"] == 40 and len(meta.mean) == 4
    epochs = [r for r in reports if "history_row" in r.info]
    assert [r.info["epoch"] for r in epochs] == [1, 2]
    assert {"batch", "batches", "loss", "eta_s", "lr"} <= set(reports[3].info)


def test_evaluate_reproduces_run_metrics_exactly(finished_run):
    result, _ = finished_run
    out = subprocess.run(
        [sys.executable, "-m", "core", "evaluate", str(result.run_dir), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = json.loads((result.run_dir / "metrics.json").read_text())["splits"]["test"]
    for key in (
        "tp",
        "fp",
        "fn",
        "tn",
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "iou",
    ):
        assert got[key] == want[key], key
    assert got["threshold"] == result.threshold


def test_cancel_keeps_best_model_and_marks_run(solafune, tmp_path):
    cfg = small_config(solafune, tmp_path, **{"train.epochs": 3})
    state = {"epochs_done": 0}

    def progress(p: Progress) -> None:
        if "history_row" in p.info:
            state["epochs_done"] += 1

    result = train(cfg, progress=progress, cancel=lambda: state["epochs_done"] >= 1)
    assert result.status == "cancelled" and result.best_epoch == 1
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "cancelled"
    meta, state_dict = read_model_file(result.run_dir / "model.pt")
    assert meta.arch == "Unet" and len(state_dict) > 10
    assert len((result.run_dir / "history.csv").read_text().splitlines()) == 2


def test_resume_continues_history(solafune, tmp_path):
    cfg = small_config(solafune, tmp_path, **{"train.epochs": 2})
    done = {"n": 0}

    def progress(p: Progress) -> None:
        done["n"] += "history_row" in p.info

    first = train(cfg, progress=progress, cancel=lambda: done["n"] >= 1)
    assert first.status == "cancelled"
    resumed = train(None, resume=first.run_dir)
    assert resumed.run_dir == first.run_dir and resumed.status == "completed"
    rows = (first.run_dir / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert (first.run_dir / "metrics.json").exists()


def test_resume_equals_an_uninterrupted_run(solafune, tmp_path):
    """Cancelled after epoch 1 and resumed == trained straight through: same losses, IoU
    and weights (optimiser, schedule and every random state are in the checkpoint)."""
    over = {"train.epochs": 3, "optim.scheduler": "cosine", "optim.warmup_epochs": 1}
    straight = train(small_config(solafune, tmp_path / "a", **over))
    done = {"n": 0}

    def progress(p: Progress) -> None:
        done["n"] += "history_row" in p.info

    cfg = small_config(solafune, tmp_path / "b", **over)
    first = train(cfg, progress=progress, cancel=lambda: done["n"] >= 1)
    assert first.status == "cancelled"
    resumed = train(None, resume=first.run_dir)
    assert resumed.status == "completed"

    def history(run):
        rows = (run.run_dir / "history.csv").read_text().splitlines()
        header = rows[0].split(",")
        return [
            {k: v for k, v in zip(header, r.split(","), strict=False) if k != "seconds"}
            for r in rows[1:]
        ]

    assert len(history(resumed)) == 3
    assert history(resumed) == history(straight)
    a = torch.load(straight.run_dir / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["test"]["tp"] == straight.metrics["test"]["tp"]


def test_compare_prints_metrics_and_config_differences(finished_run, solafune, tmp_path):
    result, _ = finished_run
    cfg = small_config(solafune, tmp_path, **{"name": "b", "optim.lr": 0.003, "train.epochs": 1})
    other = train(cfg)
    text = compare(result.run_dir, other.run_dir)
    assert "optim.lr: 0.001 -> 0.003" in text
    assert "train.epochs: 2 -> 1" in text
    assert "name" not in text.split("configuration differences:")[1]
    lines = [line.split() for line in text.splitlines() if line.startswith("test ")]
    assert [row[1] for row in lines] == ["fp", "fn", "f1", "iou", "fp_fn_ratio"]


def test_cli_train_prints_run_folder_last(solafune, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "core", "train", "--config", str(REPO / "configs/smoke.yaml"),
         f"data.path={solafune}", "data.limit=24", "train.epochs=1", f"out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run_dir = out.stdout.strip().splitlines()[-1]
    assert (
        run_dir.startswith(str(tmp_path))
        and (tmp_path / run_dir.split("/")[-1] / "model.pt").exists()
    )


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "data.bands=4,3,2,8", "data.limit=null"])
    assert cfg.train.epochs == 3 and cfg.data.bands == [4, 3, 2, 8] and cfg.data.limit is None
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="data.upscale must be 1, 2, 4 or 8"):
        load_config(None, ["data.upscale=3"])
    with pytest.raises(
        ConfigError, match=r"data.train_crop must be a positive multiple .*\(32\), got 100"
    ):
        load_config(None, ["data.train_crop=100"])
    assert load_config(None, ["data.train_crop=96"]).data.train_crop == 96
    with pytest.raises(ConfigError, match="data.train_crop 96 is below the 128 px that PAN needs"):
        load_config(None, ["data.train_crop=96", "model.arch=PAN"])
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        load_config(None, ["train.epochs=many"])
    (tmp_path / "c.yaml").write_text(
        "loss:\n  terms:\n  - {name: bce, weight: 0.3}\n  - {name: focal, weight: 0.3}\n"
        "  - {name: jaccard, weight: 0.4, params: {pos_weight: 0.8, neg_weight: 0.2}}\n"
    )
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.loss.terms[2] == LossTerm("jaccard", 0.4, {"pos_weight": 0.8, "neg_weight": 0.2})


def test_warmup_then_cosine_schedule():
    from core.training.loop import _Schedule

    cfg = load_config(None, ["optim.lr=0.01", "optim.warmup_epochs=2", "train.epochs=6",
                             "optim.scheduler=cosine"])  # fmt: skip
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optim.lr)
    sched = _Schedule(opt, cfg)
    lrs = [sched.lr]
    for epoch in range(5):
        sched.step(epoch, 1.0)
        lrs.append(sched.lr)
    assert lrs[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert lrs[3] < lrs[2] and lrs[4] < lrs[3]


def test_time_budget_stops_before_an_epoch_that_would_overrun(solafune, tmp_path, monkeypatch):
    """A fake clock where every epoch takes 100 s: with a 210 s budget, a third epoch
    (ending near 300 s) is not started, and the best model and the record are kept."""
    import types

    import core.training.loop

    clock = {"t": 0.0}
    monkeypatch.setattr(
        core.training.loop, "time", types.SimpleNamespace(monotonic=lambda: clock["t"])
    )

    def progress(p: Progress) -> None:
        if "history_row" in p.info:
            clock["t"] += 100.0

    cfg = small_config(solafune, tmp_path, **{"train.epochs": 5, "train.max_minutes": 3.5})
    result = train(cfg, progress=progress)
    assert result.status == "time_limit"
    assert len((result.run_dir / "history.csv").read_text().splitlines()) == 1 + 2
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "time_limit"
    assert (result.run_dir / "model.pt").exists()
