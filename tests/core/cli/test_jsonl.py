"""``python -m core --jsonl``: the event channel the QGIS plugin reads from the engine
subprocess. stdout holds only JSON lines; SIGTERM cancels the way the cancel check does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.conftest import REPO


def engine(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core", "--jsonl", *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # every line must be JSON


def test_stats_progress_then_result(solafune):
    proc = engine("stats", str(solafune), "--limit", "30", "--bands", "4,3,2,8")
    out, _ = proc.communicate(timeout=120)
    evs = events(out)
    assert proc.returncode == 0
    assert [e["event"] for e in evs][-1] == "result" and evs[-1]["command"] == "stats"
    assert evs[-1]["data"]["pairs"] == 30
    assert evs[-1]["data"]["pairs_per_split"] == {"train": 21, "val": 3, "test": 6}
    fractions = [e["fraction"] for e in evs if e["event"] == "progress"]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_user_error_is_one_event_and_status_2(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model at all")
    proc = engine("segment", str(bad), str(REPO / "configs" / "smoke.yaml"), "--out",
                  str(tmp_path / "out"))  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    (ev,) = events(out)
    # Both inputs are bad (the "raster" is a YAML file): both problems, keyed by field.
    assert ev["event"] == "error" and ev["type"] == "ValidationError"
    assert ev["field"] == "model" and [p["field"] for p in ev["problems"]] == ["model", "raster"]
    assert str(bad) in ev["message"] and "\n" not in ev["message"]
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_sigterm_cancels_training_and_keeps_the_model(solafune, tmp_path):
    proc = engine(
        "train", f"data.path={solafune}", "data.limit=40", "data.bands=[4,3,2,8]",
        "train.epochs=50", "train.batch_size=8", f"out_dir={tmp_path}", "train.threads=1",
    )  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress" and "history_row" in seen[-1]["info"]:
            proc.send_signal(signal.SIGTERM)  # what the plugin's Cancel does
            break
    rest, _ = proc.communicate(timeout=300)
    final = events(rest)[-1]
    assert proc.returncode == 0
    assert final["event"] == "result" and final["data"]["status"] == "cancelled"
    assert final["data"]["best_epoch"] >= 1
    run_dir = final["data"]["run_dir"]
    assert json.loads(open(f"{run_dir}/run.json").read())["status"] == "cancelled"
    assert open(final["data"]["model"], "rb").read(2)  # the best model is kept
