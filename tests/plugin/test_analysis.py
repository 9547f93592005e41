"""Inspect Errors on real tiles: layers whose pixels match the engine's confusion counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent

from .conftest import run_task


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


@pytest.fixture()
def split_predictions(qgis_app, tiny_run):
    from solar_seg_plugin.tasks import PredictSplitTask

    task = PredictSplitTask(tiny_run, split="test", device="cpu")
    assert run_task(task), task.error_message()
    return task.result


def test_error_layers_match_engine_counts(
    qgis_iface, qgis_new_project, split_predictions, tmp_path
):
    from solar_seg_plugin.analysis.controller import ErrorAnalysis
    from solar_seg_plugin.analysis.errors import FN, FP, TN, TP
    from solar_seg_plugin.core.evaluation.metrics import confusion

    data = split_predictions
    assert data.split == "test" and len(data.predictions) == 12
    analysis = ErrorAnalysis(
        qgis_iface, data.model_path, "test", data.meta, data.predictions, tmp_path,
        rgb_bands=[4, 3, 2], initial_tiles=3,
    )  # fmt: skip
    assert len(analysis.views) == 3
    # the table lists every tile, worst IoU first
    table = analysis.dock.table
    assert table.rowCount() == 12
    ious = [analysis.dock.row_values(r)["iou"] for r in range(12)]
    assert ious == sorted(ious)

    checked = 0
    for tile_id, view in analysis.views.items():
        pred = data.predictions[view.index]
        counts = confusion(pred.prob, pred.tile.mask, pred.tile.valid, analysis.threshold)
        errors, truth, prediction = (
            layer_array(view.errors),
            layer_array(view.truth),
            layer_array(view.prediction),
        )
        h, w = pred.tile.mask.shape
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

    # a new threshold recomputes table, totals and the overlays (no inference)
    tile_id, view = next(iter(analysis.views.items()))
    pred = data.predictions[view.index]
    for threshold in (0.05, 0.95):
        analysis.set_threshold(threshold)
        counts = confusion(pred.prob, pred.tile.mask, pred.tile.valid, threshold)
        errors = layer_array(view.errors)
        assert int((errors == FP).sum()) == counts.fp
        assert int((errors == TP).sum()) == counts.tp
        assert analysis.row(tile_id)["fp"] == counts.fp
        assert f"threshold {threshold:.3f}" in analysis.dock.totals.text()
    with rasterio.open(view.files.errors) as src:
        assert src.crs is None  # no invented CRS on disk

    # selecting a row of a tile not yet on the map adds its group and zooms to it
    other = next(
        str(r["tile_id"]) for r in analysis.rows if str(r["tile_id"]) not in analysis.views
    )
    analysis.dock.select_tile(other)
    assert other in analysis.views
    assert analysis.views[other].group.isVisible()
    dock = analysis.dock
    analysis.close()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert sip.isdeleted(dock)  # the dock is gone, the layers stay in the project
    assert len(QgsProject.instance().mapLayers()) == 4 * 4
    assert Path(tmp_path).is_dir()
