"""Plants in the plugin on the real Austria data: Segment Layer with reference polygons
adds the engine's plant layers (found/missed, false detections), and Inspect Errors'
Plants tab shows the engine's plants.csv of the split, with its layers on the map."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

from .conftest import run_task, wait_until

CHIP = "S2_2022_2004.tif"


def gpkg_counts(path: Path) -> dict[str, int]:
    ds = ogr.Open(str(path))
    try:
        return {ds.GetLayer(i).GetName(): ds.GetLayer(i).GetFeatureCount()
                for i in range(ds.GetLayerCount())}  # fmt: skip
    finally:
        ds = None


@pytest.fixture()
def osm(austria, qgis_new_project):
    layer = QgsVectorLayer(
        f"{austria / 'photovoltaic_osm.gpkg'}|layername=photovoltaic", "OSM", "ogr"
    )
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeAllMapLayers()


def test_segment_layer_with_reference_adds_plant_layers(qgis_iface, osm, austria, tiny_run,
                                                        tmp_path):  # fmt: skip
    from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog

    source = QgsRasterLayer(str(austria / "images" / CHIP), Path(CHIP).stem)
    assert source.isValid()
    QgsProject.instance().addMapLayer(source)
    dlg = SegmentDialog(qgis_iface)
    try:
        dlg.layer_combo.setLayer(source)
        dlg.model_edit.setText(str(tiny_run))
        wait_until(lambda: dlg.info_task is None and dlg.meta is not None, 120, "model info")
        dlg.tile_spin.setValue(64)
        dlg.overlap_spin.setValue(16)
        dlg.out_edit.setText(str(tmp_path / "seg"))
        dlg.reference_combo.setLayer(osm)
        assert dlg.reference_field.currentField() == "id"
        assert dlg.start()
        wait_until(lambda: dlg.task is None, 240, "the segmentation")
        assert dlg.outcome is not None, dlg.status.text()
        r = dlg.outcome.result
        counts = gpkg_counts(r.plants_gpkg_path)
        names = {layer.name(): layer for layer in dlg.added}
        plants = names["S2_2022_2004 plants (found green, missed magenta)"]
        false = names["S2_2022_2004 false detections"]
        assert plants.featureCount() == counts["plants"] >= 1
        assert false.featureCount() == counts["false_detections"]
        assert plants.renderer().type() == "categorizedSymbol"
        # Above the source, in the outputs' group, plants on top of the false detections.
        group = QgsProject.instance().layerTreeRoot().findLayer(plants.id()).parent()
        order = [n.layer().name() for n in group.findLayers()]
        assert order.index(false.name()) < order.index(plants.name())
        text = dlg.status.text()
        p = r.plants
        assert f"plants: {p['found']} found, {p['missed']} missed" in text
        assert f"reference {p['reference_ha']:.2f} ha" in text
    finally:
        dlg.shutdown()
        dlg.close()
        dlg.deleteLater()


def test_reference_refused_beside_its_field(qgis_iface, austria, tiny_run, tmp_path,
                                            qgis_new_project):  # fmt: skip
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorFileWriter

    from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog

    source = QgsRasterLayer(str(austria / "images" / CHIP), Path(CHIP).stem)
    QgsProject.instance().addMapLayer(source)
    # A Shapefile without .prj: polygons with no CRS, which the engine refuses.
    memory = QgsVectorLayer("Polygon?field=id:string", "no crs", "memory")
    f = QgsFeature(memory.fields())
    f.setGeometry(QgsGeometry.fromWkt("POLYGON((0 0, 1 0, 1 1, 0 0))"))
    memory.dataProvider().addFeatures([f])
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "ESRI Shapefile"
    shp = tmp_path / "nocrs.shp"
    QgsVectorFileWriter.writeAsVectorFormatV3(
        memory, str(shp), QgsProject.instance().transformContext(), options
    )
    (tmp_path / "nocrs.prj").unlink(missing_ok=True)
    nocrs = QgsVectorLayer(str(shp), "no crs", "ogr")
    assert nocrs.isValid()
    QgsProject.instance().addMapLayer(nocrs)
    dlg = SegmentDialog(qgis_iface)
    try:
        dlg.layer_combo.setLayer(source)
        dlg.model_edit.setText(str(tiny_run))
        wait_until(lambda: dlg.info_task is None and dlg.meta is not None, 120, "model info")
        dlg.out_edit.setText(str(tmp_path / "seg"))
        dlg.reference_combo.setLayer(nocrs)
        assert dlg.start()
        wait_until(lambda: dlg.task is None, 240, "the segmentation")
        error = dlg.errors["reference"]
        assert error.isVisibleTo(dlg) and "CRS" in error.text(), dlg.status.text()
        assert not (tmp_path / "seg" / "plants.gpkg").exists()
    finally:
        dlg.shutdown()
        dlg.close()
        dlg.deleteLater()
        QgsProject.instance().removeAllMapLayers()


@pytest.fixture(scope="module")
def austria_chips(austria, tmp_path_factory) -> Path:
    from solar_seg_plugin.core.labels.chips import ChipSettings, make_chips

    out = tmp_path_factory.mktemp("austria") / "chips"
    make_chips([austria / "images"], austria / "photovoltaic_osm.gpkg", out,
               ChipSettings(tile=64, group_field="id"))  # fmt: skip
    return out


def test_plants_table_equals_the_engine_csv(qgis_iface, qgis_new_project, tiny_run,
                                            austria_chips, tmp_path):  # fmt: skip
    from solar_seg_plugin.analysis.controller import ErrorAnalysis
    from solar_seg_plugin.analysis.plants import FALSE_LAYER, PLANTS_LAYER
    from solar_seg_plugin.core.evaluation.plants import plants_of_split
    from solar_seg_plugin.tasks import PredictSplitTask

    task = PredictSplitTask(tiny_run, austria_chips, split="all", device="cpu",
                            out_dir=tmp_path / "pred")  # fmt: skip
    assert run_task(task, 300), task.error_message()
    data = task.result
    with open(data.folder / data.index["plants_csv"], newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == data.index["plants"]["plants"] >= 26
    analysis = ErrorAnalysis(qgis_iface, data, tmp_path / "inspect", initial_tiles=2)
    try:
        table = analysis.dock.plants
        assert table.rowCount() == len(csv_rows)
        shown = {table.item(r, 0).text(): analysis.dock.plant_values(r)
                 for r in range(table.rowCount())}  # fmt: skip
        for row in csv_rows:
            v = shown[row["id"]]
            assert v["tile"] == row["tile"]
            assert v["status"] == ("found" if row["found"] == "1" else "missed")
            assert v["coverage"] == pytest.approx(float(row["coverage"]))
            assert v["reference_ha"] == pytest.approx(float(row["reference_ha"]))
        # Missed first: the table opens sorted by coverage, found plants (>= 0.5) last.
        statuses = [analysis.dock.plant_values(r)["status"] for r in range(table.rowCount())]
        assert statuses == sorted(statuses, key=lambda s: s != "missed")
        summary = data.index["plants"]
        assert f"{summary['found']} of {summary['plants']} plants found" in (
            analysis.dock.plant_totals.text()
        )
        # The layers: one feature per plant (with the engine's numbers), one per false
        # detection (the engine's count).
        plants = analysis.plant_layers[PLANTS_LAYER]
        false = analysis.plant_layers[FALSE_LAYER]
        assert plants.featureCount() == len(csv_rows)
        assert false.featureCount() == summary["false_detections"]
        found = {f["id"]: f["found"] for f in plants.getFeatures()}
        assert found == {r["id"]: int(r["found"]) for r in csv_rows}
        # A click on a plant shows its tile and zooms to it.
        missed = csv_rows[0]
        analysis.dock.select_plant(missed["id"])
        assert missed["tile"] in analysis.views
        extent = qgis_iface.mapCanvas().extent()
        feature = next(f for f in plants.getFeatures() if f["id"] == missed["id"])
        assert extent.contains(feature.geometry().boundingBox().center())

        # A new threshold recounts the plants (the engine's numpy code on the split's
        # files) and points the same two layers at a new GeoPackage.
        old_file, objects = Path(plants.source().split("|")[0]), {}
        for threshold in (0.05, 0.95):
            analysis.set_threshold(threshold)
            now = plants_of_split(analysis.tiles, threshold)
            assert table.rowCount() == now.plants == len(csv_rows)
            totals = analysis.dock.plant_totals.text()
            assert f"{now.found} of {now.plants} plants found" in totals
            assert f"at threshold {threshold:.3f}" in totals
            assert analysis.plant_layers == {PLANTS_LAYER: plants, FALSE_LAYER: false}
            assert Path(plants.source().split("|")[0]) != old_file and not old_file.exists()
            assert {f["id"]: f["found"] for f in plants.getFeatures()} == {
                r.id: int(r.found) for r in now.rows
            }
            assert false.featureCount() == now.false_detections
            objects[threshold] = false.featureCount()
            old_file = Path(plants.source().split("|")[0])
        assert objects[0.05] > objects[0.95]  # measured 38 and 4 false detections
    finally:
        analysis.close()
