"""Command-line command of the error analysis: ``predict-split``.

Registered on ``python -m core`` by :func:`add_inspect_commands`; the QGIS plugin's
Inspect Errors runs it in the engine process and reads the folder with numpy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import parse_bands


def cmd_predict_split(args: argparse.Namespace) -> int:
    from ..evaluation.split_export import write_split

    session = args.session
    index = write_split(
        args.model, args.dataset, args.split, args.out, tta=args.tta, device=args.device,
        rgb_bands=args.rgb, reuse=args.reuse, progress=session.progress(), cancel=session.cancel,
    )  # fmt: skip
    out = Path(args.out).resolve()
    m = index["metrics"]
    session.result(
        {"out": str(out), "index": str(out / "index.json"), "tiles": len(index["tiles"]),
         "split": index["split"], "threshold": index["threshold"], "metrics": m,
         "reused": index["reused"]}
    )  # fmt: skip
    print(
        f"{args.split}: {len(index['tiles'])} tiles -> {out}"
        + (" (kept: already predicted)" if index["reused"] else "")
    )
    print(f"IoU {m['iou']:.4f}  F1 {m['f1']:.4f} at threshold {index['threshold']:.3f}")
    return 0


def add_inspect_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict-split",
        help="predict a split of a saved model into numpy files (the plugin's Inspect Errors)",
        description=(
            "Probabilities, reference mask, validity, display bands and georeferencing of "
            "every tile of a split, one compressed .npz per tile plus index.json (with the "
            "metrics at the model's threshold); written whole, then swapped in."
        ),
    )
    p.add_argument("model", help="run folder or model.pt")
    p.add_argument("dataset", nargs="?", default=None,
                   help="dataset (default: the one the model was trained on, its split reproduced)")  # fmt: skip
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--out", required=True, help="output folder (replaced if it is one of ours)")
    p.add_argument("--rgb", type=parse_bands, default=None,
                   help="raster bands shown as R,G,B (default: the model's first three)")  # fmt: skip
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None,
                     help="flip test-time augmentation (default: as trained)")  # fmt: skip
    tta.add_argument("--no-tta", dest="tta", action="store_false")
    p.add_argument("--device", default="auto")
    p.add_argument("--reuse", action="store_true",
                   help="keep the folder if it already holds this model, split and bands")  # fmt: skip
    p.set_defaults(func=cmd_predict_split)
