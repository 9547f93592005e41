"""Segment Layer dialog on real scenes: outputs on the source's grid, the band error on a
3-band scene, ground truth -> error overlay and IoU, and a clean cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProject

from .conftest import (
    add_layer,
    process_events,
    run_task,
    visible_errors,
    wait_for_dialog,
    wait_until,
)


@pytest.fixture()
def dialog(qgis_iface, qgis_new_project):
    from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog

    dlg = SegmentDialog(qgis_iface)
    dlg.show()
    yield dlg
    dlg.shutdown()
    dlg.close()
    dlg.deleteLater()


def wait_for_model(dlg, timeout: float = 120.0) -> None:
    """The model's metadata is read by the engine process (``info``), asynchronously."""
    wait_until(lambda: dlg.info_task is None and dlg.meta is not None, timeout, "model info")


def test_refuses_missing_inputs(dialog):
    dialog.layer_combo.setLayer(None)
    assert not dialog.start()
    errors = visible_errors(dialog)
    assert "layer" in errors and "model" in errors
    assert dialog.task is None
    assert "refused" in dialog.status.text()


def test_segment_haiti_outputs_on_source_grid(dialog, scenes, tiny_run, tmp_path):
    source = add_layer(scenes / "rgbn_haiti_5m.tif")
    dialog.layer_combo.setLayer(source)
    dialog.model_edit.setText(str(tiny_run))
    wait_for_model(dialog)
    # The model names its bands (B4,B3,B2,B8): the mapping is left to the engine, which
    # finds them by name where the raster names its bands, else takes bands 4,3,2,8.
    assert dialog.bands_edit.text() == ""
    assert (
        dialog.bands_edit.placeholderText() == "empty: B4,B3,B2,B8 by band name, else bands 4,3,2,8"
    )
    assert "trained on bands 4,3,2,8 (B4,B3,B2,B8)" in dialog.model_info.text()
    assert dialog.threshold_spin.value() == pytest.approx(dialog.meta.threshold, abs=1e-3)
    dialog.bands_edit.setText("1,2,3,4")  # Haiti: R,G,B,NIR
    dialog.tile_spin.setValue(128)
    dialog.overlap_spin.setValue(32)
    dialog.out_edit.setText(str(tmp_path / "haiti"))
    dialog.polygons_check.setChecked(True)
    assert dialog.start(), visible_errors(dialog)
    wait_for_dialog(dialog)
    assert dialog.outcome is not None, dialog.status.text()
    # A Solafune model on the 8-bit Haiti scene: the outputs are there, and a warning.
    assert "⚠ rgbn_haiti_5m.tif: its values do not look like" in dialog.status.text()
    assert "b9770e" in dialog.status.styleSheet()
    names = {layer.name(): layer for layer in dialog.added}
    prob = names["rgbn_haiti_5m probability"]
    mask = names["rgbn_haiti_5m mask"]
    panels = names["rgbn_haiti_5m panels"]
    for layer in (prob, mask):
        assert layer.crs().authid() == "EPSG:32618" == source.crs().authid()
        assert layer.extent() == source.extent()
        assert (layer.width(), layer.height()) == (515, 403) == (source.width(), source.height())
    assert panels.crs().authid() == "EPSG:32618"
    assert "area_m2" in panels.fields().names()
    with rasterio.open(mask.source()) as src:
        values = set(np.unique(src.read(1)).tolist())
    assert values <= {0, 1, 255}
    # the outputs sit in a group right above the source layer
    root = QgsProject.instance().layerTreeRoot()
    order = [c.name() for c in root.children()]
    assert order.index("SolarSeg: rgbn_haiti_5m") == order.index("rgbn_haiti_5m") - 1
    group = root.findGroup("SolarSeg: rgbn_haiti_5m")
    assert [c.name() for c in group.children()][-2:] == [mask.name(), prob.name()]
    assert mask.renderer().type() == "paletted"
    assert prob.renderer().type() == "singlebandpseudocolor"

    # the model and its band mapping for a 4-band raster are remembered (QgsSettings)
    from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog

    again = SegmentDialog(None)
    again.layer_combo.setLayer(source)
    assert again.model_edit.text() == str(tiny_run)
    wait_for_model(again)
    assert again.bands_edit.text() == "1,2,3,4"
    again.shutdown()
    again.deleteLater()


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    from solar_seg_plugin.core.models.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_run, path)
    return path


def test_a_model_file_is_read_at_once_without_the_engine(dialog, scenes, tiny_run):
    """A .pt model (or run folder) is read in QGIS's process by the engine's torch-free
    reader: the form is filled before setText returns, no engine process is started."""
    dialog.layer_combo.setLayer(add_layer(scenes / "rgbn_haiti_5m.tif"))
    dialog.model_edit.setText(str(tiny_run))
    assert dialog.info_task is None and dialog.meta is not None
    assert dialog.bands_edit.text() == "" and "B4,B3,B2,B8" in dialog.bands_edit.placeholderText()
    assert dialog.threshold_spin.value() == pytest.approx(dialog.meta.threshold, abs=1e-3)


def test_bands_typed_while_the_model_is_read_are_kept(dialog, scenes, tiny_onnx):
    """Reading an ONNX model takes seconds (the engine process); a mapping the user
    types meanwhile is not replaced by the model's bands when the reading ends (seen in
    the real QGIS desktop: about 10 s with the engine's own environment)."""
    from qgis.PyQt.QtTest import QTest

    dialog.layer_combo.setLayer(add_layer(scenes / "rgbn_haiti_5m.tif"))
    dialog.model_edit.setText(str(tiny_onnx))
    assert dialog.info_task is not None
    dialog.bands_edit.clear()
    QTest.keyClicks(dialog.bands_edit, "1,2,3,4")
    wait_for_model(dialog)
    assert dialog.bands_edit.text() == "1,2,3,4"
    assert dialog.backend_combo.currentText() == "onnx"
    dialog.model_edit.setText("")  # a model chosen again: the mapping is filled again
    dialog.model_edit.setText(str(tiny_onnx))
    wait_for_model(dialog)
    assert dialog.bands_edit.text() == ""  # by band name (the ONNX file has the names)
    assert "B4,B3,B2,B8" in dialog.bands_edit.placeholderText()


def test_bands_are_found_by_name_on_a_four_band_sentinel2_scene(dialog, scenes, tiny_run, tmp_path):
    """The 4-band scene (B02 blue, B03 green, B04 red, B08 nir) has no band 8: the model
    (trained on Solafune bands 4,3,2,8 = B4,B3,B2,B8) is fed its bands 3,2,1,4 by name,
    and the status says so."""
    dialog.layer_combo.setLayer(add_layer(scenes / "sentinel2_b2b3b4b8_300px.tif"))
    dialog.model_edit.setText(str(tiny_run))
    wait_for_model(dialog)
    assert dialog.bands_edit.text() == ""
    dialog.out_edit.setText(str(tmp_path / "s2"))
    assert dialog.start(), visible_errors(dialog)
    wait_for_dialog(dialog)
    assert dialog.outcome is not None, dialog.status.text()
    assert dialog.outcome.result.bands == [3, 2, 1, 4]
    assert (
        "\nBands 3,2,1,4 by band name (B4, B3, B2, B8); the model was trained on bands 4,3,2,8"
        in dialog.status.text()
    )
    with rasterio.open(tmp_path / "s2" / "probability.tif") as src:
        assert (src.width, src.height) == (300, 300) and np.isfinite(src.read(1)).all()


def test_landsat_three_bands_shows_band_error(dialog, scenes, tiny_run, tmp_path):
    """The engine's check_segment refuses the mapping; its message is beside Bands."""
    source = add_layer(scenes / "landsat8_b2b3b4_foz_30m.tif")
    dialog.layer_combo.setLayer(source)
    dialog.model_edit.setText(str(tiny_run))
    wait_for_model(dialog)
    dialog.out_edit.setText(str(tmp_path / "landsat"))
    assert dialog.start()
    wait_for_dialog(dialog)
    errors = visible_errors(dialog)
    assert "bands" in errors, (dialog.status.text(), errors)
    assert "3 band(s)" in errors["bands"] and "8" in errors["bands"]
    dialog.bands_edit.setText("3,2,1")
    assert dialog.start()
    wait_for_dialog(dialog)
    assert "4 input(s)" in visible_errors(dialog)["bands"]
    assert dialog.outcome is None and not (tmp_path / "landsat").exists()


def test_int8_precision_runs_the_quantised_graph(dialog, austria, tiny_run, tmp_path, monkeypatch):
    """Precision int8 on a real Austria chip: a missing calibration folder is refused
    beside its field; with the model's own training tiles the engine quantises once into
    the cache and the outputs say int8 (GDAL tags), as `segment --precision int8` does."""
    monkeypatch.setenv("SOLARSEG_CACHE_DIR", str(tmp_path / "cache"))  # the engine inherits it
    source = add_layer(austria / "images" / "S2_2022_101.tif")
    dialog.layer_combo.setLayer(source)
    dialog.model_edit.setText(str(tiny_run))
    wait_for_model(dialog)
    assert dialog.precision_combo.currentText() == "fp32"
    assert not dialog.calibration_edit.isVisibleTo(dialog)  # for int8 only
    dialog.precision_combo.setCurrentText("int8")
    assert dialog.calibration_edit.isVisibleTo(dialog)
    dialog.calibration_edit.setText(str(tmp_path / "nowhere"))
    dialog.out_edit.setText(str(tmp_path / "int8"))
    assert dialog.start()
    wait_for_dialog(dialog)
    errors = visible_errors(dialog)
    assert (
        "calibration" in errors
        and "nowhere: calibration dataset not found" in errors["calibration"]
    ), (dialog.status.text(), errors)
    assert not (tmp_path / "int8").exists()

    dialog.calibration_edit.setText("")  # the model's training dataset
    assert dialog.start(), visible_errors(dialog)
    wait_for_dialog(dialog)
    assert dialog.outcome is not None, dialog.status.text()
    for name in ("probability.tif", "mask.tif"):
        with rasterio.open(tmp_path / "int8" / name) as src:
            tags = src.tags()
        assert tags["SOLARSEG_PRECISION"] == "int8" and tags["SOLARSEG_BACKEND"] == "onnx"
        assert tags["SOLARSEG_CALIBRATION_SPLIT"] == "train"
        assert 1 <= int(tags["SOLARSEG_CALIBRATION_TILES"]) <= 64
    assert len(list((tmp_path / "cache" / "int8").glob("*.int8.onnx"))) == 1
    from solar_seg_plugin.dialogs.segment_dialog import SegmentDialog

    again = SegmentDialog(None)  # the precision is remembered
    assert again.precision_combo.currentText() == "int8"
    again.precision_combo.setCurrentText("fp32")
    again.settings.set("segment/precision", "fp32")
    again.shutdown()
    again.deleteLater()


def test_engine_band_error_is_reported_not_raised(qgis_iface, scenes, tiny_run, tmp_path):
    """Bypassing the dialog's check, the engine's RasterError comes back as a message."""
    from solar_seg_plugin.core.segment import SegmentOptions
    from solar_seg_plugin.tasks import SegmentTask

    raster = scenes / "landsat8_b2b3b4_foz_30m.tif"
    task = SegmentTask(tiny_run, raster, tmp_path / "out", SegmentOptions(device="cpu"))
    assert not run_task(task)
    assert "3 band(s)" in task.error_message()
    assert not list((tmp_path / "out").glob("*.tif")) if (tmp_path / "out").exists() else True


def test_ground_truth_error_overlay_and_iou(dialog, solafune, tiny_run, tmp_path):
    from solar_seg_plugin.analysis.errors import FN, FP, TP
    from solar_seg_plugin.core.evaluation.metrics import confusion

    image = solafune / "s2_image" / "train_s2_image_5.tif"
    truth = solafune / "mask" / "train_mask_5.tif"
    dialog.file_edit.setText(str(image))
    dialog.model_edit.setText(str(tiny_run))
    dialog.tile_spin.setValue(32)
    dialog.overlap_spin.setValue(8)
    dialog.truth_file.setText(str(truth))
    dialog.polygons_check.setChecked(False)
    dialog.out_edit.setText(str(tmp_path / "tile"))
    assert dialog.start(), visible_errors(dialog)
    wait_for_dialog(dialog)
    outcome = dialog.outcome
    assert outcome is not None, dialog.status.text()
    with rasterio.open(outcome.result.probability_path) as src:
        prob = src.read(1)
    with rasterio.open(truth) as src:
        gt = src.read(1)
    valid = np.isfinite(prob)
    counts = confusion(np.nan_to_num(prob), gt, valid, outcome.result.threshold)
    assert (outcome.counts.tp, outcome.counts.fp, outcome.counts.fn) == (
        counts.tp, counts.fp, counts.fn
    )  # fmt: skip
    with rasterio.open(outcome.error_path) as src:
        codes = src.read(1)
    assert int((codes == TP).sum()) == counts.tp
    assert int((codes == FP).sum()) == counts.fp
    assert int((codes == FN).sum()) == counts.fn
    assert f"IoU {counts.metrics()['iou']:.4f}" in dialog.status.text()
    names = [layer.name() for layer in dialog.added]
    assert any(n.endswith("errors (FP yellow, FN green)") for n in names)


def test_cancel_leaves_no_outputs_and_qgis_usable(qgis_iface, scenes, tiny_run, tmp_path):
    from solar_seg_plugin.core.segment import SegmentOptions
    from solar_seg_plugin.tasks import SegmentTask

    out = tmp_path / "cancelled"
    options = SegmentOptions(tile_size=64, overlap=16, batch_size=1, bands=[1, 2, 3, 4],
                             device="cpu", polygons=True)  # fmt: skip
    task = SegmentTask(tiny_run, scenes / "rgbn_haiti_5m.tif", out, options)
    task.info.connect(lambda _info: task.cancel())
    assert not run_task(task)
    assert task.cancelled and task.error is None
    assert not out.exists() or not any(out.iterdir())
    # QGIS is still usable: a new layer loads and the task manager runs the next task
    layer = add_layer(scenes / "rgbn_haiti_5m.tif")
    assert layer.isValid()
    again = SegmentTask(tiny_run, scenes / "rgbn_haiti_5m.tif", out,
                        SegmentOptions(tile_size=128, overlap=32, bands=[1, 2, 3, 4], device="cpu"))  # fmt: skip
    assert run_task(again), again.error_message()
    assert (out / "probability.tif").exists()
    process_events(0.1)
