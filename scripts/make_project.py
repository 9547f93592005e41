"""Write the QGIS project `make run` opens: the 25 Austria Sentinel-2 chips (a group, R,G,B
= bands 4,3,2), the OpenStreetMap plant polygons above them, and the Haiti scene, so a
new user can start from Create Training Data at once.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_project.py OUT.qgs [DATA_DIR]

Prints the extent to open on (one chip with its plants, in the project's CRS) as
``xmin,ymin,xmax,ymax`` for ``qgis --extent``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsContrastEnhancement,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFillSymbol,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsReferencedRectangle,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)

REPO = Path(__file__).resolve().parents[1]
GROUP = "Austria Sentinel-2 chips (25, bands 4,3,2)"
OSM_NAME = "OSM solar plants (photovoltaic_osm)"
PROJECT_CRS = "EPSG:32633"  # most Austria chips; QGIS reprojects the others on the fly
START_CHIP = "S2_2022_2004"  # opened on this chip (a plant of the Austria test split)
# L2A reflectance x 10,000: one stretch for every chip, so they compare by eye.
STRETCH = {4: (150.0, 1400.0), 3: (250.0, 1200.0), 2: (150.0, 1000.0)}


def style_chip(layer: QgsRasterLayer) -> None:
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, 4, 3, 2)
    for band, setter in ((4, renderer.setRedContrastEnhancement),
                         (3, renderer.setGreenContrastEnhancement),
                         (2, renderer.setBlueContrastEnhancement)):  # fmt: skip
        ce = QgsContrastEnhancement(provider.dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        ce.setMinimumValue(STRETCH[band][0])
        ce.setMaximumValue(STRETCH[band][1])
        setter(ce)
    layer.setRenderer(renderer)


def build(out: Path, data: Path) -> str:
    project = QgsProject.instance()
    project.clear()
    project.setCrs(QgsCoordinateReferenceSystem(PROJECT_CRS))
    root = project.layerTreeRoot()
    osm = QgsVectorLayer(f"{data / 'austria-pv' / 'photovoltaic_osm.gpkg'}|layername=photovoltaic",
                         OSM_NAME, "ogr")  # fmt: skip
    if not osm.isValid():
        raise SystemExit(f"cannot open the OSM layer in {data / 'austria-pv'}")
    osm.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "255,214,0,255", "outline_width": "0.7"}
    )))  # fmt: skip
    project.addMapLayer(osm, False)
    root.addLayer(osm).setExpanded(False)
    group = root.addGroup(GROUP)
    start = None
    for tif in sorted((data / "austria-pv" / "images").glob("*.tif")):
        layer = QgsRasterLayer(str(tif), tif.stem)
        if not layer.isValid():
            raise SystemExit(f"cannot open {tif}")
        style_chip(layer)
        project.addMapLayer(layer, False)
        group.addLayer(layer).setExpanded(False)  # no band legend: the list stays short
        if tif.stem == START_CHIP:
            start = layer
    group.setExpanded(False)
    haiti = data / "scenes" / "rgbn_haiti_5m.tif"
    if haiti.is_file():
        layer = QgsRasterLayer(str(haiti), haiti.stem)
        project.addMapLayer(layer, False)
        root.addLayer(layer).setExpanded(False)
    extent = ""
    if start is not None:
        rect = QgsCoordinateTransform(start.crs(), project.crs(), project).transformBoundingBox(
            start.extent()
        )
        rect.scale(2.5)
        project.viewSettings().setDefaultViewExtent(QgsReferencedRectangle(rect, project.crs()))
        extent = f"{rect.xMinimum()},{rect.yMinimum()},{rect.xMaximum()},{rect.yMaximum()}"
    if not project.write(str(out)):
        raise SystemExit(f"could not write {out}")
    return extent


def main() -> int:
    out = Path(sys.argv[1]).resolve()
    data = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else (REPO / ".." / "shared" / "data")
    out.parent.mkdir(parents=True, exist_ok=True)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        print(build(out, data.resolve()))
    finally:
        QgsProject.instance().clear()
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
