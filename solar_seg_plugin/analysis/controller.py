"""Inspect Errors: turns a split's kept probabilities into per-tile layer groups on the
map and a dock with the per-tile table; a new threshold recomputes predictions,
overlays, table and totals from the kept probabilities (no new inference).

Layers are added lazily: the worst tiles first (``initial_tiles``), any other tile when
its row is selected or when "Add every tile" is pressed, so a split of hundreds of
tiles stays quick to open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsLayerTreeGroup,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal

from ..common import tr
from .dock import ErrorDock
from .layers import apply_style, load_raster, style_rgb
from .rasters import GRID_CRS, TileFiles, TileLayout, write_threshold_layers, write_tile


@dataclass
class TileView:
    """One tile on the map: its files, layer group and layers."""

    index: int
    files: TileFiles
    group: QgsLayerTreeGroup
    image: QgsRasterLayer
    truth: QgsRasterLayer
    prediction: QgsRasterLayer
    errors: QgsRasterLayer
    layer_ids: tuple[str, ...] = ()


class ErrorAnalysis(QObject):
    """The error analysis of one model on one split."""

    closed = pyqtSignal()

    def __init__(
        self,
        iface: Any,
        model_path: Path,
        split: str,
        meta: Any,
        predictions: list,
        out_dir: Path,
        rgb_bands: list[int],
        threshold: float | None = None,
        initial_tiles: int = 24,
        project: QgsProject | None = None,
    ) -> None:
        super().__init__()
        if not predictions:
            raise ValueError(tr("the {} split has no tiles").format(split))
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.model_path, self.split, self.meta = Path(model_path), split, meta
        self.predictions = predictions
        self.by_id = {str(p.pair.id): i for i, p in enumerate(predictions)}
        self.out_dir = Path(out_dir)
        self.rgb_bands = rgb_bands
        self.threshold = float(meta.threshold if threshold is None else threshold)
        self.skip_blank = bool((meta.config or {}).get("data", {}).get("skip_blank_in_metrics"))
        self.layout = TileLayout([p.tile.mask.shape for p in predictions])
        self.grid_crs = QgsCoordinateReferenceSystem(GRID_CRS)
        self.views: dict[str, TileView] = {}
        self.rows: list[dict] = []
        self.result: Any = None
        name = self.model_path.parent.name if self.model_path.is_file() else self.model_path.name
        self.title = tr("SolarSeg errors: {} ({})").format(name, split)
        self._root: QgsLayerTreeGroup | None = None
        self.project.layersWillBeRemoved.connect(self._layers_removed)
        self.dock = ErrorDock(
            self.title,
            self.threshold,
            iface.mainWindow() if iface is not None else None,
        )
        self.dock.thresholdChanged.connect(self.set_threshold)
        self.dock.tileSelected.connect(self.select_tile)
        self.dock.addAllRequested.connect(self.add_all)
        self.evaluate()
        for row in self.worst_rows(initial_tiles):
            self.ensure_tile(str(row["tile_id"]))
        if iface is not None:
            iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.zoom_to([v.files.georef.extent() for v in self.views.values()], self.views)
        self.dock.show()

    # --- numbers -----------------------------------------------------------------------
    def evaluate(self) -> None:
        """Counts, metrics and per-tile rows at the current threshold (engine code)."""
        from ..core.evaluation.evaluate import evaluate_predictions

        self.result = evaluate_predictions(self.predictions, self.threshold, self.skip_blank)
        self.rows = self.result.rows
        self.dock.show_rows(self.rows)
        self.dock.show_totals(
            self.split, len(self.predictions), self.threshold, self.result.metrics
        )

    def worst_rows(self, n: int) -> list[dict]:
        return sorted(self.rows, key=lambda r: (r["iou"], -r["fn"] - r["fp"]))[: max(0, n)]

    def row(self, tile_id: str) -> dict:
        return next(r for r in self.rows if str(r["tile_id"]) == tile_id)

    # --- layers ------------------------------------------------------------------------
    @property
    def root(self) -> QgsLayerTreeGroup:
        """The analysis' top group (re-created if the user removed it)."""
        if self._root is None or sip.isdeleted(self._root):
            self._root = self.project.layerTreeRoot().insertGroup(0, self.title)
        return self._root

    def _layers_removed(self, ids: list[str]) -> None:
        """Forget tiles whose layers the user removed (they are re-created on demand)."""
        gone = set(ids)
        for tile_id, view in list(self.views.items()):
            if gone & set(view.layer_ids):
                del self.views[tile_id]
                if not sip.isdeleted(view.group) and view.group.parent() is not None:
                    view.group.parent().removeChildNode(view.group)

    def ensure_tile(self, tile_id: str) -> TileView:
        """The tile's layer group, created (files + layers) on first use."""
        view = self.views.get(tile_id)
        if view is not None:
            return view
        index = self.by_id[tile_id]
        pred = self.predictions[index]
        georef = self.layout.georef(index, pred.pair.image)
        files = write_tile(
            self.out_dir / _safe(tile_id), tile_id, pred.pair.image, pred.tile.mask,
            pred.tile.valid, pred.prob, self.threshold, self.rgb_bands, georef,
        )  # fmt: skip
        crs = self.grid_crs if georef.synthetic else None
        errors = load_raster(files.errors, tr("errors (FP yellow, FN green, TP white)"), crs)
        prediction = load_raster(files.prediction, tr("prediction"), crs)
        truth = load_raster(files.truth, tr("ground truth"), crs)
        image = load_raster(files.image, tr("image (bands {})").format(_bands(self.rgb_bands)), crs)
        apply_style(errors, "error.qml")
        apply_style(prediction, "prediction.qml")
        apply_style(truth, "ground_truth.qml")
        style_rgb(image, files.stretch)
        group = self.root.addGroup(self._group_name(tile_id))
        for layer, visible in ((errors, True), (prediction, False), (truth, False), (image, True)):
            self.project.addMapLayer(layer, False)
            group.addLayer(layer).setItemVisibilityChecked(visible)
        group.setExpanded(False)
        ids = tuple(x.id() for x in (image, truth, prediction, errors))
        view = TileView(index, files, group, image, truth, prediction, errors, ids)
        self.views[tile_id] = view
        return view

    def _group_name(self, tile_id: str) -> str:
        return tr("tile {} · IoU {:.3f}").format(tile_id, self.row(tile_id)["iou"])

    def add_all(self) -> None:
        for row in self.rows:
            self.ensure_tile(str(row["tile_id"]))

    def set_threshold(self, threshold: float) -> None:
        """New predictions, overlays, table and totals from the kept probabilities."""
        self.threshold = float(threshold)
        self.dock.set_threshold(self.threshold)
        self.evaluate()
        for tile_id, view in self.views.items():
            pred = self.predictions[view.index]
            write_threshold_layers(
                view.files, pred.prob, pred.tile.mask, pred.tile.valid, self.threshold
            )
            for layer in (view.prediction, view.errors):
                layer.dataProvider().reloadData()
                layer.triggerRepaint()
            view.group.setName(self._group_name(tile_id))

    def select_tile(self, tile_id: str) -> None:
        """Show the tile's group (created if needed) and zoom the map to the tile."""
        view = self.ensure_tile(tile_id)
        view.group.setItemVisibilityChecked(True)
        view.group.setExpanded(True)
        self.root.setItemVisibilityChecked(True)
        self.zoom_to([view.files.georef.extent()], {tile_id: view})

    def zoom_to(self, extents: list[tuple[float, ...]], views: dict[str, TileView]) -> None:
        """Zoom the map canvas to the union of tile extents (in the canvas CRS)."""
        if self.iface is None or not extents:
            return
        canvas = self.iface.mapCanvas()
        dest = canvas.mapSettings().destinationCrs()
        total = QgsRectangle()
        for extent, view in zip(extents, views.values(), strict=True):
            rect = QgsRectangle(*extent)
            crs = view.errors.crs()
            if dest.isValid() and crs.isValid() and dest != crs:
                rect = QgsCoordinateTransform(crs, dest, self.project).transformBoundingBox(rect)
            if total.isEmpty():
                total = rect
            else:
                total.combineExtentWith(rect)
        total.scale(1.15)
        canvas.setExtent(total)
        canvas.refresh()

    def close(self) -> None:
        """Remove the dock (layers stay in the project: they are the user's now)."""
        try:
            self.project.layersWillBeRemoved.disconnect(self._layers_removed)
        except TypeError:
            pass
        if self.dock is not None:
            if self.iface is not None:
                self.iface.removeDockWidget(self.dock)
            self.dock.close()
            self.dock.deleteLater()
            self.dock = None
            self.closed.emit()


def _safe(tile_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tile_id) or "tile"


def _bands(bands: list[int]) -> str:
    return ",".join(str(b) for b in bands)
