"""The training loop behind the plugin's Train button and ``python -m core train``.

Every knob of the tuning notes is a setting in :class:`~core.config.RunConfig`, and
every run leaves a complete record in its run folder (see :mod:`core.training.runs`). The loop
reports progress per batch, honours a cancel check within one batch, keeps the best
model (atomically written), can resume from its last checkpoint, and never imports
QGIS (the plugin wraps it in a QgsTask).
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import CONFIG_VERSION, RunConfig, from_dict, stored_config_dict
from ..data.dataset import TileDataset
from ..data.discovery import Pair, find_dataset
from ..data.splits import split_signature
from ..data.stats import BandStats
from ..errors import InputError
from ..evaluation.metrics import ConfusionCounts, confusion
from ..evaluation.predict import iter_batches, to_native
from ..io import atomic_write_bytes
from ..models import pretrained
from ..models.build import (
    MODEL_FILENAME,
    ModelMeta,
    build_network,
    encoder_source,
    min_input_side,
    resolve_device,
    save_model_file,
    set_bn_momentum,
)
from ..models.meta import is_pixel_arch
from ..models.precision import FP32, Numerics
from ..progress import CancelFn, Cancelled, Progress, ProgressFn, never_cancel, no_progress
from . import distributed, runs
from .averaging import WeightEMA
from .checks import check_train, pretrained_bands
from .finetune import load_init_model, load_weights, starting_stats
from .losses import auto_pos_weight, build_loss, needs_class_balance, resolve_auto
from .prep import INDICES, input_band_names, prepare_data, prepare_indices
from .runs import RunResult

SPLITS = ("train", "val", "test")
CHECKPOINT = "checkpoint.pt"
ENCODER_SOURCE = "encoder_source.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_datasets(cfg: RunConfig, pairs: list[Pair], stats: BandStats) -> dict[str, TileDataset]:
    """One TileDataset per split; augmentation on the training split only."""
    out = {}
    for split in SPLITS:
        members = [p for p in pairs if p.split == split]
        if not members:
            continue
        out[split] = TileDataset(
            members,
            cfg.data.bands,
            stats.mean,
            stats.std,
            upscale=cfg.data.upscale,
            pad_multiple=cfg.data.pad_multiple,
            augment=cfg.data.augment if split == "train" else None,
            seed=cfg.train.seed,
            min_size=min_input_side(cfg.model.arch),
            crop=cfg.data.train_crop if split == "train" else None,
        )
    return out


def _blank(ds: TileDataset) -> list[bool]:
    return [not ds.tile(i).mask[ds.tile(i).valid].any() for i in range(len(ds))]


def resolve_loss(cfg: RunConfig, data_info: dict) -> tuple[list, dict]:
    """The run's loss terms with ``pos_weight: auto`` replaced by the training split's
    negative/positive pixel ratio (``data_info["balance"]["train"]``, what
    ``dataset.json`` holds), and the record written to ``loss.json``."""
    record: dict = {"terms": [], "skip_blank": bool(cfg.data.skip_blank_in_loss)}
    terms = list(cfg.loss.terms)
    if needs_class_balance(terms):
        train_balance = data_info["balance"]["train"]
        positive, valid = train_balance["positive_pixels"], train_balance["valid_pixels"]
        pos_weight = auto_pos_weight(positive, valid)
        terms = resolve_auto(terms, pos_weight)
        record["pos_weight_auto"] = {
            "value": pos_weight, "positive_pixels": positive, "valid_pixels": valid,
            "split": "train",
        }  # fmt: skip
    record["terms"] = [{"name": t.name, "weight": t.weight, "params": dict(t.params)}
                       for t in terms]  # fmt: skip
    return terms, record


class _Schedule:
    """Optimizer LR schedule: optional linear warm-up, then step / plateau / cosine."""

    def __init__(self, opt: torch.optim.Optimizer, cfg: RunConfig) -> None:
        o = cfg.optim
        self.opt, self.warmup, self.base = opt, o.warmup_epochs, o.lr
        after = max(1, cfg.train.epochs - o.warmup_epochs)
        self.inner: torch.optim.lr_scheduler.LRScheduler | None
        if o.scheduler == "step":
            self.inner = torch.optim.lr_scheduler.StepLR(opt, o.step_size, o.gamma)
        elif o.scheduler == "plateau":
            self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=o.gamma, patience=o.plateau_patience
            )
        elif o.scheduler == "cosine":
            self.inner = torch.optim.lr_scheduler.CosineAnnealingLR(opt, after, eta_min=o.lr * 1e-2)
        else:
            self.inner = None
        self.set_for_epoch(0)

    def set_for_epoch(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based) during warm-up."""
        if epoch < self.warmup:
            for g in self.opt.param_groups:
                g["lr"] = self.base * (epoch + 1) / (self.warmup + 1)
        elif epoch == self.warmup and self.warmup:
            for g in self.opt.param_groups:
                g["lr"] = self.base

    def step(self, epoch: int, val_loss: float) -> None:
        """After epoch ``epoch`` (0-based)."""
        if epoch + 1 < self.warmup or self.inner is None:
            self.set_for_epoch(epoch + 1)
            return
        if epoch + 1 == self.warmup:
            self.set_for_epoch(epoch + 1)
            return
        if isinstance(self.inner, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.inner.step(val_loss)
        else:
            self.inner.step()

    def state_dict(self) -> dict:
        return self.inner.state_dict() if self.inner is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.inner is not None and state:
            self.inner.load_state_dict(state)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


def _evaluate_epoch(
    model,
    ds,
    loss_fn,
    device,
    cfg,
    cancel,
    numerics: Numerics = FP32,
    dist=distributed.SINGLE,
) -> tuple[float, ConfusionCounts]:
    """Loss (at model resolution) and native-resolution counts at threshold 0.5, from
    one forward pass per batch (in the run's precision; the loss on float32 logits).
    Under DDP: this rank's batches, then summed over ranks by
    :func:`.distributed.gather_epoch_eval`, as one process would."""
    batch_losses, n = [], 0
    counts = ConfusionCounts()
    bs = cfg.train.eval_batch_size
    ds = distributed.shard(dist, ds, bs)
    blank = _blank(ds) if cfg.data.skip_blank_in_metrics else None
    batches = iter_batches(
        model, ds, device, bs, cancel=cancel, with_targets=True, numerics=numerics
    )
    cancelled = False
    try:
        for idx, prob, logits in batches:
            items = [ds[i] for i in idx]
            y = torch.stack([it[1] for it in items]).to(device)
            v = torch.stack([it[2] for it in items]).to(device)
            batch_losses.append(float(loss_fn(logits, y, v)) * len(idx))
            n += len(idx)
            for j, i in enumerate(idx):
                if blank is not None and blank[i]:
                    continue
                t = ds.tile(i)
                counts += confusion(to_native(prob[j : j + 1], ds, i), t.mask, t.valid, 0.5)
    except Cancelled:
        if not dist.enabled:
            raise
        cancelled = True  # the other ranks learn it in gather_epoch_eval
    return distributed.gather_epoch_eval(dist, batch_losses, n, counts, cancelled)


def train(
    cfg: RunConfig,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    resume: str | Path | None = None,
) -> RunResult:
    """Train a model as configured and write a complete run folder.

    With ``resume`` (a run folder with ``checkpoint.pt``), the run continues from its
    last finished epoch with the config, split and history it had. With
    ``model.init_from`` the network starts from that model file's weights
    (:mod:`core.training.finetune`; checked before the run folder is created).

    Started by ``torchrun`` (``RANK``/``WORLD_SIZE`` set, more than one process), the
    processes train one model with DDP and only rank 0 writes the run folder
    (:mod:`core.training.distributed`); otherwise this is one process, as always.
    """
    if resume is None and is_pixel_arch(cfg.model.arch):
        from .pixels import train_pixels  # per-pixel LightGBM: no network, no DDP

        return train_pixels(cfg, progress, cancel)
    if resume is not None and is_pixel_arch(runs.resume_arch(resume)):
        raise InputError(f"{resume}: a LightGBM run cannot be resumed; train it again")
    train_cfg = runs.resume_settings(resume) if resume is not None else cfg.train
    dist = distributed.setup(train_cfg.device, train_cfg.threads)
    try:
        return _train(cfg, progress, cancel, resume, dist)
    finally:
        distributed.teardown(dist)


def _train(cfg, progress, cancel, resume, dist: distributed.Dist) -> RunResult:
    if not dist.is_main:
        progress = no_progress  # one voice: rank 0 reports
    init = None
    if resume is not None:
        # Rank 0 checks the folder (one error line); then every rank reads the same
        # config, split, statistics and checkpoint (checked below) from the shared folder.
        run_dir = Path(resume)
        distributed.check_on_main(dist, lambda: runs.check_resume(run_dir))
        cfg = runs.load_run_config(run_dir)
        source_path = run_dir / ENCODER_SOURCE
        source = json.loads(source_path.read_text()) if source_path.exists() else {}
    else:
        # Every refused setting is reported before the run folder exists.
        distributed.check_on_main(dist, lambda: check_train(cfg))
        init = load_init_model(cfg)  # checked above; fills data.bands from the model
        named_bands = pretrained_bands(cfg)  # named encoder weights: their bands, checked
        if named_bands is not None:
            cfg.data.bands = named_bands
        source = init.meta.encoder_source if init is not None else None
        if source is None:
            source = encoder_source(cfg.model.encoder_weights)
        run_dir = distributed.from_main(dist, lambda: runs.new_run_dir(cfg))
    seed_everything(cfg.train.seed)
    if cfg.train.threads and not dist.enabled:  # DDP: setup capped them per process
        torch.set_num_threads(cfg.train.threads)
    device = dist.device or resolve_device(cfg.train.device)
    numerics = Numerics.resolve(cfg.train.precision, cfg.train.channels_last, device, cfg.train.amp)
    progress(
        Progress(
            "prepare",
            0.0,
            f"device {device}, {numerics.precision}, {numerics.memory_format}",
            {"device": str(device), **numerics.as_dict()},
        )
    )

    if resume is not None:
        pairs = find_dataset(run_dir / "split.csv").pairs
        stats = BandStats.load(run_dir / "stats.json")
        data_info = runs.read_json(run_dir / "dataset.json")
        specs = runs.read_json(run_dir / INDICES) if (run_dir / INDICES).exists() else []
    else:
        pairs, stats, data_info = prepare_data(cfg)
        stats = starting_stats(stats, init, cfg.model.init_normalisation)
        stats = _named_weights_stats(stats, init, cfg)
        specs = prepare_indices(cfg, pairs, init)
        if dist.is_main:
            if init is not None:
                runs.write_json(run_dir / "init_from.json", init.record())
            if source:
                runs.write_json(run_dir / ENCODER_SOURCE, source)
            runs.write_run_inputs(run_dir, cfg, pairs, stats, data_info, specs)
    datasets = make_datasets(cfg, pairs, stats)
    train_ds = datasets["train"]
    train_idx = list(range(len(train_ds)))
    # The generator sets shuffling and each epoch's worker base seed; TileDataset seeds
    # its augmentations from torch's per-worker seed, so workers never repeat a stream.
    # Under DDP: a seeded DistributedSampler deals each rank its shard, and each rank's
    # generator and augmentation stream come from (seed, rank) (see .distributed).
    distributed.seed_augmentation(dist, train_ds, cfg.train.seed)
    generator = torch.Generator().manual_seed(distributed.loader_seed(dist, cfg.train.seed))
    train_set = torch.utils.data.Subset(train_ds, train_idx)
    sampler = distributed.train_sampler(dist, train_set, cfg.train.seed)
    n_train = len(sampler) if sampler is not None else len(train_idx)
    loader = DataLoader(
        train_set,
        batch_size=cfg.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=n_train > cfg.train.batch_size,
        generator=generator,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",  # faster, asynchronous copies to the GPU
    )

    meta = ModelMeta(
        arch=cfg.model.arch,
        encoder=cfg.model.encoder,
        in_channels=len(stats.bands),
        bands=list(stats.bands),
        band_names=input_band_names(cfg, pairs, list(stats.bands)),
        mean=list(stats.mean),
        std=list(stats.std),
        threshold=0.5,
        upscale=cfg.data.upscale,
        pad_multiple=cfg.data.pad_multiple,
        model_params=dict(cfg.model.params),
        config=stored_config_dict(cfg),
        config_version=CONFIG_VERSION,
        split=split_signature(pairs, cfg.data.path),
        precision=numerics.precision,
        memory_format=numerics.memory_format,
        indices=specs,
        encoder_source=dict(source or {}),
    )
    # The network for the bands plus the index channels, its index layer in front.
    # Resuming: the checkpoint has every weight, so the starting weights are not read.
    weights = cfg.model.encoder_weights if resume is None else None
    model = build_network(meta, weights)
    set_bn_momentum(model, cfg.model.bn_momentum)
    if init is not None:
        load_weights(model, init)
    model = numerics.prepare_model(model.to(device))  # before the optimiser sees the weights
    net = distributed.wrap_model(dist, model)  # DDP under torchrun; evaluate ``model``
    loss_terms, loss_record = resolve_loss(cfg, data_info)
    if dist.is_main and resume is None:
        runs.write_json(run_dir / "loss.json", loss_record)
    # Blank tiles (data.skip_blank_in_loss) stay in the batches; the loss masks them.
    loss_fn = build_loss(loss_terms, skip_blank=cfg.data.skip_blank_in_loss)
    # The averaged weights (train.ema) are what is evaluated, chosen and saved.
    ema = None
    if cfg.train.ema.enabled:
        ema = WeightEMA(model, cfg.train.ema.decay, cfg.train.ema.warmup)
    eval_model = ema.module if ema is not None else model
    opt_cls = torch.optim.AdamW if cfg.optim.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = _Schedule(opt, cfg)
    # fp16 (CUDA amp) needs a gradient scaler; bf16 has fp32's exponent range and does not.
    scaler = torch.amp.GradScaler("cuda", enabled=numerics.precision == "fp16")
    history: list[dict] = []
    start_epoch, best_epoch = 0, 0
    best_score = math.inf
    stale = 0
    if resume is not None:
        # Under DDP every rank must continue from the same state: refused when a rank
        # sees other files than rank 0 (a node without the shared run folder).
        if dist.enabled:
            distributed.agree(dist, runs.resume_digest(run_dir), f"{run_dir}: the run folder")
        ck = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        for g in opt.param_groups:
            g["lr"] = ck["lr"]
        history = ck["history"]
        start_epoch, best_epoch = ck["epoch"] + 1, ck["best_epoch"]
        best_score, stale = ck["best_score"], ck["stale"]
        if "scaler" in ck:
            scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            if "ema" not in ck:
                raise InputError(f"{run_dir}: its checkpoint has no EMA weights to resume")
            ema.load_state_dict(ck["ema"])
        ck = distributed.own_random_states(dist, ck)
        _set_random_states(ck, generator, train_ds, cfg.train.seed)

    status = "completed"
    t_start = time.monotonic()
    epoch_seconds: list[float] = [h["seconds"] for h in history]
    n_batches = len(loader)
    monitor = cfg.train.early_stop.monitor
    batch_cancel = distributed.collective_cancel(dist, cancel)
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.monotonic()
        distributed.set_epoch(sampler, epoch)
        model.train()
        running, seen = 0.0, 0
        train_counts = ConfusionCounts()
        try:
            for b, (x, y, v) in enumerate(loader):
                if batch_cancel():
                    raise Cancelled("cancelled by user")
                x, y, v = (t.to(device, non_blocking=True) for t in (x, y, v))
                x = numerics.prepare_input(x)
                opt.zero_grad(set_to_none=True)
                with numerics.autocast(device.type):
                    logits = net(x)
                # The loss (sigmoids, logs, sums over the batch) in float32, not bf16/fp16.
                logits = logits.float()
                loss = loss_fn(logits, y, v)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update(model)
                running += float(loss.detach()) * len(x)
                seen += len(x)
                with torch.no_grad():
                    pred = logits.detach() >= 0  # sigmoid(logit) >= 0.5
                    t, vv = y.bool(), v
                    train_counts += ConfusionCounts(
                        tp=int((pred & t & vv).sum()),
                        fp=int((pred & ~t & vv).sum()),
                        fn=int((~pred & t & vv).sum()),
                        tn=int((~pred & ~t & vv).sum()),
                    )
                done = epoch - start_epoch + (b + 1) / n_batches
                per_epoch = (time.monotonic() - t_start) / done
                eta = per_epoch * (cfg.train.epochs - epoch - (b + 1) / n_batches)
                progress(
                    Progress(
                        "train",
                        (epoch + (b + 1) / n_batches) / cfg.train.epochs,
                        f"epoch {epoch + 1}/{cfg.train.epochs} batch {b + 1}/{n_batches} "
                        f"loss {running / seen:.4f}",
                        {
                            "epoch": epoch + 1,
                            "epochs": cfg.train.epochs,
                            "batch": b + 1,
                            "batches": n_batches,
                            "loss": running / seen,
                            "eta_s": eta,
                            "lr": sched.lr,
                            "device": str(device),
                        },  # fmt: skip
                    )
                )
            if dist.enabled:  # over every rank's shard; evaluate rank 0's model
                running, seen, train_counts = _sum_train(dist, running, seen, train_counts)
                distributed.sync_buffers(dist, model)
                if ema is not None:
                    distributed.sync_buffers(dist, ema.module)
            row = {"epoch": epoch + 1, "lr": sched.lr, "train_loss": running / max(seen, 1),
                   "train_iou": train_counts.metrics()["iou"]}  # fmt: skip
            for split in ("val", "test") if cfg.train.eval_test_each_epoch else ("val",):
                if split in datasets:
                    loss_v, counts = _evaluate_epoch(
                        eval_model, datasets[split], loss_fn, device, cfg, cancel, numerics,
                        dist,
                    )  # fmt: skip
                    row[f"{split}_loss"] = loss_v
                    row[f"{split}_iou"] = counts.metrics()["iou"]
        except Cancelled:
            status = "cancelled"
            break
        row["seconds"] = time.monotonic() - t0
        epoch_seconds.append(row["seconds"])
        history.append(row)
        score = row["val_loss"] if monitor == "val_loss" else -row["val_iou"]
        improved = score < best_score - cfg.train.early_stop.min_delta
        if improved:
            best_score, best_epoch, stale = score, epoch + 1, 0
            if ema is not None:
                meta.averaging = ema.record(epoch + 1)
            if dist.is_main:
                save_model_file(run_dir / MODEL_FILENAME, eval_model, meta)
        else:
            stale += 1
        sched.step(epoch, row["val_loss"])
        states = distributed.gather_random_states(dist, _random_states(generator, train_ds))
        if dist.is_main:
            runs.write_history(run_dir / "history.csv", history)
            if ema is not None:
                states = {**states, "ema": ema.state_dict()}
            _save_checkpoint(
                run_dir, model, opt, sched, scaler, epoch, history, best_epoch, best_score,
                stale, states,
            )  # fmt: skip
        eta = (sum(epoch_seconds) / len(epoch_seconds)) * (cfg.train.epochs - epoch - 1)
        progress(
            Progress(
                "train",
                (epoch + 1) / cfg.train.epochs,
                f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} val loss "
                f"{row['val_loss']:.4f} val IoU {row['val_iou']:.4f}",
                {
                    "epoch": epoch + 1,
                    "epochs": cfg.train.epochs,
                    "batch": n_batches,
                    "batches": n_batches,
                    "loss": row["train_loss"],
                    "eta_s": eta,
                    "lr": sched.lr,
                    "device": str(device),
                    "history_row": dict(row),
                },  # fmt: skip
            )
        )
        if cfg.train.early_stop.enabled and stale >= cfg.train.early_stop.patience:
            status = "early_stopped"
            break
        if cfg.train.max_minutes and epoch + 1 < cfg.train.epochs:
            # Stop when another epoch of the average length would overrun the budget,
            # so the run ends within it rather than one epoch after it.
            elapsed = time.monotonic() - t_start
            done = epoch + 1 - start_epoch
            if distributed.any_rank(dist, elapsed + elapsed / done > cfg.train.max_minutes * 60):
                status = "time_limit"
                break

    if dist.is_main and not (run_dir / MODEL_FILENAME).exists():
        # Cancelled before the first epoch ended: keep what there is, marked as such.
        if ema is not None:
            meta.averaging = ema.record()
        save_model_file(run_dir / MODEL_FILENAME, eval_model, meta)
    distributed.barrier(dist)  # the model file is there for every rank
    final = runs.finish_run(
        run_dir, datasets, device, cfg, status, best_epoch, progress, cancel, numerics, dist
    )
    return RunResult(
        run_dir, status, best_epoch, final["threshold"], final["metrics"], str(device),
        numerics.precision, numerics.memory_format,
    )  # fmt: skip


def _named_weights_stats(stats: BandStats, init, cfg: RunConfig) -> BandStats:
    """With named encoder weights and ``model.init_normalisation: model`` (and no
    ``init_from``, whose own normalisation wins), the mean/std the weights were trained
    with, in raster units, for its bands (the data's for any bands after them); else
    ``stats`` unchanged."""
    src = pretrained.lookup(cfg.model.encoder_weights)
    if src is None or init is not None or cfg.model.init_normalisation != "model":
        return stats
    mean, std = pretrained.normalisation(src)
    mean, std = mean + list(stats.mean[len(mean) :]), std + list(stats.std[len(std) :])
    return BandStats(
        bands=list(stats.bands), count=list(stats.count), mean=mean, std=std,
        min=list(stats.min), max=list(stats.max),
    )  # fmt: skip


def _sum_train(dist, running: float, seen: int, counts: ConfusionCounts):
    """An epoch's training loss sum, sample count and counts over every rank."""
    (running,) = distributed.sum_floats(dist, [running])
    tp, fp, fn, tn, seen = distributed.sum_ints(
        dist, [counts.tp, counts.fp, counts.fn, counts.tn, seen]
    )
    return running, seen, ConfusionCounts(tp, fp, fn, tn)


def _random_states(generator: torch.Generator, train_ds) -> dict:
    """Every random state the next epoch depends on, as tensors and builtins (the
    checkpoint is read with ``weights_only=True``): Python's, numpy's global, torch's,
    the data order (the loader's generator) and the augmentation stream (the dataset's)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "rng": torch.get_rng_state(),
        "rng_python": [version, list(internal), gauss],
        "rng_numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "rng_loader": generator.get_state(),
        "rng_augment": train_ds.rng.bit_generator.state,
    }


def _set_random_states(ck: dict, generator: torch.Generator, train_ds, seed: int) -> None:
    torch.set_rng_state(ck["rng"])
    if "rng_python" not in ck:  # checkpoints from before exact resume: data order only
        generator.manual_seed(seed + ck["epoch"] + 1)
        return
    version, internal, gauss = ck["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = ck["rng_numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if ck["rng_loader"] is not None:  # None: a DDP checkpoint of another world size
        generator.set_state(ck["rng_loader"])
        train_ds.rng.bit_generator.state = ck["rng_augment"]


def _save_checkpoint(
    run_dir, model, opt, sched, scaler, epoch, history, best_epoch, best_score, stale, states
):
    """Last-epoch state for ``resume`` (plain tensors and builtins only): weights,
    optimiser, schedule, gradient scaler and every random state, so that a resumed run
    continues exactly as the uninterrupted one would have."""
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "lr": sched.lr,
        "epoch": epoch,
        "history": history,
        "best_epoch": best_epoch,
        "best_score": float(best_score),
        "stale": stale,
        **states,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(run_dir / CHECKPOINT, buf.getvalue())


__all__ = ["RunResult", "train", "prepare_data", "make_datasets", "from_dict", "Cancelled"]
