"""``python -m core ensemble``: several trained model files as one model file whose
network averages their probabilities (:mod:`core.models.ensemble`), with its threshold
re-chosen on the members' val split by the engine's threshold scan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..evaluation.evaluate import (
    config_of_model,
    numerics_of_model,
    predict_dataset,
    split_of_model,
    tile_dataset,
)
from ..evaluation.scoring import evaluate_predictions
from ..models.build import load_model, read_model_file, resolve_device, save_model_file
from ..models.ensemble import MeanProbabilityEnsemble, check_compatible, ensemble_meta
from ..models.meta import ModelMeta, resolve_model_path
from ..progress import CancelFn, Progress, ProgressFn, never_cancel, no_progress


def assemble(paths: Sequence[str | Path]) -> tuple[MeanProbabilityEnsemble, ModelMeta]:
    """Read and check the members, and put their trained networks into one (eval mode,
    on the CPU); the metadata has no threshold or metrics of its own yet."""
    files = [resolve_model_path(p) for p in paths]
    metas = [read_model_file(p)[0] for p in files]
    check_compatible(files, metas)
    members = [load_model(p, "cpu")[0] for p in files]
    return MeanProbabilityEnsemble(members).eval(), ensemble_meta(files, metas)


@dataclass
class EnsembleResult:
    path: Path
    meta: ModelMeta
    threshold: float
    metrics: dict[str, dict] = field(default_factory=dict)


def make_ensemble(
    paths: Sequence[str | Path],
    out_path: str | Path,
    dataset: str | Path | None = None,
    device: str = "auto",
    precision: str | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> EnsembleResult:
    """Write the ensemble of the model files ``paths`` to ``out_path``.

    The threshold is re-chosen with the engine's threshold scan on the val split (best
    IoU), as a training run chooses its own, and the ensemble's val and test metrics at
    that threshold go into its metadata. The split is the members' training split on
    their dataset (checked against the stored split hash), or ``dataset``'s, as
    ``python -m core evaluate`` takes it. Predictions run as the first member's
    evaluation did (``train.tta``, ``train.precision`` unless ``precision``).
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".pt":
        raise InputError(f"{out_path}: the ensemble is a .pt model file", "out")
    dev = resolve_device(device)
    net, meta = assemble(paths)
    net.to(dev)
    cfg = config_of_model(meta)
    pairs = split_of_model(meta, dataset, "val", paths[0])
    numerics = numerics_of_model(meta, dev, precision)
    skip = cfg.data.skip_blank_in_metrics
    splits = [s for s in ("val", "test") if any(p.split == s for p in pairs)]
    if "val" not in splits:
        raise InputError(f"{dataset or 'the members dataset'}: no val tiles to choose a threshold")
    preds = {}
    for k, split in enumerate(splits):

        def report(p, k=k, split=split) -> None:
            progress(Progress("evaluate", (k + p.fraction) / len(splits), f"{split}: {p.message}"))

        ds = tile_dataset(meta, [p for p in pairs if p.split == split])
        preds[split] = predict_dataset(net, meta, ds, dev, cfg.train.tta, report, cancel, numerics)
    scan = evaluate_predictions(preds["val"], 0.5, skip, scan=True).scan
    threshold, _ = scan.best("iou")
    metrics = {s: evaluate_predictions(p, threshold, skip).metrics for s, p in preds.items()}
    meta.threshold = float(threshold)
    meta.metrics = metrics
    meta.ensemble["threshold_from"] = "val"
    meta.ensemble["tta"] = bool(cfg.train.tta)
    save_model_file(out_path, net, meta)
    return EnsembleResult(out_path, meta, float(threshold), metrics)
