"""Regenerate the QML styles in this folder with PyQGIS (run once after changing colours):

    QT_QPA_PLATFORM=offscreen .venv/bin/python resources/make_styles.py

Styles: mask.qml (1 = panel), ground_truth.qml, prediction.qml, error.qml (TN transparent,
TP white, FP yellow, FN green), probability.qml (pseudocolour 0..1, transparent below 0.25),
panels.qml (polygons), plants_found_missed.qml (reference plants by ``found``: found
green, missed magenta), false_detections.qml (predicted objects touching no plant,
orange hatch). Not shipped in the plugin zip.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

HERE = Path(__file__).resolve().parent
# Error overlay codes, as in solar_seg_plugin/analysis/errors.py.
ERROR_CLASSES = [
    (0, QColor(0, 0, 0, 0), "TN (correct background)"),
    (1, QColor(255, 255, 255), "TP (panel found)"),
    (2, QColor(255, 255, 0), "FP (false alarm)"),
    (3, QColor(0, 255, 0), "FN (panel missed)"),
]


def binary(color: QColor, label: str) -> list:
    return [
        QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "background"),
        QgsPalettedRasterRenderer.Class(1, color, label),
    ]


def raster(folder: Path, dtype: int) -> QgsRasterLayer:
    path = str(folder / f"r{dtype}.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 4, 4, 1, dtype)
    ds.GetRasterBand(1).WriteArray(np.zeros((4, 4)))
    ds.GetRasterBand(1).SetNoDataValue(255 if dtype == gdal.GDT_Byte else float("nan"))
    ds = None
    layer = QgsRasterLayer(path, "r")
    assert layer.isValid()
    return layer


def paletted(folder: Path, classes: list, name: str) -> None:
    layer = raster(folder, gdal.GDT_Byte)
    renderer = QgsPalettedRasterRenderer(
        layer.dataProvider(),
        1,
        [QgsPalettedRasterRenderer.Class(v, c, lab) for v, c, lab in classes]
        if isinstance(classes[0], tuple)
        else classes,
    )
    layer.setRenderer(renderer)
    layer.saveNamedStyle(str(HERE / name))


def probability(folder: Path) -> None:
    layer = raster(folder, gdal.GDT_Float32)
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    stops = [  # plasma; transparent below 0.25 so the scene stays visible
        (0.0, QColor(13, 8, 135, 0)),
        (0.25, QColor(84, 2, 163, 0)),
        (0.5, QColor(204, 71, 120, 170)),
        (0.75, QColor(248, 149, 64, 230)),
        (1.0, QColor(240, 249, 33, 255)),
    ]
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(v, c, f"{v:g}") for v, c in stops])
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    layer.saveNamedStyle(str(HERE / "probability.qml"))


def panels(folder: Path) -> None:
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=area_m2:double", "p", "memory")
    symbol = QgsFillSymbol.createSimple(
        {"color": "255,0,0,60", "outline_color": "255,0,0,255", "outline_width": "0.6"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.saveNamedStyle(str(HERE / "panels.qml"))


# Plants against reference polygons (core/segment/reference.py, the dock's plant layers):
# field ``found`` 1 / 0.
PLANT_CLASSES = [
    (1, "found", {"color": "0,200,80,45", "outline_color": "0,190,70,255",
                  "outline_width": "1.2"}),
    (0, "missed", {"color": "230,0,180,45", "outline_color": "230,0,180,255",
                   "outline_width": "1.2", "outline_style": "dash"}),
]  # fmt: skip


def plants(folder: Path) -> None:
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=found:integer", "p", "memory")
    categories = [
        QgsRendererCategory(value, QgsFillSymbol.createSimple(props), label)
        for value, label, props in PLANT_CLASSES
    ]
    layer.setRenderer(QgsCategorizedSymbolRenderer("found", categories))
    layer.saveNamedStyle(str(HERE / "plants_found_missed.qml"))


def false_detections(folder: Path) -> None:
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=area_ha:double", "p", "memory")
    symbol = QgsFillSymbol.createSimple(
        {"color": "255,140,0,90", "style": "b_diagonal", "outline_color": "255,140,0,255",
         "outline_width": "0.8"}
    )  # fmt: skip
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.saveNamedStyle(str(HERE / "false_detections.qml"))


def main() -> int:
    app = QgsApplication([], False)
    app.initQgis()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paletted(folder, binary(QColor(255, 0, 0), "solar panel"), "mask.qml")
        paletted(folder, binary(QColor(0, 191, 255), "solar panel (truth)"), "ground_truth.qml")
        paletted(folder, binary(QColor(255, 64, 64), "solar panel (predicted)"), "prediction.qml")
        paletted(folder, ERROR_CLASSES, "error.qml")
        probability(folder)
        panels(folder)
        plants(folder)
        false_detections(folder)
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
