"""Per-pixel LightGBM training (``model.arch: lightgbm``), with a network run's record.

``python -m core train`` (and every front end of :func:`core.training.loop.train`)
runs this when ``model.arch`` is ``lightgbm``; the one check is still
:func:`~core.training.checks.check_train`. The run uses the same split as a network
(``data.split``: seed 42, fractions, group regex; ``data.limit``), the same band
statistics and spectral indices (:mod:`core.training.prep`), and ends with the same
record (:func:`~core.training.runs.record_results`): threshold chosen on val, exact
TP/TN/FP/FN metrics of every split at native resolution, per-image and per-plant
tables, threshold scan, plots, ``metrics.json``, ``run.json`` and ``model.pt``
(:mod:`core.models.pixel_gbm`; the booster also as ``model.txt``).

Training pixels: the valid pixels of the training tiles, sampled per pixel with a
generator seeded by ``train.seed`` so that about ``gbm.max_pixels`` remain (all when
fewer), with ``gbm.positive_share`` positives when set (else the data's own share).
The val pixels (bounded the same way, uniformly) drive early stopping on log-loss
(``gbm.early_stopping`` rounds). ``history.csv`` has one row per boosting round
(``epoch`` = round): log-loss and IoU at 0.5 of the training sample and of val.
``train.threads`` sets LightGBM's threads; ``train.max_minutes`` stops the boosting
(the best round so far is kept); cancel stops within one round.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import CONFIG_VERSION, RunConfig, stored_config_dict
from ..data.discovery import Pair
from ..data.splits import split_signature
from ..data.tiles import read_tile
from ..errors import raise_problems
from ..evaluation.evaluate import predict_pixel_model
from ..evaluation.metrics import confusion
from ..models.build import MODEL_FILENAME, save_model_file
from ..models.meta import LIGHTGBM, ModelMeta
from ..models.pixel_gbm import PAYLOAD_KEY, TEXT_FILENAME, PixelModel, feature_names, features
from ..progress import (
    CancelFn,
    Cancelled,
    Progress,
    ProgressFn,
    check_cancel,
    never_cancel,
    no_progress,
)
from . import runs
from .checks import check_train
from .prep import input_band_names, prepare_data, prepare_indices
from .runs import RunResult

SPLITS = ("train", "val", "test")


def sample_pixels(
    pairs: list[Pair],
    bands: list[int] | None,
    specs: list[dict],
    rng: np.random.Generator,
    max_pixels: int | None,
    positive_share: float | None,
    balance: dict,
    cancel: CancelFn = never_cancel,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, C + K) float32 and labels (N,) uint8 of a seeded sample of the
    valid pixels of ``pairs``: each pixel kept with probability ``max / count`` (per
    class with ``positive_share``), so about ``max_pixels`` remain; ``balance`` holds
    the split's ``valid_pixels`` and ``positive_pixels``."""
    n_valid = int(balance["valid_pixels"])
    n_pos = int(balance["positive_pixels"])
    n_neg = n_valid - n_pos
    if max_pixels is None:
        keep_pos = keep_neg = 1.0
    elif positive_share is None:
        keep_pos = keep_neg = min(1.0, max_pixels / max(n_valid, 1))
    else:
        keep_pos = min(1.0, positive_share * max_pixels / max(n_pos, 1))
        keep_neg = min(1.0, (1 - positive_share) * max_pixels / max(n_neg, 1))
    xs, ys = [], []
    for pair in pairs:
        check_cancel(cancel)
        tile = read_tile(pair, bands)
        raw, y = tile.image[:, tile.valid], tile.mask[tile.valid]
        keep = rng.random(y.size) < np.where(y > 0, keep_pos, keep_neg)
        xs.append(features(raw[:, keep], specs))
        ys.append(y[keep].astype(np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def _iou_eval(preds: np.ndarray, data) -> tuple[str, float, bool]:
    """LightGBM eval function: IoU at 0.5 (exact counts) of a dataset's pixels."""
    c = confusion(preds, data.get_label(), None, 0.5)
    return "iou", c.metrics()["iou"], True


class _Rounds:
    """LightGBM callback: history rows, progress, best round on val log-loss, early
    stopping, time budget and cancel (the last three stop with the best round kept)."""

    def __init__(self, cfg: RunConfig, progress: ProgressFn, cancel: CancelFn):
        self.cfg, self.progress, self.cancel = cfg, progress, cancel
        self.history: list[dict] = []
        self.best_round, self.best_loss, self.best_results = 0, np.inf, []
        self.status = "completed"
        self.t0 = self.t_last = time.monotonic()
        self.order = 20  # after LightGBM's own callbacks

    def __call__(self, env) -> None:
        import lightgbm

        values = {f"{name}_{metric}": value for name, metric, value, *_ in
                  env.evaluation_result_list}  # fmt: skip
        now = time.monotonic()
        row = {"epoch": env.iteration + 1, "lr": self.cfg.gbm.learning_rate,
               "train_loss": values.get("train_binary_logloss"),
               "train_iou": values.get("train_iou"),
               "val_loss": values.get("val_binary_logloss"), "val_iou": values.get("val_iou"),
               "seconds": now - self.t_last}  # fmt: skip
        self.t_last = now
        self.history.append(row)
        if row["val_loss"] < self.best_loss:
            self.best_round, self.best_loss = env.iteration, row["val_loss"]
            self.best_results = list(env.evaluation_result_list)
        rounds = self.cfg.gbm.rounds
        info = {"epoch": env.iteration + 1, "epochs": rounds, "loss": row["train_loss"]}
        if (env.iteration + 1) % 10 == 0:  # a history row every 10 rounds (one line each)
            info["history_row"] = dict(row)
        self.progress(
            Progress(
                "train",
                (env.iteration + 1) / rounds,
                f"round {env.iteration + 1}/{rounds}: val loss {row['val_loss']:.4f} "
                f"val IoU {row['val_iou']:.4f}",
                info,
            )
        )
        patience = self.cfg.gbm.early_stopping
        budget = self.cfg.train.max_minutes
        if self.cancel():
            self.status = "cancelled"
        elif patience and env.iteration - self.best_round >= patience:
            self.status = "early_stopped"
        elif budget and env.iteration + 1 < rounds:
            elapsed = now - self.t0
            if elapsed + elapsed / (env.iteration + 1) > budget * 60:
                self.status = "time_limit"
        if self.status != "completed":
            raise lightgbm.callback.EarlyStopException(self.best_round, self.best_results)


def lightgbm_params(cfg: RunConfig) -> dict:
    """The LightGBM parameters of a run: deterministic, seeded, row-wise histograms,
    ``gbm.params`` on top (except objective and metric: binary, log-loss)."""
    g = cfg.gbm
    return {
        "learning_rate": g.learning_rate,
        "num_leaves": g.num_leaves,
        "seed": cfg.train.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.train.threads or 0,
        "verbosity": -1,
        **dict(g.params),
        # The run's objective and the val metric its early stopping reads.
        "objective": "binary",
        "metric": "binary_logloss",
    }


def train_pixels(
    cfg: RunConfig, progress: ProgressFn = no_progress, cancel: CancelFn = never_cancel
) -> RunResult:
    """Train a per-pixel LightGBM model as configured and write a complete run folder."""
    import lightgbm

    raise_problems(check_train(cfg))  # every refused setting, before the run folder exists
    run_dir = runs.new_run_dir(cfg)
    progress(Progress("prepare", 0.0, "pixels: split, statistics, indices", {"device": "cpu"}))
    pairs, stats, data_info = prepare_data(cfg)
    specs = prepare_indices(cfg, pairs)
    runs.write_run_inputs(run_dir, cfg, pairs, stats, data_info, specs)

    by = {s: [p for p in pairs if p.split == s] for s in SPLITS}
    rng = np.random.default_rng(cfg.train.seed)
    g, balance = cfg.gbm, data_info["balance"]
    x_train, y_train = sample_pixels(by["train"], cfg.data.bands, specs, rng, g.max_pixels,
                                     g.positive_share, balance["train"], cancel)  # fmt: skip
    x_val, y_val = sample_pixels(by["val"], cfg.data.bands, specs, rng, g.max_pixels, None,
                                 balance["val"], cancel)  # fmt: skip
    names = feature_names(stats.bands, specs)
    params = lightgbm_params(cfg)
    train_set = lightgbm.Dataset(x_train, y_train, feature_name=names, free_raw_data=False)
    val_set = lightgbm.Dataset(x_val, y_val, reference=train_set, free_raw_data=False)
    rounds = _Rounds(cfg, progress, cancel)
    t0 = time.monotonic()
    booster = lightgbm.train(
        params, train_set, num_boost_round=g.rounds, valid_sets=[train_set, val_set],
        valid_names=["train", "val"], feval=_iou_eval, callbacks=[rounds],
    )  # fmt: skip
    seconds = time.monotonic() - t0
    best = rounds.best_round + 1
    text = booster.model_to_string(num_iteration=best)
    runs.write_history(run_dir / "history.csv", rounds.history)
    (run_dir / TEXT_FILENAME).write_text(text)

    meta = ModelMeta(
        arch=LIGHTGBM,
        encoder="gbdt",
        in_channels=len(stats.bands),
        bands=list(stats.bands),
        band_names=input_band_names(cfg, pairs, list(stats.bands)),
        mean=list(stats.mean),
        std=list(stats.std),
        threshold=0.5,
        upscale=1,
        pad_multiple=1,
        overlap=0,  # one pixel at a time: windows need no overlap
        model_params={**params, "rounds": best, "features": names,
                      "training_pixels": int(y_train.size),
                      "training_positive": int(y_train.sum()), "seconds": round(seconds, 2)},
        config=stored_config_dict(cfg),
        config_version=CONFIG_VERSION,
        split=split_signature(pairs, cfg.data.path),
        indices=specs,
    )  # fmt: skip

    def save(m: ModelMeta) -> None:
        save_model_file(run_dir / MODEL_FILENAME, None, m, {PAYLOAD_KEY: text})

    save(meta)
    run_json = {"status": rounds.status, "best_epoch": best, "device": "cpu",
                "training_pixels": int(y_train.size), "train_seconds": round(seconds, 2)}  # fmt: skip
    if rounds.status == "cancelled":
        runs.write_json(run_dir / "run.json", run_json)
        return RunResult(run_dir, "cancelled", best, 0.5, {}, "cpu")
    model = PixelModel(meta, text, cfg.train.threads or 0)
    preds = {}
    for k, split in enumerate(s for s in SPLITS if by[s]):

        def report(p: Progress, k=k, split=split) -> None:
            progress(Progress("evaluate", (k + p.fraction) / 3, f"{split}: {p.message}"))

        try:
            preds[split] = predict_pixel_model(model, by[split], report, cancel)
        except Cancelled:
            run_json["status"] = "cancelled"
            runs.write_json(run_dir / "run.json", run_json)
            return RunResult(run_dir, "cancelled", best, 0.5, {}, "cpu")
    final = runs.record_results(run_dir, preds, cfg, meta, save, run_json, rounds.status, best)
    return RunResult(run_dir, rounds.status, best, final["threshold"], final["metrics"], "cpu")
