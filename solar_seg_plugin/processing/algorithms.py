"""Processing algorithms wrapping the engine: Segment raster, Segment many rasters,
Evaluate model, Train model.

They run from the toolbox, in batch mode, in the graphical modeler and from
``processing.run("solarseg:...", {...})``. Each one runs the engine's own command
(``segment``, ``evaluate``, ``train``) in the engine's Python, in a subprocess, exactly
as the dialogs do: the engine checks the inputs (one check per operation), its progress
goes to ``feedback.setProgress``, ``feedback.isCanceled`` stops it, and an engine error or
crash becomes a QgsProcessingException with one line. Nothing of the engine (torch,
rasterio) is imported into QGIS's process.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QIcon

from ..common import icon, parse_bands, tr
from ..core.errors import UserError
from ..core.segment.options import PRECISIONS  # pure Python: --precision of segment(-many)

SPLITS = ["train", "val", "test"]
DEVICES = ["auto", "cpu", "cuda"]
BACKENDS = ["auto", "torch", "onnx"]
UPSCALES = [1, 2, 4, 8]


def feedback_events(feedback: QgsProcessingFeedback):
    """Engine progress events (JSON lines) -> Processing feedback (percent + text)."""
    last = {"message": None}

    def report(event: dict) -> None:
        if event.get("event") != "progress":
            return
        feedback.setProgress(100.0 * max(0.0, min(1.0, float(event.get("fraction", 0.0)))))
        message = event.get("message")
        if message and message != last["message"]:
            feedback.setProgressText(message)
            last["message"] = message
        row = (event.get("info") or {}).get("history_row")
        if row:
            feedback.pushInfo(
                "epoch {epoch}: train_loss {tl:.4f} val_loss {vl:.4f} val_iou {vi:.4f}".format(
                    epoch=row.get("epoch"),
                    tl=row.get("train_loss") or float("nan"),
                    vl=row.get("val_loss") or float("nan"),
                    vi=row.get("val_iou") or float("nan"),
                )
            )

    return report


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def _typed(text: str | None, kind: Any) -> Any:
    """A per-image CSV cell as the sink field's type (empty: NULL)."""
    if text in (None, ""):
        return None
    if kind == QVariant.Double:
        return float(text)
    if kind == QVariant.LongLong:
        return int(float(text))
    return text


class _Base(QgsProcessingAlgorithm):
    def group(self) -> str:
        return tr("Solar PV segmentation")

    def groupId(self) -> str:  # noqa: N802
        return "solarpv"

    def icon(self) -> QIcon:
        return icon("icon.svg")

    def createInstance(self):  # noqa: N802
        return type(self)()

    def _run_engine(self, args: list[str], feedback: QgsProcessingFeedback) -> dict:
        """Run ``python -m core ARGS`` in the engine's Python; its result event's data.

        Refused inputs (every problem of the engine's check, one line each), cancel and
        a crashed engine become a QgsProcessingException.
        """
        from ..engine_process import engine_command, run_engine
        from ..tasks import engine_python

        python = engine_python()
        feedback.pushDebugInfo(" ".join(engine_command(python, args)))
        outcome = run_engine(python, args, feedback_events(feedback), feedback.isCanceled)
        if outcome.error:
            for problem in outcome.problems[1:]:
                feedback.reportError(f"{problem['field']}: {problem['message']}")
            raise QgsProcessingException(outcome.error)
        if outcome.cancelled or feedback.isCanceled():
            if outcome.result is None:
                raise QgsProcessingException(tr("Cancelled by the user"))
        if outcome.result is None:
            tail = "; ".join(outcome.stderr_tail[-3:])
            raise QgsProcessingException(tr("the engine returned no result: {}").format(tail))
        return outcome.result

    def _optional_number(
        self, params: dict, name: str, context: QgsProcessingContext
    ) -> float | None:
        """None when an optional number is not set, else its (evaluated) value."""
        value = params.get(name)
        if value is None or value == "":
            return None
        return self.parameterAsDouble(params, name, context)


class _SegmentBase(_Base):
    """Model, band mapping and window parameters shared by Segment raster and Segment
    many rasters, and the SegmentOptions they give (one definition for both)."""

    MODEL, BANDS, THRESHOLD = "MODEL", "BANDS", "THRESHOLD"
    TILE_SIZE, OVERLAP, BATCH_SIZE, BACKEND, DEVICE = (
        "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "BACKEND", "DEVICE"
    )  # fmt: skip
    PRECISION, CALIBRATION = "PRECISION", "CALIBRATION"
    MIN_AREA, OUTPUT_FOLDER = "MIN_AREA", "OUTPUT_FOLDER"

    def add_model_parameters(self) -> None:
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                tr("Model file (model.pt or .onnx)"),
                fileFilter=tr("SolarSeg models (*.pt *.onnx)"),
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS, tr("Band mapping (e.g. 1,2,3,4; empty = model's bands)"),
                optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber(
                self.THRESHOLD, tr("Threshold (empty = model's)"),
                QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=1.0,
            )
        )  # fmt: skip
        for key, label in (
            (self.TILE_SIZE, tr("Window size in pixels (empty = model's)")),
            (self.OVERLAP, tr("Window overlap in pixels (empty = model's)")),
        ):
            self.addParameter(QgsProcessingParameterNumber(key, label, optional=True, minValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, tr("Batch size"), defaultValue=8, minValue=1
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.BACKEND, tr("Backend"), BACKENDS, defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.DEVICE, tr("Device"), DEVICES, defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.PRECISION,
                tr("Precision (int8: ONNX Runtime, quantised once and cached; bf16: PyTorch)"),
                list(PRECISIONS),
                defaultValue=PRECISIONS.index("fp32"),
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.CALIBRATION,
                tr("int8 calibration dataset folder (empty = the model's training dataset)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )

    def segment_options(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        model: str,
        polygons: bool,
        overwrite: bool = False,
    ) -> Any:
        """:class:`core.segment.options.SegmentOptions` from the parameters."""
        from ..core.segment.options import SegmentOptions  # pure Python

        try:
            bands = parse_bands(self.parameterAsString(parameters, self.BANDS, context))
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        backend = BACKENDS[self.parameterAsEnum(parameters, self.BACKEND, context)]
        if backend == "auto":
            backend = "onnx" if model.lower().endswith(".onnx") else "torch"
        return SegmentOptions(
            tile_size=_int_or_none(self._optional_number(parameters, self.TILE_SIZE, context)),
            overlap=_int_or_none(self._optional_number(parameters, self.OVERLAP, context)),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            threshold=self._optional_number(parameters, self.THRESHOLD, context),
            bands=bands,
            backend=backend,
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            calibration=self.parameterAsFile(parameters, self.CALIBRATION, context) or None,
            polygons=polygons,
            min_area_m2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            overwrite=overwrite,
        )  # fmt: skip


class SegmentRasterAlgorithm(_SegmentBase):
    INPUT, POLYGONS = "INPUT", "POLYGONS"

    def name(self) -> str:
        return "segmentraster"

    def displayName(self) -> str:  # noqa: N802
        return tr("Segment raster")

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Runs a trained SolarSeg model (model.pt, a run folder's model, or an ONNX file) "
            "over a raster in overlapping windows and writes probability.tif, mask.tif "
            "(1 = solar panel) and, optionally, panels.gpkg with one polygon per plant and "
            "its area. Bands: 1-based raster bands in the model's input order; empty = the "
            "model's bands, found by Sentinel-2 band name where the model and the raster "
            "name their bands, else by the numbers stored in the model."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Raster to segment")))
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean(self.POLYGONS, tr("Polygons"), defaultValue=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_AREA, tr("Smallest polygon (m²)"), QgsProcessingParameterNumber.Double,
                defaultValue=0.0, minValue=0.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, tr("Output folder"))
        )
        self.addOutput(QgsProcessingOutputRasterLayer("PROBABILITY", tr("Probability")))
        self.addOutput(QgsProcessingOutputRasterLayer("MASK", tr("Mask")))
        self.addOutput(QgsProcessingOutputVectorLayer("PANELS", tr("Polygons")))
        self.addOutput(QgsProcessingOutputNumber("PANEL_COUNT", tr("Number of polygons")))
        self.addOutput(QgsProcessingOutputNumber("PANEL_AREA_HA", tr("Polygon area (ha)")))

    def processAlgorithm(  # noqa: N802
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(tr("No raster layer given"))
        raster = layer.source().split("|")[0]
        if layer.providerType() != "gdal" or not Path(raster).exists():
            raise QgsProcessingException(
                tr("{} is not a raster file on disk (GDAL)").format(layer.name())
            )
        from ..tasks import segment_args

        model = self.parameterAsFile(parameters, self.MODEL, context)
        out_dir = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        polygons = self.parameterAsBool(parameters, self.POLYGONS, context)
        options = self.segment_options(parameters, context, model, polygons, overwrite=True)
        feedback.pushInfo(tr("Segmenting {} with {}").format(raster, model))
        data = self._run_engine(
            segment_args(Path(model), Path(raster), Path(out_dir), options), feedback
        )
        result = SimpleNamespace(**data)
        for path, name, out in (
            (result.probability_path, tr("probability"), "PROBABILITY"),
            (result.mask_path, tr("mask"), "MASK"),
            (result.polygons_path, tr("solar panels"), "PANELS"),
        ):
            if path:
                context.addLayerToLoadOnCompletion(
                    str(path), QgsProcessingContext.LayerDetails(name, context.project(), out)
                )
        feedback.pushInfo(result.summary)
        return {
            self.OUTPUT_FOLDER: out_dir,
            "PROBABILITY": str(result.probability_path),
            "MASK": str(result.mask_path),
            "PANELS": str(result.polygons_path) if result.polygons_path else None,
            "PANEL_COUNT": result.panels,
            "PANEL_AREA_HA": result.panel_area_ha,
        }


class SegmentManyRastersAlgorithm(_SegmentBase):
    """``segment-many``: several rasters (layers and/or a folder) on Dask distributed."""

    INPUTS, FOLDER, WORKERS, SCHEDULER = "INPUTS", "FOLDER", "WORKERS", "SCHEDULER"

    def name(self) -> str:
        return "segmentmany"

    def displayName(self) -> str:  # noqa: N802
        return tr("Segment many rasters")

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Segments several rasters (the layers chosen and/or every raster of a folder) "
            "with one model on Dask distributed: a local cluster of worker processes, or an "
            "existing Dask scheduler (tcp://HOST:8786) whose workers see the same paths. "
            "Each raster gets probability.tif, mask.tif and panels.gpkg in "
            "OUTPUT/<raster name>/; OUTPUT/panels.gpkg has every raster's polygons (a plant "
            "seen by overlapping rasters once, with its raster in the 'scene' field) and "
            "OUTPUT/summary.csv one row per raster (status, error, km², panels, hectares). "
            "Running again into the same folder skips the rasters already done; a raster "
            "that fails is reported and the others go on."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.INPUTS, tr("Rasters to segment"), QgsProcessing.TypeRaster, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.FOLDER, tr("and/or a folder of rasters"),
                behavior=QgsProcessingParameterFile.Folder, optional=True,
            )
        )  # fmt: skip
        self.add_model_parameters()
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_AREA, tr("Smallest polygon (m²)"), QgsProcessingParameterNumber.Double,
                defaultValue=0.0, minValue=0.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber(
                self.WORKERS, tr("Local worker processes (empty = the cores)"), optional=True,
                minValue=1,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterString(
                self.SCHEDULER, tr("Dask scheduler (tcp://HOST:8786; empty = local cluster)"),
                optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, tr("Output folder"))
        )
        self.addOutput(QgsProcessingOutputVectorLayer("PANELS", tr("Polygons of all rasters")))
        self.addOutput(QgsProcessingOutputFile("SUMMARY", tr("Summary (CSV)")))
        self.addOutput(QgsProcessingOutputNumber("PANEL_COUNT", tr("Number of polygons")))
        self.addOutput(QgsProcessingOutputNumber("PANEL_AREA_HA", tr("Polygon area (ha)")))
        self.addOutput(QgsProcessingOutputNumber("SCENES_FAILED", tr("Rasters that failed")))

    def processAlgorithm(  # noqa: N802
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        inputs: list[str] = []
        for layer in self.parameterAsLayerList(parameters, self.INPUTS, context) or []:
            path = layer.source().split("|")[0]
            if layer.providerType() != "gdal" or not Path(path).exists():
                raise QgsProcessingException(
                    tr("{} is not a raster file on disk (GDAL)").format(layer.name())
                )
            inputs.append(path)
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if folder:
            inputs.append(folder)
        if not inputs:
            raise QgsProcessingException(tr("Choose rasters to segment or a folder of rasters"))
        from ..tasks import segment_many_args

        model = self.parameterAsFile(parameters, self.MODEL, context)
        out_dir = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        options = self.segment_options(parameters, context, model, polygons=True)
        workers = _int_or_none(self._optional_number(parameters, self.WORKERS, context))
        scheduler = self.parameterAsString(parameters, self.SCHEDULER, context).strip() or None
        feedback.pushInfo(tr("Segmenting {} input(s) with {}").format(len(inputs), model))
        args = segment_many_args(Path(model), inputs, Path(out_dir), options, workers, scheduler)
        data = self._run_engine(args, feedback)
        for row in data.get("scenes", []):
            if row.get("status") == "failed":
                feedback.reportError(f"{row['scene']}: {row['error']}")
        if data.get("polygons"):
            context.addLayerToLoadOnCompletion(
                data["polygons"],
                QgsProcessingContext.LayerDetails(tr("solar panels"), context.project(), "PANELS"),
            )
        feedback.pushInfo(data["summary"])
        return {
            self.OUTPUT_FOLDER: out_dir,
            "PANELS": data.get("polygons"),
            "SUMMARY": data["summary_csv"],
            "PANEL_COUNT": data["panels"],
            "PANEL_AREA_HA": data["panel_area_ha"],
            "SCENES_FAILED": data["counts"].get("failed", 0),
        }


METRIC_OUTPUTS = ("iou", "f1", "precision", "recall", "accuracy", "tp", "fp", "fn", "tn")
ROW_FIELDS = [
    ("tile_id", QVariant.String),
    ("iou", QVariant.Double),
    ("f1", QVariant.Double),
    ("precision", QVariant.Double),
    ("recall", QVariant.Double),
    ("tp", QVariant.LongLong),
    ("fp", QVariant.LongLong),
    ("fn", QVariant.LongLong),
    ("tn", QVariant.LongLong),
    ("positive_pixels", QVariant.LongLong),
]


class EvaluateModelAlgorithm(_Base):
    MODEL, DATASET, SPLIT, THRESHOLD, TTA, DEVICE, OUTPUT = (
        "MODEL", "DATASET", "SPLIT", "THRESHOLD", "TTA", "DEVICE", "OUTPUT"
    )  # fmt: skip

    def name(self) -> str:
        return "evaluatemodel"

    def displayName(self) -> str:  # noqa: N802
        return tr("Evaluate model")

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Predicts one split of the model's dataset (the split stored with the run is "
            "reproduced) and reports IoU, F1, precision, recall and the confusion counts, "
            "plus a table with one row per tile. Dataset: empty = the one the model was "
            "trained on."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL, tr("Model file (model.pt)"), fileFilter=tr("SolarSeg models (*.pt)")
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.DATASET, tr("Dataset folder (empty = the model's)"),
                behavior=QgsProcessingParameterFile.Folder, optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterEnum(self.SPLIT, tr("Split"), SPLITS, defaultValue=2)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.THRESHOLD, tr("Threshold (empty = model's)"),
                QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=1.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterBoolean(self.TTA, tr("Flip test-time augmentation"), False)
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.DEVICE, tr("Device"), DEVICES, defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, tr("Per-tile metrics"), QgsProcessing.TypeVector, optional=True,
                createByDefault=True,
            )
        )  # fmt: skip
        for key in METRIC_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(key.upper(), key))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", tr("Threshold used")))

    def processAlgorithm(  # noqa: N802
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        model = self.parameterAsFile(parameters, self.MODEL, context)
        dataset = self.parameterAsFile(parameters, self.DATASET, context) or None
        split = SPLITS[self.parameterAsEnum(parameters, self.SPLIT, context)]
        threshold = self._optional_number(parameters, self.THRESHOLD, context)
        with tempfile.TemporaryDirectory(prefix="solarseg-evaluate-") as tmp:
            csv_path = Path(tmp) / "per_image.csv"
            args = ["evaluate", model] + ([dataset] if dataset else [])
            args += ["--split", split, "--csv", str(csv_path),
                     "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                     "--tta" if self.parameterAsBool(parameters, self.TTA, context) else "--no-tta"]  # fmt: skip
            if threshold is not None:
                args += ["--threshold", str(threshold)]
            data = self._run_engine(args, feedback)
            with open(csv_path, newline="") as f:
                rows = list(csv.DictReader(f))
        if not rows:
            raise QgsProcessingException(tr("split {} has no tiles").format(split))
        metrics = data["metrics"]
        threshold = float(data["threshold"])
        results: dict[str, Any] = {k.upper(): metrics.get(k) for k in METRIC_OUTPUTS}
        for k in ("tp", "fp", "fn", "tn"):
            results[k.upper()] = int(metrics[k])
        results["THRESHOLD_USED"] = threshold
        fields = QgsFields()
        for name, kind in ROW_FIELDS:
            fields.append(QgsField(name, kind))
        sink, dest = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.NoGeometry
        )
        if sink is not None:
            for row in rows:
                f = QgsFeature(fields)
                f.setAttributes([_typed(row.get(name), kind) for name, kind in ROW_FIELDS])
                sink.addFeature(f, QgsFeatureSink.FastInsert)
            results[self.OUTPUT] = dest
        feedback.pushInfo(
            tr("{} split, {} tiles, threshold {:.3f}: IoU {:.4f}, F1 {:.4f}").format(
                split, len(rows), threshold, results["IOU"], results["F1"]
            )
        )
        return results


class TrainModelAlgorithm(_Base):
    DATASET, CONFIG, BANDS, ARCH, ENCODER = "DATASET", "CONFIG", "BANDS", "ARCH", "ENCODER"
    EPOCHS, BATCH_SIZE, LR, UPSCALE, LIMIT = "EPOCHS", "BATCH_SIZE", "LR", "UPSCALE", "LIMIT"
    DEVICE, NAME, OVERRIDES, OUTPUT_FOLDER = "DEVICE", "NAME", "OVERRIDES", "OUTPUT_FOLDER"

    def name(self) -> str:
        return "trainmodel"

    def displayName(self) -> str:  # noqa: N802
        return tr("Train model")

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Trains a segmentation model on image/mask tiles and writes a run folder "
            "(config.yaml, split.csv, history, metrics, model.pt). Settings come from the "
            "optional YAML run config, then the parameters here, then the overrides "
            "(dotted key=value pairs separated by ';', e.g. "
            "'loss.terms=[{name: focal}]; optim.scheduler=step'), so every setting of the "
            "engine can be reached."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterFile(
                self.DATASET, tr("Dataset folder"), behavior=QgsProcessingParameterFile.Folder
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.CONFIG, tr("Run config (YAML)"), optional=True,
                fileFilter=tr("YAML (*.yaml *.yml)"),
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS, tr("Bands (e.g. 4,3,2,8; empty = all)"), optional=True
            )
        )
        self.addParameter(QgsProcessingParameterString(self.ARCH, tr("Architecture"), "Unet"))
        self.addParameter(QgsProcessingParameterString(self.ENCODER, tr("Encoder"), "resnet18"))
        self.addParameter(
            QgsProcessingParameterNumber(self.EPOCHS, tr("Epochs"), defaultValue=30, minValue=1)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, tr("Batch size"), defaultValue=16, minValue=1
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.LR, tr("Learning rate"), QgsProcessingParameterNumber.Double,
                defaultValue=1e-3, minValue=0.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterEnum(
                self.UPSCALE, tr("Upscale factor"), [str(u) for u in UPSCALES], defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.LIMIT, tr("Use only the first N tiles (0 = all)"), defaultValue=0, minValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.DEVICE, tr("Device"), DEVICES, defaultValue=0)
        )
        self.addParameter(QgsProcessingParameterString(self.NAME, tr("Run name"), "run"))
        self.addParameter(
            QgsProcessingParameterString(
                self.OVERRIDES, tr("More settings (key=value; ...)"), optional=True,
                multiLine=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                self.OUTPUT_FOLDER, tr("Runs folder (the run folder is created inside)")
            )
        )
        self.addOutput(QgsProcessingOutputFolder("RUN_DIR", tr("Run folder")))
        self.addOutput(QgsProcessingOutputFile("MODEL", tr("Model file")))
        self.addOutput(QgsProcessingOutputString("STATUS", tr("Status")))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", tr("Best threshold")))
        self.addOutput(QgsProcessingOutputNumber("VAL_IOU", tr("Validation IoU")))
        self.addOutput(QgsProcessingOutputNumber("TEST_IOU", tr("Test IoU")))

    def values(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """Typed settings from the parameters (dotted keys), handed to the engine as they
        are: a run named ``yes`` or a folder with `` #`` in it is not parsed again."""
        p = parameters
        bands = self.parameterAsString(p, self.BANDS, context).strip()
        limit = self.parameterAsInt(p, self.LIMIT, context)
        return {
            "data.path": self.parameterAsFile(p, self.DATASET, context),
            "data.bands": parse_bands(bands) if bands else None,
            "model.arch": self.parameterAsString(p, self.ARCH, context),
            "model.encoder": self.parameterAsString(p, self.ENCODER, context),
            "train.epochs": self.parameterAsInt(p, self.EPOCHS, context),
            "train.batch_size": self.parameterAsInt(p, self.BATCH_SIZE, context),
            "optim.lr": self.parameterAsDouble(p, self.LR, context),
            "data.upscale": UPSCALES[self.parameterAsEnum(p, self.UPSCALE, context)],
            "data.limit": limit if limit > 0 else None,
            "train.device": DEVICES[self.parameterAsEnum(p, self.DEVICE, context)],
            "name": self.parameterAsString(p, self.NAME, context),
            "out_dir": self.parameterAsString(p, self.OUTPUT_FOLDER, context),
        }

    def overrides(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        """The free-text "More settings" (``key=value; ...``), typed by the user as YAML."""
        extra = self.parameterAsString(parameters, self.OVERRIDES, context) or ""
        return [o.strip() for o in extra.replace("\n", ";").split(";") if o.strip()]

    def processAlgorithm(  # noqa: N802
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        from ..core.config import load_config, to_dict  # pure Python (yaml)

        config_path = self.parameterAsFile(parameters, self.CONFIG, context) or None
        try:
            values = self.values(parameters, context)
            # Merged and typed here, checked by the engine (check_train) with the dataset.
            cfg = load_config(config_path, self.overrides(parameters, context), values,
                              check=False)  # fmt: skip
        except (UserError, ValueError) as exc:
            raise QgsProcessingException(str(exc)) from None
        with tempfile.TemporaryDirectory(prefix="solarseg-train-") as tmp:
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            data = self._run_engine(["train", "--config", str(config_file)], feedback)
        result = SimpleNamespace(**data)
        if result.status == "cancelled":
            feedback.reportError(tr("Training cancelled; the best model so far is kept."))
        run_dir = Path(result.run_dir)
        metrics = result.metrics or {}
        feedback.pushInfo(
            tr("Run {} finished ({}), best epoch {}, threshold {:.3f}").format(
                run_dir, result.status, result.best_epoch, result.threshold
            )
        )
        return {
            "RUN_DIR": str(run_dir),
            "MODEL": str(run_dir / "model.pt"),
            "STATUS": result.status,
            "THRESHOLD_USED": result.threshold,
            "VAL_IOU": (metrics.get("val") or {}).get("iou"),
            "TEST_IOU": (metrics.get("test") or {}).get("iou"),
        }
