"""The Segment Layer dialog: a raster layer (or file), a model (run folder, model.pt or
.onnx) with its band mapping, window settings and outputs; a SegmentTask adds the
probability, mask, polygons (and, with ground truth, the error overlay) above the
source layer, on the source's grid."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
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
from ..analysis.layers import add_group_above, apply_style, load_raster, load_vector
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
from ..vector_source import polygon_source
from .widgets import (
    ERROR_STYLE,
    WARNING_STYLE,
    PathEdit,
    add_field_row,
    add_task_footer,
    error_label,
    show_error,
)

BACKENDS = ["auto", "torch", "onnx"]
DEVICES = ["auto", "cpu", "cuda"]
OUTPUT_NAMES = ("probability.tif", "mask.tif", "panels.gpkg", "errors.tif")


# Engine problem fields (core.segment.engine.check_segment) -> this dialog's fields.
ENGINE_FIELDS = {"tile_size": "tile", "batch_size": "batch", "probability_dtype": "out"}
# Layers of plants.gpkg (segment --reference) and their styles.
PLANT_LAYERS = (("false_detections", "false_detections.qml"), ("plants", "plants_found_missed.qml"))


class SegmentDialog(QDialog):
    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.settings = Settings()
        self.task: tasks.SegmentTask | None = None
        self.meta: Any = None  # the model's metadata (engine `info`), when read
        self.meta_path = ""
        # The user typed a band mapping after choosing the model: reading the model (some
        # seconds, in the engine process) must not replace it when it ends.
        self.bands_typed = False
        self.info_task: tasks.ModelInfoTask | None = None
        self.outcome: Any = None
        self.added: list = []
        self.setWindowTitle(tr("SolarSeg: Segment a raster layer"))
        self.resize(760, 640)

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

        self.errors: dict[str, QLabel] = {}
        grid = QGridLayout()
        rows = [
            ("layer", tr("Raster layer"), self.layer_combo),
            ("file", "", self.file_edit),
            ("model", tr("Model"), self.model_edit),
            ("bands", tr("Band mapping"), self.bands_edit),
            ("threshold", tr("Threshold"), self.threshold_spin),
            ("tile", tr("Window size (pixels)"), self.tile_spin),
            ("overlap", tr("Window overlap (pixels)"), self.overlap_spin),
            ("batch", tr("Batch size"), self.batch_spin),
            ("backend", tr("Backend"), self.backend_combo),
            ("device", tr("Device"), self.device_combo),
            ("out", tr("Output folder"), self.out_edit),
            ("overwrite", "", self.overwrite_check),
            ("polygons", "", self.polygons_check),
            ("min_area", tr("Smallest polygon"), self.min_area_spin),
            ("truth", tr("Ground truth (optional)"), self.truth_combo),
            ("truth_file", "", self.truth_file),
            ("reference", tr("Reference polygons (optional)"), self.reference_combo),
            ("reference_field", tr("Plant field"), self.reference_field),
        ]
        for key, label, widget in rows:
            widget.setObjectName(key)
            self.errors[key] = error_label()
            self.errors[key].setObjectName(f"error:{key}")
            add_field_row(grid, label, widget, self.errors[key])
        grid.setColumnStretch(1, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        add_task_footer(self, lay, tr("Segment"))
        self.model_edit.changed.connect(self.model_changed)
        self.bands_edit.textEdited.connect(lambda _t: setattr(self, "bands_typed", True))
        self.layer_combo.layerChanged.connect(lambda _l: self._source_changed())
        self.file_edit.changed.connect(lambda _t: self._source_changed())
        last = self.settings.get("segment/last_model", "", str)
        if last and Path(last).exists():
            self.model_edit.setText(last)

    # --- inputs ------------------------------------------------------------------------
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

    def raster_band_count(self) -> int | None:
        path, layer = self.source_path()
        if layer is not None:
            return layer.bandCount()
        if path and Path(path).exists():
            try:
                return raster_shape(path)[0]
            except OSError:
                return None
        return None

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
        """The mapping last used for this model and band count, else the model's bands."""
        if self.meta is None:
            return
        saved = self.settings.get(self._bands_key(), "", str)
        self.bands_edit.setText(saved or format_bands(self.meta.bands))

    def _source_changed(self) -> None:
        self.prefill_bands()
        self._update_hint()

    def _update_hint(self) -> None:
        if self.meta is None:
            return
        count = self.raster_band_count()
        raster = tr("the raster has {} band(s)").format(count) if count else ""
        self.model_info.setText(
            tr("{} / {}: {} input(s), trained on bands {}; upscale {}; {}").format(
                self.meta.arch,
                self.meta.encoder,
                self.meta.in_channels,
                format_bands(self.meta.bands) or "all",
                self.meta.upscale,
                raster,
            )  # fmt: skip
        )

    def options(self) -> dict | None:
        """Validated inputs, or None with messages beside the refused fields."""
        for label in self.errors.values():
            show_error(label, None)
        problems: dict[str, str] = {}
        path, layer = self.source_path()
        count = None
        if not path:
            problems["layer"] = tr("Choose a raster layer or a raster file")
        elif layer is not None and (layer.providerType() != "gdal" or not Path(path).exists()):
            problems["layer"] = tr("{} is not a raster file on disk").format(layer.name())
        elif not Path(path).exists():
            problems["file"] = tr("{}: file not found").format(path)
        else:
            count = self.raster_band_count()
            if count is None:
                problems["file" if self.file_edit.text() else "layer"] = tr(
                    "{}: not a readable raster"
                ).format(path)
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
        out = self.out_edit.text()
        if not out:
            stem = Path(path).stem if path else "raster"
            out = str(Path.home() / "SolarSeg" / "segment" / stem)
        truth = self.truth_file.text() or None
        truth_layer = self.truth_combo.currentLayer()
        if truth is None and truth_layer is not None:
            truth = truth_layer.source().split("|")[0]
        if truth:
            problems.update(truth_problems(truth, path, bool(self.truth_file.text())))
        reference = None
        ref_layer = self.reference_combo.currentLayer()
        if ref_layer is not None:
            try:  # a file the engine opens (a non-file layer is written to a GeoPackage)
                reference = polygon_source(ref_layer)
            except ValueError as exc:
                problems["reference"] = str(exc)
        if problems:
            if reference is not None:
                _delete(reference.temporary)
            for key, message in problems.items():
                show_error(self.errors[key], message)
            self.adjustSize()
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Some inputs are refused: see the messages beside them."))
            return None
        return {
            "raster": path,
            "layer": layer,
            "model": model,
            "bands": bands,
            "backend": backend,
            "out": out,
            "truth": truth,
            "reference": reference,
        }

    # --- running -----------------------------------------------------------------------
    def start(self) -> bool:
        if self.task is not None:
            return False
        opts = self.options()
        if opts is None:
            return False
        from ..core.segment.options import ReferenceOptions, SegmentOptions  # pure Python

        self.settings.set("segment/last_model", opts["model"])
        if opts["bands"]:
            self.settings.set(self._bands_key(), format_bands(opts["bands"]))
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
            polygons=self.polygons_check.isChecked(),
            min_area_m2=self.min_area_spin.value(),
            overwrite=self.overwrite_check.isChecked(),
        )
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
        self.opts = opts
        self.status.setStyleSheet("")
        self.status.setText(tr("Segmenting {}…").format(opts["layer"].name()))
        self.progress_bar.setValue(0)
        self.task = tasks.SegmentTask(
            opts["model"], opts["raster"], opts["out"], options, opts["truth"]
        )
        self.task.info.connect(safe_slot(self.on_info))
        self.task.done.connect(safe_slot(lambda ok, t=self.task: self.on_done(t, ok)))
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        tasks.start(self.task)
        return True

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.setText(tr("Cancelling…"))

    def on_info(self, info: dict) -> None:
        self.progress_bar.setValue(int(100 * info.get("fraction", 0.0)))
        if info.get("message"):
            self.status.setText(info["message"])

    def on_done(self, task: tasks.SegmentTask, ok: bool) -> None:
        if task is not self.task:
            return
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        _delete(getattr(self, "temporary", []))
        self.temporary = []
        bar = self.iface.messageBar() if self.iface is not None else None
        if task.cancelled:
            self.status.setText(tr("Cancelled; no output was written."))
            return
        if not ok:
            message = task.error_message()
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(tr("Segmentation failed: {}").format(message))
            problems = getattr(task.error, "problems", None) or {}
            shown = 0
            for key, text in problems.items():  # the engine's check, beside the fields
                key = ENGINE_FIELDS.get(key, key)
                if key == "raster":
                    key = "file" if self.file_edit.text() else "layer"
                if key in self.errors:
                    show_error(self.errors[key], text)
                    shown += 1
            if shown == len(problems) and shown:  # nothing ran: all said beside the fields
                self.status.setText(tr("Some inputs are refused: see the messages beside them."))
            if bar is not None:
                bar.pushMessage(PLUGIN_NAME, message, Qgis.Critical)
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

    def shutdown(self) -> None:
        """Cancel running work and stop listening to it (plugin unload)."""
        for task in (self.task, self.info_task):
            if task is not None:
                tasks.detach(task)
        self.task = self.info_task = None


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
