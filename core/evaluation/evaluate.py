"""Evaluate a saved model on a dataset split, exactly as its training run did.

The split is reproduced from the model's stored config (seed, fractions, group regex,
limit), or taken from a manifest such as the run's ``split.csv``. Metrics come from
integer counts summed over the whole split at native resolution; per-tile rows give
the table the plugin's error analysis shows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, from_dict
from ..data.dataset import TileDataset
from ..data.discovery import Pair, find_dataset
from ..data.splits import split_pairs
from ..data.tiles import Tile
from ..io import atomic_write_text
from ..models.build import ModelMeta, load_model, min_input_side, resolve_device
from ..progress import CancelFn, ProgressFn, never_cancel, no_progress
from .metrics import ConfusionCounts, ThresholdScan, confusion, per_image_row
from .predict import iter_native_probabilities

PER_IMAGE_FIELDS = ["tile_id", "iou", "f1", "precision", "recall", "tp", "fp", "fn", "tn",
                    "positive_pixels", "predicted_pixels", "valid_pixels"]  # fmt: skip


@dataclass
class TilePrediction:
    """A tile and its predicted probability at native resolution."""

    pair: Pair
    tile: Tile
    prob: np.ndarray


@dataclass
class EvalResult:
    counts: ConfusionCounts
    metrics: dict
    threshold: float
    rows: list[dict] = field(default_factory=list)
    scan: ThresholdScan | None = None


def split_of_model(meta: ModelMeta, dataset_path: str | Path | None) -> list[Pair]:
    """The pairs with splits as the model's training run had them."""
    cfg: RunConfig = from_dict(RunConfig, meta.config) if meta.config else RunConfig()
    index = find_dataset(dataset_path if dataset_path is not None else cfg.data.path)
    if cfg.data.limit and index.form != "manifest":
        index.pairs = index.pairs[: cfg.data.limit]
    return split_pairs(index, cfg.data.split)


def tile_dataset(meta: ModelMeta, pairs: list[Pair]) -> TileDataset:
    """An un-augmented dataset normalised and shaped as the model expects."""
    return TileDataset(
        pairs,
        meta.bands,
        meta.mean,
        meta.std,
        upscale=meta.upscale,
        pad_multiple=meta.pad_multiple,
        augment=None,
        min_size=min_input_side(meta.arch),
    )


def eval_batch_size(meta: ModelMeta) -> int:
    """The batch size the run evaluated with: same batches, bit-identical outputs."""
    return int(meta.config.get("train", {}).get("eval_batch_size", 32)) if meta.config else 32


def predict_dataset(
    model: torch.nn.Module,
    meta: ModelMeta,
    ds: TileDataset,
    device: torch.device,
    tta: bool = False,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> list[TilePrediction]:
    """Native-resolution probabilities for every tile of ``ds``."""
    return [
        TilePrediction(ds.pairs[i], ds.tile(i), prob)
        for i, prob in iter_native_probabilities(
            model, ds, device, eval_batch_size(meta), tta, progress, cancel
        )
    ]


def predict_split(
    model_path: str | Path,
    dataset_path: str | Path | None = None,
    split: str = "test",
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    tta: bool | None = None,
    device: str = "auto",
) -> tuple[ModelMeta, list[TilePrediction]]:
    """Load a model (run folder or model file) and predict one split (or ``all``)."""
    dev = resolve_device(device)
    model, meta = load_model(model_path, dev)
    pairs = split_of_model(meta, dataset_path)
    if split != "all":
        pairs = [p for p in pairs if p.split == split]
    if not pairs:
        raise ValueError(f"split {split!r} has no tiles")
    if tta is None:
        tta = bool(meta.config.get("train", {}).get("tta", False)) if meta.config else False
    return meta, predict_dataset(model, meta, tile_dataset(meta, pairs), dev, tta, progress, cancel)


def is_blank(t: Tile) -> bool:
    return not t.mask[t.valid].any()


def evaluate_predictions(
    preds: list[TilePrediction], threshold: float, skip_blank: bool = False, scan: bool = False
) -> EvalResult:
    """Counts summed over the split (never averaged per batch) and per-tile rows."""
    counts = ConfusionCounts()
    rows = []
    th_scan = ThresholdScan() if scan else None
    for p in preds:
        rows.append(per_image_row(p.pair.id, p.prob, p.tile.mask, p.tile.valid, threshold))
        if skip_blank and is_blank(p.tile):
            continue
        counts += confusion(p.prob, p.tile.mask, p.tile.valid, threshold)
        if th_scan is not None:
            th_scan.update(p.prob, p.tile.mask, p.tile.valid)
    metrics = counts.metrics(json_safe=True)
    metrics["threshold"] = threshold
    return EvalResult(counts, metrics, threshold, rows, th_scan)


def write_per_image_csv(rows: list[dict], path: str | Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PER_IMAGE_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def evaluate(
    model_path: str | Path,
    dataset_path: str | Path | None = None,
    split: str = "test",
    threshold: float | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    out_csv: str | Path | None = None,
    device: str = "auto",
) -> EvalResult:
    """Metrics of a saved model on a split, at its stored threshold unless given."""
    meta, preds = predict_split(model_path, dataset_path, split, progress, cancel, device=device)
    skip = bool(meta.config.get("data", {}).get("skip_blank_in_metrics", False))
    result = evaluate_predictions(preds, meta.threshold if threshold is None else threshold, skip)
    if out_csv is not None:
        write_per_image_csv(result.rows, out_csv)
    return result
