"""A slot that raises is logged, not propagated: PyQt would abort QGIS (qFatal)."""

from __future__ import annotations

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .conftest import process_events


class Emitter(QObject):
    done = pyqtSignal(bool)


def test_exception_in_a_slot_is_logged_and_qgis_carries_on(qgis_app):
    from solar_seg_plugin.common import safe_slot

    seen: list[tuple[str, int]] = []
    log = QgsApplication.messageLog()
    log.messageReceived.connect(lambda msg, _tag, level: seen.append((msg, level)))
    calls: list[bool] = []

    def broken(ok: bool) -> None:
        calls.append(ok)
        raise KeyError("missing-key")

    emitter = Emitter()
    emitter.done.connect(safe_slot(broken))
    emitter.done.emit(True)  # without safe_slot this aborts the process
    emitter.done.emit(False)
    process_events(0.05)
    assert calls == [True, False]
    errors = [m for m, level in seen if "missing-key" in m]
    assert len(errors) == 2 and "Traceback" in errors[0] and "KeyError" in errors[0]
    assert all(level == Qgis.Critical for m, level in seen if "missing-key" in m)
    assert safe_slot(lambda: 7)() == 7
