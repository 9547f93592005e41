"""Screenshot of the Train dialog after the engine refused settings (offscreen):
QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/train_refused_screenshot.py OUT.png"""

import sys, time
from qgis.core import QgsApplication

app = QgsApplication([], True)
app.initQgis()
from qgis.PyQt.QtCore import QCoreApplication

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from solar_seg_plugin.dialogs.train_dialog import TrainDialog


def spin(cond, s=300):
    end = time.monotonic() + s
    while not cond():
        assert time.monotonic() < end
        QCoreApplication.processEvents()
        time.sleep(0.02)


d = TrainDialog(None)
d.resize(1180, 900)
d.show()
d.form.fields["data.path"].widget.setText(
    str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared/data/solafune-s2-pv")
)
for k, v in {
    "data.limit": "40",
    "data.bands": "4,3,2,13",
    "model.encoder": "no-such-encoder",
    "out_dir": "/tmp/solarseg-shot-runs",
}.items():
    d.form.fields[k].set(v)
spin(lambda: d.summary_task is None)
assert d.start()
spin(lambda: d.task is None)
QCoreApplication.processEvents()
print(d.form.errors())
d.grab().save(sys.argv[1] if len(sys.argv) > 1 else "train_refused.png")
d.shutdown()
