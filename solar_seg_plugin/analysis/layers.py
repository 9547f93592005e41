"""QGIS layers for SolarSeg outputs: loading without CRS prompts, styles from
``resources/``, an RGB stretch, and insertion above a reference layer."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsContrastEnhancement,
    QgsCoordinateReferenceSystem,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..common import style_path, tr

# Custom property of the layers SolarSeg adds (masks, probabilities, overlays...): they
# are outputs, not rasters to segment or cut into training data.
OUTPUT_PROPERTY = "solarseg/output"


class LayerError(RuntimeError):
    """A file could not be loaded as a layer."""


def load_raster(
    path: str | Path, name: str, crs: QgsCoordinateReferenceSystem | None = None
) -> QgsRasterLayer:
    """A GDAL raster layer of SolarSeg's outputs; ``crs`` is set when the file has none
    (no CRS prompt)."""
    options = QgsRasterLayer.LayerOptions()
    options.skipCrsValidation = True
    layer = QgsRasterLayer(str(path), name, "gdal", options)
    if not layer.isValid():
        raise LayerError(tr("could not load {} as a raster layer").format(path))
    if crs is not None and crs.isValid() and not layer.crs().isValid():
        layer.setCrs(crs)
    layer.setCustomProperty(OUTPUT_PROPERTY, True)
    return layer


def load_vector(path: str | Path, name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(str(path), name, "ogr")
    if not layer.isValid():
        raise LayerError(tr("could not load {} as a vector layer").format(path))
    layer.setCustomProperty(OUTPUT_PROPERTY, True)
    return layer


def apply_style(layer: QgsMapLayer, qml: str) -> None:
    """Load a QML style from ``resources/`` (e.g. ``error.qml``)."""
    output = layer.customProperty(OUTPUT_PROPERTY, False)
    message, ok = layer.loadNamedStyle(style_path(qml))
    if not ok:
        raise LayerError(tr("could not apply style {}: {}").format(qml, message))
    if output:  # a style's custom properties replace the layer's
        layer.setCustomProperty(OUTPUT_PROPERTY, True)
    layer.triggerRepaint()


def style_rgb(layer: QgsRasterLayer, stretch: list[tuple[float, float]]) -> None:
    """Bands 1, 2, 3 as red, green, blue, each stretched to its (min, max)."""
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, 1, 2, 3)
    setters = (
        renderer.setRedContrastEnhancement,
        renderer.setGreenContrastEnhancement,
        renderer.setBlueContrastEnhancement,
    )
    for band, (setter, (lo, hi)) in enumerate(zip(setters, stretch, strict=False), start=1):
        ce = QgsContrastEnhancement(provider.dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        setter(ce)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def insertion_point(
    project: QgsProject, reference: QgsMapLayer | None
) -> tuple[QgsLayerTreeGroup, int]:
    """The group and index just above ``reference`` in the layer tree (top if None)."""
    root = project.layerTreeRoot()
    node = root.findLayer(reference.id()) if reference is not None else None
    if node is None:
        return root, 0
    parent = node.parent()
    return parent, parent.children().index(node)


def add_group_above(
    project: QgsProject, name: str, layers: list[QgsMapLayer], reference: QgsMapLayer | None
) -> QgsLayerTreeGroup:
    """A new group holding ``layers`` (first on top), placed above ``reference``."""
    parent, index = insertion_point(project, reference)
    group = parent.insertGroup(index, name)
    add_to_group(project, group, layers)
    group.setExpanded(True)
    return group


def add_to_group(project: QgsProject, group: QgsLayerTreeGroup, layers: list[QgsMapLayer]) -> None:
    """Add ``layers`` to the project, in ``group`` (first on top) and nowhere else."""
    for layer in layers:
        project.addMapLayer(layer, False)
        group.addLayer(layer)
