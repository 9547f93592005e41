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
"""Drives the SolarSeg dialogs inside a real QGIS and saves screenshots.

A list of plain step functions run from a QTimer (no generators: frames of suspended
generators driven from Qt timers crashed Debian's Python 3.11.2 here). A step returns
nothing, a number of seconds to wait, or a condition to wait for.
"""
import faulthandler
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

OUT = Path(os.environ["SOLARSEG_SHOTS"])
WORK = Path(os.environ["SOLARSEG_WORK"])
DATA = Path(os.environ["SOLARSEG_DATA"])
REUSE = os.environ.get("SOLARSEG_RUN")
LOG = open(WORK / "driver.log", "a")
faulthandler.enable(file=LOG, all_threads=True)
S = {}  # shared state between steps


def log(*args):
    print(*args, file=LOG, flush=True)


def grab(widget, name):
    ok = widget.grab().save(str(OUT / name))
    log("saved", OUT / name, ok)


def window():
    S["plugin"] = plugins["solar_seg_plugin"]
    S["win"] = win = iface.mainWindow()
    win.move(0, 0)
    win.resize(1280, 900)
    win.showMaximized()
    return 1.0


def train_setup():
    train = S["train"] = S["plugin"].open_train()
    if REUSE:
        return None
    f = train.form.fields
    for key, value in {
        "name": "solafune-demo", "out_dir": str(WORK / "runs"),
        "data.path": str(DATA / "solafune-s2-pv"), "data.limit": os.environ["SOLARSEG_TILES"],
        "data.bands": "4,3,2,8", "data.upscale": 1, "model.arch": "Unet",
        "model.encoder": "resnet18", "train.epochs": int(os.environ["SOLARSEG_EPOCHS"]),
        "train.batch_size": 16, "optim.lr": "0.002", "train.early_stop.patience": 6,
    }.items():
        f[key].set(value)
    train.form.setCurrentIndex(1)  # the Data tab: dataset form and class balance
    train.refresh_dataset()
    return lambda: S["train"].summary_task is None


def train_start():
    if REUSE:
        return None
    assert S["train"].start(), S["train"].form.errors()
    return lambda: len(S["train"].chart.rows) >= 3 or S["train"].task is None


def train_running():
    if not REUSE:
        grab(S["train"], "train_running.png")
        return lambda: S["train"].task is None
    return None


def train_summary():
    train = S["train"]
    if REUSE:
        S["run_dir"] = Path(REUSE)
        return None
    log("train result", train.result)
    S["run_dir"] = Path(train.result.run_dir)
    train.form.setCurrentIndex(0)
    grab(train, "train_summary.png")
    return 0.3


def inspect_start():
    train = S["train"]
    if train.result is not None:
        train.inspect_button.click()  # opens Inspect Errors on the run and starts it
    else:
        S["plugin"].open_inspect(str(S["run_dir"]), True)
    S["inspect"] = S["plugin"].dialogs["inspect"]
    return 0.3


def inspect_shot():
    grab(S["inspect"], "inspect_dialog.png")
    return lambda: S["inspect"].task is None


def analysis_select():
    S["train"].hide()
    S["inspect"].hide()
    analysis = S["analysis"] = S["plugin"].analyses[-1]
    # a tile near the top of the table (worst first) with TP, FP and FN pixels
    rows = sorted(analysis.rows, key=lambda r: r["iou"])
    good = [r for r in rows if min(r["fp"], r["fn"]) >= 4 and r["tp"] >= 10]
    row = (good or [r for r in rows if r["fp"] + r["fn"] > 0] or rows)[0]
    log("tile", row)
    S["tile"] = str(row["tile_id"])
    return 1.5  # let QGIS finish its own "zoom to the first layers" first


def analysis_zoom():
    S["analysis"].dock.select_tile(S["tile"])
    return 2.0


def analysis_shot():
    grab(S["win"], "error_analysis.png")
    analysis = S["analysis"]
    analysis.dock.spin.setValue(min(0.95, analysis.threshold + 0.2))
    return 2.0


def analysis_threshold_shot():
    grab(S["win"], "error_analysis_threshold.png")
    S["analysis"].close()
    iface.newProject(False)
    return 0.5


def segment_setup():
    scene = S["scene"] = QgsRasterLayer(str(DATA / "scenes" / "rgbn_haiti_5m.tif"), "rgbn_haiti_5m")
    QgsProject.instance().addMapLayer(scene)
    iface.setActiveLayer(scene)
    iface.zoomToActiveLayer()
    seg = S["segment"] = S["plugin"].open_segment()
    seg.layer_combo.setLayer(scene)
    seg.model_edit.setText(str(S["run_dir"]))
    seg.bands_edit.setText("1,2,3,4")
    seg.out_edit.setText(str(WORK / "segment"))
    seg.polygons_check.setChecked(True)
    return 0.5


def segment_start():
    seg = S["segment"]
    grab(seg, "segment_dialog.png")
    assert seg.start(), {k: v.text() for k, v in seg.errors.items() if v.text()}
    return lambda: S["segment"].task is None


def segment_done():
    seg = S["segment"]
    log("segment", seg.status.text())
    grab(seg, "segment_done.png")
    seg.hide()
    iface.setActiveLayer(S["scene"])
    iface.zoomToActiveLayer()
    return 2.0


def segment_result():
    grab(S["win"], "segment_result.png")
    # Sentinel-2 surface reflectance like the training tiles: B02,B03,B04,B08 -> R,G,B,NIR
    scene = S["scene2"] = QgsRasterLayer(
        str(DATA / "scenes" / "sentinel2_b2b3b4b8_300px.tif"), "sentinel2_300px"
    )
    QgsProject.instance().addMapLayer(scene)
    seg = S["segment"]
    seg.layer_combo.setLayer(scene)
    seg.bands_edit.setText("3,2,1,4")
    seg.out_edit.setText(str(WORK / "segment_s2"))
    assert seg.start(), {k: v.text() for k, v in seg.errors.items() if v.text()}
    return lambda: S["segment"].task is None


def segment_s2_result():
    log("segment s2", S["segment"].status.text())
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("SolarSeg: rgbn_haiti_5m")
    if group is not None:
        group.setItemVisibilityChecked(False)
    haiti = root.findLayer(S["scene"].id())
    if haiti is not None:
        haiti.setItemVisibilityChecked(False)
    iface.setActiveLayer(S["scene2"])
    iface.zoomToActiveLayer()
    return 2.0


def segment_s2_shot():
    grab(S["win"], "segment_result_s2.png")
    S["engine"] = S["plugin"].show_engine_dialog()  # the engine's Python, doctor report, plan
    return lambda: S["engine"].report is not None and S["engine"].plan is not None


def engine_shot():
    grab(S["engine"], "engine_environment.png")
    S["engine"].close()
    (WORK / "done").write_text("ok")


STEPS = [window, train_setup, train_start, train_running, train_summary, inspect_start,
         inspect_shot, analysis_select, analysis_zoom, analysis_shot, analysis_threshold_shot,
         segment_setup, segment_start, segment_done, segment_result, segment_s2_result,
         segment_s2_shot, engine_shot]
S["step"], S["wait"], S["until"], S["busy"] = 0, None, 0.0, False


def tick():
    if S["busy"]:
        return
    S["busy"] = True
    try:
        wait = S["wait"]
        if wait is not None and not wait():
            return
        if time.monotonic() < S["until"]:
            return
        if S["step"] >= len(STEPS):
            TIMER.stop()
            QgsApplication.exit(0)
            return
        step = STEPS[S["step"]]
        S["step"] += 1
        log("step", step.__name__)
        result = step()
        S["wait"] = result if callable(result) else None
        S["until"] = time.monotonic() + (result if isinstance(result, int | float) else 0.0)
    except Exception:
        log(traceback.format_exc())
        TIMER.stop()
        QgsApplication.exit(3)
    finally:
        S["busy"] = False


TIMER = QTimer()
TIMER.timeout.connect(tick)
QTimer.singleShot(2000, lambda: TIMER.start(200))
PY
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export SOLARSEG_ENGINE_PYTHON="$REPO/.venv/bin/python"
# SOLARSEG_RUN=<run folder> skips training and reuses that run.
export SOLARSEG_TILES="${SOLARSEG_TILES:-500}" SOLARSEG_EPOCHS="${SOLARSEG_EPOCHS:-6}"
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
  cp "$WORK/qgis.log" /tmp/solarseg-screenshots-qgis.log
  echo "screenshots: QGIS exited with $status before finishing; log kept in" \
       "/tmp/solarseg-screenshots-qgis.log" >&2
  grep -m1 -B2 -A25 "Traceback\|Thread 1\|#0 " "$WORK/qgis.log" >&2 || tail -n 40 "$WORK/qgis.log" >&2
  exit 1
fi
ls -1 "$OUT"/*.png
