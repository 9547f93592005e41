"""Run folders: creation, history, final evaluation, plots and comparison.

A run folder holds: ``config.yaml`` (feed it back to reproduce the run),
``split.csv`` (the split as a manifest), ``stats.json`` (normalisation),
``dataset.json`` (form and class balance), ``loss.json`` (the loss terms as trained,
``pos_weight: auto`` resolved), ``history.csv``, ``model.pt`` (best,
self-describing), ``checkpoint.pt`` (last epoch, for resume), ``metrics.json``,
``threshold_scan.csv``, ``per_image_<split>.csv``, ``plants_<split>.csv`` (plant-level
results, :mod:`core.evaluation.plants`; their summary is in ``metrics.json``),
``plots/*.png`` and ``run.json`` (status). Every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, from_dict, load_config, save_config, to_dict
from ..data.discovery import find_dataset, write_manifest
from ..errors import MissingInputError, Problem, UserError
from ..evaluation.evaluate import (
    evaluate_predictions,
    predict_dataset,
    tile_dataset,
    write_per_image_csv,
)
from ..evaluation.metrics import ThresholdScan
from ..evaluation.plants import write_plants_csv
from ..io import atomic_path, atomic_write_text
from ..models.build import MODEL_FILENAME, load_model, save_model_file
from ..models.precision import Numerics
from ..progress import CancelFn, Progress, ProgressFn
from . import distributed
from .distributed import SINGLE, Dist
from .prep import INDICES

SPLITS = ("train", "val", "test")


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | cancelled | early_stopped | time_limit
    best_epoch: int
    threshold: float
    metrics: dict[str, dict] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"  # what the network ran in: fp32 | bf16 | fp16
    memory_format: str = "contiguous"  # contiguous (NCHW) | channels_last


def new_run_dir(cfg: RunConfig) -> Path:
    """``{out_dir}/{name}-{YYYYmmdd-HHMMSS}``, made unique with a counter."""
    base = Path(cfg.out_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise MissingInputError(f"{run_dir}: not a run folder (no config.yaml)")
    return load_config(path, default_version=1)


#: What ``--resume`` reads from a run folder (``checkpoint.pt``: the last finished epoch).
RESUME_FILES = ("config.yaml", "split.csv", "stats.json", "checkpoint.pt")


def check_resume(run_dir: str | Path) -> list[Problem]:
    """Why ``run_dir`` cannot be resumed (empty when it can): not a run folder, a
    missing file, a config that does not load."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        exc = MissingInputError(f"{run_dir}: not a run folder (no config.yaml)", "resume")
        return [Problem.of("resume", exc)]
    try:
        load_run_config(run_dir)
    except UserError as exc:
        return [Problem.of("resume", exc)]
    for name in RESUME_FILES[1:]:
        if not (run_dir / name).is_file():
            why = (
                "the run stopped before its first epoch ended; start it again with "
                f"--config {run_dir / 'config.yaml'}"
                if name == "checkpoint.pt"
                else "not a complete run folder"
            )
            exc = MissingInputError(f"{run_dir}: no {name} to resume from ({why})", "resume")
            return [Problem.of("resume", exc)]
    return []


def resume_settings(run_dir: str | Path):
    """The ``train`` settings of the run to resume, for joining the process group
    (device, threads) before anything is checked; the defaults when the folder has no
    readable config (rank 0 then reports it: :func:`check_resume`)."""
    try:
        return load_run_config(run_dir).train
    except UserError:
        from ..config import TrainConfig

        return TrainConfig()


def resume_arch(run_dir: str | Path) -> str:
    """The ``model.arch`` of the run to resume ("" when its config is unreadable)."""
    try:
        return load_run_config(run_dir).model.arch
    except UserError:
        return ""


def resume_digest(run_dir: str | Path) -> str:
    """SHA-256 over the files ``--resume`` reads: equal on every rank that reads the
    same run folder."""
    digest = hashlib.sha256()
    for name in RESUME_FILES:
        with open(Path(run_dir) / name, "rb") as f:
            digest.update(name.encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_run_inputs(
    run_dir: Path, cfg: RunConfig, pairs: list, stats, data_info: dict, specs: list[dict]
) -> None:
    """What a new run folder records of its inputs (networks and LightGBM alike):
    config.yaml, split.csv, stats.json (a :class:`~core.data.stats.BandStats`),
    dataset.json and, with spectral indices, indices.json."""
    save_config(cfg, run_dir / "config.yaml")
    write_manifest(pairs, run_dir / "split.csv")
    stats.save(run_dir / "stats.json")
    write_json(run_dir / "dataset.json", data_info)
    if specs:
        write_json(run_dir / INDICES, specs)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def write_history(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) if v else math.nan for k, v in r.items()} for r in csv.DictReader(f)]


def finish_run(
    run_dir: Path,
    datasets: dict,
    device: torch.device,
    cfg: RunConfig,
    status: str,
    best_epoch: int,
    progress: ProgressFn,
    cancel: CancelFn,
    numerics: Numerics | None = None,
    dist: Dist = SINGLE,
) -> dict:
    """Evaluate the best model on every split (in the run's ``numerics``), pick the
    threshold on val, write metrics, per-image tables, plots, and the final model file.

    Under DDP (``dist``) each rank predicts its share of every split, the counts are
    summed over ranks (:mod:`.distributed`) and only rank 0 writes."""
    numerics = numerics or Numerics.resolve(
        cfg.train.precision, cfg.train.channels_last, device, cfg.train.amp
    )
    run_json = {"status": status, "best_epoch": best_epoch, "device": str(device),
                **numerics.as_dict()}  # fmt: skip
    if dist.enabled:
        run_json.update(dist.record())
    if status == "cancelled":
        if dist.is_main:
            write_json(run_dir / "run.json", run_json)
        return {"threshold": 0.5, "metrics": {}}
    model, meta = load_model(run_dir / MODEL_FILENAME, device)
    preds, views = {}, {}
    for k, split in enumerate(s for s in SPLITS if s in datasets):
        ds = views[split] = distributed.shard(
            dist, tile_dataset(meta, datasets[split].pairs), cfg.train.eval_batch_size
        )

        def report(p: Progress, k=k, split=split) -> None:
            progress(Progress("evaluate", (k + p.fraction) / 3, f"{split}: {p.message}"))

        preds[split] = predict_dataset(
            model, meta, ds, device, cfg.train.tta, report, lambda: False, numerics
        )
    return record_results(
        run_dir, preds, cfg, meta, lambda m: save_model_file(run_dir / MODEL_FILENAME, model, m),
        run_json, status, best_epoch, views, dist,
    )  # fmt: skip


def record_results(
    run_dir: Path,
    preds: dict[str, list],
    cfg: RunConfig,
    meta,
    save_model,
    run_json: dict,
    status: str,
    best_epoch: int,
    views: dict | None = None,
    dist: Dist = SINGLE,
) -> dict:
    """The final part of every run record, from native-resolution predictions of each
    split (``TilePrediction`` lists, this rank's share under DDP): threshold chosen on
    val, exact metrics, per-image and per-plant tables, threshold scan, plots,
    ``metrics.json``, ``run.json``, and the model file again with its threshold and
    metrics (``save_model(meta)`` writes it)."""
    views = views or {}
    skip = cfg.data.skip_blank_in_metrics
    scans = {s: distributed.reduce_scan(dist, evaluate_predictions(p, 0.5, skip, scan=True).scan)
             for s, p in preds.items()}  # fmt: skip
    threshold, _ = scans["val"].best("iou")
    results = {s: distributed.score_split(dist, p, views.get(s), threshold, skip)
               for s, p in preds.items()}  # fmt: skip
    metrics = {s: r.metrics for s, r in results.items()}
    plants = {s: r.plants.summary() for s, r in results.items() if r.plants is not None}
    if not dist.is_main:
        return {"threshold": threshold, "metrics": metrics}
    at_thresholds = {
        s: {str(t): scans[s].counts(t).metrics(json_safe=True) for t in cfg.train.report_thresholds}
        for s in scans
    }
    for s, r in results.items():
        write_per_image_csv(r.rows, run_dir / f"per_image_{s}.csv")
        if r.plants is not None:
            write_plants_csv(r.plants, run_dir / f"plants_{s}.csv")
    _write_scan_csv(run_dir / "threshold_scan.csv", scans)
    meta.threshold = float(threshold)
    meta.metrics = metrics
    save_model(meta)
    write_json(
        run_dir / "metrics.json",
        {
            "threshold": threshold,
            "best_epoch": best_epoch,
            "status": status,
            "splits": metrics,
            "at_thresholds": at_thresholds,
            "plants": plants,
        },  # fmt: skip
    )
    make_plots(run_dir, scans, results, threshold)
    run_json["threshold"] = threshold
    write_json(run_dir / "run.json", run_json)
    return {"threshold": threshold, "metrics": metrics}


def _write_scan_csv(path: Path, scans: dict[str, ThresholdScan]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "threshold", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "iou"])
    for s, scan in scans.items():
        for row in scan.table(json_safe=True):
            w.writerow([s] + [row[k] for k in ("threshold", "tp", "fp", "fn", "tn")]
                       + [round(row[k], 6) for k in ("precision", "recall", "f1", "iou")])  # fmt: skip
    atomic_write_text(path, buf.getvalue())


def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot or ``matplotlib.use``:
    safe in a QGIS background thread and leaves the host's backend alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def make_plots(run_dir: Path, scans: dict, results: dict, threshold: float) -> None:
    """Loss/IoU curves, probability distributions with the threshold, confusion matrix."""
    import numpy as np

    plots = run_dir / "plots"
    history = read_history(run_dir / "history.csv")
    epochs = [h["epoch"] for h in history]
    for metric, label in (("loss", "loss"), ("iou", "IoU at 0.5")):
        fig, ax = _figure(6, 4)
        for s in SPLITS:
            key = f"{s}_{metric}"
            if history and key in history[0]:
                ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=s)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        _save_figure(fig, plots / f"{metric}.png")

    split = "test" if "test" in scans else "val"
    scan = scans[split]
    centers = (scan.hist_edges[:-1] + scan.hist_edges[1:]) / 2
    fig, ax = _figure(6, 4)
    for hist, label, color in ((scan.hist_neg, "negative pixels", "tab:blue"),
                               (scan.hist_pos, "positive pixels", "tab:orange")):  # fmt: skip
        total = max(int(hist.sum()), 1)
        ax.bar(centers, hist / total, width=1 / len(centers), alpha=0.6, label=label, color=color)
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(f"predicted probabilities ({split})")
    ax.legend()
    _save_figure(fig, plots / "probability_hist.png")

    c = results[split].counts
    cm = np.array([[c.tn, c.fp], [c.fn, c.tp]])
    fig, ax = _figure(4.5, 4)
    share = cm / max(cm.sum(), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        color = "white" if share[i, j] > 0.5 else "black"
        ax.text(j, i, f"{v:,}\n{share[i, j]:.2%}", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], ["pred 0", "pred 1"])
    ax.set_yticks([0, 1], ["true 0", "true 1"])
    ax.set_title(f"confusion matrix ({split}, t={threshold:.2f})")
    _save_figure(fig, plots / "confusion_matrix.png")


def load_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        raise MissingInputError(f"{run_dir}: no metrics.json (run unfinished or cancelled?)")
    return json.loads(path.read_text())


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def compare(run_a: str | Path, run_b: str | Path) -> str:
    """Before/after table (FP, FN, F1, IoU, FP/FN per split) and config differences."""
    ma, mb = load_metrics(run_a), load_metrics(run_b)
    ca = _flatten(to_dict(load_run_config(run_a)))
    cb = _flatten(to_dict(load_run_config(run_b)))
    lines = [f"A: {run_a}", f"B: {run_b}", ""]
    lines.append(f"{'split':<6} {'metric':<8} {'A':>12} {'B':>12} {'B-A':>12}")
    for s in SPLITS:
        if s not in ma["splits"] or s not in mb["splits"]:
            continue
        for m in ("fp", "fn", "f1", "iou", "fp_fn_ratio"):
            a, b = ma["splits"][s].get(m), mb["splits"][s].get(m)
            if a is None or b is None:
                diff = "n/a"
            else:
                diff = f"{b - a:+.4f}" if isinstance(a, float) else f"{b - a:+d}"
            fa = f"{a:.4f}" if isinstance(a, float) else str(a)
            fb = f"{b:.4f}" if isinstance(b, float) else str(b)
            lines.append(f"{s:<6} {m:<8} {fa:>12} {fb:>12} {diff:>12}")
    lines.append(f"{'':<6} {'thresh':<8} {ma['threshold']:>12.2f} {mb['threshold']:>12.2f}")
    lines += ["", "configuration differences:"]
    skip = {"name", "out_dir"}
    diffs = [k for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k) and k not in skip]
    if not diffs:
        lines.append("  (none)")
    for k in diffs:
        lines.append(f"  {k}: {ca.get(k, '-')!r} -> {cb.get(k, '-')!r}")
    return "\n".join(lines)


def dataset_of_run(run_dir: str | Path):
    """The run's split manifest as a DatasetIndex (predefined splits)."""
    return find_dataset(Path(run_dir) / "split.csv")


__all__ = ["new_run_dir", "finish_run", "compare", "load_metrics", "from_dict"]
