"""The Inspect Errors dialog: a model and a dataset split (test by default) -> a
PredictSplitTask (``predict-split`` in the engine process) -> the error analysis (layer
groups + per-tile dock). The model's metadata is read without torch
(:func:`core.models.meta.read_model_meta`): no engine package enters QGIS's process."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import tasks
from ..common import PLUGIN_NAME, Settings, format_bands, parse_bands, safe_slot, tr
from .widgets import (
    ERROR_STYLE,
    PathEdit,
    add_field_row,
    add_task_footer,
    cancel_task,
    error_label,
    show_error,
    show_progress,
    start_task,
    task_finished,
)

SPLITS = ["test", "val", "train", "all"]


class InspectDialog(QDialog):
    def __init__(
        self,
        iface: Any,
        on_analysis: Callable[[Any], None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.iface, self.on_analysis = iface, on_analysis
        self.settings = Settings()
        self.task: tasks.PredictSplitTask | None = None
        self.analysis: Any = None
        self.meta: Any = None
        self.meta_path = ""
        self.setWindowTitle(tr("SolarSeg: Inspect errors"))
        self.resize(680, 360)

        grid = QGridLayout()
        self.errors: dict[str, QLabel] = {}
        self.model_edit = PathEdit(True, tr("SolarSeg model (*.pt)"), "inspect/last_model_dir")
        self.model_edit.edit.setPlaceholderText(tr("run folder or model.pt"))
        self.dataset_edit = PathEdit(True, tr("CSV manifest (*.csv)"), "inspect/last_dataset_dir")
        self.dataset_edit.edit.setPlaceholderText(
            tr("empty = the dataset the model was trained on")
        )
        self.split_combo = QComboBox()
        self.split_combo.addItems(SPLITS)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.rgb_edit = QLineEdit()
        self.rgb_edit.setPlaceholderText("4,3,2")
        self.tiles_spin = QSpinBox()
        self.tiles_spin.setRange(1, 100000)
        self.tiles_spin.setValue(self.settings.get("inspect/initial_tiles", 24, int))
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        self.tta_check = QCheckBox(tr("flip test-time augmentation"))
        self.out_edit = PathEdit(True, None, "inspect/last_out_dir")
        self.out_edit.edit.setPlaceholderText(tr("empty = <run folder>/inspect_<split>"))
        rows = [
            ("model", tr("Model"), self.model_edit),
            ("dataset", tr("Dataset"), self.dataset_edit),
            ("split", tr("Split"), self.split_combo),
            ("threshold", tr("Threshold"), self.threshold_spin),
            ("rgb", tr("Image bands shown as R,G,B"), self.rgb_edit),
            ("tiles", tr("Worst tiles added to the map at once"), self.tiles_spin),
            ("device", tr("Device"), self.device_combo),
            ("tta", "", self.tta_check),
            ("out", tr("Folder for the tile layers"), self.out_edit),
        ]
        for key, label, widget in rows:
            widget.setObjectName(key)
            self.errors[key] = error_label()
            add_field_row(grid, label, widget, self.errors[key])
        grid.setColumnStretch(1, 1)

        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        add_task_footer(self, lay, tr("Inspect"))
        self.model_edit.changed.connect(safe_slot(self.model_changed))
        last = self.settings.get("inspect/last_model", "", str)
        if last and Path(last).exists():
            self.set_model(last)

    # --- model -------------------------------------------------------------------------
    def set_model(self, path: str) -> None:
        self.model_edit.edit.setText(path)
        self.model_changed(path)

    def model_changed(self, path: str) -> None:
        """Read the model's metadata: threshold and default RGB bands."""
        from ..core.models.meta import ModelFileError, read_model_meta

        show_error(self.errors["model"], None)
        self.meta, self.meta_path = None, path
        if not path:
            return
        try:
            meta = read_model_meta(path)
        except (ModelFileError, OSError) as exc:
            show_error(self.errors["model"], str(exc))
            return
        self.meta = meta
        self.threshold_spin.setValue(float(meta.threshold))
        self.tta_check.setChecked(bool((meta.config or {}).get("train", {}).get("tta", False)))
        self.rgb_edit.setText(format_bands(default_rgb(meta.bands, meta.in_channels)))
        dataset = (meta.config or {}).get("data", {}).get("path", "?")
        self.model_info.setText(
            tr("{} / {} on bands {}, threshold {:.3f}, trained on {}").format(
                meta.arch, meta.encoder, format_bands(meta.bands) or "all", meta.threshold, dataset
            )
        )

    # --- validation --------------------------------------------------------------------
    def options(self) -> dict | None:
        """The validated inputs, or None with a message beside each refused field."""
        for label in self.errors.values():
            show_error(label, None)
        ok = True
        model = self.model_edit.text()
        if not model:
            show_error(self.errors["model"], tr("Choose a run folder or a model.pt"))
            ok = False
        else:
            if model != self.meta_path:
                self.model_changed(model)
            if self.meta is None:
                show_error(self.errors["model"], self.errors["model"].text() or tr("unreadable"))
                ok = False
        dataset = self.dataset_edit.text() or None
        if dataset and not Path(dataset).exists():
            show_error(self.errors["dataset"], tr("{}: not found").format(dataset))
            ok = False
        try:
            rgb = parse_bands(self.rgb_edit.text())
            if rgb is None or len(rgb) != 3:
                raise ValueError(tr("give exactly three bands, e.g. 4,3,2"))
        except ValueError as exc:
            show_error(self.errors["rgb"], str(exc))
            ok = False
            rgb = None
        split = self.split_combo.currentText()
        out = self.out_edit.text()
        if not out and model:
            base = Path(model) if Path(model).is_dir() else Path(model).parent
            out = str(base / f"inspect_{split}")
        if out:
            try:
                Path(out).mkdir(parents=True, exist_ok=True)
                if not os.access(out, os.W_OK):
                    raise PermissionError(out)
            except OSError as exc:
                show_error(self.errors["out"], tr("cannot write to {}: {}").format(out, exc))
                ok = False
        if not ok:
            self.adjustSize()
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Some inputs are refused: see the messages beside them."))
            return None
        return {
            "model": model,
            "dataset": dataset,
            "split": split,
            "threshold": self.threshold_spin.value(),
            "rgb": rgb,
            "tiles": self.tiles_spin.value(),
            "device": self.device_combo.currentText(),
            "tta": self.tta_check.isChecked(),
            "out": out,
        }

    # --- running -----------------------------------------------------------------------
    def start(self) -> bool:
        if self.task is not None:
            return False
        opts = self.options()
        if opts is None:
            return False
        self.settings.set("inspect/last_model", opts["model"])
        self.settings.set("inspect/initial_tiles", opts["tiles"])
        self.opts = opts
        task = tasks.PredictSplitTask(
            opts["model"], opts["dataset"], opts["split"], opts["tta"], opts["device"],
            Path(opts["out"]) / tasks.PREDICTIONS_DIR, opts["rgb"],
        )  # fmt: skip
        start_task(self, task, tr("Predicting the {} split…").format(opts["split"]))
        return True

    def cancel(self) -> None:
        cancel_task(self)

    def on_info(self, info: dict) -> None:
        show_progress(self, info)

    def on_done(self, task: tasks.PredictSplitTask, ok: bool) -> None:
        if not task_finished(self, task):
            return
        if task.cancelled:
            self.status.setText(tr("Cancelled; nothing was added to the map."))
            return
        if not ok:
            self.fail(task.error_message())
            return
        from ..analysis.controller import ErrorAnalysis

        data = task.result
        try:
            self.analysis = ErrorAnalysis(
                self.iface, data, Path(self.opts["out"]), self.opts["threshold"],
                self.opts["tiles"],
            )  # fmt: skip
        except Exception as exc:  # a tile that cannot be written or loaded is reported
            self.fail(f"{type(exc).__name__}: {exc}")
            return
        self.progress_bar.setValue(100)
        self.status.setText(
            tr("{} tiles of the {} split: IoU {:.4f} at threshold {:.3f}.").format(
                len(data.tiles),
                data.split,
                self.analysis.result.metrics["iou"],
                self.analysis.threshold,
            )
        )
        if self.on_analysis is not None:
            self.on_analysis(self.analysis)

    def fail(self, message: str) -> None:
        self.status.setStyleSheet(ERROR_STYLE)
        self.status.setText(tr("Inspect Errors failed: {}").format(message))
        if self.iface is not None:
            self.iface.messageBar().pushMessage(PLUGIN_NAME, message, Qgis.Critical)

    def shutdown(self) -> None:
        """Cancel running work and stop listening to it (plugin unload)."""
        if self.task is not None:
            tasks.detach(self.task)
            self.task = None


def default_rgb(bands: list[int] | None, in_channels: int) -> list[int]:
    """R,G,B raster bands for display (the engine's choice, see ``display_bands``)."""
    from ..core.models.meta import display_bands

    return display_bands(bands, in_channels)
