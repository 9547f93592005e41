"""Offscreen picture of Inspect Errors after a threshold change: the dock (grabbed) beside
a render of the tiles' layers, saved as one PNG.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/inspect_screenshot.py RUN OUT.png \
        [--threshold 0.5] [--tiles 9]

The split is predicted by the engine process (``predict-split``), as in QGIS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsProject
from qgis.PyQt.QtCore import QCoreApplication, QSize, Qt
from qgis.PyQt.QtGui import QColor, QImage, QPainter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def spin(condition, what: str, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out: {what}")
        QCoreApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--tiles", type=int, default=9)
    args = ap.parse_args()
    app = QgsApplication([], True)
    app.initQgis()
    from solar_seg_plugin import tasks
    from solar_seg_plugin.analysis.controller import ErrorAnalysis

    work = Path(tempfile.mkdtemp(prefix="inspect-shot-"))
    done: list[bool] = []
    task = tasks.PredictSplitTask(args.run, None, "test", None, "cpu", work / "_predictions")
    task.done.connect(done.append)
    tasks.start(task)
    spin(lambda: done, "predict-split")
    if not done[0]:
        raise SystemExit(task.error_message())
    analysis = ErrorAnalysis(None, task.result, work, initial_tiles=args.tiles)
    analysis.set_threshold(args.threshold)
    spin(lambda: not analysis.busy and analysis.shown_threshold == args.threshold, "overlays")
    dock = analysis.dock
    dock.resize(560, 620)
    dock.setFloating(True)
    dock.show()
    QCoreApplication.processEvents()
    panel = dock.grab().toImage()

    # the map: every tile's errors over its image, on the synthetic grid
    layers = []
    for view in analysis.views.values():
        layers += [view.errors, view.image]
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(analysis.grid_crs)
    extent = None
    for view in analysis.views.values():
        e = view.errors.extent()
        extent = e if extent is None else (extent.combineExtentWith(e) or extent)
    extent.scale(1.05)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(620, 620))
    settings.setBackgroundColor(QColor(40, 40, 40))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    canvas = job.renderedImage()

    out = QImage(canvas.width() + panel.width(), max(canvas.height(), panel.height()),
                 QImage.Format_ARGB32)  # fmt: skip
    out.fill(Qt.white)
    painter = QPainter(out)
    painter.drawImage(0, 0, canvas)
    painter.drawImage(canvas.width(), 0, panel)
    painter.end()
    out.save(args.out)
    # the files the layers show now: the threshold is in their names
    view = next(iter(analysis.views.values()))
    print(args.out, Path(view.prediction.source()).name, Path(view.errors.source()).name)
    analysis.close()
    QgsProject.instance().clear()


if __name__ == "__main__":
    main()
