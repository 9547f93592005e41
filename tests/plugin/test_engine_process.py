"""The engine in its own process: a QgsTask runs ``python -m solar_seg_plugin.core
--jsonl`` in the engine's Python, reads its events, and survives the engine dying."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from .conftest import run_task


def test_run_engine_reads_progress_and_result(solafune):
    from solar_seg_plugin.engine_process import run_engine

    events: list[dict] = []
    out = run_engine(sys.executable, ["stats", str(solafune), "--limit", "30"], events.append)
    assert out.ok and out.returncode == 0 and out.error == ""
    assert out.result["pairs"] == 30 and out.result["form"] == "folders"
    assert events and events[-1]["event"] == "result"
    assert any(e["event"] == "progress" and e["fraction"] == 1.0 for e in events)


def test_engine_error_is_one_line_naming_the_file(tmp_path):
    from solar_seg_plugin.engine_process import run_engine

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00" * 64)
    out = run_engine(sys.executable, ["segment", str(bad), str(bad), "--out", str(tmp_path / "o")])
    assert out.returncode == 2 and not out.ok
    # Model and "raster" are both the broken file: the engine's check reports both.
    assert out.error_type == "ValidationError" and str(bad) in out.error and "\n" not in out.error
    assert [p["field"] for p in out.problems] == ["model", "raster"]
    assert all(str(bad) in p["message"] for p in out.problems)


def test_a_killed_engine_is_a_message_and_the_next_task_runs(qgis_app, solafune, tmp_path):
    from solar_seg_plugin.tasks import EngineProcessTask

    # A training that would run for minutes; the engine process is killed (as the
    # kernel's OOM killer would) once it reports its first batch.
    args = ["train", f"data.path={solafune}", "data.limit=40", "data.bands=[4,3,2,8]",
            "train.epochs=50", "train.batch_size=8", f"out_dir={tmp_path}", "train.threads=1"]  # fmt: skip
    task = EngineProcessTask("SolarSeg: doomed training", args, sys.executable)
    seen: list[dict] = []

    def on_info(info: dict) -> None:
        seen.append(info)
        if info.get("stage") == "train" and task.outcome is None and not getattr(task, "_k", 0):
            task._k = 1
            os.kill(task.pid, signal.SIGKILL)

    import solar_seg_plugin.engine_process as ep

    real_run = ep.run_engine

    def run_keeping_pid(python, a, on_event, is_cancelled, **kw):
        return real_run(python, a, on_event, is_cancelled,
                        on_start=lambda p: setattr(task, "pid", p.pid), **kw)  # fmt: skip

    import solar_seg_plugin.tasks as tasks_mod

    tasks_mod.run_engine = run_keeping_pid
    try:
        task.info.connect(on_info)
        assert run_task(task, timeout=300) is False
    finally:
        tasks_mod.run_engine = real_run
    assert seen and task.error is not None
    message = task.error_message()
    assert "killed by SIGKILL" in message and "\n" not in message
    assert not task.cancelled

    # QGIS and the task machinery carry on: the next engine task completes.
    nxt = EngineProcessTask("SolarSeg: stats", ["stats", str(solafune), "--limit", "20"],
                            sys.executable)  # fmt: skip
    assert run_task(nxt, timeout=120) is True
    assert nxt.result["pairs"] == 20


def test_cancel_terminates_the_engine_and_keeps_the_best_model(qgis_app, solafune, tmp_path):
    from solar_seg_plugin.core.config import load_config
    from solar_seg_plugin.tasks import TrainTask

    cfg = load_config(None, [f"data.path={solafune}", "data.limit=40", "data.bands=[4,3,2,8]",
                             "train.epochs=50", "train.batch_size=8", f"out_dir={tmp_path}",
                             "train.threads=1", "name=cancelme"])  # fmt: skip
    task = TrainTask(cfg, python=sys.executable)
    task.info.connect(lambda info: "history_row" in info and task.cancel())
    assert run_task(task, timeout=300) is False
    assert task.cancelled and task.error is None
    assert task.result.status == "cancelled" and task.result.best_epoch >= 1
    assert Path(task.result.model).is_file()
    assert not task.config_file.exists()  # the temporary config is removed


def test_an_error_event_without_message_is_still_a_message(tmp_path):
    from solar_seg_plugin.engine_process import run_engine

    # A stand-in engine Python that prints an error event with an empty message.
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho \'{"event": "error", "message": ""}\'\nexit 2\n')
    fake.chmod(0o755)
    out = run_engine(str(fake), ["stats", "x"])
    assert out.returncode == 2 and out.error == "the engine reported an error"


def test_run_engine_closes_its_pipes(tmp_path):
    """Left open, each pipe was a ResourceWarning with a traceback in QGIS's message log
    (two per engine task: seen in the real QGIS desktop)."""
    import gc
    import warnings

    from solar_seg_plugin.engine_process import run_engine

    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho \'{"event": "result", "data": {"ok": 1}}\'\necho err >&2\n')
    fake.chmod(0o755)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        out = run_engine(str(fake), ["stats", "x"])
        gc.collect()
    assert out.ok and out.result == {"ok": 1} and out.stderr_tail == ["err"]
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
