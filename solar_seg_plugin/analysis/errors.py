"""Error overlay codes: one uint8 per pixel saying TN, TP, FP or FN.

A pixel is predicted positive exactly as :func:`core.evaluation.metrics.confusion` decides it
(``prob >= threshold`` compared in float32, target > 0.5, only valid pixels), so the
number of pixels of each code equals the engine's confusion counts.
"""

from __future__ import annotations

import numpy as np

TN, TP, FP, FN = 0, 1, 2, 3
NODATA = 255
# The colours of the original notes; resources/error.qml uses the same.
COLOURS = {TN: (0, 0, 0, 0), TP: (255, 255, 255, 255), FP: (255, 255, 0, 255), FN: (0, 255, 0, 255)}


def predicted(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean prediction with the engine's rule (float32 ``prob >= threshold``)."""
    return np.asarray(prob, np.float32) >= np.float32(threshold)


def error_codes(
    prob: np.ndarray, target: np.ndarray, valid: np.ndarray, threshold: float
) -> np.ndarray:
    """uint8 codes TN/TP/FP/FN, ``NODATA`` where the pixel is not valid."""
    pred = predicted(prob, threshold)
    truth = np.asarray(target) > 0.5
    codes = np.where(pred, np.where(truth, TP, FP), np.where(truth, FN, TN)).astype(np.uint8)
    return np.where(np.asarray(valid, bool), codes, np.uint8(NODATA)).astype(np.uint8)


def code_counts(codes: np.ndarray) -> dict[str, int]:
    """Pixels per code, keyed like ConfusionCounts (tp, fp, fn, tn)."""
    return {
        "tp": int(np.count_nonzero(codes == TP)),
        "fp": int(np.count_nonzero(codes == FP)),
        "fn": int(np.count_nonzero(codes == FN)),
        "tn": int(np.count_nonzero(codes == TN)),
    }
