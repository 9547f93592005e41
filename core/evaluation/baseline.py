"""Per-pixel baselines from the tuning notes, scored on the same split as the models:
a NIR threshold and a logistic regression on the selected bands.

Both pick their decision threshold on the validation split (best IoU) and report
exact counts on val and test, so every model can be shown beside them.
"""

from __future__ import annotations

import numpy as np

from ..config import RunConfig
from ..data.discovery import find_dataset
from ..data.splits import split_pairs
from ..data.tiles import read_tile
from .metrics import ThresholdScan


def _pixels(pairs, bands):
    xs, ys = [], []
    for p in pairs:
        t = read_tile(p, bands)
        xs.append(t.image[:, t.valid].T)
        ys.append(t.mask[t.valid])
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.uint8)


def _score(name, scores_by_split, y_by_split, thresholds=None) -> list[dict]:
    scans = {}
    for s, scores in scores_by_split.items():
        scans[s] = ThresholdScan(thresholds)
        scans[s].update(scores.astype(np.float32), y_by_split[s])
    best_t, _ = scans["val"].best("iou")
    rows = []
    for s in ("val", "test"):
        if s in scans:
            m = scans[s].counts(best_t).metrics(json_safe=True)
            rows.append({"baseline": name, "split": s, "threshold": round(best_t, 4), **m})
    return rows


def run_baselines(cfg: RunConfig, nir_band: int = 8) -> list[dict]:
    """NIR threshold and logistic regression on ``cfg.data.bands`` (all when None)."""
    from sklearn.linear_model import LogisticRegression

    index = find_dataset(cfg.data.path)
    if cfg.data.limit:
        index.pairs = index.pairs[: cfg.data.limit]
    pairs = split_pairs(index, cfg.data.split)
    by = {s: [p for p in pairs if p.split == s] for s in ("train", "val", "test")}
    data = {s: _pixels(ps, cfg.data.bands) for s, ps in by.items() if ps}
    nir = {s: _pixels(ps, [nir_band])[0][:, 0] for s, ps in by.items() if ps}
    y = {s: d[1] for s, d in data.items()}

    # NIR: a min-max scaled score over the training range; panels may be darker or
    # brighter than their surroundings, so keep the direction that fits val better.
    lo, hi = np.percentile(nir["train"], [0.5, 99.5])
    scaled = {s: np.clip((v - lo) / (hi - lo), 0, 1) for s, v in nir.items()}
    fine = [round(t, 3) for t in np.arange(0.01, 1.0, 0.01)]
    rows_up = _score(f"NIR threshold (B{nir_band})", scaled, y, fine)
    rows_down = _score(
        f"NIR threshold (B{nir_band}<)", {s: 1 - v for s, v in scaled.items()}, y, fine
    )
    best_nir = max((rows_up, rows_down), key=lambda r: r[0]["iou"])

    x = {s: d[0] for s, d in data.items()}
    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-9
    clf = LogisticRegression(max_iter=500)
    clf.fit((x["train"] - mu) / sd, y["train"])
    prob = {s: clf.predict_proba((v - mu) / sd)[:, 1] for s, v in x.items()}
    bands = "all" if cfg.data.bands is None else ",".join(map(str, cfg.data.bands))
    return best_nir + _score(f"logistic ({bands})", prob, y, fine)
