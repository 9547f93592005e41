"""The Train dialog: every engine setting, dataset form and class balance, validation
beside the fields, and a background TrainTask with live progress, chart and summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import tasks
from ..common import PLUGIN_NAME, Settings, safe_slot, tr
from .chart import HistoryChart
from .config_form import ConfigForm
from .widgets import (
    ERROR_STYLE,
    cancel_task,
    format_eta,
    show_progress,
    start_task,
    task_finished,
)

BALANCE_COLUMNS = [
    ("tiles", "Tiles"),
    ("positive_ratio", "Positive"),
    ("negative_ratio", "Negative"),
    ("valid_pixels", "Valid pixels"),
    ("blank_tiles", "Blank tiles"),
]
SUMMARY_METRICS = ["iou", "f1", "precision", "recall", "accuracy"]


def default_config() -> Any:
    """The engine's defaults, with folders that make sense inside QGIS."""
    from ..core.config import RunConfig

    cfg = RunConfig()
    cfg.data.path = ""
    cfg.out_dir = str(Path.home() / "SolarSeg" / "runs")
    return cfg


class TrainDialog(QDialog):
    def __init__(
        self,
        iface: Any,
        open_inspect: Callable[..., Any] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.iface, self.open_inspect = iface, open_inspect
        self.settings = Settings()
        self.task: tasks.TrainTask | None = None
        self.summary_task: tasks.DatasetSummaryTask | None = None
        self.result: Any = None
        self.setWindowTitle(tr("SolarSeg: Train a model"))
        self.resize(1180, 760)

        self.form = ConfigForm(self.restored_config())
        self._build_dataset_box()
        self._build_device_label()
        left = QWidget()
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        left_lay.addWidget(self.form, 1)

        right = QWidget()
        right_lay = QVBoxLayout(right)
        right_lay.setContentsMargins(0, 0, 0, 0)
        right_lay.addWidget(self._build_progress_box())
        self.chart = HistoryChart()
        right_lay.addWidget(self.chart, 1)
        right_lay.addWidget(self._build_summary_box())

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([660, 520])
        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        self.status = QLabel()
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        buttons = QHBoxLayout()
        self.reset_button = QPushButton(tr("Reset to defaults"))
        self.start_button = QPushButton(tr("Start training"))
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton(tr("Cancel training"))
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton(tr("Close"))
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        lay.addLayout(buttons)

        self.reset_button.clicked.connect(safe_slot(lambda _c=False: self.reset_defaults()))
        self.start_button.clicked.connect(safe_slot(lambda _c=False: self.start()))
        self.cancel_button.clicked.connect(safe_slot(lambda _c=False: self.cancel()))
        self.close_button.clicked.connect(self.close)
        self.form.changed.connect(self._setting_changed)
        if self.form.fields["data.path"].get():
            self.refresh_dataset()

    # --- building ----------------------------------------------------------------------
    def _build_dataset_box(self) -> None:
        box = QGroupBox(tr("Dataset found"))
        lay = QVBoxLayout(box)
        self.dataset_label = QLabel(tr("Choose a dataset folder (or a CSV manifest)."))
        self.dataset_label.setObjectName("datasetInfo")
        self.dataset_label.setWordWrap(True)
        lay.addWidget(self.dataset_label)
        self.balance_table = QTableWidget(0, len(BALANCE_COLUMNS))
        self.balance_table.setObjectName("balance")
        self.balance_table.setHorizontalHeaderLabels([tr(t) for _, t in BALANCE_COLUMNS])
        self.balance_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.balance_table.setMaximumHeight(150)
        lay.addWidget(self.balance_table)
        self.form.slots["data.path"].addWidget(box)  # right under the dataset path
        self.dataset_box = box

    def _build_device_label(self) -> None:
        # The engine decides (auto: CUDA when its torch sees a GPU) and says so when a
        # run starts; nothing here imports torch.
        self.device_label = QLabel(tr("auto: the engine uses a CUDA GPU when it finds one"))
        self.device_label.setObjectName("deviceInfo")
        self.form.slots["train.device"].addWidget(self.device_label)

    def _build_progress_box(self) -> QGroupBox:
        box = QGroupBox(tr("Progress"))
        grid = QGridLayout(box)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        grid.addWidget(self.progress_bar, 0, 0, 1, 6)
        self.labels: dict[str, QLabel] = {}
        for i, (key, title) in enumerate(
            [
                ("epoch", "Epoch"),
                ("batch", "Batch"),
                ("loss", "Loss"),
                ("iou", "Val IoU"),
                ("eta", "ETA"),
                ("device", "Device"),
            ]  # fmt: skip
        ):
            grid.addWidget(QLabel(tr(title) + ":"), 1 + i // 3, 2 * (i % 3))
            value = QLabel("–")
            value.setObjectName(f"progress:{key}")
            self.labels[key] = value
            grid.addWidget(value, 1 + i // 3, 2 * (i % 3) + 1)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(90)
        grid.addWidget(self.log, 3, 0, 1, 6)
        return box

    def _build_summary_box(self) -> QGroupBox:
        box = QGroupBox(tr("Summary"))
        lay = QVBoxLayout(box)
        self.summary_label = QLabel(tr("The metrics per split appear here when training ends."))
        self.summary_label.setObjectName("summary")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.summary_label)
        self.summary_table = QTableWidget(0, len(SUMMARY_METRICS))
        self.summary_table.setHorizontalHeaderLabels(["IoU" if m == "iou" else m.capitalize()
                                                      for m in SUMMARY_METRICS])  # fmt: skip
        self.summary_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.summary_table.setMaximumHeight(120)
        lay.addWidget(self.summary_table)
        self.inspect_button = QPushButton(tr("Inspect errors of this run…"))
        self.inspect_button.setEnabled(False)
        self.inspect_button.clicked.connect(safe_slot(lambda _c=False: self.inspect()))
        lay.addWidget(self.inspect_button)
        return box

    # --- settings ----------------------------------------------------------------------
    def restored_config(self) -> Any:
        from ..core.config import ConfigError, RunConfig, from_dict

        text = self.settings.get("train/last_config", "", str)
        if text:
            try:
                return from_dict(RunConfig, json.loads(text))
            except (ConfigError, ValueError, TypeError):
                self.settings.remove("train/last_config")
        return default_config()

    def set_dataset(self, path: str) -> None:
        """Train on ``path`` (``data.path``), e.g. a folder Create Training Data wrote."""
        self.form.fields["data.path"].set(path)
        self.refresh_dataset()

    def reset_defaults(self) -> None:
        self.form.set_config(default_config())
        self.form.clear_errors()

    def _setting_changed(self, key: str) -> None:
        if key == "data.path" or key == "data.limit" or key.startswith("data.split"):
            self.refresh_dataset()

    # --- dataset overview --------------------------------------------------------------
    def refresh_dataset(self) -> None:
        """Form and pair count at once; class balance per split in a background task."""
        from ..core.config import ConfigError, SplitConfig, from_dict
        from ..core.data.discovery import DatasetError, find_dataset

        path = self.form.fields["data.path"].get()
        self.balance_table.setRowCount(0)
        if self.summary_task is not None:
            self.summary_task.cancel()
            self.summary_task = None
        if not path:
            self.dataset_label.setText(tr("Choose a dataset folder (or a CSV manifest)."))
            return
        try:
            index = find_dataset(path)
        except DatasetError as exc:
            self.dataset_label.setText(str(exc))
            self.dataset_label.setStyleSheet(ERROR_STYLE)
            return
        self.dataset_label.setStyleSheet("")
        split = "predefined splits" if index.has_predefined_split else "seeded split by tile/group"
        self.dataset_label.setText(
            tr("Form <b>{}</b>: {} image/mask pairs ({}). Computing the class balance…").format(
                index.form, len(index.pairs), tr(split)
            )
        )
        values = self.form.values()
        try:
            split_cfg = from_dict(SplitConfig, values["data"]["split"])
            limit = values["data"]["limit"]
            limit = int(limit) if limit not in (None, "") else None
        except (ConfigError, ValueError):
            split_cfg, limit = SplitConfig(), None
        task = tasks.DatasetSummaryTask(path, limit, split_cfg)
        task.done.connect(safe_slot(lambda ok, t=task: self._dataset_done(t, ok)))
        self.summary_task = tasks.start(task)

    def _dataset_done(self, task: tasks.DatasetSummaryTask, ok: bool) -> None:
        if task is not self.summary_task:
            return
        self.summary_task = None
        if not ok:
            if task.error is not None:
                self.dataset_label.setText(task.error_message())
                self.dataset_label.setStyleSheet(ERROR_STYLE)
            return
        ov = task.result
        counts = ", ".join(f"{k} {v}" for k, v in ov.split_counts.items())
        self.dataset_label.setText(
            tr("Form <b>{}</b>: {} pairs used ({}).").format(ov.form, ov.pairs, counts)
        )
        order = [k for k in ("all", "train", "val", "test") if k in ov.balance]
        order += [k for k in ov.balance if k not in order]
        self.balance_table.setRowCount(len(order))
        self.balance_table.setVerticalHeaderLabels(order)
        for r, split in enumerate(order):
            row = ov.balance[split]
            for c, (key, _) in enumerate(BALANCE_COLUMNS):
                v = row[key]
                text = f"{v:.2%}" if isinstance(v, float) else f"{v:,}"
                self.balance_table.setItem(r, c, QTableWidgetItem(text))

    # --- validation --------------------------------------------------------------------
    def validated_config(self) -> Any | None:
        """The RunConfig, or None with messages beside the refused fields.

        Only the values are checked here (pure Python, instant); the dataset, device,
        loss and model are checked by the engine's own ``check_train`` when the run
        starts, and its problems come back beside the same fields (:meth:`on_done`).
        """
        from ..core.config import ConfigError, RunConfig, config_problems, from_dict

        form = self.form
        form.clear_errors()
        try:
            cfg = from_dict(RunConfig, form.values())
        except ConfigError as exc:
            for key in form.keys_in(str(exc)) or ["name"]:
                form.set_error(key, str(exc))
            return self._refused()
        problems = {p.field: p.message for p in config_problems(cfg)}
        if problems:
            self.show_problems(problems)
            return self._refused()
        return cfg

    def show_problems(self, problems: dict[str, str]) -> None:
        """Each problem beside its field (a field the form lacks: beside the name)."""
        keys = [key if key in self.form.fields else "name" for key in problems]
        for key, message in zip(keys, problems.values(), strict=True):
            self.form.set_error(key, message)
        if keys:
            self.form.show_field(keys[0])  # the first problem's tab, in form order

    def _refused(self) -> None:
        self.status.setStyleSheet(ERROR_STYLE)
        self.status.setText(tr("Some settings are refused: see the messages beside them."))
        return None

    # --- running -----------------------------------------------------------------------
    def start(self) -> bool:
        """Validate and start training in a QgsTask; False if refused or running."""
        if self.task is not None:
            return False
        cfg = self.validated_config()
        if cfg is None:
            return False
        from ..core.config import to_dict

        self.settings.set("train/last_config", json.dumps(to_dict(cfg)))
        self.chart.clear()
        self.log.clear()
        self.summary_table.setRowCount(0)
        self.inspect_button.setEnabled(False)
        self.result = None
        for label in self.labels.values():
            label.setText("–")
        self._set_running(True)  # before the task exists: its end re-enables the form
        start_task(self, tasks.TrainTask(cfg), tr("Training {} …").format(cfg.name))
        return True

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.reset_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def cancel(self) -> None:
        cancel_task(self, tr("Cancelling: training stops within one batch…"))

    def on_info(self, info: dict) -> None:
        show_progress(self, info)
        stage = info.get("stage")
        if stage == "train":
            self.labels["epoch"].setText(f"{info.get('epoch')}/{info.get('epochs')}")
            self.labels["batch"].setText(f"{info.get('batch')}/{info.get('batches')}")
            if info.get("loss") is not None:
                self.labels["loss"].setText(f"{info['loss']:.4f}")
            self.labels["eta"].setText(format_eta(info.get("eta_s")))
        if info.get("device"):
            self.labels["device"].setText(str(info["device"]))
        row = info.get("history_row")
        if row:
            self.chart.add_row(row)
            if row.get("val_iou") is not None:
                self.labels["iou"].setText(f"{row['val_iou']:.4f}")
            self.log.appendPlainText(info.get("message", ""))
        if info.get("message"):
            self.status.setText(f"{stage}: {info['message']}")

    def on_done(self, task: tasks.TrainTask, ok: bool) -> None:
        if not task_finished(self, task):
            return
        self._set_running(False)
        bar = self.iface.messageBar() if self.iface is not None else None
        if task.error is not None:
            msg = task.error_message()
            problems = getattr(task.error, "problems", None)
            if problems:  # refused by the engine's check: beside the fields, nothing ran
                self.show_problems(problems)
                self._refused()
                return
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Training failed: {}").format(msg))
            if bar is not None:
                bar.pushMessage(PLUGIN_NAME, tr("Training failed: {}").format(msg), Qgis.Critical)
            return
        self.result = task.result
        self.show_summary(task.result)
        if bar is not None and task.result is not None:
            bar.pushMessage(
                PLUGIN_NAME,
                tr("Training {}: {}").format(task.result.status, task.result.run_dir),
                Qgis.Success if ok else Qgis.Warning,
            )

    def show_summary(self, result: Any) -> None:
        if result is None:
            self.status.setText(tr("Training cancelled before it started."))
            return
        self.progress_bar.setValue(100)
        status = result.status
        self.status.setStyleSheet("")
        self.status.setText(
            tr("Training {}.").format(status)
            + ("" if status != "cancelled" else " " + tr("The best model so far is kept."))
        )
        self.summary_label.setText(
            tr(
                "Status <b>{}</b>, best epoch {}, device {}<br>Best threshold (on val): "
                "<b>{:.3f}</b><br>Run folder: <a href='file://{}'>{}</a>"
            ).format(
                status,
                result.best_epoch,
                result.device,
                result.threshold,
                result.run_dir,
                result.run_dir,
            )  # fmt: skip
        )
        self.summary_label.setOpenExternalLinks(True)
        self.summary_label.setTextInteractionFlags(Qt.TextBrowserInteraction)
        splits = [s for s in ("train", "val", "test") if s in (result.metrics or {})]
        self.summary_table.setRowCount(len(splits))
        self.summary_table.setVerticalHeaderLabels(splits)
        for r, split in enumerate(splits):
            for c, key in enumerate(SUMMARY_METRICS):
                value = result.metrics[split].get(key)
                text = "–" if value is None else f"{value:.4f}"
                self.summary_table.setItem(r, c, QTableWidgetItem(text))
        self.inspect_button.setEnabled((Path(result.run_dir) / "model.pt").exists())

    def inspect(self) -> None:
        if self.result is not None and self.open_inspect is not None:
            self.open_inspect(str(self.result.run_dir), True)

    def shutdown(self) -> None:
        """Cancel running work and stop listening to it (plugin unload)."""
        for task in (self.task, self.summary_task):
            if task is not None:
                tasks.detach(task)
        self.task = self.summary_task = None
