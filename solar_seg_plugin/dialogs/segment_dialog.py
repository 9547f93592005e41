"""The Segment Layer dialog: what to segment (one raster layer or file, several raster
layers of the project, or a folder of rasters), a model (run folder, model.pt or .onnx)
with its band mapping, window settings and outputs.

One raster: a SegmentTask adds the probability, mask, polygons (and, with ground truth,
the error overlay) above the source layer, on the source's grid. Several rasters: a
SegmentManyTask runs the engine's ``segment-many`` (Dask distributed: local worker
processes, or an existing scheduler) and adds the merged polygons of every raster (field
``scene``) and, optionally, each raster's mask in a group."""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import tasks
from ..analysis.layers import (
    add_group_above,
    add_to_group,
    apply_style,
    load_raster,
    load_vector,
)
from ..common import (
    PLUGIN_NAME,
    Settings,
    format_bands,
    parse_bands,
    raster_shape,
    safe_slot,
    tr,
)
from ..core.errors import UserError
from ..core.segment.options import PRECISIONS  # pure Python
from ..vector_source import polygon_source
from .widgets import (
    ERROR_STYLE,
    WARNING_STYLE,
    PathEdit,
    RasterChecklist,
    add_field_row,
    add_task_footer,
    cancel_task,
    error_label,
    grow_to_fit,
    raster_file,
    set_row_visible,
    show_error,
    show_problems,
    show_progress,
    start_task,
    task_finished,
)

BACKENDS = ["auto", "torch", "onnx"]
DEVICES = ["auto", "cpu", "cuda"]
OUTPUT_NAMES = ("probability.tif", "mask.tif", "panels.gpkg", "errors.tif")

# What to segment: one raster layer (or file), several raster layers, a folder.
ONE, LAYERS, FOLDER = "one", "layers", "folder"
MODES = (ONE, LAYERS, FOLDER)
# Rows shown only in some modes (the others are shown in all).
MODE_ROWS = {
    ONE: ("layer", "file", "polygons", "truth", "truth_file", "reference", "reference_field"),
    LAYERS: ("layers", "workers", "scheduler", "scene_masks"),
    FOLDER: ("folder", "workers", "scheduler", "scene_masks"),
}
# Failed rasters listed by name and reason in the status line (the rest: summary.csv).
FAILED_SHOWN = 6
# Mask layers of more rasters than this start in a collapsed group.
MASKS_EXPANDED = 8

# Engine problem fields (core.segment.engine.check_segment, and check_segment_many for
# several rasters) -> this dialog's fields.
ENGINE_FIELDS = {"tile_size": "tile", "batch_size": "batch", "probability_dtype": "out",
                 "threads_per_worker": "workers", "calibration_tiles": "calibration"}  # fmt: skip
# Layers of plants.gpkg (segment --reference) and their styles.
PLANT_LAYERS = (("false_detections", "false_detections.qml"), ("plants", "plants_found_missed.qml"))


def machine_cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def default_workers(cores: int | None = None) -> int:
    """Local Dask workers for several rasters: one per 4 cores. Each worker holds its own
    copy of the model and gets cores / workers torch threads; on a small machine one
    worker with every core is faster than several with one each (docs/benchmarks.md:
    0.83x for 2 workers on 2 cores), and QGIS itself keeps some room."""
    return max(1, (cores or machine_cores()) // 4)


class SegmentDialog(QDialog):
    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.settings = Settings()
        self.task: tasks.EngineTask | None = None  # SegmentTask or SegmentManyTask
        self.meta: Any = None  # the model's metadata (engine `info`), when read
        self.meta_path = ""
        # The user typed a band mapping after choosing the model: reading the model (some
        # seconds, in the engine process) must not replace it when it ends.
        self.bands_typed = False
        self.info_task: tasks.ModelInfoTask | None = None
        self.outcome: Any = None
        self.added: list = []
        self.bands_key_shown = ""  # band-mapping key (model, band count) last pre-filled
        self.setWindowTitle(tr("SolarSeg: Segment raster layers"))
        self.resize(780, 700)

        self.mode_buttons = {
            ONE: QRadioButton(tr("One layer")),
            LAYERS: QRadioButton(tr("Several layers")),
            FOLDER: QRadioButton(tr("A folder")),
        }
        self.mode_group = QButtonGroup(self)
        mode_row = QWidget()
        ml = QHBoxLayout(mode_row)
        ml.setContentsMargins(0, 0, 0, 0)
        for i, mode in enumerate(MODES):
            self.mode_group.addButton(self.mode_buttons[mode], i)
            ml.addWidget(self.mode_buttons[mode])
        ml.addStretch(1)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.file_edit = PathEdit(False, tr("Rasters (*.tif *.tiff *.vrt *.img *.jp2)"),
                                  "segment/last_raster_dir")  # fmt: skip
        self.file_edit.edit.setPlaceholderText(tr("or a raster file (added to the project)"))
        self.model_edit = PathEdit(True, tr("Models (*.pt *.onnx)"), "segment/last_model_dir")
        self.model_edit.edit.setPlaceholderText(tr("run folder, model.pt or model.onnx"))
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText(tr("raster bands for the model's inputs, e.g. 1,2,3,4"))
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setValue(0.5)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(16, 8192)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setValue(256)
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 4096)
        self.overlap_spin.setValue(64)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(8)
        self.backend_combo = QComboBox()
        self.backend_combo.addItems(BACKENDS)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(PRECISIONS)
        self.precision_combo.setCurrentText(self.settings.get("segment/precision", "fp32", str))
        self.precision_combo.setToolTip(
            tr("Network arithmetic. fp32: exact (ONNX and PyTorch agree within 1e-3). "
               "bf16: PyTorch autocast, faster on CPUs with native bf16. int8: ONNX Runtime "
               "with an int8 graph, about 2x fp32 on CPUs with VNNI; a .pt model is "
               "quantised once (calibrated on training tiles) and cached. auto: bf16 where "
               "the CPU has it natively. fp16: CUDA only.")
        )  # fmt: skip
        self.precision_combo.currentTextChanged.connect(
            safe_slot(lambda _text: self._precision_changed())
        )
        self.calibration_edit = PathEdit(True, None, "segment/last_calibration_dir")
        self.calibration_edit.edit.setPlaceholderText(
            tr("int8 calibration tiles: empty = the model's training dataset")
        )
        self.out_edit = PathEdit(True, None, "segment/last_out_dir")
        self.overwrite_check = QCheckBox(tr("overwrite existing outputs"))
        self.polygons_check = QCheckBox(tr("polygons with area (panels.gpkg)"))
        self.polygons_check.setChecked(self.settings.get("segment/polygons", True, bool))
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setSuffix(" m²")
        self.truth_combo = QgsMapLayerComboBox()
        self.truth_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.truth_combo.setAllowEmptyLayer(True)
        self.truth_combo.setLayer(None)
        self.truth_file = PathEdit(False, tr("Rasters (*.tif *.tiff *.vrt)"), "segment/last_gt_dir")
        self.truth_file.edit.setPlaceholderText(tr("or a mask file (0/1 or 0/255)"))
        self.reference_combo = QgsMapLayerComboBox()
        self.reference_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.reference_combo.setAllowEmptyLayer(True)
        self.reference_combo.setLayer(None)
        self.reference_field = QgsFieldComboBox()
        self.reference_field.setAllowEmptyFieldName(True)
        self.reference_combo.layerChanged.connect(safe_slot(self._reference_changed))
        # Several rasters: the project's raster files (frozen while a task runs), or a
        # folder; Dask workers here, or an existing scheduler; masks on the map.
        self.rasters = RasterChecklist(lambda: self.task is not None)
        self.folder_edit = PathEdit(True, None, "segment/last_folder_dir")
        self.folder_edit.edit.setPlaceholderText(tr("a folder of rasters (not its sub-folders)"))
        self.folder_count = QLabel()
        self.folder_count.setObjectName("folderCount")
        folder_row = QWidget()
        fl = QHBoxLayout(folder_row)
        fl.setContentsMargins(0, 0, 0, 0)
        fl.addWidget(self.folder_edit, 1)
        fl.addWidget(self.folder_count)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 256)
        self.workers_spin.setValue(self.settings.get("segment/workers", default_workers(), int))
        self.workers_spin.setToolTip(
            tr("Dask worker processes on this machine, each with its own copy of the model "
               "and an equal share of the cores; default one per 4 cores")
        )  # fmt: skip
        workers_row = QWidget()
        wl = QHBoxLayout(workers_row)
        wl.setContentsMargins(0, 0, 0, 0)
        wl.addWidget(self.workers_spin)
        self.workers_hint = QLabel(
            tr("local worker processes (this machine has {} cores)").format(machine_cores())
        )
        wl.addWidget(self.workers_hint, 1)
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText(
            tr("optional: tcp://HOST:8786 (empty: workers on this machine)")
        )
        self.masks_check = QCheckBox(tr("add each raster's mask to the map (in a group)"))
        self.masks_check.setChecked(self.settings.get("segment/scene_masks", True, bool))

        self.errors: dict[str, QLabel] = {}
        self.rows: dict[str, int] = {}
        self.grid = grid = QGridLayout()
        rows = [
            ("mode", tr("Segment"), mode_row),
            ("layer", tr("Raster layer"), self.layer_combo),
            ("file", "", self.file_edit),
            ("layers", tr("Raster layers"), self.rasters),
            ("folder", tr("Folder"), folder_row),
            ("model", tr("Model"), self.model_edit),
            ("bands", tr("Band mapping"), self.bands_edit),
            ("threshold", tr("Threshold"), self.threshold_spin),
            ("tile", tr("Window size (pixels)"), self.tile_spin),
            ("overlap", tr("Window overlap (pixels)"), self.overlap_spin),
            ("batch", tr("Batch size"), self.batch_spin),
            ("backend", tr("Backend"), self.backend_combo),
            ("device", tr("Device"), self.device_combo),
            ("precision", tr("Precision"), self.precision_combo),
            ("calibration", tr("Calibration dataset"), self.calibration_edit),
            ("workers", tr("Workers"), workers_row),
            ("scheduler", tr("Dask scheduler"), self.scheduler_edit),
            ("out", tr("Output folder"), self.out_edit),
            ("overwrite", "", self.overwrite_check),
            ("polygons", "", self.polygons_check),
            ("min_area", tr("Smallest polygon"), self.min_area_spin),
            ("scene_masks", "", self.masks_check),
            ("truth", tr("Ground truth (optional)"), self.truth_combo),
            ("truth_file", "", self.truth_file),
            ("reference", tr("Reference polygons (optional)"), self.reference_combo),
            ("reference_field", tr("Plant field"), self.reference_field),
        ]
        for key, label, widget in rows:
            widget.setObjectName(key)
            self.errors[key] = error_label()
            self.errors[key].setObjectName(f"error:{key}")
            self.rows[key] = add_field_row(grid, label, widget, self.errors[key])
        grid.setColumnStretch(1, 1)
        # The labels of every mode's rows: the fields do not move when the mode changes.
        labels = [grid.itemAtPosition(row, 0).widget() for row in self.rows.values()]
        grid.setColumnMinimumWidth(0, max(w.sizeHint().width() for w in labels))
        self.body = lay = QVBoxLayout(self)
        lay.addLayout(grid)  # item 0
        lay.addStretch(1)  # item 1: the room rows of other modes leave (not the list's)
        add_task_footer(self, lay, tr("Segment"))
        self.model_edit.changed.connect(self.model_changed)
        self.bands_edit.textEdited.connect(lambda _t: setattr(self, "bands_typed", True))
        self.layer_combo.layerChanged.connect(lambda _l: self._source_changed())
        self.file_edit.changed.connect(lambda _t: self._source_changed())
        self.rasters.changed.connect(safe_slot(self._source_changed))
        self.folder_edit.changed.connect(safe_slot(lambda _t: self._folder_changed()))
        self.scheduler_edit.textChanged.connect(
            safe_slot(lambda text: self.workers_row_enabled(not text.strip()))
        )
        self.mode_group.buttonClicked.connect(safe_slot(lambda _b: self._mode_changed()))
        mode = self.settings.get("segment/mode", ONE, str)
        self.mode_buttons[mode if mode in MODES else ONE].setChecked(True)
        self._mode_changed()
        self._precision_changed()
        last = self.settings.get("segment/last_model", "", str)
        if last and Path(last).exists():
            self.model_edit.setText(last)

    # --- what to segment ---------------------------------------------------------------
    def mode(self) -> str:
        """ONE, LAYERS or FOLDER."""
        return MODES[max(0, self.mode_group.checkedId())]

    def set_mode(self, mode: str) -> None:
        self.mode_buttons[mode].setChecked(True)
        self._mode_changed()

    def _precision_changed(self) -> None:
        """The calibration dataset matters for int8 only."""
        int8 = self.precision_combo.currentText() == "int8"
        set_row_visible(self.grid, self.rows["calibration"], int8)

    def _mode_changed(self) -> None:
        mode = self.mode()
        for key in {k for rows in MODE_ROWS.values() for k in rows}:
            set_row_visible(self.grid, self.rows[key], key in MODE_ROWS[mode])
        # Several layers: the list gets the dialog's spare height; else the bottom does.
        self.grid.setRowStretch(self.rows["layers"], int(mode == LAYERS))
        self.body.setStretch(0, int(mode == LAYERS))
        self.body.setStretch(1, int(mode != LAYERS))
        many = mode != ONE
        self.overwrite_check.setText(
            tr("redo every raster (default: skip those already complete in the folder)")
            if many else tr("overwrite existing outputs")
        )  # fmt: skip
        self.out_edit.edit.setPlaceholderText(
            tr("default: ~/SolarSeg/segment-many/<folder or 'layers'>") if many
            else tr("default: ~/SolarSeg/segment/<raster name>")
        )  # fmt: skip
        self.settings.set("segment/mode", mode)
        self._folder_changed()

    def workers_row_enabled(self, on: bool) -> None:
        """Local workers mean nothing with an existing scheduler (its workers count)."""
        self.workers_spin.setEnabled(on)
        self.workers_hint.setEnabled(on)

    def folder_rasters(self) -> list[Path]:
        """The rasters the engine will find in the folder (its own rule)."""
        from ..core.segment.scenes import folder_rasters  # pure Python

        folder = self.folder_edit.text()
        return folder_rasters(folder) if folder else []

    def _folder_changed(self) -> None:
        folder = self.folder_edit.text()
        if self.mode() == FOLDER and folder:
            n = len(self.folder_rasters())
            self.folder_count.setText(tr("{} raster(s) found").format(n))
        else:
            self.folder_count.clear()
        self._source_changed()

    def _reference_changed(self, layer: Any) -> None:
        """A new reference layer: its fields, ``id`` pre-selected when it has one."""
        self.reference_field.setLayer(layer)
        if layer is not None and "id" in [f.name() for f in layer.fields()]:
            self.reference_field.setField("id")

    def source_path(self) -> tuple[str | None, QgsRasterLayer | None]:
        """The raster file to segment and its project layer (None for a new file)."""
        path = self.file_edit.text()
        if path:
            return path, None
        layer = self.layer_combo.currentLayer()
        if layer is None:
            return None, None
        return layer.source().split("|")[0], layer

    def raster_band_counts(self) -> list[int]:
        """The band counts of what is to be segmented (several rasters: their distinct
        counts; a folder: those of its first 10 rasters)."""
        mode = self.mode()
        if mode == LAYERS:
            return sorted({lyr.bandCount() for lyr in self.rasters.checked_layers()})
        if mode == FOLDER:
            paths = [str(p) for p in self.folder_rasters()[:10]]
        else:
            path, layer = self.source_path()
            if layer is not None:
                return [layer.bandCount()]
            paths = [path] if path and Path(path).exists() else []
        counts = set()
        for path in paths:
            try:
                counts.add(raster_shape(path)[0])
            except OSError:
                continue
        return sorted(counts)

    def raster_band_count(self) -> int | None:
        """The band count of the raster(s), when they share one."""
        counts = self.raster_band_counts()
        return counts[0] if len(counts) == 1 else None

    def model_changed(self, path: str) -> None:
        """Read the model's metadata and pre-fill band mapping, threshold, window size
        and overlap from it: a ``.pt`` model (or run folder) at once, with the engine's
        torch-free reader; an ONNX file in the engine process (``info``)."""
        show_error(self.errors["model"], None)
        self.meta, self.meta_path = None, path
        self.bands_typed = False
        if self.info_task is not None:
            tasks.detach(self.info_task)
            self.info_task = None
        if not path:
            self.model_info.clear()
            return
        if not path.lower().endswith(".onnx"):
            from ..core.models.meta import read_model_meta  # pure: zip + restricted pickle

            try:
                self._apply_meta(read_model_meta(path), path)
            except UserError as exc:
                show_error(self.errors["model"], str(exc))
                self.model_info.clear()
            return
        self.model_info.setText(tr("Reading the model…"))
        task = tasks.ModelInfoTask(path)
        task.done.connect(safe_slot(lambda ok, t=task: self._model_read(t, ok)))
        self.info_task = tasks.start(task)

    def _model_read(self, task: tasks.ModelInfoTask, ok: bool) -> None:
        if task is not self.info_task:
            return
        self.info_task = None
        if not ok:
            if task.error is not None:
                show_error(self.errors["model"], task.error_message())
            self.model_info.clear()
            return
        self._apply_meta(task.result, task.model_path)

    def _apply_meta(self, meta: Any, path: str) -> None:
        self.meta = meta
        if not self.bands_typed:
            self.prefill_bands()
        self.threshold_spin.setValue(float(meta.threshold))
        self.tile_spin.setValue(int(meta.tile_size))
        self.overlap_spin.setValue(int(meta.overlap))
        if path.lower().endswith(".onnx"):
            self.backend_combo.setCurrentText("onnx")
        self._update_hint()

    def _bands_key(self) -> str:
        """Settings key of the band mapping used last with this model on a raster with
        this many bands (a mapping is only meaningful for one band layout)."""
        digest = hashlib.sha1(str(Path(self.meta_path).resolve()).encode()).hexdigest()[:16]
        return f"segment/bands/{digest}_{self.raster_band_count()}"

    def prefill_bands(self) -> None:
        """The mapping last used for this model and band count, else the model's bands;
        empty for a model that names its bands (Sentinel-2 B4, B3...): the engine then
        finds them by name in rasters that name theirs, whatever their numbering."""
        if self.meta is None:
            return
        self.bands_key_shown = key = self._bands_key()
        saved = self.settings.get(key, "", str)
        names = self.meta.band_names
        self.bands_edit.setPlaceholderText(
            tr("empty: {} by band name, else bands {}").format(
                ",".join(names), format_bands(self.meta.bands)
            ) if names else tr("raster bands for the model's inputs, e.g. 1,2,3,4")
        )  # fmt: skip
        self.bands_edit.setText(saved or ("" if names else format_bands(self.meta.bands)))

    def _source_changed(self) -> None:
        # A mapping is for one band count: filled again only when that (or the model)
        # changed, so checking one more raster keeps what the user typed.
        if self.meta is not None and self._bands_key() != self.bands_key_shown:
            self.prefill_bands()
        self._update_hint()

    def _update_hint(self) -> None:
        if self.meta is None:
            return
        counts = self.raster_band_counts()
        if self.mode() == ONE:
            raster = tr("the raster has {} band(s)").format(counts[0]) if counts else ""
        else:
            raster = tr("the rasters have {} band(s)").format(
                " or ".join(str(c) for c in counts)
            ) if counts else ""  # fmt: skip
        names = self.meta.band_names
        self.model_info.setText(
            tr("{} / {}: {} input(s), trained on bands {}; upscale {}; {}").format(
                self.meta.arch,
                self.meta.encoder,
                self.meta.in_channels,
                (format_bands(self.meta.bands) or "all")
                + (" ({})".format(",".join(names)) if names else ""),
                self.meta.upscale,
                raster,
            )  # fmt: skip
        )

    def options(self) -> dict | None:
        """Validated inputs, or None with messages beside the refused fields."""
        for label in self.errors.values():
            show_error(label, None)
        problems: dict[str, str] = {}
        mode = self.mode()
        if mode == ONE:
            source = self._one_source(problems)
        else:
            source = self._many_source(problems, mode)
        model = self.model_edit.text()
        if not model:
            problems["model"] = tr("Choose a run folder, a model.pt or a model.onnx")
        bands = None
        try:
            # The model's own bands when the mapping is empty; whether they fit the model
            # and the raster is checked by the engine (check_segment) when it starts.
            bands = parse_bands(self.bands_edit.text())
        except ValueError as exc:
            problems["bands"] = str(exc)
        backend = self.backend_combo.currentText()
        if backend == "auto":
            backend = "onnx" if model.lower().endswith(".onnx") else "torch"
        name = source.pop("default_name")
        out = self.out_edit.text()
        if not out:
            out = str(
                Path.home() / "SolarSeg" / ("segment" if mode == ONE else "segment-many") / name
            )
        if mode == ONE:
            self._one_extras(problems, source)
        if problems:
            if source.get("reference") is not None:
                _delete(source["reference"].temporary)
            for key, message in problems.items():
                show_error(self.errors[key], message)
            self.adjustSize()
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Some inputs are refused: see the messages beside them."))
            return None
        return {**source, "mode": mode, "model": model, "bands": bands, "backend": backend,
                "out": out}  # fmt: skip

    def _one_source(self, problems: dict[str, str]) -> dict:
        """One raster: its file and project layer (None for a file not in the project)."""
        path, layer = self.source_path()
        if not path:
            problems["layer"] = tr("Choose a raster layer or a raster file")
        elif layer is not None and (layer.providerType() != "gdal" or not Path(path).exists()):
            problems["layer"] = tr("{} is not a raster file on disk").format(layer.name())
        elif not Path(path).exists():
            problems["file"] = tr("{}: file not found").format(path)
        elif self.raster_band_count() is None:
            problems["file" if self.file_edit.text() else "layer"] = tr(
                "{}: not a readable raster"
            ).format(path)
        return {"raster": path, "layer": layer,
                "default_name": Path(path).stem if path else "raster"}  # fmt: skip

    def _one_extras(self, problems: dict[str, str], source: dict) -> None:
        """One raster: the optional ground truth and reference polygons."""
        truth = self.truth_file.text() or None
        truth_layer = self.truth_combo.currentLayer()
        if truth is None and truth_layer is not None:
            truth = truth_layer.source().split("|")[0]
        if truth:
            problems.update(truth_problems(truth, source["raster"], bool(self.truth_file.text())))
        reference = None
        ref_layer = self.reference_combo.currentLayer()
        if ref_layer is not None:
            try:  # a file the engine opens (a non-file layer is written to a GeoPackage)
                reference = polygon_source(ref_layer)
            except ValueError as exc:
                problems["reference"] = str(exc)
        source.update(truth=truth, reference=reference)

    def _many_source(self, problems: dict[str, str], mode: str) -> dict:
        """Several rasters: the engine's inputs (layer files, or the folder), checked
        with the engine's own rule for what it will find (``collect_scenes``)."""
        from ..core.segment.scenes import collect_scenes  # pure Python

        layers: list[QgsRasterLayer] = []
        if mode == LAYERS:
            layers = self.rasters.checked_layers()
            inputs = [raster_file(lyr) for lyr in layers]
            name = "layers"
            if not inputs:
                problems["layers"] = tr("Check at least one raster layer (a raster file on disk)")
        else:
            folder = self.folder_edit.text()
            inputs = [folder] if folder else []
            name = Path(folder).name or "folder"
            if not folder:
                problems["folder"] = tr("Choose a folder of rasters")
            elif not Path(folder).is_dir():
                problems["folder"] = tr("{}: folder not found").format(folder)
        scenes = []
        if inputs and mode not in problems:
            try:
                scenes = collect_scenes(inputs)
            except UserError as exc:
                problems[mode] = str(exc)
        scheduler = self.scheduler_edit.text().strip() or None
        return {"inputs": inputs, "layers": layers, "scenes": len(scenes),
                "workers": None if scheduler else self.workers_spin.value(),
                "scheduler": scheduler, "default_name": name}  # fmt: skip

    # --- running -----------------------------------------------------------------------
    def start(self) -> bool:
        if self.task is not None:
            return False
        opts = self.options()
        if opts is None:
            return False
        from ..core.segment.options import ReferenceOptions, SegmentOptions  # pure Python

        many = opts["mode"] != ONE
        self.settings.set("segment/last_model", opts["model"])
        if opts["bands"]:
            self.settings.set(self._bands_key(), format_bands(opts["bands"]))
        self.settings.set("segment/precision", self.precision_combo.currentText())
        if many:
            self.settings.set("segment/workers", self.workers_spin.value())
            self.settings.set("segment/scene_masks", self.masks_check.isChecked())
        else:
            self.settings.set("segment/polygons", self.polygons_check.isChecked())
        bands = opts["bands"]
        if self.meta is not None and bands == list(self.meta.bands or []):
            # The model's own selection: let the engine use (and explain) it.
            bands = None
        options = SegmentOptions(
            tile_size=self.tile_spin.value(),
            overlap=self.overlap_spin.value(),
            batch_size=self.batch_spin.value(),
            threshold=self.threshold_spin.value(),
            bands=bands,
            backend=opts["backend"],
            device=self.device_combo.currentText(),
            precision=self.precision_combo.currentText(),
            calibration=(self.calibration_edit.text() or None)
            if self.precision_combo.currentText() == "int8"
            else None,
            polygons=many or self.polygons_check.isChecked(),
            min_area_m2=self.min_area_spin.value(),
            overwrite=self.overwrite_check.isChecked(),
        )
        self.opts, self.outcome, self.temporary = opts, None, []
        self.progress_bar.setFormat("%p%")
        if many:
            task = tasks.SegmentManyTask(opts["model"], opts["inputs"], opts["out"], options,
                                         opts["workers"], opts["scheduler"])  # fmt: skip
            where = (tr("on {} local worker(s)").format(opts["workers"]) if opts["workers"]
                     else tr("on {}").format(opts["scheduler"]))  # fmt: skip
            start_task(self, task, tr("Segmenting {} raster(s) {}…").format(opts["scenes"], where))
            return True
        ref = opts["reference"]
        if ref is not None:
            options.reference = ReferenceOptions(
                ref.path, ref.layer, None, self.reference_field.currentField() or None
            )
        self.temporary = ref.temporary if ref is not None else []
        if opts["layer"] is None:  # a file: put it in the project first
            layer = QgsRasterLayer(opts["raster"], Path(opts["raster"]).stem)
            QgsProject.instance().addMapLayer(layer)
            opts["layer"] = layer
        task = tasks.SegmentTask(opts["model"], opts["raster"], opts["out"], options, opts["truth"])
        start_task(self, task, tr("Segmenting {}…").format(opts["layer"].name()))
        return True

    def cancel(self) -> None:
        cancel_task(self)

    def on_info(self, info: dict) -> None:
        show_progress(self, info)
        if "scenes_total" in info:  # segment-many: rasters done on the bar too
            self.progress_bar.setFormat(
                tr("{} of {} rasters · %p%").format(info["scenes_done"], info["scenes_total"])
            )

    def _engine_field(self, key: str) -> str:
        """The dialog's field for a field of the engine's check."""
        key = ENGINE_FIELDS.get(key, key)
        if key == "raster":
            return "file" if self.file_edit.text() else "layer"
        if key == "inputs":
            return self.mode() if self.mode() != ONE else "layer"
        return key

    def on_done(self, task: tasks.EngineTask, ok: bool) -> None:
        if not task_finished(self, task):
            return
        _delete(getattr(self, "temporary", []))
        self.temporary = []
        many = isinstance(task, tasks.SegmentManyTask)
        bar = self.iface.messageBar() if self.iface is not None else None
        if task.cancelled:
            self.status.setText(
                tr("Cancelled; the rasters finished so far are kept in {} (a second run "
                   "skips them).").format(task.out_dir) if many
                else tr("Cancelled; no output was written.")
            )  # fmt: skip
            return
        if not ok:
            message = task.error_message()
            problems = getattr(task.error, "problems", None) or {}
            # The engine's check, beside the fields; else the message on the status line.
            show_problems(self, problems, self._engine_field,
                          tr("Segmentation failed: {}").format(message))  # fmt: skip
            if bar is not None:
                bar.pushMessage(PLUGIN_NAME, message, Qgis.Critical)
            return
        if many:
            self.many_done(task.result, bar)
            return
        self.outcome = task.result
        try:
            self.added = self.add_outputs(task.result, self.opts["layer"])
        except Exception as exc:  # an output QGIS cannot open is reported, not raised
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Could not add the outputs: {}").format(exc))
            return
        r = task.result.result
        text = r.summary  # the engine's one-line summary (result event of `segment`)
        source = str(getattr(r, "band_source", ""))
        if source.startswith("by band name"):  # not the numbers the model was trained on
            text += "\n" + tr("Bands {} {}").format(",".join(map(str, r.bands)), source)
        if task.result.metrics is not None:
            m = task.result.metrics
            text += tr(" — against the ground truth: IoU {:.4f}, F1 {:.4f}").format(
                m["iou"], m["f1"]
            )
        if getattr(r, "plants", None):
            p = r.plants
            text += tr(
                " — plants: {found} found, {missed} missed, {false} false detection(s); "
                "reference {ref:.2f} ha, predicted {pred:.2f} ha"
            ).format(
                found=p["found"], missed=p["missed"], false=p["false_detections"],
                ref=p["reference_ha"], pred=p["predicted_ha"],
            )  # fmt: skip
        self.progress_bar.setValue(100)
        warnings = list(getattr(r, "warnings", None) or [])
        if warnings:  # e.g. values not on the model's scale: the mask may be wrong
            text += "\n" + "\n".join("⚠ " + w for w in warnings)
            self.status.setStyleSheet(WARNING_STYLE)
        self.status.setText(text)
        grow_to_fit(self)  # the status may have wrapped onto more lines
        if bar is not None:
            bar.pushMessage(PLUGIN_NAME, text, Qgis.Warning if warnings else Qgis.Success)

    def add_outputs(self, outcome: tasks.SegmentOutcome, source: QgsRasterLayer) -> list:
        """Probability, mask, polygons and error overlay in a group above the source."""
        r, crs = outcome.result, source.crs()
        name = source.name()
        layers = []
        plants_gpkg = getattr(r, "plants_gpkg_path", None)
        if plants_gpkg:
            titles = {"plants": tr("{} plants (found green, missed magenta)").format(name),
                      "false_detections": tr("{} false detections").format(name)}  # fmt: skip
            for layer_name, qml in PLANT_LAYERS:
                layer = load_vector(f"{plants_gpkg}|layername={layer_name}", titles[layer_name])
                apply_style(layer, qml)
                layers.append(layer)
        if r.polygons_path:
            polygons = load_vector(r.polygons_path, tr("{} panels").format(name))
            apply_style(polygons, "panels.qml")
            layers.append(polygons)
        if outcome.error_path:
            errors = load_raster(
                outcome.error_path, tr("{} errors (FP yellow, FN green)").format(name), crs
            )
            apply_style(errors, "error.qml")
            layers.append(errors)
        mask = load_raster(r.mask_path, tr("{} mask").format(name), crs)
        apply_style(mask, "mask.qml")
        layers.append(mask)
        prob = load_raster(r.probability_path, tr("{} probability").format(name), crs)
        apply_style(prob, "probability.qml")
        layers.append(prob)
        add_group_above(QgsProject.instance(), tr("SolarSeg: {}").format(name), layers, source)
        return layers

    def many_done(self, result: Any, bar: Any) -> None:
        """Several rasters done: their layers on the map, the engine's summary and each
        failed raster with its reason on the status line."""
        self.outcome = result
        project = QgsProject.instance()  # source layers still in the project
        sources = [lyr for lyr in self.opts["layers"]
                   if not sip.isdeleted(lyr) and project.mapLayer(lyr.id()) is not None]  # fmt: skip
        try:
            self.added = self.add_many_outputs(result, sources)
        except Exception as exc:  # an output QGIS cannot open is reported, not raised
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Could not add the outputs: {}").format(exc))
            return
        self.progress_bar.setValue(100)
        failed = [row for row in result.scenes if row["status"] == "failed"]
        complete = sum(1 for row in result.scenes if row["status"] in ("done", "skipped"))
        lines = [html.escape(result.summary)]
        for row in failed[:FAILED_SHOWN]:
            # The engine names the file first; the raster's name is here already.
            reason = row["error"].removeprefix(f"{row['raster']}: ")
            lines.append(tr("failed: <b>{}</b>: {}").format(html.escape(row["scene"]),
                                                              html.escape(reason)))  # fmt: skip
        if len(failed) > FAILED_SHOWN:
            lines.append(tr("… and {} more failed").format(len(failed) - FAILED_SHOWN))
        summary_csv = Path(result.summary_csv)
        lines.append(tr("Per raster: <a href='{}'>{}</a>").format(
            summary_csv.as_uri(), html.escape(str(summary_csv))))  # fmt: skip
        self.status.setStyleSheet(ERROR_STYLE if not complete else "")
        self.status.setText("<br>".join(lines))
        self.status.setOpenExternalLinks(True)
        # Qt sizes the dialog without the height of wrapped text and would squeeze the
        # form: the status line's wrapped height is its minimum (until the next run).
        self.status.setMinimumHeight(self.status.heightForWidth(max(self.status.width(), 600)))
        if bar is not None:
            level = Qgis.Success if not failed else Qgis.Warning
            bar.pushMessage(PLUGIN_NAME, result.summary, level)

    def add_many_outputs(self, result: Any, sources: list[QgsRasterLayer]) -> list:
        """A group (above the first source layer, else on top) with the polygons of all
        rasters (``panels.gpkg``, field ``scene``, styled as one raster's polygons) and,
        when asked, a sub-group with each complete raster's mask."""
        project = QgsProject.instance()
        n = len(result.scenes)
        layers = []
        if result.polygons:
            panels = load_vector(result.polygons, tr("panels of {} raster(s)").format(n))
            apply_style(panels, "panels.qml")
            layers.append(panels)
        masks = []
        if self.masks_check.isChecked():
            # A source without CRS: its mask has none either; use the layer's, as for one.
            crs_of = {str(Path(raster_file(lyr)).resolve()): lyr.crs() for lyr in sources}
            for row in result.scenes:
                if row.get("mask_path"):
                    crs = crs_of.get(str(Path(row["raster"]).resolve()))
                    mask = load_raster(row["mask_path"], tr("{} mask").format(row["scene"]), crs)
                    apply_style(mask, "mask.qml")
                    masks.append(mask)
        reference = sources[0] if sources else None
        group = add_group_above(project, tr("SolarSeg: {} raster(s)").format(n), layers,
                                reference)  # fmt: skip
        if masks:
            sub = group.addGroup(tr("masks ({})").format(len(masks)))
            add_to_group(project, sub, masks)
            sub.setExpanded(len(masks) <= MASKS_EXPANDED)
        return layers + masks

    def shutdown(self) -> None:
        """Cancel running work and stop listening to it (plugin unload)."""
        for task in (self.task, self.info_task):
            if task is not None:
                tasks.detach(task)
        self.task = self.info_task = None
        self.rasters.shutdown()


def truth_problems(truth: str, raster: str | None, from_file: bool) -> dict[str, str]:
    """Why a ground-truth mask cannot be compared with the raster (read with GDAL)."""
    key = "truth_file" if from_file else "truth"
    try:
        count, width, height = raster_shape(truth)
        src = raster_shape(raster) if raster and Path(raster).exists() else None
    except OSError as exc:
        return {key: str(exc)}
    if src is not None and (width, height) != src[1:]:
        return {
            key: tr("ground truth is {}x{} but the raster is {}x{}").format(
                width, height, src[1], src[2]
            )
        }
    if count != 1:
        return {key: tr("ground truth must have one band, found {}").format(count)}
    return {}


def _delete(paths: list) -> None:
    """Remove temporary files and folders (an exported reference layer)."""
    import shutil

    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
