"""Which tiles a saved model is scored on: its training split, reproduced, or another dataset.

On the model's own training dataset the split is reproduced from the model's stored
config (seed, fractions, group regex, limit) and checked against the split hash saved
in the model file (:class:`SplitMismatchError` when the dataset changed). Any other
dataset is used as found. Torch-free: int8 calibration (:mod:`core.segment.int8`) draws
its tiles from the training split too.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, load_stored_config
from ..data.discovery import DatasetError, Pair, find_dataset
from ..data.splits import split_pairs, split_signature
from ..models.meta import ModelMeta


class SplitMismatchError(DatasetError):
    """The model's training dataset no longer gives the split the model was trained on."""


def config_of_model(meta: ModelMeta) -> RunConfig:
    """The model's training config, migrated from its version; unknown settings of an
    older or newer stored config are ignored with a warning."""
    return load_stored_config(meta.config, meta.config.get("config_version", meta.config_version))


def training_dataset(meta: ModelMeta, cfg: RunConfig) -> Path:
    """The dataset the model was trained on (absolute when the model file records it)."""
    return Path(meta.split.get("dataset") or cfg.data.path)


def is_training_dataset(meta: ModelMeta, cfg: RunConfig, dataset_path: str | Path | None) -> bool:
    if dataset_path is None:
        return True
    return Path(dataset_path).resolve() == training_dataset(meta, cfg).resolve()


def split_of_model(
    meta: ModelMeta,
    dataset_path: str | Path | None,
    split: str = "test",
    model_path: str | Path | None = None,
) -> list[Pair]:
    """The pairs to score for ``split``, with their split names.

    The model's own dataset (``dataset_path`` None or the same path): the training
    split, reproduced with the stored limit and split settings and checked against
    the stored split hash (:class:`SplitMismatchError` when the dataset changed).
    Another dataset: no training selection applies. ``all`` is every tile; otherwise
    a predefined split is kept, or the stored seeded split settings (seed, fractions,
    group regex) split that dataset, without the training ``data.limit``.
    """
    cfg = config_of_model(meta)
    if not is_training_dataset(meta, cfg, dataset_path):
        index = find_dataset(dataset_path)
        return index.pairs if split == "all" else split_pairs(index, cfg.data.split)
    path = training_dataset(meta, cfg)
    index = find_dataset(path)
    if cfg.data.limit:
        index.pairs = index.pairs[: cfg.data.limit]
    pairs = split_pairs(index, cfg.data.split)
    stored = meta.split
    if stored.get("sha256"):
        got = split_signature(pairs, path)
        if got["sha256"] != stored["sha256"]:
            raise SplitMismatchError(
                f"{model_path or 'model'}: dataset {path} no longer gives the model's training "
                f"split ({got['tiles']} tiles now, {stored.get('tiles')} at training, split hash "
                "differs); the dataset changed: evaluate the run's split.csv or pass the "
                "dataset explicitly as another dataset"
            )
    return pairs
