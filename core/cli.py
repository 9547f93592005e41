"""Command line of the engine: ``python -m core COMMAND ...``.

Commands: stats, train, evaluate, compare, baseline, segment, export-onnx. Errors
in the input (bad files, bad settings) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable

from .config import ConfigError
from .data.discovery import DatasetError
from .data.rasters import RasterError
from .progress import Progress

USER_ERRORS = (ConfigError, DatasetError, RasterError, ValueError, FileNotFoundError)


def parse_bands(text: str | None) -> list[int] | None:
    """``"4,3,2,8"`` -> [4, 3, 2, 8]; ``"all"``/None -> None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must look like 4,3,2,8, got {text!r}") from None


def print_progress(p: Progress) -> None:
    """Progress on stderr, so stdout stays machine-readable."""
    print(f"[{p.stage}] {p.fraction:6.1%} {p.message}", file=sys.stderr, flush=True)


def cmd_stats(args: argparse.Namespace) -> int:
    from .config import SplitConfig
    from .data.discovery import find_dataset
    from .data.splits import split_pairs
    from .data.stats import summarize

    index = find_dataset(args.dataset)
    if args.limit:
        index.pairs = index.pairs[: args.limit]
    predefined = index.has_predefined_split
    # The same split training would use (predefined, or seeded by group/tile), so the
    # statistics are those of the training split and the balance is shown per split.
    cfg = SplitConfig(seed=args.seed, val=args.val, test=args.test, group_regex=args.group_regex)
    pairs = split_pairs(index, cfg)
    summary = summarize(pairs, args.bands, stats_splits=("train",))
    bal = summary.balance
    out = {
        "dataset": str(index.root),
        "form": index.form,
        "pairs": len(pairs),
        "pairs_per_split": {k: v.tiles for k, v in bal.items() if k != "all"},
        "positive_ratio": round(bal["all"].positive_ratio, 4),
        "negative_ratio": round(bal["all"].negative_ratio, 4),
        "valid_pixels": bal["all"].valid_pixels,
        "blank_tiles": bal["all"].blank_tiles,
        "split": "predefined"
        if predefined
        else f"seeded ({cfg.seed}, val {cfg.val}, test {cfg.test})",
        "stats_from": "train",
        "bands": [
            {k: r[k] for k in ("band", "mean", "std", "min", "max", "count")}
            for r in summary.stats.rows()
        ],
        "balance": {k: v.as_dict() for k, v in bal.items()},
    }
    if args.save_stats:
        summary.stats.save(args.save_stats)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"dataset   {out['dataset']}")
    print(f"form      {out['form']}")
    print(f"split     {out['split']}")
    print(
        f"pairs     {out['pairs']}  "
        + "  ".join(f"{k}: {v}" for k, v in out["pairs_per_split"].items())
    )
    print(f"band statistics (valid pixels of {out['stats_from']} tiles):")
    print(f"  {'band':>4} {'mean':>12} {'std':>12} {'min':>12} {'max':>12} {'count':>10}")
    for r in out["bands"]:
        print(
            f"  {r['band']:>4} {r['mean']:>12.4f} {r['std']:>12.4f} {r['min']:>12.4f} "
            f"{r['max']:>12.4f} {r['count']:>10}"
        )
    print("class balance:")
    print(
        f"  {'split':<8} {'tiles':>6} {'positive':>9} {'negative':>9} {'valid px':>10} {'blank':>6}"
    )
    for k, b in bal.items():
        d = b.as_dict()
        print(
            f"  {k:<8} {d['tiles']:>6} {d['positive_ratio']:>9.4f} {d['negative_ratio']:>9.4f} "
            f"{d['valid_pixels']:>10} {d['blank_tiles']:>6}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="dataset form, pairs, band statistics, class balance")
    p.add_argument("dataset", help="dataset folder or CSV manifest")
    p.add_argument("--bands", type=parse_bands, default=None, help="1-based, e.g. 4,3,2,8")
    p.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--save-stats", metavar="FILE", help="save band statistics as JSON")
    p.add_argument("--seed", type=int, default=42, help="split seed (no predefined split)")
    p.add_argument("--val", type=float, default=0.1, help="validation fraction")
    p.add_argument("--test", type=float, default=0.2, help="test fraction")
    p.add_argument("--group-regex", default=None, help="regex naming a tile's plant/site")
    p.set_defaults(func=cmd_stats)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable]:
    """Subcommands defined beside their engine parts (training, segmentation)."""
    registers = []
    try:
        from .train_cli import add_train_commands

        registers.append(add_train_commands)
    except ImportError as exc:  # pragma: no cover - only while a part is missing
        if "train_cli" not in str(exc):
            raise
    try:
        from .segment.cli import add_segment_commands

        registers.append(add_segment_commands)
    except ImportError as exc:  # pragma: no cover
        if "segment" not in str(exc):
            raise
    return registers


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # Untagged tiles would warn once per file; the data README documents it.
        from rasterio.errors import NotGeoreferencedWarning

        from .data.tiles import NoCRSWarning

        warnings.simplefilter("ignore", NoCRSWarning)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return int(args.func(args) or 0)
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
