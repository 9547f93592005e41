"""Processing algorithm "Create training data" (``solarseg:createtrainingdata``): the
engine's ``chips`` command on raster layers and a polygon layer, run in the engine's
Python like the other algorithms (``_Base._run_engine``). The polygon layer may be any
vector source; Processing's "selected features only" and non-file layers are written to
a temporary GeoPackage by QGIS first."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from ..common import tr
from .algorithms import _Base


class CreateTrainingDataAlgorithm(_Base):
    INPUT, POLYGONS, GROUP_FIELD, WHERE = "INPUT", "POLYGONS", "GROUP_FIELD", "WHERE"
    TILE, STRIDE, ALL_TOUCHED, MIN_VALID = "TILE", "STRIDE", "ALL_TOUCHED", "MIN_VALID"
    KEEP_BACKGROUND, SEED, OVERWRITE = "KEEP_BACKGROUND", "SEED", "OVERWRITE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"

    def name(self) -> str:
        return "createtrainingdata"

    def displayName(self) -> str:  # noqa: N802
        return tr("Create training data")

    def shortHelpString(self) -> str:  # noqa: N802
        return tr(
            "Cuts rasters into image/mask tiles labelled by a polygon layer (any CRS: the "
            "polygons are reprojected onto each raster's grid; a pixel is a plant when its "
            "centre lies in a polygon, or any touched pixel) and writes images/, masks/ and "
            "manifest.csv, whose group column (the plant field, or touching polygons) keeps "
            "each plant in one split. The output folder is a dataset for Train model. All "
            "rasters need the same band count. Stride 0 = the tile size; background tiles "
            "-1 = keep all."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                self.INPUT, tr("Raster layers"), QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.POLYGONS, tr("Plant polygons"), [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.GROUP_FIELD, tr("Plant field (empty: touching polygons form one plant)"),
                parentLayerParameterName=self.POLYGONS, optional=True,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterString(
                self.WHERE, tr("Attribute filter (OGR SQL, e.g. type = 'solar')"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TILE, tr("Tile size (pixels)"), defaultValue=64, minValue=1
            )  # fmt: skip
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STRIDE, tr("Stride (pixels, 0 = tile size)"), defaultValue=0, minValue=0
            )  # fmt: skip
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.ALL_TOUCHED, tr("Burn every touched pixel"), False)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_VALID, tr("Minimum share of valid pixels per tile"),
                QgsProcessingParameterNumber.Double, defaultValue=0.5, minValue=0.0, maxValue=1.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber(
                self.KEEP_BACKGROUND, tr("All-background tiles to keep (-1 = all)"),
                defaultValue=-1, minValue=-1,
            )
        )  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.SEED, tr("Seed"), defaultValue=42))
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.OVERWRITE, tr("Replace a dataset already in the folder"), False
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, tr("Output folder"))
        )
        self.addOutput(QgsProcessingOutputFile("MANIFEST", tr("Manifest (manifest.csv)")))
        for key, label in (("TILES", tr("Tiles")), ("POSITIVE_TILES", tr("Tiles with plants")),
                           ("GROUPS", tr("Split groups")), ("PLANTS", tr("Plants"))):  # fmt: skip
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def processAlgorithm(  # noqa: N802
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        from ..tasks import ChipsInputs, chips_args

        rasters = []
        for layer in self.parameterAsLayerList(parameters, self.INPUT, context):
            path = layer.source().split("|")[0]
            if (
                not isinstance(layer, QgsRasterLayer)
                or layer.providerType() != "gdal"
                or not (Path(path).is_file())
            ):
                raise QgsProcessingException(
                    tr("{} is not a raster file on disk (GDAL)").format(layer.name())
                )
            rasters.append(path)
        if not rasters:
            raise QgsProcessingException(tr("No raster layer given"))
        # A file OGR reads (selected features, or a non-file layer, are written first).
        labels, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, self.POLYGONS, context, ["gpkg", "shp", "geojson"], "gpkg", feedback
        )
        if not labels:
            raise QgsProcessingException(tr("No polygon layer given"))
        keep = self.parameterAsInt(parameters, self.KEEP_BACKGROUND, context)
        stride = self.parameterAsInt(parameters, self.STRIDE, context)
        out_dir = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        inputs = ChipsInputs(
            rasters=rasters,
            labels=labels,
            layer=layer_name or None,
            out=out_dir,
            where=self.parameterAsString(parameters, self.WHERE, context).strip() or None,
            group_field=self.parameterAsString(parameters, self.GROUP_FIELD, context) or None,
            tile=self.parameterAsInt(parameters, self.TILE, context),
            stride=stride or None,
            all_touched=self.parameterAsBool(parameters, self.ALL_TOUCHED, context),
            min_valid=self.parameterAsDouble(parameters, self.MIN_VALID, context),
            keep_background=keep if keep >= 0 else None,
            seed=self.parameterAsInt(parameters, self.SEED, context),
            overwrite=self.parameterAsBool(parameters, self.OVERWRITE, context),
        )
        feedback.pushInfo(
            tr("Cutting {} raster(s) with the polygons of {}").format(len(rasters), labels)
        )
        data = self._run_engine(chips_args(inputs), feedback)
        feedback.pushInfo(data["summary"])
        return {
            self.OUTPUT_FOLDER: str(data["out_dir"]),
            "MANIFEST": str(data["manifest"]),
            "TILES": int(data["tiles"]),
            "POSITIVE_TILES": int(data["positive_tiles"]),
            "GROUPS": int(data["groups"]),
            "PLANTS": int(data["plants"]),
        }
