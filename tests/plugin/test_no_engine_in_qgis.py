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
             "triton", "onnx", "sklearn", "matplotlib", "lightgbm")  # fmt: skip
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


# QGIS's own Python, as users have it: Debian's python3 (no torch, no project venv).
QGIS_PYTHON = "/usr/bin/python3"
# Makes the engine's packages unimportable in the QGIS process (Debian's python3 has
# rasterio): any attempt is an ImportError the test sees, not a silent success.
BLOCKER = f"""
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FORBIDDEN!r}:
            raise ImportError("engine package imported in QGIS's process: " + name)
sys.meta_path.insert(0, _Blocker())
"""


def run_clean(script: str, tmp_path: Path, python: str = sys.executable):
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen",
           "SOLARSEG_ENGINE_PYTHON": sys.executable}  # fmt: skip
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([python, "-c", script], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=900)  # fmt: skip


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


def test_plugin_runs_the_engine_from_a_qgis_without_it(solafune, scenes, austria, tmp_path):
    """QGIS's own Python with the engine's packages blocked: every plugin module imports,
    the Train dialog's summary, a real training (TrainTask), the Segment dialog's model
    info and a real segmentation with its layers, and Create Training Data on the Austria
    layers all run through the engine process."""
    script = (
        BLOCKER
        + f"""
import importlib, sys, time
from pathlib import Path
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
app = QgsApplication([], False); app.initQgis()
from qgis.PyQt.QtCore import QCoreApplication
for name in {plugin_modules()!r}:
    importlib.import_module(name)

def spin(cond, what, seconds=400):
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, what
        QCoreApplication.processEvents(); time.sleep(0.02)

from solar_seg_plugin import tasks
from solar_seg_plugin.core.config import load_config
from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog
from solar_seg_plugin.dialogs.train_dialog import TrainDialog
train = TrainDialog(None)
train.form.fields["data.limit"].set("40")
train.form.fields["data.path"].widget.setText({str(solafune)!r})
spin(lambda: train.summary_task is None and train.balance_table.rowCount() > 0, "summary")
print("rows", train.balance_table.rowCount())
cfg = load_config(None, [f"data.path={solafune}", "data.limit=24", "data.bands=[4,3,2,8]",
    "model.encoder=resnet18", "train.epochs=1", "train.batch_size=8",
    "out_dir={tmp_path / 'runs'}", "name=noengine"])
done = []
task = tasks.TrainTask(cfg)
task.done.connect(done.append)
tasks.start(task)
spin(lambda: done, "training")
assert done[0], task.error_message()
run = task.result.run_dir
print("status", task.result.status)

raster = {str(scenes / "sentinel2_b2b3b4b8_300px.tif")!r}
source = QgsRasterLayer(raster, "s2")
QgsProject.instance().addMapLayer(source)
seg = SegmentDialog(None)
seg.layer_combo.setLayer(source)
seg.model_edit.setText(str(run))
spin(lambda: seg.info_task is None, "model info")
assert seg.meta is not None, seg.errors["model"].text()
seg.bands_edit.setText("3,2,1,4")
seg.tile_spin.setValue(128); seg.overlap_spin.setValue(32)
seg.out_edit.setText({str(tmp_path / "seg")!r})
assert seg.start()
spin(lambda: seg.task is None, "segmentation")
assert seg.outcome is not None, seg.status.text()
print("layers", sorted(l.name() for l in seg.added))
seg.set_mode("folder")  # several rasters: the folder's rasters counted in QGIS's process
seg.folder_edit.setText({str(austria / "images")!r})
print("folder", seg.folder_count.text())
seg.set_mode("one")
from qgis.core import QgsVectorLayer
from solar_seg_plugin.dialogs.chips_dialog import ChipsDialog
for tif in sorted(Path({str(austria / "images")!r}).glob("*.tif"))[:4]:
    QgsProject.instance().addMapLayer(QgsRasterLayer(str(tif), tif.stem))
osm = QgsVectorLayer({str(austria / "photovoltaic_osm.gpkg")!r}, "osm", "ogr")
QgsProject.instance().addMapLayer(osm)
chips = ChipsDialog(None)
chips.labels_combo.setLayer(osm)
chips.out_edit.setText({str(tmp_path / "chips")!r})
assert chips.start()
spin(lambda: chips.task is None, "chips")
assert chips.result is not None, chips.status.text()
print("chips", chips.result.tiles)
print("heavy", sorted(m for m in {FORBIDDEN!r} if m in sys.modules))
seg.shutdown(); train.shutdown(); chips.shutdown()
"""
    )
    proc = run_clean(script, tmp_path, QGIS_PYTHON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows 4" in proc.stdout and "status completed" in proc.stdout
    assert "chips 4" in proc.stdout  # the 4 small Austria chips: one tile each
    assert "layers ['s2 mask', 's2 panels', 's2 probability']" in proc.stdout
    assert "folder 25 raster(s) found" in proc.stdout
    assert "heavy []" in proc.stdout
    assert (tmp_path / "seg" / "mask.tif").is_file()
