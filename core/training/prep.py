"""Data preparation shared by network and per-pixel (LightGBM) training: the split,
the band statistics of the training split and the spectral indices."""

from __future__ import annotations

from ..config import RunConfig
from ..data.discovery import Pair, find_dataset
from ..data.splits import split_pairs
from ..data.stats import BandStats, index_stats, run_indices, summarize
from ..errors import InputError

INDICES = "indices.json"  # a run's spectral indices with their statistics


def prepare_data(cfg: RunConfig) -> tuple[list[Pair], BandStats, dict]:
    """Find pairs, apply the limit and the split, and compute training statistics."""
    index = find_dataset(cfg.data.path)
    if cfg.data.limit:
        index.pairs = index.pairs[: cfg.data.limit]
    pairs = split_pairs(index, cfg.data.split)
    missing = [s for s in ("train", "val") if not any(p.split == s for p in pairs)]
    if missing:
        raise InputError(
            f"{cfg.data.path}: the split has no {' and no '.join(missing)} tiles "
            f"({len(pairs)} pairs); use more data or larger split fractions"
        )
    summary = summarize(pairs, cfg.data.bands, stats_splits=("train",))
    balance = {k: v.as_dict() for k, v in summary.balance.items()}
    return pairs, summary.stats, {"form": index.form, "balance": balance}


def input_band_names(cfg: RunConfig, pairs: list[Pair], bands: list[int]) -> list[str]:
    """The Sentinel-2 names of the model's input ``bands`` on the first training raster
    (``data.band_names``, else its band descriptions, else the 12-band L2A order), or
    [] when they are not known; recorded in the model file so that rasters of other
    products are fed by name (core.models.band_mapping)."""
    from ..data.rasters import raster_info
    from ..models.band_mapping import input_band_names as names_of

    info = raster_info(pairs[0].image)
    return names_of(bands, info.count, info.descriptions, cfg.data.band_names)


def prepare_indices(cfg: RunConfig, pairs: list[Pair], init=None) -> list[dict]:
    """``data.indices`` resolved on the run's bands, with mean/std over the training
    split (core.models.indices); a starting model's own when the run keeps its
    normalisation (``model.init_normalisation: model``)."""
    if not cfg.data.indices:
        return []
    if init is not None and cfg.model.init_normalisation == "model" and init.meta.indices:
        return [dict(s) for s in init.meta.indices]
    specs = run_indices(cfg.data.indices, cfg.data.bands, cfg.data.band_names, pairs[0].image)
    return index_stats(pairs, cfg.data.bands, specs)
