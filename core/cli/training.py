"""Command-line commands of the training side: train, evaluate, ensemble, compare,
baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_calibration_options, report_checked

METRIC_KEYS = ["tp", "fp", "fn", "tn", "accuracy", "precision", "recall", "specificity",
               "f1", "iou", "fp_fn_ratio", "threshold"]  # fmt: skip


def _progress_printer():
    from .common import print_progress

    last = {"stage": None, "epoch": None}

    def show(p) -> None:
        # One line per epoch and per stage change; batch-level reports are too many.
        epoch = p.info.get("epoch")
        if "history_row" in p.info or p.stage != last["stage"] or p.fraction >= 1:
            print_progress(p)
        last["stage"], last["epoch"] = p.stage, epoch

    return show


def print_split_metrics(metrics: dict[str, dict], threshold: float) -> None:
    """One line per split: IoU, F1, precision and recall at ``threshold``."""
    for split, m in metrics.items():
        print(
            f"{split:<5} IoU {m['iou']:.4f}  F1 {m['f1']:.4f}  precision {m['precision']:.4f}  "
            f"recall {m['recall']:.4f}  (threshold {threshold:.2f})"
        )


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.checks import check_train
    from ..training.distributed import is_main_process
    from ..training.loop import train

    session = args.session
    if not is_main_process():  # torchrun's other ranks: rank 0 speaks for all
        return _train_quietly(args)
    progress, cancel = session.progress(_progress_printer()), session.cancel
    if args.resume:
        result = train(None, progress, cancel, resume=args.resume)  # type: ignore[arg-type]
    else:
        # Values are checked with the dataset and the model, all problems at once.
        cfg = load_config(args.config, args.overrides, check=False)
        if args.check:
            return report_checked(session, check_train(cfg))
        result = train(cfg, progress, cancel)
    session.result(
        {"run_dir": str(result.run_dir), "model": str(Path(result.run_dir) / "model.pt"),
         "status": result.status, "best_epoch": result.best_epoch,
         "threshold": result.threshold, "metrics": result.metrics, "device": result.device}
    )  # fmt: skip
    print(f"status {result.status}, best epoch {result.best_epoch}, device {result.device}")
    print_split_metrics(result.metrics, result.threshold)
    print(result.run_dir)
    return 0


def _train_quietly(args: argparse.Namespace) -> int:
    """A torchrun rank other than 0: trains its share, prints and emits nothing, and
    leaves a refusal or a cancel, which rank 0 reports, without a word of its own (its
    own unexpected errors still show)."""
    from ..config import load_config
    from ..progress import Cancelled
    from ..training.distributed import Refused
    from ..training.loop import train

    args.session.jsonl = False
    try:
        if args.resume:
            train(None, cancel=args.session.cancel, resume=args.resume)  # type: ignore[arg-type]
        elif not args.check:
            cfg = load_config(args.config, args.overrides, check=False)
            train(cfg, cancel=args.session.cancel)
    except Refused:
        return 2
    except Cancelled:
        return 3
    return 0


def format_metrics(m: dict) -> str:
    lines = [f"threshold   {m['threshold']:.2f}"]
    lines.append(f"TP {m['tp']}  FP {m['fp']}  FN {m['fn']}  TN {m['tn']}")
    for k in ("accuracy", "precision", "recall", "specificity", "f1", "iou"):
        lines.append(f"{k:<12}{m[k]:.4f}")
    ratio = m.get("fp_fn_ratio")
    lines.append(f"{'FP/FN':<12}{ratio:.4f}" if ratio is not None else "FP/FN       n/a (FN = 0)")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import check_evaluate, evaluate
    from ..models.build import resolve_model_path

    if args.check:
        problems = check_evaluate(args.model, args.dataset, args.split, args.threshold,
                                  args.device, args.blend, args.blend_weight,
                                  args.precision, args.calibration,
                                  args.calibration_tiles)  # fmt: skip
        return report_checked(args.session, problems)
    model_path = resolve_model_path(args.model)
    out_csv = args.csv or model_path.parent / f"evaluate_{args.split}_per_image.csv"
    plants_csv = args.plants_csv or model_path.parent / f"evaluate_{args.split}_plants.csv"
    session = args.session
    result = evaluate(
        model_path, args.dataset, args.split, args.threshold,
        progress=session.progress(lambda _: None), cancel=session.cancel, out_csv=out_csv,
        device=args.device, tta=args.tta, plants_csv=plants_csv, precision=args.precision,
        blend=args.blend, blend_weight=args.blend_weight,
        calibration=args.calibration, calibration_tiles=args.calibration_tiles,
    )  # fmt: skip
    m = {k: result.metrics.get(k) for k in METRIC_KEYS}
    if args.blend is not None:
        m.update(blend=str(args.blend), blend_weight=result.metrics["blend_weight"],
                 blend_val_iou=result.metrics["blend_val_iou"])  # fmt: skip
    m["plants"] = result.plants.summary() if result.plants else None
    session.result({"metrics": m, "threshold": result.metrics.get("threshold"),
                    "tiles": len(result.rows), "per_image_csv": str(out_csv),
                    "plants_csv": str(plants_csv)})  # fmt: skip
    if args.json:
        print(json.dumps(m))
    else:
        print(f"model {model_path}\nsplit {args.split} ({len(result.rows)} tiles)")
        if args.blend is not None:
            how = "given" if args.blend_weight is not None else "chosen on val"
            print(f"blend {args.blend}: weight {m['blend_weight']:.2f} ({how}; val IoU "
                  f"{m['blend_val_iou']:.4f}); p = (1 - w) * model + w * blend")  # fmt: skip
        print(format_metrics(m))
        if result.plants is not None:
            print(result.plants.text())
        print(f"per-image table: {out_csv}")
        print(f"per-plant table: {plants_csv}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..training.ensemble import make_ensemble

    if args.out.exists() and not args.overwrite:
        raise InputError(f"{args.out}: already exists (--overwrite to replace it)", "out")
    session = args.session
    result = make_ensemble(
        args.models, args.out, dataset=args.dataset, device=args.device,
        precision=args.precision, progress=session.progress(lambda _: None),
        cancel=session.cancel,
    )  # fmt: skip
    members = result.meta.ensemble["members"]
    session.result({"model": str(result.path), "size": len(members),
                    "threshold": result.threshold, "metrics": result.metrics,
                    "members": [{"source": m["source"], "sha256": m["sha256"]}
                                for m in members]})  # fmt: skip
    print(f"ensemble of {len(members)} models, threshold {result.threshold:.2f} (chosen on val)")
    for m in members:
        val = m["metrics"].get("val", {})
        iou = f"{val['iou']:.4f}" if "iou" in val else "n/a"
        print(f"  member {m['arch']} {m['encoder']} val IoU {iou} (thr. {m['threshold']:.2f})"
              f"  {m['source']}")  # fmt: skip
    print_split_metrics(result.metrics, result.threshold)
    print(result.path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..training.runs import compare

    print(compare(args.run_a, args.run_b))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..evaluation.baseline import run_baselines

    cfg = load_config(args.config, args.overrides)
    cfg.data.path = args.dataset
    if args.bands is not None:
        cfg.data.bands = args.bands
    rows = run_baselines(cfg, nir_band=args.nir_band)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'baseline':<22} {'split':<5} {'IoU':>7} {'F1':>7} {'prec':>7} {'recall':>7}  threshold"
    )
    for r in rows:
        print(
            f"{r['baseline']:<22} {r['split']:<5} {r['iou']:>7.4f} {r['f1']:>7.4f} "
            f"{r['precision']:>7.4f} {r['recall']:>7.4f}  {r['threshold']}"
        )
    return 0


def add_train_commands(sub) -> None:
    from .common import parse_bands

    p = sub.add_parser("train", help="train a model; prints the run folder last")
    p.add_argument("--config", type=Path, default=None, help="YAML run config")
    p.add_argument("--resume", type=Path, default=None, help="run folder to resume")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    p.add_argument(
        "--check", action="store_true",
        help="only check the settings and the dataset (every problem, nothing written)",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a saved model on a dataset split")
    p.add_argument("model", help="run folder or model file")
    p.add_argument(
        "dataset",
        nargs="?",
        default=None,
        help="dataset (default: the model's; its training split is reproduced and checked "
        "against the model file). Another dataset is used as found, without the training "
        "data.limit",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", "all"],
        help="all: every tile. On another dataset, train/val/test are its predefined "
        "split, or (none predefined) the model's seeded split settings applied to it",
    )
    p.add_argument("--threshold", type=float, default=None, help="default: the model's")
    p.add_argument("--csv", type=Path, default=None, help="per-image CSV path")
    p.add_argument(
        "--plants-csv", type=Path, default=None,
        help="per-plant CSV path (default: evaluate_<split>_plants.csv beside the model)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="flip test-time augmentation (default: as the model was trained)",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16", "int8"), default=None,
        help="network arithmetic; default: the model's train.precision setting, resolved "
        "here; int8: the model's int8 ONNX graph on ONNX Runtime (as segment --precision int8)",
    )  # fmt: skip
    p.add_argument(
        "--blend", default=None, metavar="OTHER_MODEL",
        help="score the average of this model's and OTHER_MODEL's probabilities (e.g. a "
        "network and a LightGBM model trained on the same split); weight and threshold "
        "chosen on val unless given",
    )  # fmt: skip
    p.add_argument(
        "--blend-weight", type=float, default=None, metavar="W",
        help="weight of OTHER_MODEL in the average, 0..1 (default: chosen on val)",
    )  # fmt: skip
    add_calibration_options(p)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--check", action="store_true",
        help="only check model, dataset, split and threshold (every problem, nothing written)",
    )  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "ensemble",
        help="one model file averaging several models' probabilities; threshold chosen on val",
        description="Combine model files (or run folders) with the same bands, normalisation, "
        "upscale and training split into one model file whose network returns the logit of "
        "the mean of the members' probabilities. The threshold is chosen on the val split "
        "(best IoU); val and test metrics, and every member (source, SHA-256, metrics), are "
        "in its metadata. segment, evaluate, info and export-onnx take it like any model.",
    )
    p.add_argument("models", nargs="+", help="member model files or run folders (two or more)")
    p.add_argument("-o", "--out", type=Path, required=True, help="ensemble model file (.pt)")
    p.add_argument(
        "--dataset", default=None,
        help="dataset whose val split chooses the threshold (default: the members' own, "
        "their training split reproduced and checked)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default=None,
        help="network arithmetic; default: the first member's train.precision, resolved here",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("compare", help="before/after metrics and config differences")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("baseline", help="per-pixel baselines (NIR threshold, logistic regression)")
    p.add_argument("dataset")
    p.add_argument("--config", type=Path, default=None, help="split settings from this config")
    p.add_argument("--bands", type=parse_bands, default=None)
    p.add_argument("--nir-band", type=int, default=8, help="1-based NIR band of the raster")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_baseline)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m core train|evaluate|compare|baseline")
