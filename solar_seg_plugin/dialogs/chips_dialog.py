"""The Create Training Data dialog: raster layers of the project and a polygon layer
become image/mask tiles and a manifest.csv (the engine's ``chips`` command, run as an
EngineProcessTask). The engine checks the inputs (``check_chips``) and its refusals
are shown beside the fields; at the end the dialog shows the counts and offers to open
Train on the new folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsMapLayerProxyModel
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import tasks
from ..common import PLUGIN_NAME, Settings, safe_slot, tr
from ..vector_source import polygon_source
from .widgets import (
    ERROR_STYLE,
    PathEdit,
    RasterChecklist,
    add_field_row,
    add_task_footer,
    cancel_task,
    error_label,
    show_error,
    show_problems,
    show_progress,
    start_task,
    task_finished,
)

# Engine problem fields (core.labels.chips.check_chips) -> this dialog's fields.
ENGINE_FIELDS = {"layer": "labels"}


class ChipsDialog(QDialog):
    def __init__(
        self,
        iface: Any,
        open_train: Callable[[str], Any] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.iface, self.open_train = iface, open_train
        self.settings = Settings()
        self.task: tasks.ChipsTask | None = None
        self.result: Any = None
        self.setWindowTitle(tr("SolarSeg: Create training data"))
        self.resize(720, 640)

        # The project's raster files (frozen while the task runs).
        self.rasters = RasterChecklist(lambda: self.task is not None)
        self.rasters.list.setMinimumHeight(140)
        self.raster_list = self.rasters.list
        self.labels_combo = QgsMapLayerComboBox()
        self.labels_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.selected_check = QCheckBox(tr("selected features only"))
        self.group_combo = QgsFieldComboBox()
        self.group_combo.setAllowEmptyFieldName(True)
        self.where_edit = QLineEdit()
        self.where_edit.setPlaceholderText(tr("optional OGR SQL filter, e.g. type = 'solar'"))
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(1, 4096)
        self.tile_spin.setValue(self.settings.get("chips/tile", 64, int))
        self.stride_spin = QSpinBox()
        self.stride_spin.setRange(0, 4096)
        self.stride_spin.setSpecialValueText(tr("tile size (no overlap)"))
        self.all_touched_check = QCheckBox(tr("burn every touched pixel (default: pixel centre)"))
        self.min_valid_spin = QDoubleSpinBox()
        self.min_valid_spin.setRange(0.0, 1.0)
        self.min_valid_spin.setSingleStep(0.05)
        self.min_valid_spin.setValue(0.5)
        self.keep_bg_spin = QSpinBox()
        self.keep_bg_spin.setRange(-1, 10_000_000)
        self.keep_bg_spin.setValue(-1)
        self.keep_bg_spin.setSpecialValueText(tr("all"))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(42)
        self.out_edit = PathEdit(True, None, "chips/last_out_dir")
        self.out_edit.edit.setPlaceholderText(tr("new folder for images/, masks/, manifest.csv"))
        self.out_edit.setText(self.settings.get("chips/last_out", "", str))
        self.overwrite_check = QCheckBox(tr("replace a dataset already in the folder"))

        self.errors: dict[str, QLabel] = {}
        grid = QGridLayout()
        rows = [
            ("rasters", tr("Raster layers"), self.rasters),
            ("labels", tr("Polygon layer"), self.labels_combo),
            ("selected", "", self.selected_check),
            ("group_field", tr("Plant field (optional)"), self.group_combo),
            ("where", tr("Attribute filter"), self.where_edit),
            ("tile", tr("Tile size (pixels)"), self.tile_spin),
            ("stride", tr("Stride (pixels)"), self.stride_spin),
            ("all_touched", "", self.all_touched_check),
            ("min_valid", tr("Minimum valid share"), self.min_valid_spin),
            ("keep_background", tr("Background tiles to keep"), self.keep_bg_spin),
            ("seed", tr("Seed"), self.seed_spin),
            ("out", tr("Output folder"), self.out_edit),
            ("overwrite", "", self.overwrite_check),
        ]
        for key, label, widget in rows:
            widget.setObjectName(key)
            self.errors[key] = error_label()
            self.errors[key].setObjectName(f"error:{key}")
            add_field_row(grid, label, widget, self.errors[key])
        grid.setColumnStretch(1, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(grid, 1)
        add_task_footer(self, lay, tr("Create training data"))
        self.model_info.setVisible(False)
        self.train_button = QPushButton(tr("Open Train on this folder…"))
        self.train_button.setObjectName("openTrain")
        self.train_button.setVisible(False)
        footer = lay.itemAt(lay.count() - 1).layout()
        footer.insertWidget(0, self.train_button)

        self.labels_combo.layerChanged.connect(safe_slot(self._labels_changed))
        self.train_button.clicked.connect(safe_slot(lambda _c=False: self.train_on_result()))
        self._labels_changed(self.labels_combo.currentLayer())

    # --- inputs ------------------------------------------------------------------------
    def refresh_rasters(self) -> None:
        self.rasters.refresh()

    def check_all(self, on: bool) -> None:
        self.rasters.check_all(on)

    def set_checked(self, layer_ids: list[str]) -> None:
        self.rasters.set_checked(layer_ids)

    def checked_ids(self) -> list[str]:
        return self.rasters.checked_ids()

    def checked_files(self) -> list[str]:
        return self.rasters.checked_files()

    def _labels_changed(self, layer: Any) -> None:
        self.group_combo.setLayer(layer)
        if layer is not None and self.group_combo.currentField() == "":
            names = [f.name() for f in layer.fields()]
            if "id" in names:  # OSM exports and most registries name the plant "id"
                self.group_combo.setField("id")
        n = layer.selectedFeatureCount() if layer is not None else 0
        self.selected_check.setText(tr("selected features only ({} selected)").format(n))

    def inputs(self) -> tuple[tasks.ChipsInputs, Any] | None:
        """The engine's inputs (with the polygon file, exported when needed), or None
        with messages beside the fields the dialog itself can judge."""
        for label in self.errors.values():
            show_error(label, None)
        problems: dict[str, str] = {}
        rasters = self.checked_files()
        if not rasters:
            problems["rasters"] = tr("Check at least one raster layer (a raster file on disk)")
        layer = self.labels_combo.currentLayer()
        source = None
        if layer is None:
            problems["labels"] = tr("Choose a polygon layer")
        else:
            try:
                source = polygon_source(layer, self.selected_check.isChecked())
            except ValueError as exc:
                key = "selected" if self.selected_check.isChecked() else "labels"
                problems[key] = str(exc)
        out = self.out_edit.text()
        if not out:
            problems["out"] = tr("Choose an output folder")
        if problems:
            self.show_problems(problems)
            if source is not None:
                _delete(source.temporary)
            return None
        stride = self.stride_spin.value()
        keep = self.keep_bg_spin.value()
        inputs = tasks.ChipsInputs(
            rasters=rasters,
            labels=source.path,
            layer=source.layer,
            out=out,
            where=self.where_edit.text().strip() or None,
            group_field=self.group_combo.currentField() or None,
            tile=self.tile_spin.value(),
            stride=stride or None,
            all_touched=self.all_touched_check.isChecked(),
            min_valid=self.min_valid_spin.value(),
            keep_background=keep if keep >= 0 else None,
            seed=self.seed_spin.value(),
            overwrite=self.overwrite_check.isChecked(),
        )
        return inputs, source

    def show_problems(self, problems: dict[str, str]) -> None:
        """Each message beside its field (engine fields mapped onto the dialog's)."""
        show_problems(self, problems, lambda key: ENGINE_FIELDS.get(key, key))

    # --- running -----------------------------------------------------------------------
    def start(self) -> bool:
        if self.task is not None:
            return False
        got = self.inputs()
        if got is None:
            return False
        inputs, source = got
        self.settings.set("chips/last_out", inputs.out)
        self.settings.set("chips/tile", inputs.tile)
        self.result = None
        self.train_button.setVisible(False)
        status = tr("Cutting {} raster(s) with {} polygon(s)…").format(
            len(inputs.rasters), source.features
        )
        start_task(self, tasks.ChipsTask(inputs, cleanup=source.temporary), status)
        return True

    def cancel(self) -> None:
        cancel_task(self)

    def on_info(self, info: dict) -> None:
        show_progress(self, info)

    def on_done(self, task: tasks.ChipsTask, ok: bool) -> None:
        if not task_finished(self, task):
            return
        self.refresh_rasters()
        if task.cancelled:
            self.status.setStyleSheet("")
            self.status.setText(tr("Cancelled; the output folder is as it was."))
            return
        if not ok:
            problems = getattr(task.error, "problems", None) or {}
            if problems:
                self.show_problems(problems)
            else:
                self.status.setStyleSheet(ERROR_STYLE)
                self.status.setText(tr("Failed: {}").format(task.error_message()))
            return
        r = self.result = task.result
        self.progress_bar.setValue(100)
        self.status.setStyleSheet("")
        self.status.setText(
            tr(
                "<b>{tiles} tiles</b> ({pos} with plant pixels, {bg} all-background) · "
                "<b>{plants} plants in {groups} groups</b> · {px:,} plant pixels<br>"
                "in {out}"
            ).format(
                tiles=r.tiles,
                pos=r.positive_tiles,
                bg=r.background_tiles,
                plants=r.plants,
                groups=r.groups,
                px=r.positive_pixels,
                out=r.out_dir,
            )  # fmt: skip
        )
        self.train_button.setVisible(self.open_train is not None)
        bar = self.iface.messageBar() if self.iface is not None else None
        if bar is not None:
            bar.pushMessage(PLUGIN_NAME, r.summary, Qgis.Success)

    def train_on_result(self) -> Any:
        if self.result is None or self.open_train is None:
            return None
        return self.open_train(str(self.result.out_dir))

    def shutdown(self) -> None:
        """Cancel running work and stop listening to the project (plugin unload)."""
        if self.task is not None:
            tasks.detach(self.task)
            self.task = None
        self.rasters.shutdown()


def _delete(paths: list[Path]) -> None:
    import shutil

    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
