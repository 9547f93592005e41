"""Screenshot of Segment Layer in "Several layers" mode after a finished run (offscreen).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/segment_many_screenshot.py RUN OUT.png [PRECISION]

RUN is a run folder or model file (R,G,B,NIR bands 4,3,2,8, e.g. the plugin tests'
tiny model). Six of the Austria Sentinel-2 chips and a 3-band crop of the Landsat
scene are put in a project; the dialog segments all of them with the engine's
segment-many on one local worker: the chips are done, the Landsat crop fails with its
reason, and the dialog shows the engine's summary.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CHIPS = ["S2_2022_101", "S2_2022_1285", "S2_2022_1933", "S2_2022_2004", "S2_2022_31",
         "S2_2022_677"]  # fmt: skip


def main(run: str, out: str, precision: str = "fp32") -> None:
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QCoreApplication

    sys.path.insert(0, str(REPO))
    from solar_seg_plugin.dialogs.segment_dialog import LAYERS, SegmentDialog

    def spin(done, seconds: float = 600) -> None:
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() > end:
                raise TimeoutError("the engine did not answer")
            QCoreApplication.processEvents()
            time.sleep(0.02)

    work = Path(tempfile.mkdtemp(prefix="solarseg-many-shot-"))
    landsat = work / "landsat_foz_crop.tif"
    gdal.Translate(str(landsat), str(DATA / "scenes" / "landsat8_b2b3b4_foz_30m.tif"),
                   srcWin=[600, 600, 64, 64])  # fmt: skip
    project = QgsProject.instance()
    for path in [DATA / "austria-pv" / "images" / f"{c}.tif" for c in CHIPS] + [landsat]:
        project.addMapLayer(QgsRasterLayer(str(path), path.stem))

    dialog = SegmentDialog(None)
    dialog.resize(860, 980)
    dialog.show()
    dialog.set_mode(LAYERS)
    dialog.rasters.check_all(True)
    dialog.model_edit.setText(run)
    spin(lambda: dialog.info_task is None)
    dialog.tile_spin.setValue(64)
    dialog.overlap_spin.setValue(16)
    dialog.device_combo.setCurrentText("cpu")
    dialog.precision_combo.setCurrentText(precision)
    dialog.workers_spin.setValue(1)
    dialog.out_edit.setText(str(work / "many"))
    assert dialog.start(), {k: v.text() for k, v in dialog.errors.items() if v.text()}
    spin(lambda: dialog.task is None)
    for _ in range(20):
        QCoreApplication.processEvents()
        time.sleep(0.02)
    print(dialog.status.text())
    dialog.grab().save(out)
    dialog.shutdown()
    project.removeAllMapLayers()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "segment_many.png",
         sys.argv[3] if len(sys.argv) > 3 else "fp32")  # fmt: skip
