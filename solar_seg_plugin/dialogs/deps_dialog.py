"""Dialog shown when engine packages are missing: what is missing, the exact pip
command for QGIS's Python, and a button that runs it into the plugin-private folder."""

from __future__ import annotations

import importlib
from pathlib import Path

from qgis.PyQt.QtCore import QProcess
from qgis.PyQt.QtGui import QGuiApplication
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import deps
from ..common import tr


class DependenciesDialog(QDialog):
    """Lists the problems, shows the pip command, and can run it (QProcess, async)."""

    def __init__(
        self,
        problems: dict[str, str],
        parent: QWidget | None = None,
        target: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("SolarSeg: missing Python packages"))
        self.setMinimumWidth(720)
        self.problems = dict(problems)
        self.target = Path(target or deps.deps_dir())
        self.command = deps.pip_command(sorted(self.problems), self.target)
        self.process: QProcess | None = None

        lay = QVBoxLayout(self)
        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setObjectName("problems")
        lay.addWidget(self.problem_label)
        explain = QLabel(
            tr(
                "Run this command in a terminal, or click Install to run it now. "
                "Packages go into a folder private to SolarSeg ({}), which is added "
                "to QGIS's Python path."
            ).format(self.target)
        )
        explain.setWordWrap(True)
        lay.addWidget(explain)
        self.command_edit = QPlainTextEdit(deps.command_text(self.command))
        self.command_edit.setReadOnly(True)
        self.command_edit.setObjectName("command")
        self.command_edit.setMaximumHeight(70)
        lay.addWidget(self.command_edit)
        row = QHBoxLayout()
        self.copy_button = QPushButton(tr("Copy command"))
        self.install_button = QPushButton(tr("Install"))
        self.recheck_button = QPushButton(tr("Check again"))
        for b in (self.copy_button, self.install_button, self.recheck_button):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setObjectName("log")
        lay.addWidget(self.log)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

        self.copy_button.clicked.connect(self.copy_command)
        self.install_button.clicked.connect(self.install)
        self.recheck_button.clicked.connect(self.recheck)
        self._show_problems()

    def _show_problems(self) -> None:
        if not self.problems:
            self.problem_label.setText(tr("All engine packages import correctly."))
            return
        lines = [
            f"<b>{deps.ENGINE_PACKAGES.get(n, n)}</b>: {msg}" for n, msg in self.problems.items()
        ]
        self.problem_label.setText(
            tr("SolarSeg needs these Python packages:") + "<br>" + "<br>".join(lines)
        )

    def copy_command(self) -> None:
        QGuiApplication.clipboard().setText(self.command_edit.toPlainText())

    def install(self) -> None:
        """Run the pip command asynchronously, streaming its output into the log."""
        if self.process is not None:
            return
        self.target.mkdir(parents=True, exist_ok=True)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.install_button.setEnabled(False)
        self.log.appendPlainText("$ " + deps.command_text(self.command))
        self.process.start(self.command[0], self.command[1:])

    def _read_output(self) -> None:
        if self.process is not None:
            text = bytes(self.process.readAllStandardOutput()).decode(errors="replace")
            self.log.appendPlainText(text.rstrip())

    def _error(self, _error: QProcess.ProcessError) -> None:
        if self.process is not None:
            self.log.appendPlainText(tr("Could not run pip: {}").format(self.process.errorString()))
            self._finished(-1, QProcess.CrashExit)

    def _finished(self, code: int, _status: QProcess.ExitStatus) -> None:
        self.log.appendPlainText(tr("pip finished with exit code {}").format(code))
        self.process = None
        self.install_button.setEnabled(True)
        self.recheck()

    def recheck(self) -> None:
        """Add the private folder to sys.path and import the packages again."""
        deps.add_deps_dir_to_path(self.target)
        importlib.invalidate_caches()
        self.problems = deps.import_problems(list(self.problems))
        self._show_problems()
        self.install_button.setEnabled(bool(self.problems))
