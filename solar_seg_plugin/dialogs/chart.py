"""A small live chart of loss and IoU per epoch, painted with QPainter (no matplotlib
needed inside QGIS). Losses use the left axis (auto-scaled), IoU the right one (0..1)."""

from __future__ import annotations

import math

from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

from ..common import tr

# series key -> (label, colour, axis)
SERIES = {
    "train_loss": ("train loss", QColor(31, 119, 180), "loss"),
    "val_loss": ("val loss", QColor(255, 127, 14), "loss"),
    "train_iou": ("train IoU", QColor(44, 160, 44), "iou"),
    "val_iou": ("val IoU", QColor(214, 39, 40), "iou"),
}


class HistoryChart(QWidget):
    """Plots the engine's ``history_row`` dicts as they arrive."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []
        self.setMinimumSize(320, 180)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def clear(self) -> None:
        self.rows = []
        self.update()

    def add_row(self, row: dict) -> None:
        self.rows.append(dict(row))
        self.update()

    def series(self, key: str) -> list[tuple[int, float]]:
        out = []
        for r in self.rows:
            v = r.get(key)
            if isinstance(v, int | float) and math.isfinite(v):
                out.append((int(r.get("epoch", len(out) + 1)), float(v)))
        return out

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor(255, 255, 255))
        plot = QRectF(48, 40, max(10, self.width() - 96), max(10, self.height() - 76))
        p.setPen(QPen(QColor(160, 160, 160)))
        p.drawRect(plot)
        losses = [v for k in ("train_loss", "val_loss") for _, v in self.series(k)]
        epochs = [e for k in SERIES for e, _ in self.series(k)]
        if not epochs:
            p.setPen(QColor(120, 120, 120))
            p.drawText(plot, Qt.AlignCenter, tr("loss and IoU per epoch appear here"))
            return
        e0, e1 = min(epochs), max(max(epochs), min(epochs) + 1)
        lmax = max(losses) * 1.05 if losses else 1.0
        lmax = lmax if lmax > 0 else 1.0

        def xy(epoch: float, value: float, axis: str) -> QPointF:
            x = plot.left() + (epoch - e0) / (e1 - e0) * plot.width()
            top = lmax if axis == "loss" else 1.0
            y = plot.bottom() - max(0.0, min(value / top, 1.0)) * plot.height()
            return QPointF(x, y)

        p.setPen(QColor(80, 80, 80))
        for i in range(5):
            frac = i / 4
            y = plot.bottom() - frac * plot.height()
            p.drawText(
                QRectF(0, y - 8, 44, 16), Qt.AlignRight | Qt.AlignVCenter, f"{lmax * frac:.2f}"
            )
            p.drawText(
                QRectF(plot.right() + 4, y - 8, 44, 16),
                Qt.AlignLeft | Qt.AlignVCenter,
                f"{frac:.2f}",
            )
        step = max(1, (e1 - e0) // 8)
        for e in range(e0, e1 + 1, step):
            pt = xy(e, 0, "iou")
            p.drawText(QRectF(pt.x() - 20, plot.bottom() + 2, 40, 14), Qt.AlignCenter, str(e))
        p.drawText(
            QRectF(plot.left(), plot.bottom() + 14, plot.width(), 14), Qt.AlignCenter, tr("epoch")
        )
        p.drawText(QRectF(4, 4, 44, 16), Qt.AlignLeft | Qt.AlignVCenter, tr("loss"))
        p.drawText(QRectF(self.width() - 48, 4, 44, 16), Qt.AlignRight | Qt.AlignVCenter, tr("IoU"))

        legend_x, legend_y = plot.left() + 6, 12.0
        for key, (label, colour, axis) in SERIES.items():
            pts = [xy(e, v, axis) for e, v in self.series(key)]
            if not pts:
                continue
            p.setPen(QPen(colour, 2))
            for a, b in zip(pts, pts[1:], strict=False):
                p.drawLine(a, b)
            for pt in pts:
                p.drawEllipse(pt, 2.5, 2.5)
            p.drawLine(QPointF(legend_x, legend_y), QPointF(legend_x + 14, legend_y))
            p.setPen(QColor(40, 40, 40))
            text = tr(label)
            p.drawText(QPointF(legend_x + 18, legend_y + 4), text)
            legend_x += 26 + p.fontMetrics().horizontalAdvance(text)
