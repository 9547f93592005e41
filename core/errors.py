"""The user-error base class.

A :class:`UserError` is a problem with the user's input (a damaged file, a wrong
setting, a model file that is not ours): front ends show its message as one line.
Anything else that escapes the engine is a bug and keeps its traceback. Each
subclass names the file or setting at fault in its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class UserError(Exception):
    """Bad input: shown to the user as one line (CLI exit status 2)."""

    #: The input field the problem belongs to (``data.path``, ``raster``...), if known.
    field: str | None = None

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        if field is not None:
            self.field = field


class InputError(UserError, ValueError):
    """A value the user chose cannot work (unknown encoder, tile too small, no GPU...)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named is not there, or is not what it should be."""


class RasterError(UserError, ValueError):
    """A raster or mask cannot be used; the message names the file and the problem.

    Defined here (not beside the rasterio code that raises it most) so that numpy-only
    modules, such as :mod:`core.data.masks`, can raise it without importing rasterio."""


@dataclass(frozen=True)
class Problem:
    """One refused input: the field it belongs to (a config key such as
    ``model.arch``, or an option name such as ``raster``) and a one-line message."""

    field: str
    message: str
    #: The error the check caught, re-raised as is when it is the only problem.
    error: Exception | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, key: str, exc: Exception) -> Problem:
        return cls(getattr(exc, "field", None) or key, str(exc), exc)


class ValidationError(UserError, ValueError):
    """Every problem found by an operation's check, raised before anything is written.

    The message is the first problem (plus how many more), so the CLI still prints one
    line; front ends show each problem beside its field.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ValidationError needs at least one problem")
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(problems[0].message + more, problems[0].field)
        self.problems = list(problems)


def raise_problems(problems: list[Problem]) -> None:
    """Raise :class:`ValidationError` when ``problems`` is not empty; a single problem
    that came from a caught error re-raises that error (its type tells callers what
    failed: OutputExistsError, RasterError...)."""
    if len(problems) == 1 and isinstance(problems[0].error, UserError):
        exc = problems[0].error
        exc.field = problems[0].field
        raise exc
    if problems:
        raise ValidationError(problems)
