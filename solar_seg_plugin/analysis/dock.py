"""The error-analysis dock: split totals, a threshold slider, a sortable per-tile table
(worst IoU first) and a Plants tab (the engine's plants of the split, missed first). It
only displays; :class:`~.controller.ErrorAnalysis` computes."""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..common import tr

COLUMNS = [
    ("tile_id", "Tile"),
    ("iou", "IoU"),
    ("f1", "F1"),
    ("tp", "TP"),
    ("fp", "FP"),
    ("fn", "FN"),
    ("positive_pixels", "Positive px"),
]
IOU_COLUMN = 1
# The Plants tab (rows of the engine's plants.csv); sorted by coverage, so missed plants
# (coverage under one half) come first.
PLANT_COLUMNS = [
    ("id", "Plant"),
    ("status", "Status"),
    ("coverage", "Covered"),
    ("iou", "IoU"),
    ("reference_ha", "Reference ha"),
    ("predicted_ha", "Predicted ha"),
    ("tile", "Tile"),
]
COVERAGE_COLUMN = 2
MISSED_COLOR = QColor(190, 0, 150)
SLIDER_STEPS = 100
DEBOUNCE_MS = 250


class SortItem(QTableWidgetItem):
    """A cell that sorts by its raw value (numbers numerically), shows it formatted."""

    def __init__(self, value: Any) -> None:
        if isinstance(value, float):
            text = f"{value:.3f}"
        else:
            text = str(value)
        super().__init__(text)
        self.setData(Qt.UserRole, value)
        self.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled)
        if isinstance(value, int | float):
            self.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(Qt.UserRole), other.data(Qt.UserRole)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class ErrorDock(QDockWidget):
    thresholdChanged = pyqtSignal(float)  # noqa: N815 (Qt naming)
    tileSelected = pyqtSignal(str)  # noqa: N815
    addAllRequested = pyqtSignal()  # noqa: N815
    plantSelected = pyqtSignal(str, str)  # noqa: N815 (plant id, tile id)

    def __init__(self, title: str, threshold: float, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.setObjectName("SolarSegErrorDock")
        self.setMinimumWidth(430)
        body = QWidget()
        lay = QVBoxLayout(body)
        self.totals = QLabel()
        self.totals.setObjectName("totals")
        self.totals.setWordWrap(True)
        self.totals.setTextFormat(Qt.RichText)
        lay.addWidget(self.totals)

        row = QHBoxLayout()
        row.addWidget(QLabel(tr("Threshold")))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(3)
        self.spin.setSingleStep(0.01)
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        lay.addLayout(row)
        self.set_threshold(threshold)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("tiles")
        self.table.setHorizontalHeaderLabels([tr(label) for _, label in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(IOU_COLUMN, Qt.AscendingOrder)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        tiles_page = QWidget()
        tiles_lay = QVBoxLayout(tiles_page)
        tiles_lay.setContentsMargins(0, 4, 0, 0)
        tiles_lay.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.add_all_button = QPushButton(tr("Add every tile to the map"))
        buttons.addWidget(self.add_all_button)
        buttons.addStretch(1)
        tiles_lay.addLayout(buttons)
        self.tabs.addTab(tiles_page, tr("Tiles"))

        plants_page = QWidget()
        plants_lay = QVBoxLayout(plants_page)
        plants_lay.setContentsMargins(0, 4, 0, 0)
        self.plant_totals = QLabel(tr("No plants (predicted by an older engine)."))
        self.plant_totals.setObjectName("plantTotals")
        self.plant_totals.setWordWrap(True)
        self.plant_totals.setTextFormat(Qt.RichText)
        plants_lay.addWidget(self.plant_totals)
        self.plants = QTableWidget(0, len(PLANT_COLUMNS))
        self.plants.setObjectName("plants")
        self.plants.setHorizontalHeaderLabels([tr(label) for _, label in PLANT_COLUMNS])
        self.plants.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.plants.setSelectionMode(QAbstractItemView.SingleSelection)
        self.plants.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.plants.verticalHeader().setVisible(False)
        self.plants.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.plants.setSortingEnabled(True)
        self.plants.sortByColumn(COVERAGE_COLUMN, Qt.AscendingOrder)
        plants_lay.addWidget(self.plants, 1)
        self.tabs.addTab(plants_page, tr("Plants"))
        lay.addWidget(self.tabs, 1)
        self.setWidget(body)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: self.thresholdChanged.emit(self.spin.value()))
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.add_all_button.clicked.connect(self.addAllRequested.emit)
        self.plants.itemSelectionChanged.connect(self._plant_selection_changed)

    # --- threshold -------------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Show ``value`` without emitting thresholdChanged."""
        for w in (self.slider, self.spin):
            w.blockSignals(True)
        self.spin.setValue(value)
        self.slider.setValue(round(value * SLIDER_STEPS))
        for w in (self.slider, self.spin):
            w.blockSignals(False)

    def _slider_moved(self, value: int) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(value / SLIDER_STEPS)
        self.spin.blockSignals(False)
        self._debounce.start()

    def _spin_changed(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(value * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self._debounce.start()

    # --- table -----------------------------------------------------------------------
    def show_rows(self, rows: list[dict]) -> None:
        """Fill the table, keeping the sort column/order and the selected tile."""
        selected = self.selected_tile()
        header = self.table.horizontalHeader()
        column, order = header.sortIndicatorSection(), header.sortIndicatorOrder()
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (key, _) in enumerate(COLUMNS):
                value = row.get(key)
                self.table.setItem(r, c, SortItem(str(value) if key == "tile_id" else value))
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(column, order)
        if selected is not None:
            for r in range(self.table.rowCount()):
                if self.table.item(r, 0).text() == selected:
                    self.table.selectRow(r)
                    break
        self.table.blockSignals(False)

    def row_values(self, r: int) -> dict[str, Any]:
        return {key: self.table.item(r, c).data(Qt.UserRole) for c, (key, _) in enumerate(COLUMNS)}

    def selected_tile(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.table.item(rows[0].row(), 0).text() if rows else None

    def select_tile(self, tile_id: str) -> None:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() == tile_id:
                self.table.selectRow(r)
                return

    def _selection_changed(self) -> None:
        tile = self.selected_tile()
        if tile is not None:
            self.tileSelected.emit(tile)

    def show_totals(self, split: str, tiles: int, threshold: float, metrics: dict) -> None:
        m = metrics
        self.totals.setText(
            tr(
                "<b>{split} split</b>, {tiles} tiles, threshold {th:.3f}<br>"
                "<b>IoU {iou:.4f}</b> · F1 {f1:.4f} · precision {p:.4f} · recall {r:.4f}<br>"
                "TP {tp:,} · FP {fp:,} · FN {fn:,} · TN {tn:,}"
            ).format(
                split=split,
                tiles=tiles,
                th=threshold,
                iou=m["iou"],
                f1=m["f1"],
                p=m["precision"],
                r=m["recall"],
                tp=m["tp"],
                fp=m["fp"],
                fn=m["fn"],
                tn=m["tn"],
            )  # fmt: skip
        )

    # --- plants ------------------------------------------------------------------------
    def show_plants(self, rows: list[dict], summary: dict | None, threshold: float) -> None:
        """The plants table (rows of the engine's plants.csv) and their totals."""
        self.plants.blockSignals(True)
        self.plants.setSortingEnabled(False)
        self.plants.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = {**row, "status": tr("found") if row["found"] else tr("missed")}
            for c, (key, _) in enumerate(PLANT_COLUMNS):
                value = values.get(key)
                item = SortItem(str(value) if key in ("id", "tile", "status") else value)
                if not row["found"]:
                    item.setForeground(QBrush(MISSED_COLOR))
                self.plants.setItem(r, c, item)
        self.plants.setSortingEnabled(True)
        self.plants.sortByColumn(COVERAGE_COLUMN, Qt.AscendingOrder)
        self.plants.blockSignals(False)
        self.tabs.setTabText(1, tr("Plants ({})").format(len(rows)))
        if summary is None:
            return
        p = summary
        self.plant_totals.setText(
            tr(
                "<b>{found} of {plants} plants found</b>, {missed} missed · {false} false "
                "detection(s) of {objects} predicted objects<br>"
                "plant precision {pp:.3f} · recall {pr:.3f} · F1 {pf:.3f} · reference "
                "{ref:.2f} ha, predicted {pred:.2f} ha<br>"
                "<i>at threshold {th:.3f}: a plant is found when at least half of it is "
                "predicted</i>"
            ).format(
                found=p["found"],
                plants=p["plants"],
                missed=p["missed"],
                false=p["false_detections"],
                objects=p["predicted_objects"],
                pp=p["precision"],
                pr=p["recall"],
                pf=p["f1"],
                ref=p["reference_ha"],
                pred=p["predicted_ha"],
                th=threshold,
            )  # fmt: skip
        )

    def plant_values(self, r: int) -> dict[str, Any]:
        return {
            key: self.plants.item(r, c).data(Qt.UserRole)
            for c, (key, _) in enumerate(PLANT_COLUMNS)
        }

    def select_plant(self, plant_id: str) -> None:
        for r in range(self.plants.rowCount()):
            if self.plants.item(r, 0).text() == plant_id:
                self.plants.selectRow(r)
                return

    def _plant_selection_changed(self) -> None:
        model = self.plants.selectionModel()
        rows = model.selectedRows() if model else []
        if rows:
            values = self.plant_values(rows[0].row())
            self.plantSelected.emit(str(values["id"]), str(values["tile"]))
