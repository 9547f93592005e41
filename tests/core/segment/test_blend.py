import numpy as np
import pytest

from core.segment.blend import WEIGHT_FLOOR, StripBlender, hann_weights
from core.segment.windows import Window, WindowGrid


def test_hann_weights():
    w = hann_weights(128)
    assert w.shape == (128, 128) and w.dtype == np.float32
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w.min() >= WEIGHT_FLOOR
    assert w.max() == pytest.approx(1.0, abs=1e-3)
    assert w[64, 64] > 100 * w[0, 64]  # edges count far less than the middle


def _blend(grid: WindowGrid, window_values) -> tuple[np.ndarray, np.ndarray, list[int]]:
    blender = StripBlender(grid.width, grid.height, grid.tile)
    out = np.full((grid.height, grid.width), np.nan, np.float32)
    valid = np.zeros((grid.height, grid.width), bool)
    starts: list[int] = []
    row = 0

    def take(until):
        y0, prob, ok = blender.pop_rows(until)
        starts.append(y0)
        assert np.isnan(out[y0 : y0 + len(prob)]).all()  # every row written once
        out[y0 : y0 + len(prob)] = prob
        valid[y0 : y0 + len(prob)] = ok

    for w in grid:
        if w.row != row:
            take(grid.rows_done_after(row))
            row = w.row
        prob, ok = window_values(w)
        blender.add(prob, ok, w)
    take(grid.height)
    return out, valid, starts


def test_blending_reproduces_a_field_exactly():
    """Windows that all predict the same global field blend back to that field, whatever
    their weights: placement and normalisation are right."""
    h, w, tile = 200, 300, 128
    yy, xx = np.mgrid[0 : h + tile, 0 : w + tile].astype(np.float32)
    field = (np.sin(yy / 17.0) * np.cos(xx / 23.0) + 1) / 2

    def values(win: Window):
        prob = field[win.y : win.y + tile, win.x : win.x + tile]  # padding part: anything
        return prob, np.ones((win.height, win.width), bool)

    out, valid, starts = _blend(WindowGrid(h, w, tile, 32), values)
    np.testing.assert_allclose(out, field[:h, :w], atol=1e-6)
    assert valid.all()
    assert starts == [0, 96]


def test_seams_are_smooth_between_disagreeing_windows():
    """Two windows predicting 0 and 1 over their overlap fade smoothly (monotonic, no
    jump) instead of switching at a seam."""
    grid = WindowGrid(128, 224, 128, 32)  # two windows side by side, overlap 96..127
    out, _, _ = _blend(
        grid,
        lambda win: (
            np.full((128, 128), float(win.col), np.float32),
            np.ones((128, win.width), bool),
        ),
    )
    row = out[64]
    assert (row[:96] == 0).all() and (row[128:] == 1).all()
    ramp = row[96:128]
    assert (np.diff(ramp) > 0).all() and np.diff(ramp).max() < 0.15


def test_validity_comes_from_the_windows():
    grid = WindowGrid(100, 100, 64, 16)
    invalid = np.zeros((100, 100), bool)
    invalid[10:20, 30:90] = True

    def values(win):
        ok = ~invalid[win.y : win.y + win.height, win.x : win.x + win.width]
        return np.full((64, 64), 0.5, np.float32), ok

    out, valid, _ = _blend(grid, values)
    np.testing.assert_array_equal(valid, ~invalid)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)


def test_band_holds_tile_rows_only_and_rejects_out_of_order_windows():
    blender = StripBlender(width=1000, height=5000, tile=64)
    assert blender._sum.shape == (64, 1000)  # not the raster's 5000 rows
    with pytest.raises(ValueError, match="grid order"):
        blender.add(
            np.zeros((64, 64), np.float32), np.ones((64, 64), bool), Window(2, 0, 0, 96, 64, 64)
        )
