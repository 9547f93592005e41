"""Progress reporting and cancellation shared by every long-running engine function.

Long work in ``core`` takes ``progress`` (a callable receiving a :class:`Progress`)
and ``cancel`` (a callable returning True when the caller wants to stop). The QGIS
plugin passes QgsTask's ``setProgress``/``isCanceled``; the command line prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """One progress report. ``fraction`` is overall completion in [0, 1]."""

    stage: str
    fraction: float
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised inside the engine when the cancel check returns True."""


def no_progress(_: Progress) -> None:
    """Default progress callback: ignore reports."""


def never_cancel() -> bool:
    """Default cancel check: never cancel."""
    return False


def check_cancel(cancel: CancelFn) -> None:
    """Raise :class:`Cancelled` if ``cancel()`` says so."""
    if cancel():
        raise Cancelled("cancelled by user")
