import numpy as np
import pytest

from core.segment.windows import WindowGrid, axis_starts, pad_to_tile


@pytest.mark.parametrize(
    "height,width,tile,overlap",
    [
        (200, 300, 128, 32),  # not a multiple of the tile
        (403, 515, 256, 64),  # the Haiti scene
        (1, 1, 128, 32),  # smaller than a tile
        (129, 257, 128, 64),
        (97, 1000, 64, 0),  # no overlap
        (224, 224, 128, 32),  # exactly covered by two windows per axis
    ],
)
def test_every_pixel_is_covered(height, width, tile, overlap):
    grid = WindowGrid(height, width, tile, overlap)
    coverage = grid.coverage()
    assert coverage.shape == (height, width)
    assert coverage.min() >= 1
    step = tile - overlap
    for w in grid:
        assert w.x % step == 0 and w.y % step == 0
        assert w.width == min(tile, width - w.x) and w.height == min(tile, height - w.y)
    # No useless window: every window starts inside the raster and the one before the
    # last does not already reach the end.
    for starts, size in ((grid.row_starts, height), (grid.col_starts, width)):
        assert starts[-1] < size and starts[-1] + tile >= size
        assert len(starts) == 1 or starts[-2] + tile < size


def test_grid_of_a_300x200_raster():
    grid = WindowGrid(200, 300, 128, 32)
    assert grid.row_starts == [0, 96]
    assert grid.col_starts == [0, 96, 192]
    assert len(grid) == 6
    last = list(grid)[-1]
    assert (last.row, last.col, last.x, last.y, last.width, last.height) == (
        1,
        2,
        192,
        96,
        108,
        104,
    )
    # Interior pixels are covered once or by the overlaps (2 or 4 windows).
    assert set(np.unique(grid.coverage())) == {1, 2, 4}


def test_rows_done_after_each_grid_row():
    grid = WindowGrid(200, 300, 128, 32)
    assert grid.rows_done_after(0) == 96  # grid row 1 starts at 96
    assert grid.rows_done_after(1) == 200


@pytest.mark.parametrize("overlap", [-1, 128, 200])
def test_bad_overlap_is_refused(overlap):
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(300, 128, overlap)


def test_pad_is_reflection_not_zeros():
    data = np.arange(1, 1 + 2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    out = pad_to_tile(data, 8)
    assert out.shape == (2, 8, 8)
    np.testing.assert_array_equal(out[:, :5, :7], data)
    # reflect: row 5 mirrors row 3, row 6 mirrors row 2; column 7 mirrors column 5
    np.testing.assert_array_equal(out[:, 5, :7], data[:, 3])
    np.testing.assert_array_equal(out[:, 6, :7], data[:, 2])
    np.testing.assert_array_equal(out[:, :5, 7], data[:, :, 5])
    assert out.min() >= 1  # nothing zero-filled


def test_pad_larger_than_data_and_single_pixel():
    data = np.array([[[1.0, 2.0, 3.0]]], np.float32)  # 1 x 3
    out = pad_to_tile(data, 8)
    assert out.shape == (1, 8, 8)
    np.testing.assert_array_equal(out[0, :, 0], np.ones(8))  # one row: repeated
    np.testing.assert_array_equal(out[0, 0], [1, 2, 3, 2, 1, 2, 3, 2])  # repeated reflection
