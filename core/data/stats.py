"""Per-band statistics and class balance, computed exactly and streaming.

Statistics use only valid pixels of the training split; each tile is reduced to
(count, mean, M2, min, max) in float64 and merged with Chan's parallel update, so
memory does not grow with the dataset and the result equals a two-pass computation
up to float64 rounding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write_text
from ..progress import CancelFn, Progress, ProgressFn, check_cancel, never_cancel, no_progress
from .discovery import Pair
from .tiles import read_tile


@dataclass
class BandStats:
    """Statistics of the selected bands (1-based numbers) over valid pixels."""

    bands: list[int]
    count: list[int]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> BandStats:
        return cls(**json.loads(Path(path).read_text()))

    def rows(self) -> list[dict]:
        return [
            {"band": b, "mean": m, "std": s, "min": lo, "max": hi, "count": c}
            for b, m, s, lo, hi, c in zip(
                self.bands, self.mean, self.std, self.min, self.max, self.count, strict=True
            )
        ]


@dataclass
class _Acc:
    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def empty(cls, c: int) -> _Acc:
        z = np.zeros(c, np.float64)
        return cls(z.copy(), z.copy(), z.copy(), np.full(c, np.inf), np.full(c, -np.inf))

    def add(self, values: np.ndarray) -> None:
        """Merge a (C, N) block of valid pixel values (Chan et al.)."""
        nb = values.shape[1]
        if nb == 0:
            return
        v = values.astype(np.float64)
        mb = v.mean(axis=1)
        m2b = ((v - mb[:, None]) ** 2).sum(axis=1)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n
        self.lo = np.minimum(self.lo, v.min(axis=1))
        self.hi = np.maximum(self.hi, v.max(axis=1))


@dataclass
class ClassBalance:
    """Pixel balance of one split, as the tuning notes print it."""

    tiles: int = 0
    positive_pixels: int = 0
    valid_pixels: int = 0
    blank_tiles: int = 0  # tiles whose valid mask pixels are all background
    positive_ratios: list[float] = field(default_factory=list, repr=False)

    @property
    def positive_ratio(self) -> float:
        return self.positive_pixels / self.valid_pixels if self.valid_pixels else 0.0

    @property
    def negative_ratio(self) -> float:
        return 1.0 - self.positive_ratio if self.valid_pixels else 0.0

    def as_dict(self) -> dict:
        return {
            "tiles": self.tiles,
            "positive_ratio": round(self.positive_ratio, 6),
            "negative_ratio": round(self.negative_ratio, 6),
            "valid_pixels": self.valid_pixels,
            "positive_pixels": self.positive_pixels,
            "blank_tiles": self.blank_tiles,
        }


@dataclass
class DatasetSummary:
    stats: BandStats
    balance: dict[str, ClassBalance]


def summarize(
    pairs: Iterable[Pair],
    bands: list[int] | None,
    stats_splits: tuple[str | None, ...] = ("train",),
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> DatasetSummary:
    """One streaming pass: band statistics over ``stats_splits`` and class balance per
    split (key ``"all"`` too). Pairs without a split count as ``None``."""
    pairs = list(pairs)
    acc: _Acc | None = None
    band_numbers = bands
    balance: dict[str, ClassBalance] = {"all": ClassBalance()}
    for i, pair in enumerate(pairs):
        check_cancel(cancel)
        tile = read_tile(pair, bands)
        if acc is None:
            acc = _Acc.empty(tile.image.shape[0])
            band_numbers = bands or list(range(1, tile.image.shape[0] + 1))
        if pair.split in stats_splits:
            acc.add(tile.image[:, tile.valid])
        pos = int(tile.mask[tile.valid].sum())
        nvalid = int(tile.valid.sum())
        for key in ("all", pair.split or "unsplit"):
            b = balance.setdefault(key, ClassBalance())
            b.tiles += 1
            b.positive_pixels += pos
            b.valid_pixels += nvalid
            b.blank_tiles += pos == 0
        if i % 50 == 0 or i == len(pairs) - 1:
            progress(Progress("stats", (i + 1) / len(pairs), f"{i + 1}/{len(pairs)} tiles"))
    if acc is None:
        raise InputError("no pairs to summarise")
    if not acc.n.any():
        raise InputError(f"no valid pixels in split(s) {stats_splits} to compute band statistics")
    std = np.sqrt(acc.m2 / np.maximum(acc.n, 1))
    stats = BandStats(
        bands=list(band_numbers),
        count=[int(x) for x in acc.n],
        mean=[float(x) for x in acc.mean],
        std=[float(x) for x in std],
        min=[float(x) for x in acc.lo],
        max=[float(x) for x in acc.hi],
    )
    return DatasetSummary(stats=stats, balance=balance)


def run_indices(
    names: list[str], bands: list[int] | None, band_names: list[str] | None, image: str | Path
) -> list[dict]:
    """``data.indices`` resolved on the selected ``bands`` of the dataset whose first
    image is ``image`` (its band count and descriptions name the Sentinel-2 bands;
    ``band_names`` overrides them). Statistics at mean 0, std 1 (see
    :func:`index_stats`). InputError keyed ``data.indices`` / ``data.band_names``."""
    from ..models.indices import raster_band_names, resolve_indices
    from .rasters import raster_info

    if not names:
        return []
    info = raster_info(image)
    selected = list(bands) if bands else list(range(1, info.count + 1))
    raster_names = raster_band_names(info.count, info.descriptions, band_names)
    return resolve_indices(names, selected, raster_names)


def index_stats(
    pairs: Iterable[Pair],
    bands: list[int] | None,
    specs: list[dict],
    splits: tuple[str | None, ...] = ("train",),
    cancel: CancelFn = never_cancel,
) -> list[dict]:
    """``specs`` with the mean and std of each index over the valid pixels of the
    ``splits`` tiles at native resolution (raw band values; :func:`index_values`)."""
    from ..models.indices import index_values

    if not specs:
        return []
    acc = _Acc.empty(len(specs))
    for pair in pairs:
        if pair.split not in splits:
            continue
        check_cancel(cancel)
        tile = read_tile(pair, bands)
        acc.add(index_values(tile.image[:, tile.valid], specs, axis=0))
    if not acc.n.any():
        raise InputError(f"no valid pixels in split(s) {splits} to compute index statistics")
    std = np.sqrt(acc.m2 / np.maximum(acc.n, 1))
    return [
        {**s, "mean": float(m), "std": float(d)}
        for s, m, d in zip(specs, acc.mean, std, strict=True)
    ]
