"""Command line of the engine: ``python -m core COMMAND ...``.

Commands: stats, chips, train, evaluate, ensemble, compare, baseline, segment,
export-onnx, info, predict-split, doctor. ``train --check`` and ``segment --check`` only validate their
inputs. Errors
in the input (bad files, bad settings) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import traceback
import warnings
from dataclasses import asdict

from ..errors import Problem, UserError
from ..progress import Cancelled
from .common import Session


def build_parser() -> argparse.ArgumentParser:
    from .analysis import add_inspect_commands
    from .doctor import add_doctor_command
    from .labels import add_labels_commands
    from .segment import add_segment_commands
    from .stats import add_stats_command
    from .training import add_train_commands

    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jsonl", action="store_true",
        help="machine-readable: progress, result and errors as JSON lines on stdout",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (add_stats_command, add_labels_commands, add_train_commands,
                     add_segment_commands, add_inspect_commands, add_doctor_command):  # fmt: skip
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    session = Session(args.command, jsonl=args.jsonl)
    args.session = session
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, session.request_cancel)
        signal.signal(signal.SIGINT, session.request_cancel)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        if not getattr(args, "bare", False):  # doctor runs even where rasterio does not import
            import rasterio
            from rasterio.errors import NotGeoreferencedWarning

            from ..data.tiles import NoCRSWarning

            # rasterio.Env: GDAL reports errors through Python logging (and the exceptions
            # turned into UserErrors) rather than printing "ERROR 1: ..." lines on stderr.
            stack.enter_context(rasterio.Env())
            # Untagged tiles would warn once per file; the data README documents it.
            warnings.simplefilter("ignore", NoCRSWarning)
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if session.jsonl:  # stdout is the event channel: the commands' own text goes to stderr
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        try:
            code = int(args.func(args) or 0)
        except UserError as exc:
            problems = getattr(exc, "problems", None) or [Problem(exc.field or "", str(exc))]
            for problem in problems:  # one line per problem
                print(f"error: {problem.message}", file=sys.stderr)
            session.emit("error", message=str(exc), type=type(exc).__name__, field=exc.field,
                         problems=[asdict(p) for p in problems])  # fmt: skip
            return 2
        except Cancelled:
            print("cancelled", file=sys.stderr)
            session.emit("cancelled")
            return 3
        except Exception as exc:
            if not session.jsonl:
                raise
            session.emit("error", message=f"{type(exc).__name__}: {exc}",
                         type=type(exc).__name__, traceback=traceback.format_exc())  # fmt: skip
            traceback.print_exc()
            return 1
    return code
