"""The "Engine environment" dialog: which Python runs the engine, is it ready (the
doctor report), and an installer that makes an isolated environment for it.

Nothing here blocks QGIS's GUI thread: the doctor runs as a QProcess in the engine's
Python; detecting the GPU and probing the wheel index (up to 5 s), and the install
itself, run in QgsTasks whose output lines come back through queued signals.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QFont, QFontDatabase, QFontInfo, QGuiApplication
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import engine_env
from ..common import Settings, log, profile_python_dir, safe_slot, tr
from ..engine_process import engine_command, engine_environment
from .widgets import PathEdit

# Lines kept in the install log (pip prints thousands for a torch install).
LOG_LINES = 5000


def monospace_font() -> QFont:
    """A fixed-pitch font for the report columns (the system's, else "monospace")."""
    font = QFontDatabase.systemFont(QFontDatabase.FixedFont)
    if not QFontInfo(font).fixedPitch():
        font = QFont("monospace")
        font.setStyleHint(QFont.TypeWriter)
    return font


class DetectTask(QgsTask):
    """Looks at the machine (QGIS's Python, nvidia-smi, a 5 s probe of the torch index)."""

    done = pyqtSignal(object)  # engine_env.Detected, or an Exception

    def __init__(self, options: engine_env.InstallOptions) -> None:
        super().__init__(tr("SolarSeg: look for GPU and wheel index"), QgsTask.CanCancel)
        self.options = options
        self.outcome: object = None

    def run(self) -> bool:
        try:
            self.outcome = engine_env.detect(self.options)
        except Exception as exc:  # reported by the dialog as one line
            self.outcome = exc
        return True

    def finished(self, _ok: bool) -> None:  # noqa: D401 (QgsTask API)
        self.done.emit(self.outcome)


class InstallTask(QgsTask):
    """Runs an :class:`~..engine_env.InstallPlan`; every output line is a signal."""

    line = pyqtSignal(int, str)  # step index, output line
    step = pyqtSignal(int, str)  # step index, title
    done = pyqtSignal(object)  # engine_env.RunResult

    def __init__(self, plan: engine_env.InstallPlan) -> None:
        super().__init__(tr("SolarSeg: install the engine environment"), QgsTask.CanCancel)
        self.plan = plan
        self.outcome = engine_env.RunResult(False, error="not run")

    def run(self) -> bool:
        self.outcome = engine_env.run_plan(
            self.plan, self.line.emit, self.isCanceled,
            lambda i, s: (self.setProgress(100.0 * i / len(self.plan.steps)),
                          self.step.emit(i, s.title)),
        )  # fmt: skip
        return self.outcome.ok

    def finished(self, _ok: bool) -> None:  # noqa: D401 (QgsTask API)
        self.done.emit(self.outcome)


class EngineDialog(QDialog):
    """Current engine Python + doctor report; install or choose another Python."""

    engine_changed = pyqtSignal(str)  # the new engine Python, once set
    engine_ready = pyqtSignal(str)  # the doctor found this engine Python ready

    def __init__(
        self,
        python: str,
        parent: QWidget | None = None,
        settings: Settings | None = None,
        env_dir: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("SolarSeg: engine environment"))
        self.setMinimumWidth(820)
        self.settings = settings or Settings()
        self.python = python
        self.report: dict | None = None
        self.report_text = ""
        self.doctor: QProcess | None = None
        self.detect_task: DetectTask | None = None
        self.install_task: InstallTask | None = None
        self.plan: engine_env.InstallPlan | None = None
        self.result: engine_env.RunResult | None = None
        self._step = 0
        mono = monospace_font()

        lay = QVBoxLayout(self)
        # --- the engine Python now ---------------------------------------------------
        current = QGroupBox(tr("Engine Python"))
        cur = QVBoxLayout(current)
        self.python_label = QLabel()
        self.python_label.setObjectName("python")
        self.python_label.setWordWrap(True)
        self.python_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        cur.addWidget(self.python_label)
        self.status_label = QLabel()
        self.status_label.setObjectName("engineStatus")
        self.status_label.setWordWrap(True)
        cur.addWidget(self.status_label)
        self.report_edit = QPlainTextEdit()
        self.report_edit.setObjectName("report")
        self.report_edit.setReadOnly(True)
        self.report_edit.setFont(mono)
        self.report_edit.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.report_edit.setMinimumHeight(12 * self.fontMetrics().height())
        cur.addWidget(self.report_edit)
        row = QHBoxLayout()
        self.check_button = QPushButton(tr("Check again"))
        self.copy_button = QPushButton(tr("Copy report"))
        self.existing_button = QPushButton(tr("Use an existing Python…"))
        # When the engine is ready the installer is folded away; this shows it again.
        self.show_install_button = QPushButton(tr("Install another environment…"))
        self.show_install_button.setVisible(False)
        for b in (self.check_button, self.copy_button, self.existing_button,
                  self.show_install_button):  # fmt: skip
            row.addWidget(b)
        row.addStretch(1)
        cur.addLayout(row)
        lay.addWidget(current, 3)

        # --- the installer -----------------------------------------------------------
        install = QGroupBox(tr("Install a new engine environment"))
        box = QVBoxLayout(install)
        form = QFormLayout()
        box.addLayout(form)
        default_dir = env_dir or engine_env.default_env_dir(profile_python_dir())
        self.folder_edit = PathEdit(folder=True, settings_key="engine_env_browse")
        self.folder_edit.setText(self.settings.get("engine_env_dir", str(default_dir), str))
        self.index_edit = QLineEdit(self.settings.get("engine_index_url", "", str))
        self.index_edit.setPlaceholderText(tr("PyPI (default); e.g. a company mirror"))
        self.proxy_edit = QLineEdit(self.settings.get("engine_proxy", "", str))
        self.proxy_edit.setPlaceholderText(tr("system settings; e.g. http://proxy:3128"))
        form.addRow(tr("Folder"), self.folder_edit)
        form.addRow(tr("Index URL"), self.index_edit)
        form.addRow(tr("Proxy"), self.proxy_edit)
        self.plan_label = QLabel(tr("Looking for a GPU and the wheel index…"))
        self.plan_label.setObjectName("plan")
        self.plan_label.setWordWrap(True)
        self.plan_label.setMinimumHeight(6 * self.fontMetrics().height())  # reason + notes
        box.addWidget(self.plan_label)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        box.addWidget(self.progress_bar)
        self.step_label = QLabel()
        self.step_label.setObjectName("step")
        box.addWidget(self.step_label)
        self.log_edit = QPlainTextEdit()
        self.log_edit.setObjectName("log")
        self.log_edit.setReadOnly(True)
        self.log_edit.setFont(mono)
        self.log_edit.setMaximumBlockCount(LOG_LINES)
        self.log_edit.setMinimumHeight(6 * self.fontMetrics().height())
        box.addWidget(self.log_edit, 1)
        lay.addWidget(install, 2)
        self.install_group = install
        # Elapsed seconds while the doctor runs: its first torch import takes 20-30 s.
        self._check_started = 0.0
        self.check_timer = QTimer(self)
        self.check_timer.setInterval(1000)
        self.check_timer.timeout.connect(safe_slot(self._show_checking))

        buttons = QHBoxLayout()
        self.install_button = QPushButton(tr("Install"))
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.setEnabled(False)
        close = QPushButton(tr("Close"))
        buttons.addStretch(1)
        for b in (self.install_button, self.cancel_button, close):
            buttons.addWidget(b)
        lay.addLayout(buttons)

        self.check_button.clicked.connect(safe_slot(lambda _c=False: self.check()))
        self.copy_button.clicked.connect(safe_slot(lambda _c=False: self.copy_report()))
        self.existing_button.clicked.connect(safe_slot(lambda _c=False: self.choose_python()))
        self.show_install_button.clicked.connect(
            safe_slot(lambda _c=False: self._fold_installer(False))
        )
        self.install_button.clicked.connect(safe_slot(lambda _c=False: self.install()))
        self.cancel_button.clicked.connect(safe_slot(lambda _c=False: self.cancel()))
        close.clicked.connect(self.close)
        for edit in (self.index_edit, self.proxy_edit):
            edit.editingFinished.connect(self.refresh_plan)
        self.folder_edit.changed.connect(lambda _t: self.refresh_plan())
        self._show_python()

    # --- options ----------------------------------------------------------------------
    def options(self) -> engine_env.InstallOptions:
        return engine_env.InstallOptions(
            Path(self.folder_edit.text() or engine_env.default_env_dir(profile_python_dir())),
            self.index_edit.text().strip(),
            self.proxy_edit.text().strip(),
        )

    def _show_python(self) -> None:
        self.python_label.setText(tr("Engine Python: <b>{}</b>").format(self.python))

    # --- doctor -----------------------------------------------------------------------
    def check(self) -> None:
        """Run ``python -m ...core doctor`` in the engine's Python (QProcess, async)."""
        if self.doctor is not None:
            return
        self.check_button.setEnabled(False)
        self._check_started = time.monotonic()
        self._show_checking()
        self.check_timer.start()
        cmd = engine_command(self.python, ["doctor"])
        proc = QProcess(self)
        env = QProcessEnvironment()
        for key, value in engine_environment().items():
            env.insert(key, value)
        proc.setProcessEnvironment(env)
        proc.setWorkingDirectory(str(Path(engine_env.PLUGIN_DIR).parent))
        proc.finished.connect(safe_slot(self._doctor_finished))
        proc.errorOccurred.connect(self._doctor_error)
        self.doctor = proc
        proc.start(cmd[0], cmd[1:])

    def _show_checking(self) -> None:
        seconds = int(time.monotonic() - self._check_started)
        self.status_label.setText(
            tr("Checking {} … {} s (the first import of PyTorch can take half a minute)")
            .format(self.python, seconds)
        )  # fmt: skip

    def _fold_installer(self, fold: bool) -> None:
        """Hide the installer (the engine is ready) or show it (not ready, or asked)."""
        self.install_group.setVisible(not fold)
        self.install_button.setVisible(not fold)
        self.cancel_button.setVisible(not fold)
        self.show_install_button.setVisible(fold)

    def _stop_doctor(self) -> None:
        """Kill a running doctor; its late signals are disconnected first."""
        proc, self.doctor = self.doctor, None
        if proc is None:
            return
        for signal in (proc.finished, proc.errorOccurred):
            try:
                signal.disconnect()
            except TypeError:  # nothing connected
                pass
        proc.kill()
        proc.waitForFinished(2000)
        proc.deleteLater()
        self.check_timer.stop()
        self.check_button.setEnabled(True)

    def _doctor_error(self, error: QProcess.ProcessError) -> None:
        if self.doctor is not None and error == QProcess.FailedToStart:
            self._show_report(None, tr("cannot start {}: {}").format(
                self.python, self.doctor.errorString()))  # fmt: skip
            self.doctor.deleteLater()
            self.doctor = None

    def _doctor_finished(self, code: int, _status: QProcess.ExitStatus) -> None:
        proc, self.doctor = self.doctor, None
        if proc is None:
            return
        out = bytes(proc.readAllStandardOutput()).decode(errors="replace")
        err = bytes(proc.readAllStandardError()).decode(errors="replace")
        proc.deleteLater()
        report = None
        for line in out.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "result":
                report = event.get("data")
            elif event.get("event") == "error":
                err = str(event.get("message", "")) + "\n" + err
        last = next((s for s in reversed(err.splitlines()) if s.strip()), "")
        why = last or tr("exit status {}").format(code)
        self._show_report(
            report, "" if report else tr("the engine's Python failed: {}").format(why)
        )

    def _show_report(self, report: dict | None, error: str) -> None:
        from ..core.cli.doctor import format_report  # pure: no engine packages imported

        self.check_button.setEnabled(True)
        self.check_timer.stop()
        self.report = report
        busy = self.install_task is not None  # never fold away a running install
        self._fold_installer(bool(report and report.get("ok")) and not busy)
        if report is None:
            self.report_text = f"engine      NOT ready: {error}\npython      {self.python}"
            self.status_label.setText(f"<span style='color:#b00020'>{error}</span>")
        else:
            self.report_text = format_report(report)
            if report.get("ok"):
                text = tr("Ready: torch {} on {}").format(report["packages"]["torch"],
                                                          report["device"])  # fmt: skip
                self.status_label.setText(f"<span style='color:#1b7f3b'>{text}</span>")
                self.engine_ready.emit(self.python)
            else:
                problems = "; ".join(f"{k}: {v}" for k, v in report["problems"].items())
                self.status_label.setText(
                    "<span style='color:#b00020'>"
                    + tr("Not ready. {} — install an environment below.").format(problems)
                    + "</span>"
                )
        self.report_edit.setPlainText(self.report_text)

    def copy_report(self) -> None:
        """The doctor report plus the installer's plan, for a bug report."""
        text = self.report_text
        if self.plan is not None:
            text += "\n\ninstaller plan:\n" + self.plan.describe()
        if self.result is not None and not self.result.ok:
            text += f"\n\nlast install: {self.result.error}"
        QGuiApplication.clipboard().setText(text)

    # --- choose another Python ------------------------------------------------------------
    def choose_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, tr("The Python that runs the engine (e.g. a venv's bin/python)"),
            str(Path(self.python).parent),
        )  # fmt: skip
        if path:
            self.use_python(path)

    def use_python(self, python: str) -> None:
        """Make ``python`` the engine's Python (plugin setting) and check it."""
        self._stop_doctor()  # a check of the previous Python must not report for this one
        self.python = str(python)
        self.settings.set("engine_python", self.python)
        self._show_python()
        self.engine_changed.emit(self.python)
        self.check()

    # --- the plan ---------------------------------------------------------------------
    def refresh_plan(self) -> None:
        """Detect (in a task: nvidia-smi, index probe) and show what Install would do."""
        if self.detect_task is not None or self.install_task is not None:
            return
        self.install_button.setEnabled(False)
        self.plan_label.setText(tr("Looking for a GPU and the wheel index…"))
        task = DetectTask(self.options())
        task.done.connect(safe_slot(self._detected))
        self.detect_task = task
        QgsApplication.taskManager().addTask(task)

    def _detected(self, detected: object) -> None:
        self.detect_task = None
        if isinstance(detected, Exception):
            self.plan = None
            self.plan_label.setText(tr("Cannot plan the install: {}").format(detected))
            return
        self.plan = engine_env.build_plan(detected, self.options())
        self.show_plan(self.plan)

    def show_plan(self, plan: engine_env.InstallPlan) -> None:
        self.plan = plan
        if plan.blocked:
            self.plan_label.setText(f"<span style='color:#b00020'>{plan.blocked}</span>")
        else:
            steps = " → ".join(s.title for s in plan.steps)
            self.plan_label.setText(
                "<b>" + tr("Plan") + "</b>: " + " ".join([plan.reason, *plan.notes])
                + "<br>" + tr("With {}: {}.").format(plan.tool, steps)
            )  # fmt: skip
        self.install_button.setEnabled(not plan.blocked and self.install_task is None)

    # --- install ----------------------------------------------------------------------
    def install(self) -> None:
        """Run the plan in a QgsTask; pip's output goes to the log as it comes."""
        if self.plan is None or self.plan.blocked or self.install_task is not None:
            return
        opts = self.options()
        self.settings.set("engine_env_dir", str(opts.env_dir))
        self.settings.set("engine_index_url", opts.index_url)
        self.settings.set("engine_proxy", opts.proxy)
        self.result = None
        self.log_edit.clear()
        for line in self.plan.describe().splitlines()[: 1 + len(self.plan.notes)]:
            self.log_edit.appendPlainText(line)
        self.progress_bar.setValue(0)
        task = InstallTask(self.plan)
        task.line.connect(self._line)
        task.step.connect(self._step_started)
        task.done.connect(safe_slot(self._installed))
        self.install_task = task
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(task)

    def _step_started(self, index: int, title: str) -> None:
        self._step = index
        n = len(self.plan.steps) if self.plan else 1
        self.progress_bar.setValue(int(1000 * index / n))
        self.step_label.setText(tr("Step {} of {}: {}").format(index + 1, n, title))

    def _line(self, index: int, line: str) -> None:
        self.log_edit.appendPlainText(line)
        fraction, status = engine_env.parse_progress(line)
        n = len(self.plan.steps) if self.plan else 1
        title = self.plan.steps[index].title if self.plan else ""
        if fraction is not None:
            self.progress_bar.setValue(int(1000 * (index + fraction) / n))
        elif status:
            self.step_label.setText(
                tr("Step {} of {}: {} — {}").format(index + 1, n, title, status[:90])
            )

    def cancel(self) -> None:
        if self.install_task is not None:
            self.cancel_button.setEnabled(False)
            self.step_label.setText(tr("Cancelling…"))
            self.install_task.cancel()

    def _installed(self, result: engine_env.RunResult) -> None:
        plan, self.install_task = self.plan, None
        self.result = result
        self.cancel_button.setEnabled(False)
        self.install_button.setEnabled(plan is not None and not plan.blocked)
        minutes = f"{result.seconds / 60:.1f}"
        if result.ok and plan is not None:
            self.progress_bar.setValue(1000)
            self.step_label.setText(tr("Installed in {} min.").format(minutes))
            self.log_edit.appendPlainText(
                tr("Installed in {} min: {}").format(minutes, plan.python)
            )
            log(f"engine environment installed: {plan.python}")
            self.use_python(str(plan.python))
            return
        message = tr("Cancelled.") if result.cancelled else result.error
        self.step_label.setText(f"<span style='color:#b00020'>{message}</span>")
        self.log_edit.appendPlainText(message)

    # --- closing ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop what runs (the plugin unloads): cancel the install, kill the doctor."""
        for task in (self.install_task, self.detect_task):
            if task is None:
                continue
            try:
                task.done.disconnect()
                task.cancel()
            except (RuntimeError, TypeError):  # already deleted or disconnected
                pass
        self.install_task = self.detect_task = None
        self._stop_doctor()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self.report is None and self.doctor is None:
            self.check()
        if self.plan is None and self.detect_task is None:
            self.refresh_plan()
