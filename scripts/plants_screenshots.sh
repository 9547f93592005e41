#!/usr/bin/env bash
# Screenshots of the map-layers-to-plants workflow in the real QGIS desktop (Xvfb when
# there is no display), on the Austria data: the project `make run` opens (25 chips + the
# OSM polygons), Create Training Data, Train opened on its folder, Segment Layer on a test
# chip with the OSM polygons as reference (plants found/missed, false detections), and
# Inspect Errors' Plants tab. PNGs go to docs/screenshots/ (or $1).
# A model trained on the Austria chips is needed: SOLARSEG_RUN=<run folder>, else one is
# trained first with the engine's command line (chips + 15 epochs from scratch, about
# 3 minutes on 2 CPU cores).
#   scripts/plants_screenshots.sh [OUT_DIR]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "${1:-$REPO/docs/screenshots}")"
DATA="$(realpath "$REPO/../shared/data")"
PY="$REPO/.venv/bin/python"
WORK="$(mktemp -d /tmp/solarseg-plants-shots.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
if [ -z "${SOLARSEG_RUN:-}" ]; then
  (cd "$REPO" && $PY -m core chips "$DATA/austria-pv/images" \
      --labels "$DATA/austria-pv/photovoltaic_osm.gpkg" --group-field id --tile 64 \
      --out "$WORK/train-chips" >/dev/null)
  (cd "$REPO" && $PY -m core train --config configs/rgbn.yaml name=austria out_dir="$WORK/runs" \
      data.path="$WORK/train-chips" train.epochs=15 train.max_minutes=5 train.threads=2 \
      train.tta=false train.batch_size=6 >/dev/null)
  SOLARSEG_RUN="$(ls -d "$WORK"/runs/austria-* | head -n1)"
fi
echo "screenshots: model $SOLARSEG_RUN"
bash "$REPO/scripts/install_plugin.sh" "$WORK/profiles/profiles/default" >/dev/null
EXTENT="$(QT_QPA_PLATFORM=offscreen $PY "$REPO/scripts/make_project.py" "$WORK/austria.qgs" \
          "$DATA" 2>/dev/null | tail -n1)"
cat > "$WORK/driver.py" <<'PY'
"""Drives SolarSeg inside a real QGIS on the Austria project and saves screenshots
(plain step functions run from a QTimer, as in scripts/screenshots.sh)."""
import faulthandler
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

OUT = Path(os.environ["SOLARSEG_SHOTS"])
WORK = Path(os.environ["SOLARSEG_WORK"])
RUN = Path(os.environ["SOLARSEG_RUN"])
CHIP = "S2_2022_2004"  # its plant (OSM id 2010) is in the Austria test split
LOG = open(WORK / "driver.log", "a")
faulthandler.enable(file=LOG, all_threads=True)
S = {}


def log(*args):
    print(*args, file=LOG, flush=True)


def grab(widget, name):
    log("saved", OUT / name, widget.grab().save(str(OUT / name)))


def layer(name):
    return QgsProject.instance().mapLayersByName(name)[0]


def window():
    S["plugin"] = plugins["solar_seg_plugin"]
    S["win"] = win = iface.mainWindow()
    win.move(0, 0)
    win.resize(1280, 900)
    win.showMaximized()
    for dock in win.findChildren(QDockWidget):
        if dock.objectName() == "Browser":  # more room for the layer tree
            dock.hide()
    return 4.0


def map_shot():
    group = QgsProject.instance().layerTreeRoot().findGroup(
        "Austria Sentinel-2 chips (25, bands 4,3,2)")
    group.setExpanded(True)
    return 1.5


def map_shot2():
    grab(S["win"], "austria_layers.png")
    chips = S["chips"] = S["plugin"].open_chips()
    chips.labels_combo.setLayer(layer("OSM solar plants (photovoltaic_osm)"))
    chips.out_edit.setText(str(WORK / "austria-chips"))
    assert chips.start(), chips.status.text()
    return lambda: S["chips"].task is None


def chips_shot():
    chips = S["chips"]
    log("chips", chips.status.text())
    grab(chips, "create_training_data.png")
    S["train"] = chips.train_on_result()
    S["train"].form.setCurrentIndex(1)
    return lambda: S["train"].summary_task is None


def train_shot():
    grab(S["train"], "train_from_chips.png")
    S["train"].hide()
    S["chips"].hide()
    chip = S["chip"] = layer(CHIP)
    seg = S["segment"] = S["plugin"].open_segment()
    seg.layer_combo.setLayer(chip)
    seg.model_edit.setText(str(RUN))
    return lambda: S["segment"].info_task is None


def segment_start():
    seg = S["segment"]
    seg.tile_spin.setValue(64)
    seg.overlap_spin.setValue(16)
    seg.out_edit.setText(str(WORK / "segment"))
    seg.reference_combo.setLayer(layer("OSM solar plants (photovoltaic_osm)"))
    assert seg.start(), {k: v.text() for k, v in seg.errors.items() if v.text()}
    return lambda: S["segment"].task is None


def segment_done():
    seg = S["segment"]
    log("segment", seg.status.text())
    grab(seg, "segment_reference_dialog.png")
    seg.hide()
    root = QgsProject.instance().layerTreeRoot()
    root.findGroup("Austria Sentinel-2 chips (25, bands 4,3,2)").setExpanded(False)
    # The chip, the predicted polygons and the plant layers (mask, probability and the
    # OSM outlines, which the plants layer repeats, hidden).
    for name in (f"{CHIP} probability", f"{CHIP} mask", "OSM solar plants (photovoltaic_osm)"):
        root.findLayer(layer(name).id()).setItemVisibilityChecked(False)
    iface.messageBar().clearWidgets()
    iface.setActiveLayer(S["chip"])
    canvas = iface.mapCanvas()
    rect = canvas.mapSettings().layerExtentToOutputExtent(S["chip"], S["chip"].extent())
    rect.scale(1.4)
    canvas.setExtent(rect)
    canvas.refresh()
    return 3.0


def segment_shot():
    grab(S["win"], "segment_plants.png")
    # All 26 Austria tiles (the test split's 5 plants are all found by this model): the
    # table then has missed plants too.
    inspect = S["inspect"] = S["plugin"].open_inspect(str(RUN))
    inspect.split_combo.setCurrentText("all")
    inspect.start()
    return lambda: S["inspect"].task is None and S["plugin"].analyses


def plants_select():
    S["inspect"].hide()
    analysis = S["analysis"] = S["plugin"].analyses[-1]
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup(f"SolarSeg: {CHIP}")
    if group is not None:
        group.setItemVisibilityChecked(False)
    analysis.dock.tabs.setCurrentIndex(1)
    S["win"].resizeDocks([analysis.dock], [600], Qt.Horizontal)
    iface.messageBar().clearWidgets()
    return 2.0


def plants_zoom():
    dock = S["analysis"].dock
    dock.plants.selectRow(0)  # the table opens missed first
    return 3.0


def plants_shot():
    grab(S["win"], "plants_table.png")
    grab(S["analysis"].dock, "plants_dock.png")
    (WORK / "done").write_text("ok")


STEPS = [window, map_shot, map_shot2, chips_shot, train_shot, segment_start, segment_done,
         segment_shot, plants_select, plants_zoom, plants_shot]
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
QTimer.singleShot(3000, lambda: TIMER.start(200))
PY
SITE="$(ls -d "$REPO"/.venv/lib/python3*/site-packages | head -n1)"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export SOLARSEG_ENGINE_PYTHON="$PY"
export SOLARSEG_SHOTS="$OUT" SOLARSEG_WORK="$WORK" SOLARSEG_RUN
unset QT_QPA_PLATFORM
CMD=(qgis --nologo --noversioncheck --profiles-path "$WORK/profiles" --project "$WORK/austria.qgs"
     --code "$WORK/driver.py")
[ -n "$EXTENT" ] && CMD+=(--extent "$EXTENT")
echo "screenshots: running QGIS (log: $WORK/driver.log)"
set +e
if [ -n "${DISPLAY:-}" ]; then
  timeout 900 "${CMD[@]}" >"$WORK/qgis.log" 2>&1
else
  timeout 900 xvfb-run -a -s "-screen 0 1280x900x24" "${CMD[@]}" >"$WORK/qgis.log" 2>&1
fi
status=$?
set -e
cat "$WORK/driver.log" 2>/dev/null || true
if [ ! -f "$WORK/done" ]; then
  cp "$WORK/qgis.log" /tmp/solarseg-plants-screenshots-qgis.log
  echo "screenshots: QGIS exited with $status before finishing; log kept in" \
       "/tmp/solarseg-plants-screenshots-qgis.log" >&2
  tail -n 40 "$WORK/qgis.log" >&2
  exit 1
fi
ls -1 "$OUT"/*.png
