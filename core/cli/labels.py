"""Command-line command of the labelling side: ``chips`` (tiles from rasters + polygons)."""

from __future__ import annotations

import argparse
import dataclasses


def cmd_chips(args: argparse.Namespace) -> int:
    from ..labels.chips import ChipSettings, check_chips, make_chips
    from .common import report_checked, throttled_progress

    settings = ChipSettings(
        tile=args.tile,
        stride=args.stride,
        layer=args.layer,
        where=args.where,
        group_field=args.group_field,
        all_touched=args.all_touched,
        min_valid=args.min_valid,
        keep_background=args.keep_background,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    session = args.session
    if args.check:
        return report_checked(session, check_chips(args.rasters, args.labels, args.out, settings))
    result = make_chips(
        args.rasters, args.labels, args.out, settings,
        session.progress(throttled_progress()), session.cancel,
    )  # fmt: skip
    data = dataclasses.asdict(result)
    session.result({**{k: (str(v) if k in ("out_dir", "manifest") else v)
                       for k, v in data.items()}, "summary": result.summary()})  # fmt: skip
    print(result.summary())
    if result.rasters_without_plants:
        print(f"{len(result.rasters_without_plants)} raster(s) without plant pixels")
    print(f"wrote {result.manifest}")
    return 0


def add_labels_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``chips`` on ``python -m core``'s subparsers."""
    p = sub.add_parser(
        "chips",
        help="training tiles (image/mask GeoTIFFs + manifest.csv) from rasters and polygons",
        description="Cut rasters into image/mask tiles labelled by a polygon layer "
        "(reprojected onto each raster's grid; a pixel is a plant when its centre lies in "
        "a polygon, or any touched pixel with --all-touched) and write a manifest.csv "
        "whose group column keeps each plant in one split.",
    )
    p.add_argument("rasters", nargs="+", metavar="RASTER", help="raster files or folders")
    p.add_argument("--labels", required=True, help="polygon file (GeoPackage, Shapefile, ...)")
    p.add_argument("--layer", default=None, help="layer name (files with several layers)")
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--tile", type=int, default=64, help="tile side in pixels (default 64)")
    p.add_argument("--stride", type=int, default=None, help="default: the tile size")
    p.add_argument("--where", default=None, help="attribute filter, e.g. \"type = 'solar'\"")
    p.add_argument(
        "--group-field", default=None,
        help="field naming the plant (default: touching polygons form one plant)",
    )  # fmt: skip
    p.add_argument("--all-touched", action="store_true", help="burn every touched pixel")
    p.add_argument(
        "--min-valid", type=float, default=0.5, help="minimum share of valid pixels per tile"
    )
    p.add_argument(
        "--keep-background", type=int, default=None, metavar="N",
        help="all-background tiles to keep (seeded choice; default all)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--overwrite", action="store_true", help="replace a dataset in --out")
    p.add_argument(
        "--check", action="store_true",
        help="only check rasters, polygons, filter, field, settings and the output folder "
        "(every problem, nothing written)",
    )  # fmt: skip
    p.set_defaults(func=cmd_chips)
