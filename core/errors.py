"""The user-error base class.

A :class:`UserError` is a problem with the user's input (a damaged file, a wrong
setting, a model file that is not ours): front ends show its message as one line.
Anything else that escapes the engine is a bug and keeps its traceback. Each
subclass names the file or setting at fault in its message.
"""

from __future__ import annotations


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
