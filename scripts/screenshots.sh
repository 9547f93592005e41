#!/usr/bin/env bash
# Screenshots of SolarSeg in the real QGIS desktop (under Xvfb when there is no display):
# a throwaway profile with the plugin installed, a real training on Solafune tiles through
# the Train dialog, Inspect Errors on its test split, Segment Layer on the Haiti scene.
# PNGs go to docs/screenshots/ (or $1). Takes a few minutes on 2 CPU cores.
#   scripts/screenshots.sh [OUT_DIR]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "${1:-$REPO/docs/screenshots}")"
WORK="$(mktemp -d /tmp/solarseg-shots.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
bash "$REPO/scripts/install_plugin.sh" "$WORK/profiles/profiles/default" >/dev/null
SITE="$(ls -d "$REPO"/.venv/lib/python3*/site-packages | head -n1)"
if "$REPO/.venv/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('triton') is None)"; then
  echo "screenshots: triton is installed in .venv; it crashes a window-backed QGIS (pip uninstall triton)" >&2
  exit 1
fi
cat > "$WORK/driver.py" <<'PY'
"""Drives the SolarSeg dialogs inside a real QGIS and saves screenshots."""
import os
import sys
import time
import traceback
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

OUT = Path(os.environ["SOLARSEG_SHOTS"])
WORK = Path(os.environ["SOLARSEG_WORK"])
DATA = Path(os.environ["SOLARSEG_DATA"])
LOG = open(WORK / "driver.log", "a")


def log(*args):
    print(*args, file=LOG, flush=True)


def grab(widget, name):
    widget.repaint()
    QgsApplication.processEvents()
    path = OUT / name
    ok = widget.grab().save(str(path))
    log("saved", path, ok)


def steps():
    plugin = plugins["solar_seg_plugin"]
    win = iface.mainWindow()
    win.showMaximized()
    yield 1.0

    # --- Train -----------------------------------------------------------------------
    train = plugin.open_train()
    f = train.form.fields
    for key, value in {
        "name": "solafune-demo", "out_dir": str(WORK / "runs"),
        "data.path": str(DATA / "solafune-s2-pv"), "data.limit": "500", "data.bands": "4,3,2,8",
        "data.upscale": 1, "model.arch": "Unet", "model.encoder": "resnet18",
        "train.epochs": 6, "train.batch_size": 16, "optim.lr": "0.002",
        "train.early_stop.patience": 6,
    }.items():
        f[key].set(value)
    train.form.setCurrentIndex(1)  # the Data tab: dataset form and class balance
    train.refresh_dataset()
    yield lambda: train.summary_task is None
    yield 0.5
    assert train.start(), train.form.errors()
    yield lambda: len(train.chart.rows) >= 3
    grab(train, "train_running.png")
    yield lambda: train.task is None
    yield 0.5
    log("train result", train.result)
    train.form.setCurrentIndex(0)
    grab(train, "train_summary.png")

    # --- Inspect Errors ----------------------------------------------------------------
    train.inspect_button.click()  # opens Inspect Errors on the run and starts it
    inspect = plugin.dialogs["inspect"]
    yield 0.3
    grab(inspect, "inspect_dialog.png")
    yield lambda: inspect.task is None
    train.hide()
    inspect.hide()
    analysis = plugin.analyses[-1]
    rows = [r for r in analysis.rows if r["fp"] > 0 and r["fn"] > 0 and r["tp"] > 0]
    rows = rows or [r for r in analysis.rows if r["fp"] + r["fn"] > 0] or analysis.rows
    row = max(rows, key=lambda r: min(r["fp"], r["fn"]) * 10 + r["tp"])
    log("tile", row)
    analysis.dock.select_tile(str(row["tile_id"]))
    yield 2.0
    grab(win, "error_analysis.png")
    analysis.dock.spin.setValue(min(0.95, analysis.threshold + 0.2))
    yield 2.0
    grab(win, "error_analysis_threshold.png")
    analysis.close()

    # --- Segment Layer -----------------------------------------------------------------
    iface.newProject(False)
    yield 0.5
    scene = QgsRasterLayer(str(DATA / "scenes" / "rgbn_haiti_5m.tif"), "rgbn_haiti_5m")
    QgsProject.instance().addMapLayer(scene)
    iface.setActiveLayer(scene)
    iface.zoomToActiveLayer()
    seg = plugin.open_segment()
    seg.layer_combo.setLayer(scene)
    seg.model_edit.setText(str(train.result.run_dir))
    seg.bands_edit.setText("1,2,3,4")
    seg.out_edit.setText(str(WORK / "segment"))
    seg.polygons_check.setChecked(True)
    yield 0.5
    grab(seg, "segment_dialog.png")
    assert seg.start(), {k: v.text() for k, v in seg.errors.items() if v.text()}
    yield lambda: seg.task is None
    log("segment", seg.status.text())
    yield 0.5
    grab(seg, "segment_done.png")
    seg.hide()
    iface.setActiveLayer(scene)
    iface.zoomToActiveLayer()
    yield 2.0
    grab(win, "segment_result.png")

    # --- the dependency dialog (as shown when onnxruntime is missing) ------------------
    deps = plugin.show_dependencies({"onnxruntime": "ModuleNotFoundError: No module named 'onnxruntime'"})
    yield 0.5
    grab(deps, "dependencies.png")
    deps.close()
    (WORK / "done").write_text("ok")


def run():
    gen = steps()
    state = {"wait": None, "until": 0.0}

    def tick():
        try:
            w = state["wait"]
            if callable(w) and not w():
                return
            if isinstance(w, float) and time.monotonic() < state["until"]:
                return
            nxt = next(gen)
            state["wait"] = nxt
            if isinstance(nxt, float):
                state["until"] = time.monotonic() + nxt
        except StopIteration:
            timer.stop()
            QgsApplication.exit(0)
        except Exception:
            log(traceback.format_exc())
            timer.stop()
            QgsApplication.exit(3)

    timer = QTimer(iface.mainWindow())
    timer.timeout.connect(tick)
    timer.start(100)
    iface.mainWindow().setProperty("solarsegDriver", timer)


QTimer.singleShot(2000, run)
PY
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export SOLARSEG_SHOTS="$OUT" SOLARSEG_WORK="$WORK" SOLARSEG_DATA="$(realpath "$REPO/../shared/data")"
unset QT_QPA_PLATFORM
CMD=(qgis --nologo --noversioncheck --profiles-path "$WORK/profiles" --code "$WORK/driver.py")
echo "screenshots: running QGIS (log: $WORK/driver.log)"
set +e
if [ -n "${DISPLAY:-}" ]; then
  timeout 1200 "${CMD[@]}" >"$WORK/qgis.log" 2>&1
else
  timeout 1200 xvfb-run -a -s "-screen 0 1280x900x24" "${CMD[@]}" >"$WORK/qgis.log" 2>&1
fi
status=$?
set -e
cat "$WORK/driver.log" 2>/dev/null || true
if [ ! -f "$WORK/done" ]; then
  echo "screenshots: QGIS exited with $status before finishing; its log:" >&2
  tail -n 40 "$WORK/qgis.log" >&2
  exit 1
fi
ls -1 "$OUT"/*.png
