"""Paired bootstrap over tiles of the IoU difference between two scorings of one split.

    python bench/paired_bootstrap.py A_PER_IMAGE.csv B_PER_IMAGE.csv [--n 2000] [--seed 0]

Each argument is a per-image table (``per_image_<split>.csv`` of a run folder, or the
``--csv`` of ``evaluate``), or a run folder (then its ``per_image_test.csv``). The two
tables must list the same tiles. IoU is computed from counts summed over the resampled
tiles (as the engine's split metrics are), for A, B and B - A; the interval is the
2.5-97.5 percentile of ``--n`` resamples of the tiles with replacement.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def counts(path: str) -> tuple[list[str], np.ndarray]:
    p = Path(path)
    if p.is_dir():
        p = p / "per_image_test.csv"
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["tile_id"] for r in rows]
    return ids, np.array([[int(r[k]) for k in ("tp", "fp", "fn")] for r in rows], np.int64)


def iou(c: np.ndarray) -> np.ndarray:
    """IoU of summed counts; ``c`` is (..., tiles, 3)."""
    s = c.sum(axis=-2)
    return s[..., 0] / np.maximum(s.sum(axis=-1), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ids_a, a = counts(args.a)
    ids_b, b = counts(args.b)
    if ids_a != ids_b:
        raise SystemExit("the two tables do not list the same tiles in the same order")
    idx = np.random.default_rng(args.seed).integers(0, len(ids_a), (args.n, len(ids_a)))
    ia, ib = iou(a[idx]), iou(b[idx])
    for name, full, boot in (("A", iou(a), ia), ("B", iou(b), ib),
                             ("B - A", iou(b) - iou(a), ib - ia)):  # fmt: skip
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{name:<6} IoU {full:+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]  ({len(ids_a)} tiles)")


if __name__ == "__main__":
    main()
