"""A form for every setting of :class:`core.config.RunConfig`, built from the dataclasses
themselves so a setting added to the engine appears here with its default.

Values are collected as the user typed them and coerced by ``core.config.from_dict``;
an error names the dotted setting (``data.split.val``), which puts the message beside
that field.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

import yaml
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..common import tr
from .widgets import PathEdit, add_field_row, error_label, show_error

# "lightgbm": per-pixel gradient-boosted trees (the LightGBM tab), not a network.
ARCHITECTURES = ["Unet", "UnetPlusPlus", "FPN", "Linknet", "MAnet", "PAN", "PSPNet",
                 "DeepLabV3", "DeepLabV3Plus", "UPerNet", "Segformer", "lightgbm"]  # fmt: skip
ENCODERS = ["resnet18", "resnet34", "resnet50", "efficientnet-b0", "efficientnet-b2",
            "efficientnet-b4", "mobilenet_v2", "timm-regnety_008", "mit_b0"]  # fmt: skip
# core.training.losses.LOSSES without importing torch while the dialog opens (a test keeps them equal)
LOSS_NAMES = ["bce", "dice", "weighted_bce", "focal", "jaccard", "lovasz"]
CHOICES: dict[str, list[Any]] = {
    "model.arch": ARCHITECTURES,
    "model.encoder": ENCODERS,
    "optim.optimizer": ["adamw", "adam"],
    "optim.scheduler": ["cosine", "step", "plateau", "none"],
    "train.device": ["auto", "cpu", "cuda"],
    "train.precision": ["auto", "fp32", "bf16"],
    "train.channels_last": ["auto", "true", "false"],
    "train.early_stop.monitor": ["val_loss", "val_iou"],
    "data.upscale": [1, 2, 4, 8],
}
EDITABLE = {"model.arch", "model.encoder"}
# Appended to the title of a tab that holds a refused setting.
ERROR_MARK = " ⚠"
# Fields followed by a free slot where the dialog shows related information.
SLOTS = ("data.path", "train.device")
SECTIONS = [("data", "Data"), ("model", "Model"), ("loss", "Loss"), ("optim", "Optimiser"),
            ("train", "Training"), ("gbm", "LightGBM")]  # fmt: skip
LABELS = {
    "name": "Run name",
    "out_dir": "Runs folder",
    "data.path": "Dataset",
    "data.bands": "Bands",
    "data.limit": "Tile limit",
    "data.upscale": "Upscale factor",
    "data.train_crop": "Training crop (px)",
    "data.split.group_regex": "Group regex",
    "data.skip_blank_in_loss": "Skip blank tiles in loss",
    "data.indices": "Spectral indices",
    "data.band_names": "Band names",
    "model.bn_momentum": "BatchNorm momentum",
    "data.skip_blank_in_metrics": "Skip blank tiles in metrics",
    "model.arch": "Architecture",
    "model.encoder_weights": "Encoder weights",
    "optim.lr": "Learning rate",
    "optim.warmup_epochs": "Warm-up epochs",
    "optim.plateau_patience": "Plateau patience",
    "train.amp": "Mixed precision (CUDA)",
    "train.precision": "Precision",
    "train.channels_last": "Channels-last layout",
    "train.tta": "Flip TTA at evaluation",
    "train.ema": "Weight averaging (EMA)",
    "train.ema.warmup": "Warm-up",
    "train.max_minutes": "Time limit (minutes)",
    "train.threads": "CPU threads",
    "train.report_thresholds": "Reported thresholds",
    "train.eval_batch_size": "Eval batch size",
}


PLACEHOLDERS = {
    "model.params": "extra architecture arguments, e.g. {encoder_depth: 4}",
    "data.bands": "1-based, e.g. 4,3,2,8; empty = all bands",
    "data.limit": "use only the first N tiles; empty = all",
    "data.split.group_regex": "empty = split by tile",
    "data.train_crop": "random crops, e.g. 96 at 4x; empty = whole tiles",
    "data.indices": "spectral indices as extra inputs, e.g. ndvi, ndwi, ndmi, swir_nd, "
    "swir_red; empty = none",
    "data.band_names": "Sentinel-2 names of the bands, e.g. B2,B3,B4,B8; empty = the "
    "rasters' band descriptions",
    "gbm.max_pixels": "empty = every training pixel",
    "gbm.positive_share": "empty = as in the data",
    "model.encoder_weights": "empty = random init; a .pt file; or ukis-csmask-4b-l2a "
    "(Sentinel-2 B2,B3,B4,B8) or -6b-l2a (+B11,B12), efficientnet-b4, offline",
    "train.max_minutes": "empty = no limit",
    "train.threads": "empty = torch default",
}


def _label(key: str) -> str:
    return tr(LABELS.get(key, key.rsplit(".", 1)[-1].replace("_", " ").capitalize()))


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None``."""
    args = typing.get_args(tp)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return tp, False


def _parse_mapping(text: str) -> Any:
    """``{encoder_depth: 4}`` (YAML flow mapping) -> dict; unparsable text is returned
    as is so the engine's check names the setting."""
    if not text:
        return {}
    try:
        value = yaml.safe_load(text if text.startswith("{") else "{" + text + "}")
    except yaml.YAMLError:
        return text
    return value if isinstance(value, dict) else text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


class Field:
    """One setting: its widget, how to read/write it, and its error label."""

    def __init__(self, key: str, tp: Any, widget: QWidget) -> None:
        self.key, self.tp, self.widget = key, tp, widget
        self.error = error_label()
        self.error.setObjectName(f"error:{key}")

    def get(self) -> Any:
        w = self.widget
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return w.value()
        if isinstance(w, QComboBox):
            data = w.currentData()
            if w.isEditable() and w.currentText() != w.itemText(w.currentIndex()):
                return w.currentText().strip()
            return data if data is not None else w.currentText().strip()
        if isinstance(w, LossTermsWidget):
            return w.terms()
        text = w.text().strip()
        inner, optional = _unwrap(self.tp)
        if typing.get_origin(inner) is dict:
            return _parse_mapping(text)
        if text == "" and (optional or typing.get_origin(inner) is list):
            return None if optional else []
        return text

    def set(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox):
            w.setValue(int(value))
        elif isinstance(w, QComboBox):
            i = w.findData(value)
            if i < 0 and w.isEditable():
                w.setEditText(str(value))
            else:
                w.setCurrentIndex(max(i, 0))
        elif isinstance(w, LossTermsWidget):
            w.set_terms(value)
        elif isinstance(value, dict):
            w.setText(yaml.safe_dump(value, default_flow_style=True).strip() if value else "")
        else:
            w.setText(_text(value))


class LossTermsWidget(QWidget):
    """The loss as a weighted sum: one row per term (name, weight, params)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(
            [tr("Loss"), tr("Weight"), tr("Parameters (e.g. pos_weight=3)")]
        )
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(110)
        lay.addWidget(self.table)
        row = QHBoxLayout()
        add, remove = QPushButton(tr("Add term")), QPushButton(tr("Remove term"))
        add.clicked.connect(lambda: self.add_term({"name": "dice", "weight": 1.0, "params": {}}))
        remove.clicked.connect(self.remove_term)
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        lay.addLayout(row)
        hint = QLabel(
            tr(
                "Losses and their parameters: bce (pos_weight), weighted_bce (pos_weight, "
                "neg_weight), focal (alpha, gamma), dice, jaccard (pos_weight, neg_weight), lovasz. "
                "The loss is the weighted sum of the terms. pos_weight=auto (bce, weighted_bce): "
                "the training masks' negative/positive pixel ratio."
            )
        )
        hint.setWordWrap(True)
        lay.addWidget(hint)

    def add_term(self, term: dict) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        combo = QComboBox()
        combo.addItems(LOSS_NAMES)
        combo.setEditable(True)
        combo.setCurrentText(term.get("name", "dice"))
        self.table.setCellWidget(r, 0, combo)
        self.table.setItem(r, 1, QTableWidgetItem(_text(term.get("weight", 1.0))))
        params = ", ".join(f"{k}={v}" for k, v in (term.get("params") or {}).items())
        self.table.setItem(r, 2, QTableWidgetItem(params))

    def remove_term(self) -> None:
        r = self.table.currentRow()
        self.table.removeRow(r if r >= 0 else self.table.rowCount() - 1)

    def set_terms(self, terms: list) -> None:
        self.table.setRowCount(0)
        for t in terms:
            self.add_term(dataclasses.asdict(t) if dataclasses.is_dataclass(t) else dict(t))

    def terms(self) -> list[dict]:
        out = []
        for r in range(self.table.rowCount()):
            params: dict[str, str] = {}
            text = self.table.item(r, 2).text() if self.table.item(r, 2) else ""
            for part in re.split(r"[,;]", text):
                if part.strip():
                    k, _, v = part.partition("=")
                    params[k.strip()] = v.strip()
            out.append(
                {
                    "name": self.table.cellWidget(r, 0).currentText().strip(),
                    "weight": self.table.item(r, 1).text().strip() if self.table.item(r, 1) else "",
                    "params": params,
                }
            )
        return out


class ConfigForm(QTabWidget):
    """Tabs Run/Data/Model/Loss/Optimiser/Training with a field per setting."""

    changed = pyqtSignal(str)  # dotted key of the field the user changed

    def __init__(self, cfg: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fields: dict[str, Field] = {}
        self.slots: dict[str, QVBoxLayout] = {}
        run_page, run_grid = self._page(tr("Run"))
        top = [f for f in dataclasses.fields(cfg) if not dataclasses.is_dataclass(f.type)]
        hints = typing.get_type_hints(type(cfg))
        for f in top:
            if not dataclasses.is_dataclass(hints[f.name]):
                self._add_field(run_grid, f.name, hints[f.name], getattr(cfg, f.name))
        for section, title in SECTIONS:
            _page, grid = self._page(tr(title))
            self._add_dataclass(grid, section, getattr(cfg, section))
            grid.setRowStretch(grid.rowCount(), 1)
        run_grid.setRowStretch(run_grid.rowCount(), 1)

    def _page(self, title: str) -> tuple[QWidget, QGridLayout]:
        inner = QWidget()
        grid = QGridLayout(inner)
        grid.setColumnStretch(1, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        self.addTab(scroll, title)
        return scroll, grid

    def _add_dataclass(self, grid: QGridLayout, prefix: str, obj: Any) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key, tp, value = f"{prefix}.{f.name}", hints[f.name], getattr(obj, f.name)
            if dataclasses.is_dataclass(tp):
                box = QGroupBox(_label(key))
                sub = QGridLayout(box)
                sub.setColumnStretch(1, 1)
                self._add_dataclass(sub, key, value)
                grid.addWidget(box, grid.rowCount(), 0, 1, 2)
            else:
                self._add_field(grid, key, tp, value)

    def _widget(self, key: str, tp: Any) -> QWidget:
        inner, _optional = _unwrap(tp)
        if key in CHOICES:
            combo = QComboBox()
            for c in CHOICES[key]:
                combo.addItem(str(c), c)
            combo.setEditable(key in EDITABLE)
            return combo
        if key == "data.path":
            return PathEdit(True, tr("CSV manifest (*.csv)"), "train/last_dataset_dir")
        if key == "out_dir":
            return PathEdit(True, None, "train/last_out_dir")
        if key == "model.encoder_weights":
            from ..core.models.pretrained import SOURCES  # pure Python: the names only

            edit = PathEdit(
                False, tr("Weights (*.pt *.pth *.bin)"), "train/last_weights_dir",
                placeholder=tr(PLACEHOLDERS[key]),
            )  # fmt: skip
            # The named Sentinel-2 encoders are offered as the user types ("ukis...").
            names = QCompleter(list(SOURCES), edit)
            names.setCaseSensitivity(Qt.CaseInsensitive)
            edit.edit.setCompleter(names)
            return edit
        if key == "loss.terms":
            return LossTermsWidget()
        if inner is bool:
            return QCheckBox()
        if inner is int and not _optional:
            spin = QSpinBox()
            spin.setRange(0, 1_000_000)
            return spin
        edit = QLineEdit()
        if key in PLACEHOLDERS:
            edit.setPlaceholderText(tr(PLACEHOLDERS[key]))
        elif _optional:
            edit.setPlaceholderText(tr("empty = none"))
        return edit

    def _add_field(self, grid: QGridLayout, key: str, tp: Any, value: Any) -> None:
        widget = self._widget(key, tp)
        widget.setObjectName(key)
        # The full hint: a narrow form cuts the placeholder short.
        widget.setToolTip(f"{key}: {tr(PLACEHOLDERS[key])}" if key in PLACEHOLDERS else key)
        field = Field(key, tp, widget)
        field.set(value)
        row = add_field_row(grid, _label(key), widget, field.error)
        grid.itemAtPosition(row, 0).widget().setToolTip(key)
        self.fields[key] = field
        if key in SLOTS:
            holder = QWidget()
            slot = QVBoxLayout(holder)
            slot.setContentsMargins(0, 0, 0, 0)
            grid.addWidget(holder, row + 2, 0, 1, 2)
            self.slots[key] = slot
        for signal in ("changed", "textEdited", "currentTextChanged", "toggled", "valueChanged"):
            sig = getattr(widget, signal, None)
            if sig is not None:
                sig.connect(lambda *_a, k=key: self.changed.emit(k))

    # --- values and errors -----------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Nested dict of the typed values, for ``core.config.from_dict``."""
        out: dict[str, Any] = {}
        for key, field in self.fields.items():
            node = out
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = field.get()
        return out

    def set_config(self, cfg: Any) -> None:
        data = dataclasses.asdict(cfg)
        for key, field in self.fields.items():
            node: Any = data
            for part in key.split("."):
                node = node[part]
            field.set(node)

    def clear_errors(self) -> None:
        for f in self.fields.values():
            show_error(f.error, None)
        for i in range(self.count()):
            self.setTabText(i, self.tabText(i).removesuffix(ERROR_MARK))

    def set_error(self, key: str, message: str) -> None:
        field = self.fields[key]
        show_error(field.error, message)
        i = self.tab_of(key)
        if i is not None and not self.tabText(i).endswith(ERROR_MARK):
            self.setTabText(i, self.tabText(i) + ERROR_MARK)  # a refused field is in there
        self.show_field(key)

    def tab_of(self, key: str) -> int | None:
        w = self.fields[key].widget
        return next((i for i in range(self.count()) if self.widget(i).isAncestorOf(w)), None)

    def show_field(self, key: str) -> None:
        """Bring the tab holding ``key`` to the front."""
        i = self.tab_of(key)
        if i is not None:
            self.setCurrentIndex(i)

    def keys_in(self, message: str) -> list[str]:
        """Setting keys named in an engine error message (longest names first)."""
        found = []
        for key in sorted(self.fields, key=len, reverse=True):
            if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message) and not any(
                k.startswith(key + ".") for k in found
            ):
                found.append(key)
        return found

    def errors(self) -> dict[str, str]:
        return {k: f.error.text() for k, f in self.fields.items() if not f.error.isHidden()}
