import numpy as np
import pytest
from rasterio.transform import from_origin

from core.data.discovery import Pair, find_dataset
from core.data.rasters import RasterError, read_image, valid_mask
from core.data.tiles import NoCRSWarning, read_tile
from tests.rasters import write_raster


def _pair(tmp_path, img, mask, **kw):
    i = write_raster(tmp_path / "img.tif", img, **kw.get("img_kw", {}))
    m = write_raster(tmp_path / "mask.tif", mask, **kw.get("mask_kw", {}))
    return Pair("t", i, m)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_any_dtype_and_band_selection(tmp_path, dtype):
    img = np.arange(5 * 6 * 7).reshape(5, 6, 7).astype(dtype)
    tile = read_tile(_pair(tmp_path, img, np.zeros((6, 7), np.uint8)), bands=[4, 3, 2])
    assert tile.image.dtype == np.float32 and tile.image.shape == (3, 6, 7)
    np.testing.assert_array_equal(tile.image[0], img[3].astype(np.float32))
    np.testing.assert_array_equal(tile.image[2], img[1].astype(np.float32))
    assert tile.valid.all()


def test_band_out_of_range_names_file(tmp_path):
    pair = _pair(tmp_path, np.ones((3, 4, 4), np.uint16), np.zeros((4, 4), np.uint8))
    with pytest.raises(
        RasterError, match=r"img.tif: has 3 band\(s\) .*\(band\(s\) \[4, 8\] do not exist\)"
    ):
        read_tile(pair, bands=[4, 3, 2, 8])


def test_nan_sentinel_and_declared_nodata_are_invalid(tmp_path):
    img = np.full((2, 4, 4), 5.0, np.float32)
    img[0, 0, 0] = np.nan
    img[1, 1, 1] = -9999
    img[0, 2, 2] = 7  # declared nodata
    pair = _pair(tmp_path, img, np.ones((4, 4), np.uint8), img_kw={"nodata": 7})
    tile = read_tile(pair)
    assert tile.valid.sum() == 13
    assert not tile.valid[0, 0] and not tile.valid[1, 1] and not tile.valid[2, 2]
    assert np.isfinite(tile.image).all() and tile.image[:, 0, 0].tolist() == [0.0, 0.0]


def test_valid_mask_integer_nodata():
    data = np.array([[[0, 1], [2, 0]]], np.uint8)
    assert valid_mask(data, 0).tolist() == [[False, True], [True, False]]
    assert valid_mask(data, None).all()


def test_mask_0_255_is_binary(tmp_path):
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    tile = read_tile(_pair(tmp_path, np.ones((1, 2, 2), np.float32), mask))
    assert tile.mask.tolist() == [[0, 1], [1, 0]]


def test_bad_mask_values_named(tmp_path):
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    with pytest.raises(
        RasterError, match=r"mask.tif: mask values must be 0/1 or 0/255, found 0, 1, 2, 3"
    ):
        read_tile(_pair(tmp_path, np.ones((1, 2, 2), np.float32), mask))


def test_mask_nodata_pixels_are_invalid(tmp_path):
    mask = np.array([[0, 1], [9, 1]], np.uint8)
    tile = read_tile(_pair(tmp_path, np.ones((1, 2, 2), np.float32), mask, mask_kw={"nodata": 9}))
    assert tile.valid.tolist() == [[True, True], [False, True]]
    assert tile.mask.tolist() == [[0, 1], [0, 1]]


def test_size_mismatch_named(tmp_path):
    pair = _pair(tmp_path, np.ones((1, 4, 4), np.float32), np.zeros((4, 5), np.uint8))
    with pytest.raises(RasterError, match=r"mask.tif: mask is 5x4 but image img.tif is 4x4"):
        read_tile(pair)


def test_crs_mismatch_refused(tmp_path):
    pair = _pair(tmp_path, np.ones((1, 4, 4), np.float32), np.zeros((4, 4), np.uint8),
                 mask_kw={"crs": "EPSG:4326", "transform": from_origin(500000, 7500000, 10, 10)})  # fmt: skip
    with pytest.raises(RasterError, match=r"mask CRS EPSG:4326 differs from image CRS EPSG:32723"):
        read_tile(pair)


def test_transform_mismatch_refused(tmp_path):
    pair = _pair(tmp_path, np.ones((1, 4, 4), np.float32), np.zeros((4, 4), np.uint8),
                 mask_kw={"transform": from_origin(500010, 7500000, 10, 10)})  # fmt: skip
    with pytest.raises(RasterError, match="mask transform .* differs from image transform"):
        read_tile(pair)


def test_no_crs_accepted_with_warning(tmp_path):
    pair = _pair(tmp_path, np.ones((1, 4, 4), np.float32), np.zeros((4, 4), np.uint8),
                 img_kw={"crs": None}, mask_kw={"crs": None})  # fmt: skip
    with pytest.warns(NoCRSWarning, match="without a CRS"):
        tile = read_tile(pair)
    assert tile.image.shape == (1, 4, 4)


def test_real_tile(solafune):
    pair = find_dataset(solafune).pairs[0]
    with pytest.warns(NoCRSWarning):
        tile = read_tile(pair, bands=[4, 3, 2, 8])
    assert tile.image.shape[0] == 4 and tile.image.shape[1:] == tile.mask.shape
    assert set(np.unique(tile.mask)) <= {0, 1}
    full, _ = read_image(pair.image)
    assert full.shape[0] == 12
    np.testing.assert_array_equal(tile.image[3], full[7])
