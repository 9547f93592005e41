"""Helpers shared by the command-line modules (no sub-command imports another)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ..errors import Problem, raise_problems
from ..progress import Progress, ProgressFn


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    """int8's ``--calibration`` and ``--calibration-tiles`` (segment, segment-many,
    export-onnx, evaluate): one definition."""
    from ..segment.options import DEFAULT_CALIBRATION_TILES

    p.add_argument(
        "--calibration", default=None, metavar="DIR",
        help="int8: dataset folder whose tiles calibrate the quantisation (default: the "
        "model's training dataset, as recorded in the model file; its train split)",
    )  # fmt: skip
    p.add_argument(
        "--calibration-tiles", type=int, default=DEFAULT_CALIBRATION_TILES, metavar="N",
        help=f"int8: calibration tiles (default {DEFAULT_CALIBRATION_TILES})",
    )  # fmt: skip


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


def throttled_progress(every_s: float = 5.0) -> ProgressFn:
    """:func:`print_progress` at most once per ``every_s`` seconds, plus every stage
    change and the end (per-tile reports would flood the terminal)."""
    import time

    last: dict[str, Any] = {"stage": None, "t": 0.0}

    def show(p: Progress) -> None:
        now = time.monotonic()
        if p.stage != last["stage"] or p.fraction >= 1.0 or now - last["t"] >= every_s:
            print_progress(p)
            last["stage"], last["t"] = p.stage, now

    return show


class Session:
    """One command's channel to its caller.

    Without ``--jsonl`` progress goes to stderr as text and the command prints what it
    prints. With ``--jsonl`` (how the QGIS plugin runs the engine in a subprocess) stdout
    carries only JSON lines, one event each::

        {"event": "progress", "stage": ..., "fraction": ..., "message": ..., "info": {...}}
        {"event": "result", "command": ..., "data": {...}}
        {"event": "error", "message": ..., "type": ..., "field": ...}   (exit status 2)
        {"event": "error", "message": ..., "type": ..., "traceback": ...} (a bug, status 1)
        {"event": "cancelled"}                                            (status 3)

    SIGTERM (and Ctrl+C) set :attr:`cancelled`, which every long function polls through
    :meth:`cancel`, so a terminated training still keeps its best model.
    """

    def __init__(self, command: str, jsonl: bool = False, out: TextIO | None = None) -> None:
        self.command = command
        self.jsonl = jsonl
        self.out = out or sys.stdout
        self.cancelled = False

    def cancel(self) -> bool:
        return self.cancelled

    def request_cancel(self, *_: object) -> None:
        self.cancelled = True

    def emit(self, event: str, **data: Any) -> None:
        if self.jsonl:
            self.out.write(json.dumps({"event": event, **data}, default=str) + "\n")
            self.out.flush()

    def progress(self, human: ProgressFn | None = None) -> ProgressFn:
        """The progress callback: JSON events, or ``human`` (default: one line each)."""
        if not self.jsonl:
            return human or print_progress

        def report(p: Progress) -> None:
            self.emit("progress", stage=p.stage, fraction=float(p.fraction), message=p.message,
                      info=p.info or {})  # fmt: skip

        return report

    def result(self, data: dict[str, Any]) -> None:
        self.emit("result", command=self.command, data=data)


def report_checked(session: Session, problems: list[Problem]) -> int:
    """``--check``: raise every problem (exit 2, one line each), or report that the
    inputs are fine."""
    raise_problems(problems)
    session.result({"ok": True, "problems": []})
    print("inputs ok")
    return 0
