"""Exact segmentation metrics from integer confusion counts.

All functions take *probabilities* (the model's logits already passed through the
sigmoid once by the caller), a {0,1} target and an optional boolean validity mask
(False = nodata/padding: the pixel is not counted at all). Inputs may be numpy arrays
or torch tensors. A pixel is predicted positive when ``prob >= threshold``, compared
in float32 (probabilities and thresholds are both cast to float32, so the counts of
:func:`confusion` and :class:`ThresholdScan` agree exactly); a NaN probability is
never positive. Counts are int64, so metrics over a whole split are exact, not
averages of per-batch averages.

Edge cases (a denominator of 0):

* precision, recall, f1, iou: 1.0 when neither prediction nor truth has any positive
  pixel (``tp == fp == fn == 0``, perfect agreement on "nothing"), otherwise 0.0;
* accuracy, specificity: 0.0;
* fp_fn_ratio (FP/FN) with ``fn == 0``: ``inf`` if ``fp > 0`` else 0.0;
  ``metrics(json_safe=True)`` reports ``inf`` as ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HIGHER_IS_BETTER = ("accuracy", "recall", "specificity", "precision", "f1", "iou")
HIST_BINS = 100


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or torch tensor (without importing torch)."""
    if hasattr(x, "detach"):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


def _flatten(prob: Any, target: Any, valid: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Valid probabilities (float32) and their boolean targets, as flat arrays."""
    p = _to_numpy(prob).astype(np.float32, copy=False)
    t = _to_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"prob {p.shape} and target {t.shape} must have the same shape")
    t = t > 0.5
    if valid is None:
        return p.ravel(), t.ravel()
    v = _to_numpy(valid)
    if v.shape != p.shape:
        raise ValueError(f"valid {v.shape} must have the shape of prob {p.shape}")
    v = v.astype(bool, copy=False)
    return p[v], t[v]


def _ratio(num: int, den: int, empty: float = 0.0) -> float:
    return num / den if den else empty


@dataclass
class ConfusionCounts:
    """Pixel counts of a binary segmentation: true/false positives/negatives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        return ConfusionCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def metrics(self, json_safe: bool = False) -> dict[str, Any]:
        """accuracy, recall, specificity, precision, f1, iou, fp_fn_ratio and the counts.

        Zero denominators follow the module docstring; with ``json_safe`` an infinite
        fp_fn_ratio becomes ``None``.
        """
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        nothing = 1.0 if tp + fp + fn == 0 else 0.0
        if fn:
            ratio: float | None = fp / fn
        else:
            ratio = math.inf if fp > 0 else 0.0
        if json_safe and ratio == math.inf:
            ratio = None
        return {
            "accuracy": _ratio(tp + tn, self.total),
            "recall": _ratio(tp, tp + fn, nothing),
            "specificity": _ratio(tn, tn + fp),
            "precision": _ratio(tp, tp + fp, nothing),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn, nothing),
            "iou": _ratio(tp, tp + fp + fn, nothing),
            "fp_fn_ratio": ratio,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
        }


def confusion(
    prob: Any, target: Any, valid: Any | None = None, threshold: float = 0.5
) -> ConfusionCounts:
    """Counts of ``prob >= threshold`` against ``target`` over the valid pixels."""
    p, t = _flatten(prob, target, valid)
    pred = p >= np.float32(threshold)
    tp = int(np.count_nonzero(pred & t))
    fp = int(np.count_nonzero(pred & ~t))
    n_pos = int(np.count_nonzero(t))
    return ConfusionCounts(tp=tp, fp=fp, fn=n_pos - tp, tn=t.size - n_pos - fp)


def default_thresholds() -> list[float]:
    """0.25, 0.5, 0.75 and 0.05 ... 0.95 in steps of 0.05, deduplicated and sorted."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2).tolist()
    return sorted({round(float(t), 6) for t in [0.25, 0.5, 0.75, *grid]})


class ThresholdScan:
    """Exact confusion counts over a whole split at a fixed set of thresholds.

    ``update`` once per batch/tile; counts are int64 and equal :func:`confusion` at the
    same threshold exactly. ``hist_pos``/``hist_neg`` hold the histograms (``HIST_BINS``
    bins over [0, 1], edges in ``hist_edges``) of the probabilities of valid positive
    and valid negative pixels, for plotting the class separation.
    """

    def __init__(self, thresholds: Sequence[float] | None = None) -> None:
        ths = default_thresholds() if thresholds is None else sorted({float(t) for t in thresholds})
        if not ths:
            raise ValueError("ThresholdScan needs at least one threshold")
        self.thresholds: list[float] = ths
        self._th32 = np.asarray(ths, dtype=np.float32)
        self._pos_ge = np.zeros(len(ths), dtype=np.int64)  # positives with prob >= t
        self._neg_ge = np.zeros(len(ths), dtype=np.int64)  # negatives with prob >= t
        self.n_pos = 0
        self.n_neg = 0
        self.hist_edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
        self.hist_pos = np.zeros(HIST_BINS, dtype=np.int64)
        self.hist_neg = np.zeros(HIST_BINS, dtype=np.int64)

    def _ge_counts(self, p: np.ndarray) -> np.ndarray:
        """For each threshold, how many of ``p`` are >= it (NaN never)."""
        p = np.where(np.isnan(p), np.float32(-np.inf), p)
        # number of thresholds <= p, per pixel; then a reverse cumulative count.
        idx = np.searchsorted(self._th32, p, side="right")
        per_idx = np.bincount(idx, minlength=len(self._th32) + 1)
        return np.cumsum(per_idx[::-1])[::-1][1:].astype(np.int64)

    def _hist(self, p: np.ndarray) -> np.ndarray:
        p = p[~np.isnan(p)]
        bins = np.clip((np.clip(p, 0.0, 1.0) * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
        return np.bincount(bins, minlength=HIST_BINS).astype(np.int64)

    def update(self, prob: Any, target: Any, valid: Any | None = None) -> None:
        p, t = _flatten(prob, target, valid)
        pos, neg = p[t], p[~t]
        self._pos_ge += self._ge_counts(pos)
        self._neg_ge += self._ge_counts(neg)
        self.n_pos += int(pos.size)
        self.n_neg += int(neg.size)
        self.hist_pos += self._hist(pos)
        self.hist_neg += self._hist(neg)

    def _index(self, threshold: float) -> int:
        for i, t in enumerate(self.thresholds):
            if math.isclose(t, threshold, rel_tol=0.0, abs_tol=1e-9):
                return i
        raise ValueError(f"threshold {threshold} not scanned; scanned: {self.thresholds}")

    def counts(self, threshold: float) -> ConfusionCounts:
        i = self._index(threshold)
        tp, fp = int(self._pos_ge[i]), int(self._neg_ge[i])
        return ConfusionCounts(tp=tp, fp=fp, fn=self.n_pos - tp, tn=self.n_neg - fp)

    def table(self, json_safe: bool = False) -> list[dict[str, Any]]:
        """One row per threshold: ``{"threshold": t, **metrics}``."""
        return [
            {"threshold": t, **self.counts(t).metrics(json_safe=json_safe)} for t in self.thresholds
        ]

    def best(self, metric: str = "iou") -> tuple[float, ConfusionCounts]:
        """The threshold maximising ``metric``; ties go to the threshold closest to 0.5."""
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(HIGHER_IS_BETTER)}")
        scored = [(self.counts(t).metrics()[metric], -abs(t - 0.5), -t, t) for t in self.thresholds]
        t_best = max(scored)[3]
        return t_best, self.counts(t_best)


def per_image_row(
    tile_id: str, prob: Any, target: Any, valid: Any | None, threshold: float
) -> dict[str, Any]:
    """One tile's row of the per-image table (counts over its valid pixels)."""
    c = confusion(prob, target, valid, threshold)
    m = c.metrics()
    return {
        "tile_id": tile_id,
        **{k: m[k] for k in ("iou", "f1", "precision", "recall")},
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "tn": c.tn,
        "positive_pixels": c.tp + c.fn,
        "predicted_pixels": c.tp + c.fp,
        "valid_pixels": c.total,
    }
