"""Small widgets shared by the dialogs: path pickers, field error labels, ETA text."""

from __future__ import annotations

from qgis.PyQt import sip
from qgis.PyQt.QtCore import QRect, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

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
