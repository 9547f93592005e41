"""QGIS's process never imports the engine's packages (torch, rasterio, smp,
onnxruntime, sympy, triton): the plugin imports only the engine's pure-Python modules
(settings, options, errors, numpy metrics) and runs everything else in the engine's own
process."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

FORBIDDEN = ("torch", "rasterio", "segmentation_models_pytorch", "onnxruntime", "sympy",
             "triton", "onnx", "sklearn", "matplotlib")  # fmt: skip
PLUGIN = REPO / "solar_seg_plugin"


def plugin_modules() -> list[str]:
    """Every module of the plugin outside its engine folder."""
    out = []
    for path in sorted(PLUGIN.rglob("*.py")):
        rel = path.relative_to(PLUGIN)
        if rel.parts[0] in ("core", "resources"):
            continue
        parts = ["solar_seg_plugin", *rel.with_suffix("").parts]
        out.append(".".join(p for p in parts if p != "__init__"))
    return out


def engine_imports() -> set[str]:
    """Engine modules (``core.x.y``) the plugin's own modules import."""
    found = set()
    for path in PLUGIN.rglob("*.py"):
        if path.relative_to(PLUGIN).parts[0] == "core":
            continue
        depth = len(path.relative_to(PLUGIN).parts) - 1
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level:
                if node.level == depth + 1 and node.module.split(".")[0] == "core":
                    found.add(node.module)
    return found


def run_clean(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=600)  # fmt: skip


def test_engine_modules_the_plugin_imports_are_pure(tmp_path):
    modules = sorted(engine_imports())
    assert "core.config" in modules and "core.segment.options" in modules
    script = f"""
import importlib, sys
for name in {modules!r}:
    importlib.import_module("solar_seg_plugin." + name)
print("heavy", sorted(m for m in {FORBIDDEN!r} if m in sys.modules))
"""
    proc = run_clean(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "heavy []" in proc.stdout


def test_plugin_modules_and_dialogs_leave_qgis_clean(tiny_run, solafune, tmp_path):
    """Import every plugin module, open Train (dataset summary by the engine), Segment
    (model read by the engine) and the engine dialog: no engine package in sys.modules."""
    script = f"""
import importlib, sys, time
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
from qgis.PyQt.QtCore import QCoreApplication
for name in {plugin_modules()!r}:
    importlib.import_module(name)

def spin(cond, what):
    end = time.monotonic() + 240
    while not cond():
        assert time.monotonic() < end, what
        QCoreApplication.processEvents(); time.sleep(0.02)

from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog
from solar_seg_plugin.dialogs.train_dialog import TrainDialog
seg = SegmentDialog(None)
seg.model_edit.setText({str(tiny_run)!r})
spin(lambda: seg.info_task is None, "model info")
assert seg.meta is not None and seg.bands_edit.text() == "4,3,2,8", seg.errors["model"].text()
train = TrainDialog(None)
train.form.fields["data.limit"].set("40")
train.form.fields["data.path"].widget.setText({str(solafune)!r})
spin(lambda: train.summary_task is None and train.balance_table.rowCount() > 0, "summary")
print("rows", train.balance_table.rowCount())
print("heavy", sorted(m for m in {FORBIDDEN!r} if m in sys.modules))
seg.shutdown(); train.shutdown()
"""
    proc = run_clean(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows 4" in proc.stdout
    assert "heavy []" in proc.stdout
