"""Segment Layer on several rasters: the dialog's "Several layers" and "A folder" modes
run the engine's segment-many (Dask, one local worker) on real Austria Sentinel-2 chips
and a 3-band crop of the real Landsat scene (a raster that fails with its reason while
the others go on), add the merged polygons and each raster's mask to the map, and show
the engine's refusals beside the fields."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qgis.core import QgsProject

from tests.core.segment.helpers import crop_raster

from .conftest import add_layer, visible_errors, wait_for_dialog

CHIPS = ("S2_2022_101", "S2_2022_2004")  # 11 bands, EPSG:32633; 2004 holds a large plant


@pytest.fixture()
def open_dialog(qgis_iface, qgis_new_project):
    """Opens the Segment dialog (after the test has put its layers in the project)."""
    from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog

    opened = []

    def open_():
        dlg = SegmentDialog(qgis_iface)
        dlg.show()
        opened.append(dlg)
        return dlg

    yield open_
    for dlg in opened:
        dlg.shutdown()
        dlg.close()
        dlg.deleteLater()
    QgsProject.instance().removeAllMapLayers()


def test_several_layers_merged_panels_masks_and_failed_raster(open_dialog, austria, scenes,
                                                              tiny_run, tmp_path):  # fmt: skip
    from solar_seg_plugin.dialogs.segment_dialog import LAYERS

    chips = [add_layer(austria / "images" / f"{name}.tif") for name in CHIPS]
    landsat = crop_raster(scenes / "landsat8_b2b3b4_foz_30m.tif", tmp_path / "landsat_crop.tif",
                          600, 600, 48, 48)  # fmt: skip
    bad = add_layer(landsat)
    dialog = open_dialog()
    dialog.set_mode(LAYERS)
    assert dialog.rasters.isVisibleTo(dialog) and not dialog.layer_combo.isVisibleTo(dialog)
    assert not dialog.polygons_check.isVisibleTo(dialog)  # always made for several rasters
    # a new list checks the layers with the most common band count: one mapping for all
    assert set(dialog.rasters.checked_ids()) == {c.id() for c in chips}
    dialog.rasters.check_all(True)
    assert dialog.rasters.count_label.text() == "3 of 3 checked"
    dialog.model_edit.setText(str(tiny_run))  # a run folder: read at once, without torch
    assert dialog.bands_edit.text() == ""  # by band name: the 3- and 11-band rasters differ
    assert "the rasters have 3 or 11 band(s)" in dialog.model_info.text()
    dialog.tile_spin.setValue(64)
    dialog.overlap_spin.setValue(16)
    dialog.device_combo.setCurrentText("cpu")
    dialog.workers_spin.setValue(1)
    out = tmp_path / "many"
    dialog.out_edit.setText(str(out))
    assert dialog.start(), visible_errors(dialog)
    assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert "Segmenting 3 raster(s) on 1 local worker(s)" in dialog.status.text()
    progress: list[dict] = []
    dialog.task.info.connect(progress.append)
    wait_for_dialog(dialog)
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()
    result = dialog.outcome
    assert result is not None, dialog.status.text()

    # the engine's summary: two chips done, the 3-band crop failed with its reason
    rows = {r["scene"]: r for r in result.scenes}
    assert {n: r["status"] for n, r in rows.items()} == {
        "S2_2022_101": "done", "S2_2022_2004": "done", "landsat_crop": "failed"}  # fmt: skip
    assert "3 band(s)" in rows["landsat_crop"]["error"]
    assert result.counts == {"done": 2, "failed": 1}
    many = [i for i in progress if "scenes_total" in i]
    assert many and many[-1]["scenes_total"] == 3 and many[-1]["km2_total"] > 0
    assert dialog.progress_bar.value() == 100

    # the map: one group above the first checked layer, merged polygons + masks
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("SolarSeg: 3 raster(s)")
    assert group is not None
    order = [c.name() for c in root.children()]
    assert order.index(group.name()) == order.index(bad.name()) - 1  # the list's first
    names = {layer.name(): layer for layer in dialog.added}
    panels = names["panels of 3 raster(s)"]
    assert Path(panels.source().split("|")[0]) == out / "panels.gpkg"
    assert panels.featureCount() == result.panels > 0
    assert {"scene", "area_m2", "area_ha"} <= set(panels.fields().names())
    per_scene: dict[str, int] = {}
    for feature in panels.getFeatures():
        per_scene[feature["scene"]] = per_scene.get(feature["scene"], 0) + 1
    assert per_scene == {n: r["panels_merged"] for n, r in rows.items() if r["panels_merged"]}
    total_ha = sum(f["area_ha"] for f in panels.getFeatures())
    assert total_ha == pytest.approx(result.panel_area_ha, rel=1e-6)
    assert panels.renderer().symbol().color().name() == "#ff0000"  # panels.qml, as for one
    masks = root.findGroup("masks (2)")
    assert masks is not None and masks.parent() == group
    # in the order of the rasters (the list's), the failed one without a mask
    assert [c.name() for c in masks.children()] == [f"{n} mask" for n in rows if n in CHIPS]
    for chip in chips:
        mask = names[f"{chip.name()} mask"]
        assert mask.crs() == chip.crs() and mask.extent() == chip.extent()
        assert (mask.width(), mask.height()) == (chip.width(), chip.height())
        assert mask.renderer().type() == "paletted"  # mask.qml
    assert dialog.rasters.list.count() == 3  # the masks are outputs, not rasters to segment

    # the status line: the engine's summary and the failed raster with its reason
    status = dialog.status.text()
    assert "3 scene(s): 2 done, 0 skipped (complete), 1 failed" in status
    assert f"{result.panels} panel polygon(s), {result.panel_area_ha:.2f} ha" in status
    assert "failed: <b>landsat_crop</b>: " in status and "3 band(s)" in status
    assert "summary.csv" in status and not dialog.status.styleSheet()


def test_folder_mode_counts_rasters_and_shows_refusals_beside_fields(open_dialog, austria,
                                                                    tiny_run, tmp_path):  # fmt: skip
    from solar_seg_plugin.dialogs.segment_dialog import FOLDER

    folder = tmp_path / "in"
    folder.mkdir()
    dialog = open_dialog()
    dialog.set_mode(FOLDER)
    assert dialog.folder_edit.isVisibleTo(dialog) and not dialog.rasters.isVisibleTo(dialog)
    dialog.folder_edit.setText(str(folder))
    assert dialog.folder_count.text() == "0 raster(s) found"
    dialog.model_edit.setText(str(tiny_run))
    assert not dialog.start()  # refused by the dialog, with the engine's own rule
    assert "no rasters" in visible_errors(dialog)["folder"]
    for name in CHIPS:
        shutil.copy(austria / "images" / f"{name}.tif", folder)
    (folder / "notes.txt").write_text("not a raster\n")
    dialog.folder_edit.setText(str(folder))
    assert dialog.folder_count.text() == "2 raster(s) found"
    assert "the rasters have 11 band(s)" in dialog.model_info.text()

    # refused by the engine's check (segment-many in the engine process), beside the field
    dialog.scheduler_edit.setText("localhost:8786")
    assert not dialog.workers_spin.isEnabled()
    dialog.out_edit.setText(str(tmp_path / "out"))
    assert dialog.start(), visible_errors(dialog)
    wait_for_dialog(dialog, 120)
    errors = visible_errors(dialog)
    assert "tcp://HOST:8786" in errors.get("scheduler", ""), (dialog.status.text(), errors)
    assert "refused" in dialog.status.text()
    assert dialog.outcome is None and not (tmp_path / "out").exists()
    assert QgsProject.instance().layerTreeRoot().findGroup("SolarSeg: 2 raster(s)") is None


def test_cancel_several_layers_adds_nothing(open_dialog, austria, tiny_run, tmp_path):
    from solar_seg_plugin.dialogs.segment_dialog import LAYERS

    for name in CHIPS:
        add_layer(austria / "images" / f"{name}.tif")
    dialog = open_dialog()
    dialog.set_mode(LAYERS)
    dialog.model_edit.setText(str(tiny_run))
    dialog.workers_spin.setValue(1)
    dialog.out_edit.setText(str(tmp_path / "many"))
    assert dialog.start(), visible_errors(dialog)
    dialog.task.info.connect(lambda _info: dialog.cancel_button.click())
    wait_for_dialog(dialog, 120)
    assert "Cancelled; the rasters finished so far are kept in" in dialog.status.text()
    assert dialog.outcome is None and dialog.start_button.isEnabled()
    assert QgsProject.instance().layerTreeRoot().findGroup("SolarSeg: 2 raster(s)") is None
    assert not (tmp_path / "many" / "panels.gpkg").exists()
