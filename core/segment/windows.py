"""The sliding-window grid: which tiles of the raster are predicted, and how each tile is
read and padded.

Windows start at multiples of ``step = tile - overlap`` along each axis, so every pixel
is covered and consecutive windows overlap by ``overlap`` pixels. The last window of a
row/column may reach past the right/bottom edge; the part outside the raster is filled by
reflect padding (mirroring real pixels, so the model sees plausible texture instead of
the hard zero edge that zero padding would create). A raster smaller than one tile gets a
single reflect-padded window. Because starts are multiples of ``step``, all windows of a
grid row share the same rows of the raster, which lets the engine write finished rows
while later rows are still being predicted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One tile: grid position, top-left pixel in the raster and the part inside it.

    ``width``/``height`` are the pixels read from the raster (clipped at the right and
    bottom edges); the remaining ``tile - width`` columns / ``tile - height`` rows are
    reflect padding.
    """

    row: int
    col: int
    x: int
    y: int
    width: int
    height: int


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis: ``0, step, 2*step, ...`` until the end is covered."""
    if size < 1:
        raise ValueError(f"raster side must be at least 1 pixel, got {size}")
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile size {tile}), got {overlap}")
    step = tile - overlap
    n = 1 + -(-max(size - tile, 0) // step)  # ceil division
    return [i * step for i in range(n)]


@dataclass(frozen=True)
class WindowGrid:
    """All windows of a ``height`` x ``width`` raster for a tile size and overlap."""

    height: int
    width: int
    tile: int
    overlap: int

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def row_starts(self) -> list[int]:
        return axis_starts(self.height, self.tile, self.overlap)

    @property
    def col_starts(self) -> list[int]:
        return axis_starts(self.width, self.tile, self.overlap)

    @property
    def n_rows(self) -> int:
        return len(self.row_starts)

    @property
    def n_cols(self) -> int:
        return len(self.col_starts)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __iter__(self) -> Iterator[Window]:
        """Windows in row-major order (the order the engine predicts and writes)."""
        cols = self.col_starts
        for r, y in enumerate(self.row_starts):
            h = min(self.tile, self.height - y)
            for c, x in enumerate(cols):
                yield Window(r, c, x, y, min(self.tile, self.width - x), h)

    def rows_done_after(self, row: int) -> int:
        """Raster rows ``[0, n)`` no window after grid row ``row`` touches: they are final
        once grid row ``row`` has been predicted."""
        if row >= self.n_rows - 1:
            return self.height
        return (row + 1) * self.step

    def coverage(self) -> np.ndarray:
        """How many windows cover each pixel (H, W); for tests and diagnostics."""
        count = np.zeros((self.height, self.width), np.int32)
        for w in self:
            count[w.y : w.y + w.height, w.x : w.x + w.width] += 1
        return count


def pad_to_tile(data: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad a (C, h, w) window read to (C, tile, tile) at the right and bottom.

    Pads larger than the data are handled by numpy's repeated reflection; a side of a
    single pixel (nothing to reflect) is repeated instead.
    """
    _, h, w = data.shape
    pad_h, pad_w = tile - h, tile - w
    if pad_h == 0 and pad_w == 0:
        return data
    mode_h = "reflect" if h > 1 else "edge"
    mode_w = "reflect" if w > 1 else "edge"
    if mode_h == mode_w:
        return np.pad(data, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode_h)
    data = np.pad(data, ((0, 0), (0, pad_h), (0, 0)), mode=mode_h)
    return np.pad(data, ((0, 0), (0, 0), (0, pad_w)), mode=mode_w)
