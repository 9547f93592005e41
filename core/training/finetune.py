"""Fine-tuning: start a training run from the weights of an existing model file.

``model.init_from`` names a model file (or a run folder). The file is read with the
engine's model-file reader (``torch.load(weights_only=True)``: a file from someone
else cannot run code). The new run must build the same network: architecture,
encoder, ``model.params`` and the number of input bands are checked and any
difference is one error naming the file and both values; ``data.upscale`` must match
too (the weights learnt features at that scale). ``data.bands`` defaults to the
model's bands: found by Sentinel-2 name in the new dataset's rasters where the model
and they name their bands (core.models.band_mapping), else the model's band numbers.
The normalisation is the model's own (``model.init_normalisation: model``, what its
weights expect) or recomputed on the new training split (``data``).

Only the starting weights come from the file: optimiser, schedule, threshold, split
and metrics are the new run's. The run records where it started in ``init_from.json``
(path, SHA-256 of the file, the source model's bands, normalisation and metrics) and in
its config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.stats import BandStats
from ..errors import UserError
from ..io import file_sha256
from ..models.build import ModelMeta, read_model_file
from ..models.meta import ModelFileError, resolve_model_path


class IncompatibleModelError(ModelFileError):
    """The starting model cannot be the start of this run (other network or bands)."""


@dataclass
class InitModel:
    """The starting model: its file, metadata and weights."""

    path: Path
    meta: ModelMeta
    state: dict[str, torch.Tensor]

    def record(self) -> dict[str, Any]:
        """What ``init_from.json`` keeps about the starting model."""
        digest = file_sha256(self.path)
        m = self.meta
        return {
            "path": str(self.path.resolve()), "sha256": digest, "arch": m.arch,
            "encoder": m.encoder, "bands": list(m.bands), "mean": list(m.mean),
            "std": list(m.std), "upscale": m.upscale, "threshold": m.threshold,
            "metrics": m.metrics, "split": m.split,
        }  # fmt: skip


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def load_init_model(cfg: RunConfig) -> InitModel | None:
    """Read ``cfg.model.init_from`` and check it fits ``cfg``; fill ``data.bands``.

    Returns None when no starting model is set. Raises :class:`IncompatibleModelError`
    (one line naming the file and both values) when the network or bands differ.
    """
    if not cfg.model.init_from:
        return None
    path = resolve_model_path(cfg.model.init_from)
    meta, state = read_model_file(path)
    if meta.ensemble:
        raise IncompatibleModelError(
            f"{path}: is an ensemble of {meta.ensemble.get('size')} models; start from one "
            "of its members",
            field="model.init_from",
        )
    differences = []
    if _norm(meta.arch) != _norm(cfg.model.arch):
        differences.append(f"architecture {meta.arch} (run: {cfg.model.arch})")
    if meta.encoder != cfg.model.encoder:
        differences.append(f"encoder {meta.encoder} (run: {cfg.model.encoder})")
    if dict(meta.model_params or {}) != dict(cfg.model.params or {}):
        differences.append(f"model.params {meta.model_params} (run: {cfg.model.params})")
    # The model's bands in this dataset's rasters: by Sentinel-2 name where both name
    # them (another product numbers them differently), else the model's numbers.
    bands = _bands_in_dataset(cfg, meta, path) or list(meta.bands)
    if cfg.data.bands is not None and list(cfg.data.bands) != bands:
        differences.append(f"bands {bands} (run: {cfg.data.bands})")
    if meta.upscale != cfg.data.upscale:
        differences.append(f"upscale {meta.upscale} (run: data.upscale {cfg.data.upscale})")
    own = [s["name"] for s in meta.indices]
    if own != [str(n).lower() for n in cfg.data.indices]:
        differences.append(f"indices {own} (run: data.indices {list(cfg.data.indices)})")
    if differences:
        raise IncompatibleModelError(
            f"{path}: cannot start this run from that model: it has "
            + "; ".join(differences)
            + ". Set the run's settings to the model's, or train from scratch",
            field="model.init_from",
        )
    if cfg.data.bands is None:
        cfg.data.bands = bands
    return InitModel(path, meta, state)


def _bands_in_dataset(cfg: RunConfig, meta: ModelMeta, path: Path) -> list[int] | None:
    """The raster bands of the run's dataset that carry the model's named bands, or None
    (no names, or the dataset's rasters do not name theirs, or no dataset to look at:
    its own check says why). IncompatibleModelError when a named band is missing."""
    from ..data.discovery import find_dataset
    from ..data.rasters import raster_info
    from ..models.band_mapping import choose_bands

    if not meta.band_names:
        return None
    try:
        first = find_dataset(cfg.data.path).pairs[0].image
        info = raster_info(first)
    except (UserError, IndexError):
        return None
    try:
        chosen = choose_bands(meta.bands, meta.band_names, info.count, info.descriptions,
                              str(first), cfg.data.band_names)  # fmt: skip
    except UserError as exc:
        raise IncompatibleModelError(f"{path}: {exc}", field="model.init_from") from None
    return chosen.bands if chosen else None


def starting_stats(stats: BandStats, init: InitModel | None, how: str) -> BandStats:
    """The normalisation the run trains with: the model's (``how == "model"``) or the
    training split's own ``stats``. Counts, minima and maxima stay the data's."""
    if init is None or how != "model":
        return stats
    if len(init.meta.mean) != len(stats.bands):
        raise IncompatibleModelError(
            f"{init.path}: normalisation has {len(init.meta.mean)} band(s), the run "
            f"{len(stats.bands)}",
            field="model.init_from",
        )
    return BandStats(
        bands=list(stats.bands), count=list(stats.count), mean=list(init.meta.mean),
        std=list(init.meta.std), min=list(stats.min), max=list(stats.max),
    )  # fmt: skip


def load_weights(model: torch.nn.Module, init: InitModel) -> None:
    """Load the starting weights (every tensor must match; one error otherwise)."""
    try:
        model.load_state_dict(init.state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise IncompatibleModelError(
            f"{init.path}: its weights do not fit the run's network ({first})",
            field="model.init_from",
        ) from None
