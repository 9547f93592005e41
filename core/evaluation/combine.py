"""Two models as one: their probabilities averaged, the weight chosen on val.

``evaluate MODEL --blend OTHER [--blend-weight W]`` scores ``(1 - W) * p_MODEL +
W * p_OTHER`` per pixel, at native resolution, on the tiles both models score (a
network and a per-pixel LightGBM model, two networks...). Without ``W`` the weight is
chosen on the val split together with the threshold: every weight of
:data:`BLEND_WEIGHTS` and every threshold of the usual scan (0.05..0.95), best val IoU
(ties: the weight nearest 0.5, then the threshold nearest 0.5); with ``W`` only the
threshold is chosen on val, unless ``--threshold`` is given too. The counts are exact
(:mod:`.metrics`), as everywhere else. Both models must score the same tiles in val
and in the split (checked by :func:`~.evaluate.check_evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from .scoring import EvalResult, evaluate_predictions

BLEND_WEIGHTS = [round(w, 2) for w in np.linspace(0.0, 1.0, 11)]


@dataclass
class BlendChoice:
    weight: float
    threshold: float
    val_iou: float


def blend_predictions(a: list, b: list, weight: float) -> list:
    """``(1 - weight) * a + weight * b`` per tile (TilePrediction lists, same tiles)."""
    if [p.tile_id for p in a] != [p.tile_id for p in b]:
        raise InputError("the two models' predictions are not of the same tiles", "blend")
    w = np.float32(weight)
    return [replace(pa, prob=((1 - w) * pa.prob + w * pb.prob).astype(np.float32))
            for pa, pb in zip(a, b, strict=True)]  # fmt: skip


def choose_blend(
    val_a: list, val_b: list, weight: float | None = None, skip_blank: bool = False
) -> BlendChoice:
    """The weight (``weight`` when given) and threshold of the best val IoU."""
    best: tuple | None = None
    for w in BLEND_WEIGHTS if weight is None else [float(weight)]:
        scan = evaluate_predictions(blend_predictions(val_a, val_b, w), 0.5, skip_blank, True).scan
        t, counts = scan.best("iou")
        key = (counts.metrics()["iou"], -abs(w - 0.5))
        if best is None or key > best[0]:
            best = (key, BlendChoice(float(w), float(t), float(key[0])))
    return best[1]  # type: ignore[index]


def evaluate_blend(
    model_path: str | Path,
    other_path: str | Path,
    dataset_path: str | Path | None,
    split: str,
    weight: float | None,
    threshold: float | None,
    predict,
    skip_blank: bool = False,
) -> tuple[EvalResult, BlendChoice, list]:
    """Blend two models on ``split``: weight (and threshold unless given) chosen on
    val. ``predict(model_path, split)`` returns a model's TilePrediction list. Returns
    the split's result, the choice and the blended predictions."""
    val_a, val_b = predict(model_path, "val"), predict(other_path, "val")
    choice = choose_blend(val_a, val_b, weight, skip_blank)
    if threshold is not None:
        choice.threshold = float(threshold)
    if split == "val":
        pa, pb = val_a, val_b
    else:
        pa, pb = predict(model_path, split), predict(other_path, split)
    preds = blend_predictions(pa, pb, choice.weight)
    result = evaluate_predictions(preds, choice.threshold, skip_blank)
    result.metrics["blend_weight"] = choice.weight
    result.metrics["blend_val_iou"] = choice.val_iou
    return result, choice, preds
