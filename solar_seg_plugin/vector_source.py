"""Polygon layers of the project as the engine reads them: a file (and its layer name)
that OGR opens in the engine's process. A layer that is not a plain file on disk (a
memory or database layer, one with a provider filter) or only its selected features
are first written to a temporary GeoPackage with QGIS's own writer; no engine module is
imported here."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsProject,
    QgsProviderRegistry,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from .common import tr

EXPORT_LAYER = "polygons"


@dataclass
class PolygonSource:
    """A file and layer name for the engine's ``--labels``/``--reference`` options."""

    path: str
    layer: str | None = None
    features: int = 0  # features the engine will read (before its own filter)
    temporary: list[Path] = field(default_factory=list)  # to delete when done


def file_of(layer: QgsVectorLayer) -> tuple[str | None, str | None]:
    """(file, layer name) of an OGR layer (None, None for anything else)."""
    if layer.providerType() != "ogr":
        return None, None
    uri = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = uri.get("path") or None
    return path, uri.get("layerName") or None


def polygon_source(layer: QgsVectorLayer, selected_only: bool = False) -> PolygonSource:
    """The layer as a file the engine can open. ValueError (one line) when there is
    nothing to write (no selected feature) or the writer fails."""
    path, name = file_of(layer)
    plain = path and Path(path).is_file() and not layer.subsetString()
    if plain and not selected_only:
        return PolygonSource(path, name, int(layer.featureCount()))
    if selected_only and layer.selectedFeatureCount() == 0:
        raise ValueError(tr("{}: no feature is selected").format(layer.name()))
    folder = Path(tempfile.mkdtemp(prefix="solarseg-polygons-"))
    out = folder / "polygons.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = EXPORT_LAYER
    options.onlySelectedFeatures = selected_only
    context = QgsProject.instance().transformContext()
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(out), context, options)
    error, message = result[0], result[1]
    if error != QgsVectorFileWriter.NoError:
        raise ValueError(tr("{}: could not write its features: {}").format(layer.name(), message))
    count = layer.selectedFeatureCount() if selected_only else int(layer.featureCount())
    return PolygonSource(str(out), EXPORT_LAYER, count, [folder])
