"""Inspect Errors on real tiles: the split predicted in the engine process, layers whose
pixels match the engine's confusion counts, a threshold change that writes new files and
swaps the layers to them, and no engine package in QGIS's process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent

from tests.conftest import REPO

from .conftest import run_task, wait_until

FORBIDDEN = ("torch", "rasterio", "segmentation_models_pytorch", "onnxruntime")


def layer_array(layer: QgsRasterLayer, band: int = 1) -> np.ndarray:
    """Pixel values of a raster layer read through its QGIS data provider."""
    provider = layer.dataProvider()
    block = provider.block(band, provider.extent(), layer.width(), layer.height())
    values = np.array(
        [[block.value(r, c) for c in range(layer.width())] for r in range(layer.height())]
    )
    nodata = np.array(
        [[block.isNoData(r, c) for c in range(layer.width())] for r in range(layer.height())]
    )
    return np.where(nodata, 255, values).astype(np.int64)


def file_state(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


@pytest.fixture(scope="module")
def predictions_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inspect") / "_predictions"


@pytest.fixture()
def split_predictions(qgis_app, tiny_run, predictions_dir):
    from solar_seg_plugin.tasks import PredictSplitTask

    task = PredictSplitTask(tiny_run, split="test", device="cpu", out_dir=predictions_dir)
    assert task.args[0] == "predict-split"  # the engine process, not QGIS's
    assert run_task(task), task.error_message()
    return task.result


def test_error_layers_match_engine_counts(
    qgis_iface, qgis_new_project, split_predictions, tmp_path
):
    from solar_seg_plugin.analysis.controller import ErrorAnalysis
    from solar_seg_plugin.analysis.errors import FN, FP, TN, TP
    from solar_seg_plugin.core.evaluation.metrics import confusion

    data = split_predictions
    assert data.split == "test" and len(data.tiles) == 12
    analysis = ErrorAnalysis(qgis_iface, data, tmp_path, initial_tiles=3)
    assert len(analysis.views) == 3
    assert analysis.threshold == data.index["threshold"]
    # the dock's totals come from the same numbers the engine reported
    assert analysis.result.metrics == pytest.approx(data.index["metrics"])
    # the table lists every tile, worst IoU first
    table = analysis.dock.table
    assert table.rowCount() == 12
    ious = [analysis.dock.row_values(r)["iou"] for r in range(12)]
    assert ious == sorted(ious)

    checked = 0
    for tile_id, view in analysis.views.items():
        tile = data.tiles[view.index]
        counts = confusion(tile.prob, tile.mask, tile.valid, analysis.threshold)
        errors, truth, prediction = (
            layer_array(view.errors),
            layer_array(view.truth),
            layer_array(view.prediction),
        )
        h, w = tile.mask.shape
        assert errors.shape == truth.shape == prediction.shape == (h, w)
        assert int((errors == TP).sum()) == counts.tp
        assert int((errors == FP).sum()) == counts.fp
        assert int((errors == FN).sum()) == counts.fn
        assert int((errors == TN).sum()) == counts.tn
        assert int((truth == 1).sum()) == counts.tp + counts.fn
        assert int((prediction == 1).sum()) == counts.tp + counts.fp
        row = analysis.row(tile_id)
        assert (row["tp"], row["fp"], row["fn"]) == (counts.tp, counts.fp, counts.fn)
        # the group holds the four layers, in the tile's (synthetic) georeferencing
        names = [c.name() for c in view.group.children()]
        assert len(names) == 4 and names[0].startswith("errors") and names[3].startswith("image")
        assert view.image.bandCount() == 3
        assert view.errors.crs().authid() == "EPSG:3857"
        assert view.errors.extent() == view.image.extent() == view.truth.extent()
        assert view.errors.width() == w and view.errors.height() == h
        checked += 1
    assert checked == 3
    # tiles without CRS are side by side on the grid, never on top of each other
    extents = [v.errors.extent() for v in analysis.views.values()]
    for i, a in enumerate(extents):
        for b in extents[i + 1 :]:
            assert not a.intersects(b)

    # a new threshold: table and totals at once; new files written in the background,
    # then the layers point at them; the files the layers had open are never rewritten
    for threshold in (0.3, 0.95, 0.5):  # the tiny model's own is 0.05
        before = {
            tid: (v.prediction.source(), v.errors.source()) for tid, v in analysis.views.items()
        }
        states = {Path(p): file_state(Path(p)) for pair in before.values() for p in pair}
        renderers = {tid: type(v.errors.renderer()).__name__ for tid, v in analysis.views.items()}
        analysis.set_threshold(threshold)
        assert f"threshold {threshold:.3f}" in analysis.dock.totals.text()

        def settled(threshold=threshold, states=states) -> bool:
            for path, state in states.items():  # untouched until removed
                assert not path.exists() or file_state(path) == state, path
            return not analysis.busy and analysis.shown_threshold == threshold

        wait_until(settled, 60, "new overlay files")
        for tile_id, view in analysis.views.items():
            tile = data.tiles[view.index]
            new_pred, new_err = view.prediction.source(), view.errors.source()
            assert {new_pred, new_err}.isdisjoint(before[tile_id])
            assert f"t{threshold:.3f}" in Path(new_pred).name
            assert all(not Path(p).exists() for p in before[tile_id])  # no layer uses them
            pred = layer_array(view.prediction)
            want = np.where(tile.valid, tile.prob >= np.float32(threshold), 255)
            assert np.array_equal(pred, want)
            counts = confusion(tile.prob, tile.mask, tile.valid, threshold)
            errors = layer_array(view.errors)
            assert [int((errors == c).sum()) for c in (TP, FP, FN, TN)] == [
                counts.tp, counts.fp, counts.fn, counts.tn
            ]  # fmt: skip
            assert analysis.row(tile_id)["fp"] == counts.fp
            assert type(view.errors.renderer()).__name__ == renderers[tile_id]  # style kept
            assert view.errors.crs().authid() == "EPSG:3857"
            assert view.prediction.isValid() and view.errors.isValid()
    view = next(iter(analysis.views.values()))
    ds = gdal.Open(view.errors.source())
    assert ds.GetProjection() == ""  # no invented CRS on disk
    ds = None
    tifs = sorted(p.name for p in view.files.folder.glob("*.tif"))
    assert tifs == ["errors_t0.500.tif", "ground_truth.tif", "image.tif", "prediction_t0.500.tif"]

    # two quick changes: only the last one ends on the map
    analysis.set_threshold(0.2)
    analysis.set_threshold(0.35)
    wait_until(lambda: not analysis.busy and analysis.shown_threshold == 0.35, 60, "overlays")
    for view in analysis.views.values():
        assert sorted(p.name for p in view.files.folder.glob("*.tif")) == [
            "errors_t0.350.tif", "ground_truth.tif", "image.tif", "prediction_t0.350.tif"
        ]  # fmt: skip

    # selecting a row of a tile not yet on the map adds its group and zooms to it
    other = next(
        str(r["tile_id"]) for r in analysis.rows if str(r["tile_id"]) not in analysis.views
    )
    analysis.dock.select_tile(other)
    assert other in analysis.views
    assert analysis.views[other].group.isVisible()
    assert "t0.350" in analysis.views[other].prediction.source()
    dock = analysis.dock
    analysis.close()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert sip.isdeleted(dock)  # the dock is gone, the layers stay in the project
    assert len(QgsProject.instance().mapLayers()) == 4 * 4 + 2  # + plants, false detections
    assert Path(tmp_path).is_dir()


def test_reopening_replaces_no_file_a_layer_has_open(
    qgis_iface, qgis_new_project, split_predictions, tmp_path
):
    """A second analysis into the same folder while the first one's layers are still in
    the project: new names, and the first one's files stay as they were."""
    from solar_seg_plugin.analysis.controller import ErrorAnalysis

    first = ErrorAnalysis(qgis_iface, split_predictions, tmp_path, initial_tiles=1)
    view = next(iter(first.views.values()))
    paths = [Path(x.source()) for x in (view.image, view.truth, view.prediction, view.errors)]
    states = [file_state(p) for p in paths]
    second = ErrorAnalysis(qgis_iface, split_predictions, tmp_path, initial_tiles=1)
    other = next(iter(second.views.values()))
    assert [file_state(p) for p in paths] == states
    assert {
        x.source() for x in (other.image, other.truth, other.prediction, other.errors)
    }.isdisjoint(str(p) for p in paths)
    first.close()
    second.close()


def test_no_engine_package_in_qgis_process(tiny_run, predictions_dir, tmp_path):
    """The whole Inspect workflow (dialog, engine task, analysis, threshold change) and the
    scene overlay, in a fresh QGIS process: none of torch, rasterio, smp, onnxruntime."""
    script = f"""
import sys, time
from pathlib import Path
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
from qgis.PyQt.QtCore import QCoreApplication
from solar_seg_plugin import tasks
from solar_seg_plugin.analysis.controller import ErrorAnalysis
from solar_seg_plugin.analysis.rasters import write_scene_errors
from solar_seg_plugin.dialogs.inspect_dialog import InspectDialog

def spin(cond, what):
    end = time.monotonic() + 180
    while not cond():
        assert time.monotonic() < end, what
        QCoreApplication.processEvents(); time.sleep(0.02)

dlg = InspectDialog(None)
dlg.set_model({str(tiny_run)!r})
assert dlg.meta is not None and dlg.rgb_edit.text() == "4,3,2", dlg.errors["model"].text()
dlg.out_edit.setText({str(tmp_path / "inspect")!r})
done = []
task = tasks.PredictSplitTask({str(tiny_run)!r}, None, "test", None, "cpu", {str(predictions_dir)!r})
task.done.connect(done.append)
tasks.start(task)
spin(lambda: done, "predict-split")
assert done[0], task.error_message()
analysis = ErrorAnalysis(None, task.result, Path({str(tmp_path / "inspect")!r}), initial_tiles=2)
analysis.set_threshold(0.4)
spin(lambda: not analysis.busy and analysis.shown_threshold == 0.4, "overlays")
bad = [m for m in {FORBIDDEN!r} if m in sys.modules]
assert not bad, bad
print("clean", len(analysis.views))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clean 2" in proc.stdout
