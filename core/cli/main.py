"""Command line of the engine: ``python -m core COMMAND ...``.

Commands: stats, train, evaluate, compare, baseline, segment, export-onnx. Errors
in the input (bad files, bad settings) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from .segment import add_segment_commands
    from .stats import add_stats_command
    from .training import add_train_commands

    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (add_stats_command, add_train_commands, add_segment_commands):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import rasterio

    # rasterio.Env: GDAL reports errors through Python logging (and the exceptions
    # turned into UserErrors) rather than printing "ERROR 1: ..." lines on stderr.
    with warnings.catch_warnings(), rasterio.Env():
        # Untagged tiles would warn once per file; the data README documents it.
        from rasterio.errors import NotGeoreferencedWarning

        from ..data.tiles import NoCRSWarning

        warnings.simplefilter("ignore", NoCRSWarning)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return int(args.func(args) or 0)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
