"""``python -m core stats``: dataset form, pairs per split, band statistics, balance."""

from __future__ import annotations

import argparse
import json

from .common import parse_bands


def cmd_stats(args: argparse.Namespace) -> int:
    from ..config import SplitConfig
    from ..data.discovery import find_dataset
    from ..data.splits import split_pairs
    from ..data.stats import summarize

    index = find_dataset(args.dataset)
    if args.limit:
        index.pairs = index.pairs[: args.limit]
    predefined = index.has_predefined_split
    # The same split training would use (predefined, or seeded by group/tile), so the
    # statistics are those of the training split and the balance is shown per split.
    cfg = SplitConfig(seed=args.seed, val=args.val, test=args.test, group_regex=args.group_regex)
    pairs = split_pairs(index, cfg)
    session = args.session
    summary = summarize(
        pairs, args.bands, stats_splits=("train",),
        progress=session.progress(lambda _: None), cancel=session.cancel,
    )  # fmt: skip
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
    session.result(out)
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


def add_stats_command(sub) -> None:
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
