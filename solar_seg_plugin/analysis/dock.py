"""The error-analysis dock: split totals, a threshold slider and a sortable per-tile table
(worst IoU first). It only displays; :class:`~.controller.ErrorAnalysis` computes."""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
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
        lay.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.add_all_button = QPushButton(tr("Add every tile to the map"))
        buttons.addWidget(self.add_all_button)
        buttons.addStretch(1)
        lay.addLayout(buttons)
        self.setWidget(body)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: self.thresholdChanged.emit(self.spin.value()))
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.add_all_button.clicked.connect(self.addAllRequested.emit)

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
