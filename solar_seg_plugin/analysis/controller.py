"""Inspect Errors: turns a split's predictions (``predict-split``'s files, read with
numpy) into per-tile layer groups on the map and a dock with the per-tile table; a new
threshold recomputes predictions, overlays, table and totals from the kept
probabilities (no new inference).

Nothing here imports torch or rasterio: the numbers come from the engine's numpy-only
scoring (:mod:`core.evaluation.scoring`), the files are written with QGIS's GDAL.

Layers are added lazily: the worst tiles first (``initial_tiles``), any other tile when
its row is selected or when "Add every tile" is pressed, so a split of hundreds of
tiles stays quick to open.

The Plants tab shows the engine's plants of the split (``plants.csv`` of
``predict-split``, at the model's threshold, missed first), and the map gets a
``plants`` layer (found green, missed magenta) and a ``false detections`` layer drawn
from the same tiles (:mod:`.plants`); a row zooms to its plant. A new threshold
recounts the plants with the engine's numpy code (:func:`core.evaluation.plants.
plants_of_split`) and points the two layers at a new GeoPackage.

A new threshold never rewrites a file a layer has open: a background task writes the
prediction and overlay of every tile on the map into new files, then (on the GUI
thread) the layers are pointed at them with ``setDataSource`` and the old files are
deleted once no layer of the project uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDataProvider,
    QgsLayerTreeGroup,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsTask,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal

from ..common import log, safe_slot, tr
from ..core.evaluation.plants import plant_records, plants_of_split
from ..core.evaluation.scoring import evaluate_predictions
from ..core.evaluation.split_files import read_plants
from .dock import ErrorDock
from .layers import apply_style, load_raster, load_vector, style_rgb
from .plants import FALSE_LAYER, PLANTS_LAYER, write_plant_layers
from .rasters import (
    GRID_CRS,
    TileFiles,
    TileLayout,
    fresh_path,
    threshold_stems,
    write_threshold_files,
    write_tile,
)


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


@dataclass
class OverlayJob:
    """New prediction and overlay files of one tile at one threshold."""

    tile_id: str
    view: TileView
    prediction: Path
    errors: Path


class OverlayTask(QgsTask):
    """Writes the prediction and error overlay of tiles at a threshold into new files
    (numpy + GDAL, in a worker thread); ``written`` is emitted on the GUI thread."""

    written = pyqtSignal(bool)

    def __init__(self, jobs: list[OverlayJob], tiles: list, threshold: float) -> None:
        super().__init__(tr("SolarSeg: error overlays at threshold {:.3f}").format(threshold),
                         QgsTask.CanCancel)  # fmt: skip
        self.jobs, self.tiles, self.threshold = jobs, tiles, threshold
        self.done: list[OverlayJob] = []
        self.error = ""

    def run(self) -> bool:
        try:
            for i, (job, tile) in enumerate(zip(self.jobs, self.tiles, strict=True)):
                if self.isCanceled():
                    return False
                write_threshold_files(job.prediction, job.errors, job.view.files.georef,
                                      tile.prob, tile.mask, tile.valid, self.threshold)  # fmt: skip
                self.done.append(job)
                self.setProgress(100.0 * (i + 1) / len(self.jobs))
        except Exception as exc:  # reported in finished(), never raised in Qt
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def finished(self, ok: bool) -> None:  # noqa: D401 (QgsTask API)
        self.written.emit(ok)


class ErrorAnalysis(QObject):
    """The error analysis of one model on one split."""

    closed = pyqtSignal()
    overlaysUpdated = pyqtSignal(float)  # noqa: N815 (Qt naming): layers show this threshold

    def __init__(
        self,
        iface: Any,
        data: Any,
        out_dir: Path,
        threshold: float | None = None,
        initial_tiles: int = 24,
        project: QgsProject | None = None,
    ) -> None:
        """``data``: :class:`~..tasks.SplitPredictions` (the split's tiles and index)."""
        super().__init__()
        if not data.tiles:
            raise ValueError(tr("the {} split has no tiles").format(data.split))
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.model_path, self.split, self.index = Path(data.model_path), data.split, data.index
        self.tiles = data.tiles
        self.by_id = {t.tile_id: i for i, t in enumerate(self.tiles)}
        self.out_dir = Path(out_dir).resolve()
        self.rgb_bands = list(self.index["rgb_bands"])
        self.threshold = float(self.index["threshold"] if threshold is None else threshold)
        self.skip_blank = bool(self.index.get("skip_blank", False))
        self.layout = TileLayout([t.shape for t in self.tiles])
        self.grid_crs = QgsCoordinateReferenceSystem(GRID_CRS)
        self.views: dict[str, TileView] = {}
        self.rows: list[dict] = []
        self.result: Any = None
        self.shown_threshold = self.threshold  # what the layers on the map show
        self._task: OverlayTask | None = None
        self._pending: set[Path] = set()  # names given to files being written
        self._stale: set[Path] = set()  # old files still to delete
        name = self.model_path.parent.name if self.model_path.is_file() else self.model_path.name
        self.title = tr("SolarSeg errors: {} ({})").format(name, self.split)
        self._root: QgsLayerTreeGroup | None = None
        self.project.layersWillBeRemoved.connect(self._layers_removed)
        self.dock = ErrorDock(
            self.title,
            self.threshold,
            iface.mainWindow() if iface is not None else None,
        )
        self.dock.thresholdChanged.connect(safe_slot(self.set_threshold))
        self.dock.tileSelected.connect(safe_slot(self.select_tile))
        self.dock.addAllRequested.connect(safe_slot(lambda *_: self.add_all()))
        self.dock.plantSelected.connect(safe_slot(self.select_plant))
        self.evaluate()
        self.plant_layers: dict[str, Any] = {}
        self.plant_rows = read_plants(data.folder, self.index) if data.folder else []
        self.dock.show_plants(self.plant_rows, self.index.get("plants"),
                              float(self.index["threshold"]))  # fmt: skip
        if self.plant_rows:
            self.add_plant_layers()
        for row in self.worst_rows(initial_tiles):
            self.ensure_tile(str(row["tile_id"]))
        if iface is not None:
            iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.zoom_to([v.files.georef.extent() for v in self.views.values()], self.views)
        self.dock.show()

    @property
    def predictions(self) -> list:
        """The split's tiles (``tile_id``, ``prob``, ``mask``, ``valid``), in split order."""
        return self.tiles

    @property
    def busy(self) -> bool:
        """New overlay files are being written (the layers still show the old ones)."""
        return self._task is not None

    # --- numbers -----------------------------------------------------------------------
    def evaluate(self) -> None:
        """Counts, metrics and per-tile rows at the current threshold (engine code)."""
        self.result = evaluate_predictions(self.tiles, self.threshold, self.skip_blank)
        self.rows = self.result.rows
        self.dock.show_rows(self.rows)
        self.dock.show_totals(self.split, len(self.tiles), self.threshold, self.result.metrics)

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

    def used_files(self) -> set[Path]:
        """Files some layer of the project reads."""
        used = set()
        for layer in self.project.mapLayers().values():
            source = layer.source().split("|")[0]
            if source:
                used.add(Path(source))
        return used

    def _remove_unused(self, paths: set[Path]) -> None:
        """Delete files no layer uses (kept for a later try when that fails)."""
        used = self.used_files() | self._pending
        for path in paths:
            if path in used:
                continue
            try:
                path.unlink(missing_ok=True)
                self._stale.discard(path)
            except OSError:  # still open somewhere (Windows): try again later
                self._stale.add(path)

    def ensure_tile(self, tile_id: str) -> TileView:
        """The tile's layer group, created (files + layers) on first use."""
        view = self.views.get(tile_id)
        if view is not None:
            return view
        index = self.by_id[tile_id]
        tile = self.tiles[index]
        folder = self.out_dir / _safe(tile_id)
        if folder.is_dir():  # files of an earlier analysis that no layer shows any more
            self._remove_unused(set(folder.glob("*.tif")))
        georef = self.layout.georef(index, tile.crs_wkt, tile.geotransform, tile.shape)
        files = write_tile(
            folder, tile_id, tile.rgb(), tile.mask, tile.valid, tile.prob,
            self.threshold, georef, self._pending,
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
        """New table, totals and group names at once; new overlay files in the
        background, then the layers switch to them (:attr:`overlaysUpdated`)."""
        self.threshold = float(threshold)
        self.dock.set_threshold(self.threshold)
        self.evaluate()
        for tile_id, view in self.views.items():
            view.group.setName(self._group_name(tile_id))
        if self.plant_rows or self.plant_layers:
            self.count_plants()
        self._refresh_overlays()

    def count_plants(self) -> None:
        """Plants table, totals and layers at the current threshold."""
        metrics = plants_of_split(self.tiles, self.threshold)
        self.plant_rows = plant_records(metrics)
        self.dock.show_plants(self.plant_rows, metrics.summary(), self.threshold)
        self.add_plant_layers()

    def _refresh_overlays(self) -> None:
        """Start writing the overlays at the current threshold (one task at a time: a
        threshold chosen meanwhile is written when the running task ends)."""
        if self._task is not None:
            return
        if self.shown_threshold == self.threshold or not self.views:
            self.shown_threshold = self.threshold
            return
        pred_stem, err_stem = threshold_stems(self.threshold)
        jobs = []
        for tile_id, view in self.views.items():
            folder = view.files.folder
            pred = fresh_path(folder, pred_stem, self._pending)
            self._pending.add(pred)
            err = fresh_path(folder, err_stem, self._pending)
            self._pending.add(err)
            jobs.append(OverlayJob(tile_id, view, pred, err))
        task = OverlayTask(jobs, [self.tiles[j.view.index] for j in jobs], self.threshold)
        task.written.connect(safe_slot(lambda ok, t=task: self._overlays_written(t, ok)))
        self._task = task
        QgsApplication.taskManager().addTask(task)

    def _overlays_written(self, task: OverlayTask, ok: bool) -> None:
        """GUI thread: point the layers at the new files, delete the old ones."""
        if task is not self._task:
            return
        self._task = None
        written = {p for j in task.jobs for p in (j.prediction, j.errors)}
        self._pending -= written
        if task.error:
            log(f"error overlays at threshold {task.threshold:.3f} failed: {task.error}")
        if not ok or task.threshold != self.threshold:  # failed, or already outdated
            self._remove_unused(written)
            self._refresh_overlays()
            return
        old: set[Path] = set(self._stale)
        for job in task.jobs:
            view = job.view
            if self.views.get(job.tile_id) is not view:  # removed by the user meanwhile
                self._remove_unused({job.prediction, job.errors})
                continue
            old |= {view.files.prediction, view.files.errors}
            _swap_source(view.prediction, job.prediction)
            _swap_source(view.errors, job.errors)
            view.files.prediction, view.files.errors = job.prediction, job.errors
        self.shown_threshold = task.threshold
        self._remove_unused(old)
        self.overlaysUpdated.emit(self.shown_threshold)

    def add_plant_layers(self) -> None:
        """The split's plants (found/missed) and false detections as two layers on top
        of the analysis group, at the current threshold (:attr:`plant_rows`), in a new
        GeoPackage: layers already on the map are pointed at it (their style kept) and
        the old file is deleted once no layer reads it."""
        georefs = [self.layout.georef(i, t.crs_wkt, t.geotransform, t.shape)
                   for i, t in enumerate(self.tiles)]  # fmt: skip
        path, n = self.out_dir / "plants.gpkg", 1
        used = self.used_files()
        while path in used:
            n += 1
            path = self.out_dir / f"plants_{n}.gpkg"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        written = write_plant_layers(path, self.tiles, georefs, self.plant_rows, self.threshold)
        kept = {k: v for k, v in self.plant_layers.items() if not sip.isdeleted(v)}
        if len(kept) == 2 and all(self.project.mapLayer(v.id()) for v in kept.values()):
            old = {Path(v.source().split("|")[0]) for v in kept.values()}
            for name, layer in kept.items():
                layer.setDataSource(f"{written.path}|layername={name}", layer.name(), "ogr",
                                    QgsDataProvider.ProviderOptions(), False)  # fmt: skip
                layer.triggerRepaint()
            self._remove_unused(old)
            return
        self.plant_layers = {}
        for name, title, qml in (
            (FALSE_LAYER, tr("false detections"), "false_detections.qml"),
            (PLANTS_LAYER, tr("plants (found green, missed magenta)"), "plants_found_missed.qml"),
        ):
            layer = load_vector(f"{written.path}|layername={name}", title)
            apply_style(layer, qml)
            self.project.addMapLayer(layer, False)
            self.root.insertLayer(0, layer)
            self.plant_layers[name] = layer

    def select_plant(self, plant_id: str, tile_id: str) -> None:
        """Show the plant's tile and zoom the map to the plant."""
        if tile_id in self.by_id:
            self.select_tile(tile_id)
        layer = self.plant_layers.get(PLANTS_LAYER)
        if layer is None or sip.isdeleted(layer) or self.iface is None:
            return
        from qgis.core import QgsFeatureRequest

        escaped = plant_id.replace("'", "''")
        request = QgsFeatureRequest().setFilterExpression(f"\"id\" = '{escaped}'")
        feature = next(layer.getFeatures(request), None)
        if feature is None or not feature.hasGeometry():
            return
        canvas = self.iface.mapCanvas()
        rect = feature.geometry().boundingBox()
        dest = canvas.mapSettings().destinationCrs()
        if dest.isValid() and dest != layer.crs():
            rect = QgsCoordinateTransform(layer.crs(), dest, self.project).transformBoundingBox(
                rect
            )
        rect.scale(1.6)
        canvas.setExtent(rect)
        canvas.refresh()

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
        if self._task is not None:
            task, self._task = self._task, None
            try:
                task.written.disconnect()
                task.cancel()
            except (TypeError, RuntimeError):  # already finished and deleted
                pass
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


def _swap_source(layer: QgsRasterLayer, path: Path) -> None:
    """Point ``layer`` at a new file of the same kind, keeping its style and CRS."""
    crs = layer.crs()
    renderer = layer.renderer().clone() if layer.renderer() is not None else None
    options = QgsDataProvider.ProviderOptions()
    layer.setDataSource(str(path), layer.name(), "gdal", options, False)
    if crs.isValid() and not layer.crs().isValid():
        layer.setCrs(crs)
    if renderer is not None:
        layer.setRenderer(renderer)
    layer.triggerRepaint()
