"""Scoring kept predictions at a threshold: split totals and per-tile rows (numpy only).

No torch, no rasterio: the QGIS plugin imports this module in QGIS's own process to
recompute its error analysis when the threshold moves, so the dock's numbers come from
the same code as ``evaluate``. A prediction is anything with ``tile_id``, ``prob``,
``mask`` and ``valid`` (:class:`.evaluate.TilePrediction`, or the plugin's tiles read
back from ``predict-split``'s files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .metrics import ConfusionCounts, ThresholdScan, confusion, per_image_row


class Scored(Protocol):
    tile_id: str
    prob: np.ndarray
    mask: np.ndarray
    valid: np.ndarray


@dataclass
class EvalResult:
    counts: ConfusionCounts
    metrics: dict
    threshold: float
    rows: list[dict] = field(default_factory=list)
    scan: ThresholdScan | None = None
    # Plant-level results (:mod:`.plants`), filled by ``evaluate`` and the run record:
    # they need each tile's georeferencing, which a bare prediction does not carry.
    plants: Any = None


def is_blank(t: Any) -> bool:
    """No positive pixel among the valid ones (``t`` has ``mask`` and ``valid``)."""
    return not t.mask[t.valid].any()


def evaluate_predictions(
    preds: Sequence[Scored], threshold: float, skip_blank: bool = False, scan: bool = False
) -> EvalResult:
    """Counts summed over the split (never averaged per batch) and per-tile rows."""
    counts = ConfusionCounts()
    rows = []
    th_scan = ThresholdScan() if scan else None
    for p in preds:
        rows.append(per_image_row(p.tile_id, p.prob, p.mask, p.valid, threshold))
        if skip_blank and is_blank(p):
            continue
        counts += confusion(p.prob, p.mask, p.valid, threshold)
        if th_scan is not None:
            th_scan.update(p.prob, p.mask, p.valid)
    metrics = counts.metrics(json_safe=True)
    metrics["threshold"] = threshold
    return EvalResult(counts, metrics, threshold, rows, th_scan)
