"""Helpers shared by the command-line modules (no sub-command imports another)."""

from __future__ import annotations

import argparse
import sys

from ..progress import Progress


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
