"""Evaluate a saved model on a dataset split, exactly as its training run did.

On the model's own training dataset the split is reproduced from the model's stored
config (seed, fractions, group regex, limit) and checked against the split hash saved
in the model file. Any other dataset (including a manifest such as the run's
``split.csv``) is used as found: ``all`` scores every tile, a predefined split is
kept, and without one the seeded split settings are applied to it (never the limit).
Metrics come from integer counts summed over the whole split at native resolution;
per-tile rows give the table the plugin's error analysis shows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import TileDataset
from ..data.discovery import Pair
from ..data.tiles import Tile
from ..errors import InputError, Problem, UserError, raise_problems
from ..io import atomic_write_text
from ..models.build import ModelMeta, load_model, min_input_side, resolve_device
from ..models.meta import read_model_meta
from ..models.precision import Numerics
from ..progress import CancelFn, ProgressFn, never_cancel, no_progress
from ..segment.options import DEFAULT_CALIBRATION_TILES
from .model_split import (  # noqa: F401 (public here too)
    SplitMismatchError,
    config_of_model,
    is_training_dataset,
    split_of_model,
    training_dataset,
)
from .plants import plants_of_predictions, write_plants_csv
from .predict import ProbabilityNet, iter_native_probabilities
from .scoring import EvalResult, evaluate_predictions, is_blank  # noqa: F401 (public here too)

# --precision of evaluate and predict-split (int8: core.segment.int8).
EVAL_PRECISIONS = ("auto", "fp32", "bf16", "int8")

PER_IMAGE_FIELDS = ["tile_id", "iou", "f1", "precision", "recall", "tp", "fp", "fn", "tn",
                    "positive_pixels", "predicted_pixels", "valid_pixels"]  # fmt: skip


@dataclass
class TilePrediction:
    """A tile and its predicted probability at native resolution."""

    pair: Pair
    tile: Tile
    prob: np.ndarray

    # What :func:`.scoring.evaluate_predictions` reads (the plugin's tiles have the same).
    @property
    def tile_id(self) -> str:
        return str(self.pair.id)

    @property
    def mask(self) -> np.ndarray:
        return self.tile.mask

    @property
    def valid(self) -> np.ndarray:
        return self.tile.valid


def dataset_bands(meta: ModelMeta, pairs: list[Pair]) -> list[int]:
    """The raster bands of ``pairs`` that feed the model, in input order: found by
    Sentinel-2 band name when the model and the first raster name their bands (another
    product numbers them differently, core.models.band_mapping), else the model's band
    numbers. RasterError (one line, field ``bands``) when the rasters lack a band."""
    from ..data.rasters import check_bands, raster_info
    from ..models.band_mapping import choose_bands

    if not pairs or not meta.bands:
        return list(meta.bands)
    info = raster_info(pairs[0].image)
    chosen = choose_bands(
        meta.bands, meta.band_names, info.count, info.descriptions, str(pairs[0].image)
    )
    return chosen.bands if chosen else check_bands(meta.bands, info.count, pairs[0].image)


def tile_dataset(meta: ModelMeta, pairs: list[Pair]) -> TileDataset:
    """An un-augmented dataset normalised and shaped as the model expects (its bands
    chosen by :func:`dataset_bands`)."""
    return TileDataset(
        pairs,
        dataset_bands(meta, pairs),
        meta.mean,
        meta.std,
        upscale=meta.upscale,
        pad_multiple=meta.pad_multiple,
        augment=None,
        min_size=min_input_side(meta.arch),
    )


def eval_batch_size(meta: ModelMeta) -> int:
    """The batch size the run evaluated with: same batches, bit-identical outputs."""
    return config_of_model(meta).train.eval_batch_size


def numerics_of_model(
    meta: ModelMeta, device: torch.device | str, precision: str | None = None
) -> Numerics:
    """The precision and memory format to run a model in: its stored
    ``train.precision`` / ``train.channels_last`` settings (``precision`` overrides the
    first), resolved on this machine, as its training run's own evaluation did. So a
    model trained with ``auto`` runs in bf16 where the CPU has it, fp32 elsewhere."""
    train = config_of_model(meta).train
    return Numerics.resolve(precision or train.precision, train.channels_last, device, train.amp)


def predict_dataset(
    model: torch.nn.Module,
    meta: ModelMeta,
    ds: TileDataset,
    device: torch.device,
    tta: bool = False,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    numerics: Numerics | None = None,
) -> list[TilePrediction]:
    """Native-resolution probabilities (float32) for every tile of ``ds``, the network
    run in ``numerics`` (default: :func:`numerics_of_model`)."""
    if numerics is None:
        numerics = numerics_of_model(meta, device)
    return [
        TilePrediction(ds.pairs[i], ds.tile(i), prob)
        for i, prob in iter_native_probabilities(
            model, ds, device, eval_batch_size(meta), tta, progress, cancel, numerics=numerics
        )
    ]


def predict_pixel_model(
    model,
    pairs: list[Pair],
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    chunk: int = 64,
) -> list[TilePrediction]:
    """Probabilities of a per-pixel LightGBM model (:class:`~core.models.pixel_gbm.
    PixelModel`) for every tile of ``pairs``, at native resolution (0 on invalid
    pixels, which no metric counts); tiles are predicted ``chunk`` at a time."""
    from ..data.tiles import read_tile
    from ..progress import Progress, check_cancel

    out: list[TilePrediction] = []
    n = len(pairs)
    bands = dataset_bands(model.meta, pairs)
    for start in range(0, n, chunk):
        check_cancel(cancel)
        tiles = [read_tile(p, bands) for p in pairs[start : start + chunk]]
        raw = np.concatenate([t.image[:, t.valid] for t in tiles], axis=1)
        flat = model.predict_pixels(raw)
        offset = 0
        for pair, t in zip(pairs[start : start + chunk], tiles, strict=True):
            prob = np.zeros(t.valid.shape, np.float32)
            k = int(t.valid.sum())
            prob[t.valid] = flat[offset : offset + k]
            offset += k
            out.append(TilePrediction(pair, t, prob))
        done = min(start + chunk, n)
        progress(Progress("predict", done / n, f"{done}/{n} tiles"))
    return out


def check_evaluate(
    model_path: str | Path,
    dataset_path: str | Path | None = None,
    split: str = "test",
    threshold: float | None = None,
    device: str = "auto",
    blend: str | Path | None = None,
    blend_weight: float | None = None,
    precision: str | None = None,
    calibration: str | Path | None = None,
    calibration_tiles: int = DEFAULT_CALIBRATION_TILES,
) -> list[Problem]:
    """The one check of an evaluation's (and a split prediction's) inputs: every problem
    keyed by field (``model``, ``dataset``, ``split``, ``threshold``, ``device``,
    ``blend``, ``blend_weight``, ``precision``, ``calibration``), before the network is
    built or anything is written. With ``blend`` (a second model, :mod:`.combine`), both
    models must score the same tiles in ``split`` and in val (where the weight is
    chosen)."""
    problems: list[Problem] = []
    if precision not in (None, *EVAL_PRECISIONS):
        problems.append(
            Problem("precision", f"precision must be auto, fp32, bf16 or int8, got {precision!r}")
        )
    if split not in ("train", "val", "test", "all"):
        problems.append(Problem("split", f"split must be train, val, test or all, got {split!r}"))
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        problems.append(Problem("threshold", f"threshold must be in [0, 1], got {threshold}"))
    try:
        resolve_device(device)
    except UserError as exc:
        problems.append(Problem.of("device", exc))
    try:
        meta = read_model_meta(model_path)  # metadata only: the weights are not read
    except UserError as exc:
        return problems + [Problem.of("model", exc)]
    if precision == "int8":
        from ..segment.int8 import calibration_problems

        problems += calibration_problems(meta, calibration, calibration_tiles)
    if any(p.field == "split" for p in problems):
        return problems
    try:
        pairs = split_of_model(meta, dataset_path, split, model_path)
    except UserError as exc:
        return problems + [Problem.of("dataset", exc)]
    if split != "all" and not any(p.split == split for p in pairs):
        where = dataset_path or "the model's dataset"
        problems.append(Problem("split", f"{where}: split {split!r} has no tiles"))
    try:
        dataset_bands(meta, pairs)
    except UserError as exc:  # the dataset's rasters lack a band of the model
        problems.append(Problem("dataset", str(exc), exc))
    if blend is not None:
        problems += _blend_problems(pairs, dataset_path, split, blend, blend_weight)
    return problems


def _blend_problems(pairs, dataset_path, split, blend, weight) -> list[Problem]:
    """The second model of a blend: readable, scoring the same tiles as the first in
    ``split`` and in val; the weight in [0, 1]."""
    out = []
    if weight is not None and not 0.0 <= weight <= 1.0:
        out.append(Problem("blend_weight", f"blend weight must be in [0, 1], got {weight}"))
    try:
        other = read_model_meta(blend)
        other_pairs = split_of_model(other, dataset_path, split, blend)
    except UserError as exc:
        return out + [Problem.of("blend", exc)]

    def tiles(ps, s):
        return [str(p.image) for p in ps if s == "all" or p.split == s]

    for s in dict.fromkeys([split, "val"]):
        if tiles(pairs, s) != tiles(other_pairs, s):
            out.append(Problem("blend", f"{blend}: its {s} split is not the model's "
                               f"({len(tiles(other_pairs, s))} vs {len(tiles(pairs, s))} tiles "
                               "or other tiles); blend models trained on the same split"))  # fmt: skip
            break
    if not tiles(pairs, "val"):
        out.append(Problem("blend", "the dataset has no val tiles to choose the blend on"))
    return out


def predict_split(
    model_path: str | Path,
    dataset_path: str | Path | None = None,
    split: str = "test",
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    tta: bool | None = None,
    device: str = "auto",
    precision: str | None = None,
    calibration: str | Path | None = None,
    calibration_tiles: int = DEFAULT_CALIBRATION_TILES,
) -> tuple[ModelMeta, list[TilePrediction]]:
    """Load a model (run folder or model file) and predict one split (or ``all``).

    The tiles are chosen by :func:`split_of_model`: the training split on the model's
    own dataset, every tile (``all``) of another dataset. ``precision`` (auto, fp32,
    bf16) overrides the model's stored ``train.precision``; ``int8`` runs the model's
    int8 ONNX graph on ONNX Runtime (quantised as ``segment --precision int8`` does,
    with ``calibration`` / ``calibration_tiles``, and cached).
    """
    raise_problems(
        check_evaluate(model_path, dataset_path, split, None, device, precision=precision,
                       calibration=calibration, calibration_tiles=calibration_tiles)
    )  # fmt: skip
    if read_model_meta(model_path).is_pixel_model:  # LightGBM: no network, no device
        from ..models.pixel_gbm import PixelModel

        pixel_model = PixelModel.load(model_path)
        meta = pixel_model.meta
        pairs = _split_tiles(meta, dataset_path, split, model_path)
        return meta, predict_pixel_model(pixel_model, pairs, progress, cancel)
    dev = resolve_device(device)
    if precision == "int8":
        model, meta = _int8_net(model_path, calibration, calibration_tiles, device, progress)
        precision = "fp32"  # of the (absent) torch network: the graph is int8
    else:
        model, meta = load_model(model_path, dev)
    pairs = _split_tiles(meta, dataset_path, split, model_path)
    if tta is None:
        tta = config_of_model(meta).train.tta
    numerics = numerics_of_model(meta, dev, precision)
    ds = tile_dataset(meta, pairs)
    return meta, predict_dataset(model, meta, ds, dev, tta, progress, cancel, numerics)


def _split_tiles(meta, dataset_path, split: str, model_path) -> list[Pair]:
    pairs = split_of_model(meta, dataset_path, split, model_path)
    if split != "all":
        pairs = [p for p in pairs if p.split == split]
    if not pairs:
        raise InputError(f"split {split!r} has no tiles")
    return pairs


def _int8_net(model_path, calibration, calibration_tiles, device, progress):
    """The model's int8 ONNX graph (:func:`core.segment.int8.int8_model`) as a
    :class:`~.predict.ProbabilityNet`, and the model's metadata."""
    from ..segment.backends import OnnxBackend
    from ..segment.int8 import int8_model

    path = int8_model(model_path, calibration, calibration_tiles, progress=progress)
    backend = OnnxBackend(path, device="cpu" if device == "cpu" else "auto")
    return ProbabilityNet(backend.predict), read_model_meta(model_path)


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
    plants_csv: str | Path | None = None,
    tta: bool | None = None,
    precision: str | None = None,
    blend: str | Path | None = None,
    blend_weight: float | None = None,
    calibration: str | Path | None = None,
    calibration_tiles: int = DEFAULT_CALIBRATION_TILES,
) -> EvalResult:
    """Metrics of a saved model on a split, at its stored threshold unless given:
    pixel metrics and plant-level results (``result.plants``; one row per plant in
    ``plants_csv`` when given).

    ``dataset_path`` None (or the model's training dataset): the split of training,
    reproduced with the stored ``data.limit`` and split settings and verified against
    the split hash in the model file (:class:`SplitMismatchError` if the dataset
    changed). Another dataset: ``split="all"`` scores every one of its tiles; ``test``
    / ``val`` / ``train`` use its predefined split, or, when it has none, the model's
    seeded split settings (seed, fractions, group regex) applied to it. Training-time
    tile selection (``data.limit``, the training split) never applies to it.
    ``precision`` (auto, fp32, bf16) overrides the model's stored ``train.precision``;
    ``int8`` scores the model's int8 ONNX graph (see :func:`predict_split`).

    ``blend`` (a second model) scores the average ``(1 - w) * p + w * p_blend`` with
    the weight ``blend_weight``, or chosen on val with the threshold (:mod:`.combine`);
    ``result.metrics`` then also has ``blend_weight`` and ``blend_val_iou``.
    """
    raise_problems(
        check_evaluate(
            model_path,
            dataset_path,
            split,
            threshold,
            device,
            blend,
            blend_weight,
            precision,
            calibration,
            calibration_tiles,
        )
    )
    if blend is not None:
        from .combine import evaluate_blend

        def predict(path, which):
            return predict_split(path, dataset_path, which, progress, cancel, tta=tta,
                                 device=device, precision=precision, calibration=calibration,
                                 calibration_tiles=calibration_tiles)[1]  # fmt: skip

        skip = config_of_model(read_model_meta(model_path)).data.skip_blank_in_metrics
        result, choice, preds = evaluate_blend(
            model_path, blend, dataset_path, split, blend_weight, threshold, predict, skip
        )
        threshold = choice.threshold
    else:
        meta, preds = predict_split(
            model_path,
            dataset_path,
            split,
            progress,
            cancel,
            tta=tta,
            device=device,
            precision=precision,
            calibration=calibration,
            calibration_tiles=calibration_tiles,
        )
        skip = config_of_model(meta).data.skip_blank_in_metrics
        threshold = meta.threshold if threshold is None else threshold
        result = evaluate_predictions(preds, threshold, skip)
    # Plants over every tile of the split (a blank tile can hold false detections).
    result.plants = plants_of_predictions(preds, threshold)
    if out_csv is not None:
        write_per_image_csv(result.rows, out_csv)
    if plants_csv is not None and result.plants is not None:
        write_plants_csv(result.plants, plants_csv)
    return result
