"""Small widgets shared by the dialogs: path pickers, field error labels, ETA text, a
checklist of the project's raster layers, and the running of a dialog's one task (Start,
Cancel, progress, the engine's refusals beside the fields)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QRect, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import tasks
from ..analysis.layers import OUTPUT_PROPERTY
from ..common import Settings, safe_slot, tr

ERROR_STYLE = "color: #c0392b;"
WARNING_STYLE = "color: #b9770e;"


def error_label() -> QLabel:
    """A red label shown beside a field when its value is refused."""
    label = QLabel()
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.setVisible(False)
    label.setProperty("solarsegError", True)
    return label


def add_field_row(grid: QGridLayout, label: str, widget: QWidget, error: QLabel) -> int:
    """Label and widget on one row, the (normally hidden) error message right under the
    widget, so a long message wraps instead of being clipped. Returns the widget's row."""
    row = grid.rowCount()
    grid.addWidget(QLabel(label), row, 0)
    grid.addWidget(widget, row, 1)
    grid.addWidget(error, row + 1, 1)
    error.buddy_widget = widget  # its width is the width the message wraps to
    return row


def set_row_visible(grid: QGridLayout, row: int, visible: bool) -> None:
    """Show or hide a row made by :func:`add_field_row`: label, widget and its error
    (which comes back only when it holds a message)."""
    for r, column in ((row, 0), (row, 1), (row + 1, 1)):
        item = grid.itemAtPosition(r, column)
        widget = item.widget() if item is not None else None
        if widget is None:
            continue
        is_error = r == row + 1
        widget.setVisible(visible and (not is_error or bool(widget.text())))


# Characters of an error shown beside a field (about four wrapped lines).
MAX_ERROR_CHARS = 320


def show_error(label: QLabel, message: str | None) -> None:
    """Show (or hide, for None) a message; its height is set for the wrapped text, which
    grid layouts do not do by themselves for word-wrapped labels. A very long message
    is cut (the whole of it is the tooltip) so it cannot push the form apart."""
    text = message or ""
    label.setToolTip(text if len(text) > MAX_ERROR_CHARS else "")
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1].rstrip() + "…"
    label.setText(text)
    label.setVisible(bool(message))
    if message:
        buddy = getattr(label, "buddy_widget", None)
        width = buddy.width() if buddy is not None and buddy.width() > 80 else 420
        label.ensurePolished()
        label.setMinimumHeight(label.heightForWidth(width) + 2)
        # Once laid out the label may be narrower than its buddy: fit it again then.
        QTimer.singleShot(0, lambda: _fit_height(label))


def grow_to_fit(dialog: QWidget) -> None:
    """Make ``dialog`` taller when its content needs it (a status that wrapped onto more
    lines), at its current width: adjustSize() would also narrow a dialog the user
    widened, and cut the fields' text."""
    if dialog.layout() is not None:
        dialog.layout().activate()
    width = dialog.width()
    need = dialog.heightForWidth(width) if dialog.hasHeightForWidth() else -1
    need = max(need, dialog.minimumSizeHint().height())
    if need > dialog.height():
        dialog.resize(width, need)


def _fit_height(label: QLabel) -> None:
    if sip.isdeleted(label) or not label.isVisible() or label.width() < 80:
        return
    # QLabel.heightForWidth underestimates text with long unbreakable parts (paths):
    # measure the wrapped text and keep one spare line.
    metrics = label.fontMetrics()
    rect = metrics.boundingRect(QRect(0, 0, label.width(), 100000), int(Qt.TextWordWrap),
                                label.text())  # fmt: skip
    needed = rect.height() + metrics.lineSpacing() + 2
    if needed > label.minimumHeight():
        label.setMinimumHeight(needed)


class PathEdit(QWidget):
    """A line edit with browse buttons for a folder and/or a file.

    ``settings_key`` remembers the last folder browsed (QgsSettings ``solarseg/...``).
    """

    changed = pyqtSignal(str)

    def __init__(
        self,
        folder: bool = True,
        file_filter: str | None = None,
        settings_key: str | None = None,
        placeholder: str = "",
        save: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.file_filter, self.settings_key, self.save = file_filter, settings_key, save
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        lay.addWidget(self.edit, 1)
        if folder:
            b = QPushButton(tr("Folder…"))
            b.clicked.connect(self.browse_folder)
            lay.addWidget(b)
        if file_filter:
            b = QPushButton(tr("File…"))
            b.clicked.connect(self.browse_file)
            lay.addWidget(b)
        self.edit.editingFinished.connect(lambda: self.changed.emit(self.text()))

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        self.edit.setText(text or "")
        self.changed.emit(self.text())

    def _start_dir(self) -> str:
        if self.text():
            return self.text()
        return Settings().get(self.settings_key, "", str) if self.settings_key else ""

    def _remember(self, path: str) -> None:
        if self.settings_key and path:
            Settings().set(self.settings_key, path)

    def browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, tr("Choose a folder"), self._start_dir())
        if path:
            self._remember(path)
            self.setText(path)

    def browse_file(self) -> None:
        if self.save:
            path, _ = QFileDialog.getSaveFileName(
                self, tr("Choose a file"), self._start_dir(), self.file_filter or ""
            )
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, tr("Choose a file"), self._start_dir(), self.file_filter or ""
            )
        if path:
            self._remember(path)
            self.setText(path)


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def add_task_footer(dialog: QDialog, lay: QVBoxLayout, start_label: str) -> None:
    """The footer of a dialog that runs one task: model info, progress bar, status line
    and Start / Cancel / Close buttons, set as attributes ``model_info``,
    ``progress_bar``, ``status``, ``start_button`` and ``cancel_button`` of ``dialog``,
    which must have ``start``, ``cancel`` and ``close`` slots."""
    dialog.model_info = QLabel()
    dialog.model_info.setObjectName("modelInfo")
    dialog.model_info.setWordWrap(True)
    lay.addWidget(dialog.model_info)
    dialog.progress_bar = QProgressBar()
    lay.addWidget(dialog.progress_bar)
    dialog.status = QLabel()
    dialog.status.setObjectName("status")
    dialog.status.setWordWrap(True)
    lay.addWidget(dialog.status)
    buttons = QHBoxLayout()
    dialog.start_button = QPushButton(start_label)
    dialog.start_button.setDefault(True)
    dialog.cancel_button = QPushButton(tr("Cancel"))
    dialog.cancel_button.setEnabled(False)
    close = QPushButton(tr("Close"))
    buttons.addStretch(1)
    for b in (dialog.start_button, dialog.cancel_button, close):
        buttons.addWidget(b)
    lay.addLayout(buttons)
    dialog.start_button.clicked.connect(safe_slot(lambda _c=False: dialog.start()))
    dialog.cancel_button.clicked.connect(safe_slot(lambda _c=False: dialog.cancel()))
    close.clicked.connect(dialog.close)


# --- the raster layers of the project, as a checklist -----------------------------------

LAYER_ID = Qt.UserRole


def raster_file(layer: QgsRasterLayer) -> str | None:
    """The file of a GDAL raster layer on disk (None for anything else)."""
    if layer.providerType() != "gdal":
        return None
    path = layer.source().split("|")[0]
    return path if Path(path).is_file() else None


class RasterChecklist(QWidget):
    """The project's raster layers that are files on disk (not SolarSeg's own outputs),
    each with a check box, *Check all* / *Check none* and a count. The list follows the project's layers (unless
    ``frozen()`` says not to, e.g. while a task runs) and keeps what was checked; a new
    list checks the layers with the most common band count (one band count is what one
    dataset, or one band mapping, needs)."""

    changed = pyqtSignal()  # the checked layers changed

    def __init__(self, frozen: Callable[[], bool] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.frozen = frozen or (lambda: False)
        self.list = QListWidget()
        self.list.setMinimumHeight(110)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.list)
        buttons = QHBoxLayout()
        self.all_button = QPushButton(tr("Check all"))
        self.none_button = QPushButton(tr("Check none"))
        self.count_label = QLabel()
        buttons.addWidget(self.all_button)
        buttons.addWidget(self.none_button)
        buttons.addWidget(self.count_label, 1)
        lay.addLayout(buttons)
        self.all_button.clicked.connect(safe_slot(lambda _c=False: self.check_all(True)))
        self.none_button.clicked.connect(safe_slot(lambda _c=False: self.check_all(False)))
        self.list.itemChanged.connect(safe_slot(lambda _i: self._checked_changed()))
        project = QgsProject.instance()
        self._on_layers = safe_slot(self._layers_changed)
        project.layersAdded.connect(self._on_layers)
        project.layersRemoved.connect(self._on_layers)
        self.refresh()

    def refresh(self) -> None:
        """List the project's raster files again, keeping what was checked."""
        checked = set(self.checked_ids()) if self.list.count() else None
        project = QgsProject.instance()
        layers = [lyr for lyr in project.mapLayers().values()
                  if isinstance(lyr, QgsRasterLayer) and raster_file(lyr)
                  and not lyr.customProperty(OUTPUT_PROPERTY, False)]  # fmt: skip
        order = {n.layerId(): i for i, n in enumerate(project.layerTreeRoot().findLayers())}
        layers.sort(key=lambda lyr: (order.get(lyr.id(), 1 << 30), lyr.name()))
        common = Counter(lyr.bandCount() for lyr in layers).most_common(1)
        bands = common[0][0] if common else None
        self.list.blockSignals(True)
        self.list.clear()
        for lyr in layers:
            item = QListWidgetItem(tr("{} ({} bands)").format(lyr.name(), lyr.bandCount()))
            item.setData(LAYER_ID, lyr.id())
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            on = lyr.id() in checked if checked is not None else lyr.bandCount() == bands
            item.setCheckState(Qt.Checked if on else Qt.Unchecked)
            item.setToolTip(raster_file(lyr) or "")
            self.list.addItem(item)
        self.list.blockSignals(False)
        self._checked_changed()

    def _layers_changed(self, *_: Any) -> None:
        if not self.frozen():
            self.refresh()

    def _checked_changed(self) -> None:
        self.count_label.setText(
            tr("{} of {} checked").format(len(self.checked_ids()), self.list.count())
        )
        self.changed.emit()

    def check_all(self, on: bool) -> None:
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            self.list.item(i).setCheckState(Qt.Checked if on else Qt.Unchecked)
        self.list.blockSignals(False)
        self._checked_changed()

    def set_checked(self, layer_ids: list[str]) -> None:
        wanted = set(layer_ids)
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setCheckState(Qt.Checked if item.data(LAYER_ID) in wanted else Qt.Unchecked)
        self.list.blockSignals(False)
        self._checked_changed()

    def checked_ids(self) -> list[str]:
        items = (self.list.item(i) for i in range(self.list.count()))
        return [it.data(LAYER_ID) for it in items if it.checkState() == Qt.Checked]

    def checked_layers(self) -> list[QgsRasterLayer]:
        project = QgsProject.instance()
        layers = [project.mapLayer(i) for i in self.checked_ids()]
        return [lyr for lyr in layers if lyr is not None and raster_file(lyr)]

    def checked_files(self) -> list[str]:
        return [raster_file(lyr) for lyr in self.checked_layers()]

    def shutdown(self) -> None:
        """Stop following the project's layers (the dialog is going away)."""
        project = QgsProject.instance()
        for signal in (project.layersAdded, project.layersRemoved):
            try:
                signal.disconnect(self._on_layers)
            except (TypeError, RuntimeError):
                pass


# --- a dialog's one task ----------------------------------------------------------------
# For dialogs made with add_task_footer that keep their running task in ``dialog.task``
# and have ``on_info(info)`` and ``on_done(task, ok)`` slots.


def start_task(dialog: QDialog, task: tasks.EngineTask, status: str) -> tasks.EngineTask:
    """Run ``task`` for ``dialog``: its progress goes to ``dialog.on_info``, its end to
    ``dialog.on_done(task, ok)``; the status line says ``status``, Start is disabled
    and Cancel enabled until :func:`task_finished`."""
    dialog.task = task
    task.info.connect(safe_slot(dialog.on_info))
    task.done.connect(safe_slot(lambda ok, t=task: dialog.on_done(t, ok)))
    dialog.status.setStyleSheet("")
    dialog.status.setMinimumHeight(0)
    dialog.status.setText(status)
    dialog.progress_bar.setValue(0)
    dialog.start_button.setEnabled(False)
    dialog.cancel_button.setEnabled(True)
    return tasks.start(task)


def cancel_task(dialog: QDialog, status: str | None = None) -> None:
    """Cancel the dialog's running task (the status line says so)."""
    if dialog.task is not None:
        dialog.task.cancel()
        dialog.status.setText(status or tr("Cancelling…"))


def show_progress(dialog: QDialog, info: dict) -> None:
    """The engine's progress: fraction on the bar, its message on the status line."""
    dialog.progress_bar.setValue(int(100 * info.get("fraction", 0.0)))
    if info.get("message"):
        dialog.status.setText(info["message"])


def task_finished(dialog: QDialog, task: tasks.EngineTask) -> bool:
    """The first step of ``on_done``: False for a task that is no longer the dialog's
    (ignore it); else the dialog has no task any more and Start/Cancel are reset."""
    if task is not dialog.task:
        return False
    dialog.task = None
    dialog.start_button.setEnabled(True)
    dialog.cancel_button.setEnabled(False)
    return True


def show_problems(
    dialog: QDialog,
    problems: dict[str, str],
    field_of: Callable[[str], str] = lambda key: key,
    otherwise: str | None = None,
) -> bool:
    """The engine's refusals (``{field: message}``) beside the dialog's fields
    (``dialog.errors``; ``field_of`` maps an engine field onto the dialog's). The status
    line says so when every one found its field, else it says ``otherwise`` (default:
    the messages). Returns True when every problem is beside its field."""
    shown = 0
    for key, message in problems.items():
        label = dialog.errors.get(field_of(key))
        if label is not None:
            show_error(label, message)
            shown += 1
    everywhere = bool(problems) and shown == len(problems)
    dialog.status.setStyleSheet(ERROR_STYLE)
    if everywhere:
        dialog.status.setText(tr("Some inputs are refused: see the messages beside them."))
    else:
        dialog.status.setText(otherwise if otherwise is not None else "; ".join(problems.values()))
    return everywhere
