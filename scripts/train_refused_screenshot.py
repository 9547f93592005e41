"""Screenshot of the Train dialog after the engine's check refused settings (offscreen).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/train_refused_screenshot.py OUT.png

Band 13 on the 12-band Solafune tiles and an unknown encoder: the engine process refuses
both before creating a run folder, and the dialog shows each message beside its field.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO.parent / "shared" / "data" / "solafune-s2-pv"


def main(out: str) -> None:
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from qgis.PyQt.QtCore import QCoreApplication

    sys.path.insert(0, str(REPO))
    from solar_seg_plugin.dialogs.train_dialog import TrainDialog

    def spin(done, seconds: float = 300) -> None:
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() > end:
                raise TimeoutError("the engine did not answer")
            QCoreApplication.processEvents()
            time.sleep(0.02)

    dialog = TrainDialog(None)
    dialog.resize(1180, 900)
    dialog.show()
    dialog.form.fields["data.path"].widget.setText(str(DATASET))
    values = {"data.limit": "40", "data.bands": "4,3,2,13", "model.encoder": "no-such-encoder",
              "out_dir": "/tmp/solarseg-shot-runs"}  # fmt: skip
    for key, value in values.items():
        dialog.form.fields[key].set(value)
    spin(lambda: dialog.summary_task is None)
    dialog.start()
    spin(lambda: dialog.task is None)
    QCoreApplication.processEvents()
    print(dialog.form.errors())
    dialog.grab().save(out)
    dialog.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "train_refused.png")
