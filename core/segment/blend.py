"""Seamless blending of overlapping window predictions, one band of rows at a time.

Every window's probabilities are multiplied by a smooth 2-D weight that is largest in the
middle of the tile and falls towards its edges (a Hann window), summed, and divided by
the summed weights. Predictions near a tile edge, where the network saw the least
context, therefore count least, and neighbouring tiles fade into each other without
seams. The weight has a small floor (1e-3) so a pixel covered only by the edge of a tile
(the raster's own first rows and columns) still gets a well-defined value. It is kept
small because a window's prediction a few pixels from its edge is the least reliable
(zero padding inside the network) and should hardly count where another window sees the
pixel well inside: with a floor of 0.01 the tiling error of a receptive-field-3 network
was 8x larger than with 1e-3.

:class:`StripBlender` holds the sums for only ``tile`` rows x the raster width: once a
grid row of windows is done, the rows no later window touches are divided out, handed to
the writers and dropped, so memory does not grow with the raster's height.
"""

from __future__ import annotations

import numpy as np

from .windows import Window

WEIGHT_FLOOR = 1e-3


def hann_weights(tile: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """(tile, tile) float32 weights ``floor + (1 - floor) * hann(y) * hann(x)`` with
    ``hann(i) = sin^2(pi * (i + 0.5) / tile)``: symmetric, largest in the middle."""
    i = np.arange(tile, dtype=np.float64)
    w1 = np.sin(np.pi * (i + 0.5) / tile) ** 2
    return (floor + (1.0 - floor) * np.outer(w1, w1)).astype(np.float32)


class StripBlender:
    """Weighted sums for raster rows ``[top, top + tile)`` across the full width.

    Windows must arrive in grid order (row-major); :meth:`pop_rows` returns finished rows
    and slides the band down.
    """

    def __init__(self, width: int, height: int, tile: int, weights: np.ndarray | None = None):
        self.width = width
        self.height = height
        self.tile = tile
        self.weights = hann_weights(tile) if weights is None else weights
        if self.weights.shape != (tile, tile):
            raise ValueError(f"weights must be {tile}x{tile}, got {self.weights.shape}")
        self.top = 0
        self._sum = np.zeros((tile, width), np.float32)
        self._wsum = np.zeros((tile, width), np.float32)
        self._valid = np.zeros((tile, width), bool)

    def add(self, prob: np.ndarray, valid: np.ndarray, win: Window) -> None:
        """Accumulate one window: ``prob`` (tile, tile) probabilities of the padded tile,
        ``valid`` (win.height, win.width) validity of the part inside the raster."""
        r0 = win.y - self.top
        if r0 < 0 or r0 + win.height > self.tile:
            raise ValueError(
                f"window at row {win.y} is outside the blending band "
                f"[{self.top}, {self.top + self.tile}); windows must come in grid order"
            )
        h, w = win.height, win.width
        wts = self.weights[:h, :w]
        rows = slice(r0, r0 + h)
        cols = slice(win.x, win.x + w)
        self._sum[rows, cols] += prob[:h, :w] * wts
        self._wsum[rows, cols] += wts
        self._valid[rows, cols] = valid

    def pop_rows(self, until: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Blend and remove rows ``[top, until)``: returns (first row, probabilities
        (n, width) float32, validity (n, width) bool)."""
        n = until - self.top
        if not 0 < n <= self.tile or until > self.height:
            raise ValueError(f"cannot pop rows [{self.top}, {until}) from the blending band")
        wsum = self._wsum[:n]
        prob = np.divide(
            self._sum[:n], wsum, out=np.zeros((n, self.width), np.float32), where=wsum > 0
        )
        valid = self._valid[:n] & (wsum > 0)
        y0 = self.top
        keep = self.tile - n
        for buf in (self._sum, self._wsum, self._valid):
            buf[:keep] = buf[n:].copy()
            buf[keep:] = 0
        self.top = until
        return y0, prob, valid
