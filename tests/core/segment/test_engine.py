from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.data.rasters import RasterError
from core.models.build import ModelFileError
from core.progress import Cancelled, Progress
from core.segment import SegmentOptions, segment_raster, segment_with_backend
from core.segment.backends import TorchBackend
from core.segment.windows import WindowGrid
from core.segment.writers import OutputExistsError
from tests.core.segment.helpers import (
    LocalNet,
    crop_raster,
    local_meta,
    whole_image_probability,
)

# Tiled vs whole-image pass of LocalNet (receptive-field radius 3), tile 128, overlap 32,
# pixels >= 32 px from the raster border. Exact (float rounding) wherever no window edge
# is within reach; within 3 px of a window edge the window's zero-padded prediction still
# has a small Hann weight (<= ~1 % against the neighbour that sees the pixel well inside):
# largest difference found 8.5e-3 (upscale 1).
EXACT_TOLERANCE = 1e-5
LOCAL_TOLERANCE = 1.5e-2


@pytest.fixture(scope="module")
def crop_300x200(haiti, tmp_path_factory) -> Path:
    """300 x 200 px of the real scene: not a multiple of the 128 px tile."""
    return crop_raster(haiti, tmp_path_factory.mktemp("crop") / "crop.tif", 50, 100, 200, 300)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), {
            "crs": src.crs,
            "transform": src.transform,
            "width": src.width,
            "height": src.height,
            "dtype": src.dtypes[0],
            "nodata": src.nodata,
            "tiled": src.profile.get("tiled"),
            "compress": src.compression.value.lower() if src.compression else None,
        }


@pytest.mark.parametrize("upscale", [1, 2])
def test_tiled_run_matches_a_whole_image_pass(crop_300x200, haiti_stats, tmp_path, upscale):
    mean, std = haiti_stats
    net = LocalNet().eval()
    result = segment_with_backend(
        TorchBackend(net),
        local_meta(mean, std, upscale=upscale),
        crop_300x200,
        tmp_path,
        SegmentOptions(tile_size=128, overlap=32, batch_size=4),
    )
    assert result.windows == 6
    tiled, _ = _read(result.probability_path)
    if upscale == 1:
        whole = whole_image_probability(net, crop_300x200, mean, std)
    else:  # the whole image upscaled, predicted and area-averaged back
        import torch
        import torch.nn.functional as F

        class Upscaled(torch.nn.Module):
            def forward(self, x):
                up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
                p = torch.sigmoid(net(up))
                return torch.logit(F.avg_pool2d(p, 2), eps=1e-7)

        whole = whole_image_probability(Upscaled(), crop_300x200, mean, std)
    assert whole.std() > 0.15  # a field with real structure, not a constant
    diff = np.abs(tiled - whole)
    interior = np.zeros_like(diff, bool)
    interior[32:-32, 32:-32] = True
    grid = WindowGrid(200, 300, 128, 32)
    near_edge = np.zeros_like(interior)
    reach = LocalNet.radius + 1  # + 1: bicubic upscaling reads one more native pixel
    for x in grid.col_starts + [x + 128 for x in grid.col_starts]:
        near_edge[:, max(x - reach, 0) : x + reach] = True
    for y in grid.row_starts + [y + 128 for y in grid.row_starts]:
        near_edge[max(y - reach, 0) : y + reach] = True
    assert diff[interior & ~near_edge].max() < EXACT_TOLERANCE
    assert diff[interior].max() < LOCAL_TOLERANCE, diff[interior].max()
    assert np.median(diff[interior]) < EXACT_TOLERANCE
    assert np.isfinite(tiled).all() and tiled.min() >= 0 and tiled.max() <= 1


def test_outputs_are_on_the_source_grid_with_nodata(haiti, model_file, tmp_path):
    nodata = 0

    def punch_holes(a):
        a[:, 20:60, 30:90] = nodata  # a nodata block in every band
        a[2, 100:110, 200:220] = nodata  # nodata in one band only: still invalid
        return a

    raster = crop_raster(
        haiti, tmp_path / "in.tif", 0, 0, 150, 260, nodata=nodata, edit=punch_holes
    )
    with rasterio.open(raster) as src:
        source = {"crs": src.crs, "transform": src.transform, "width": 260, "height": 150}
        invalid = (src.read() == nodata).any(axis=0)
    assert invalid[20:60, 30:90].all() and invalid[100:110, 200:220].all()

    for dtype in ("float32", "uint8"):
        out = tmp_path / dtype
        result = segment_raster(model_file, raster, out, SegmentOptions(probability_dtype=dtype))
        assert result.nodata_pixels == invalid.sum()
        prob, p_info = _read(out / "probability.tif")
        mask, m_info = _read(out / "mask.tif")
        for info in (p_info, m_info):
            assert {k: info[k] for k in source} == source
            assert info["tiled"] and info["compress"] == "deflate"
        assert (p_info["dtype"], m_info["dtype"], m_info["nodata"]) == (dtype, "uint8", 255)
        if dtype == "float32":
            assert np.isnan(p_info["nodata"])
            np.testing.assert_array_equal(np.isnan(prob), invalid)
            p = prob
        else:
            assert p_info["nodata"] == 255
            with rasterio.open(out / "probability.tif") as src:
                assert src.scales[0] == pytest.approx(1 / 254)
            np.testing.assert_array_equal(prob == 255, invalid)
            assert prob[~invalid].max() <= 254
            p = prob.astype(np.float32) / 254
        np.testing.assert_array_equal(mask == 255, invalid)
        assert set(np.unique(mask[~invalid])) <= {0, 1}
        # The mask is the probability at the model's threshold (0.6 in this model file).
        expected = (p[~invalid] >= 0.6).astype(np.uint8)
        agree = (mask[~invalid] == expected).mean()
        assert agree == 1.0 if dtype == "float32" else agree > 0.99
        assert result.threshold == 0.6
        assert result.panel_pixels == int((mask == 1).sum())


def test_nan_and_sentinel_pixels_of_a_float_raster_are_nodata(haiti, model_file, tmp_path):
    def holes(a):
        a[0, 5:15, 5:15] = np.nan
        a[3, 40:45, 100:140] = -9999
        return a

    raster = crop_raster(haiti, tmp_path / "f.tif", 100, 100, 120, 180, dtype="float32", edit=holes)
    result = segment_raster(model_file, raster, tmp_path / "out")
    prob, _ = _read(result.probability_path)
    mask, _ = _read(result.mask_path)
    assert np.isnan(prob).sum() == (mask == 255).sum() == 10 * 10 + 5 * 40
    assert np.isnan(prob[5:15, 5:15]).all() and (mask[40:45, 100:140] == 255).all()


def test_three_band_landsat_is_refused_then_mapped(landsat, model_file, tmp_path):
    with pytest.raises(RasterError) as err:
        segment_raster(model_file, landsat, tmp_path / "refused")
    message = str(err.value)
    assert str(landsat) in message
    assert "needs bands [1, 2, 3, 4]" in message and "has 3 band(s)" in message
    assert not (tmp_path / "refused" / "probability.tif").exists()

    # An explicit mapping (blue, green, red -> the model's R, G, B, NIR inputs) runs; a
    # crop of the real scene keeps the test fast.
    crop = crop_raster(landsat, tmp_path / "landsat_crop.tif", 600, 700, 160, 200)
    result = segment_raster(
        model_file, crop, tmp_path / "mapped", SegmentOptions(bands=[3, 2, 1, 1])
    )
    assert result.bands == [3, 2, 1, 1]
    prob, info = _read(result.probability_path)
    assert (info["width"], info["height"], info["crs"].to_epsg()) == (200, 160, 32621)
    assert np.isfinite(prob).all()

    with pytest.raises(RasterError, match=r"has 3 band\(s\) but bands \[4, 3, 2, 1\]"):
        segment_raster(model_file, crop, tmp_path / "bad", SegmentOptions(bands=[4, 3, 2, 1]))
    with pytest.raises(ValueError, match="model takes 4 input"):
        segment_raster(model_file, crop, tmp_path / "bad", SegmentOptions(bands=[3, 2, 1]))


def test_cancel_after_first_batch_removes_partial_outputs(haiti, model_file, tmp_path):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) >= 2  # the check before the run passes, the first batch's stops

    reports: list[Progress] = []
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        segment_raster(
            model_file,
            haiti,
            out,
            SegmentOptions(batch_size=2, polygons=True),
            reports.append,
            cancel,
        )
    assert [r.info["done"] for r in reports] == [2]  # stopped within one batch
    assert list(out.iterdir()) == []  # no final name, no temporary file left


def test_existing_outputs_are_not_overwritten(crop_300x200, model_file, tmp_path):
    first = segment_raster(model_file, crop_300x200, tmp_path)
    before = first.probability_path.read_bytes()
    with pytest.raises(OutputExistsError, match="probability.tif"):
        segment_raster(model_file, crop_300x200, tmp_path, SegmentOptions(threshold=0.1))
    assert first.probability_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "probability.tif"]

    again = segment_raster(
        model_file, crop_300x200, tmp_path, SegmentOptions(threshold=0.1, overwrite=True)
    )
    mask, _ = _read(again.mask_path)
    assert again.threshold == 0.1 and mask.mean() > 0.9  # really replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "probability.tif"]


def test_progress_summary_and_polygons(haiti, model_file, tmp_path):
    reports: list[Progress] = []
    result = segment_raster(
        model_file,
        haiti,
        tmp_path,
        SegmentOptions(tile_size=256, overlap=64, batch_size=2, polygons=True),
        reports.append,
    )
    segment = [r for r in reports if r.stage == "segment"]
    assert [r.info["done"] for r in segment] == [2, 4, 6]  # 2 x 3 windows of 256 px
    assert all(r.info["total"] == 6 and r.info["windows_per_s"] > 0 for r in segment)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "windows/s" in segment[0].message and "ETA" in segment[0].message

    assert (result.width, result.height, result.pixels, result.windows) == (515, 403, 207545, 6)
    assert result.area_km2 == pytest.approx(515 * 403 * 25 / 1e6)
    assert result.km2_per_minute == pytest.approx(result.area_km2 / result.seconds * 60)
    assert result.polygons_path == tmp_path / "panels.gpkg"
    mask, _ = _read(result.mask_path)
    # Polygons cover exactly the panel pixels (5 m pixels: 25 m² each).
    assert result.panel_area_ha == pytest.approx((mask == 1).sum() * 25 / 10_000)
    assert result.panels > 0
    line = result.summary()
    assert "207,545 pixels" in line and "6 windows" in line and "km²/min" in line
    assert f"{result.panels} panel polygon(s)" in line


def test_bad_inputs_name_the_problem(model_file, crop_300x200, tmp_path):
    with pytest.raises(RasterError, match="missing.tif: file not found"):
        segment_raster(model_file, tmp_path / "missing.tif", tmp_path / "a")
    with pytest.raises(ModelFileError, match="nope.pt: model file not found"):
        segment_raster(tmp_path / "nope.pt", crop_300x200, tmp_path / "b")
    with pytest.raises(ValueError, match="multiple of the model's pad multiple 32"):
        segment_raster(model_file, crop_300x200, tmp_path / "c", SegmentOptions(tile_size=100))
    with pytest.raises(ValueError, match="overlap"):
        segment_raster(model_file, crop_300x200, tmp_path / "d", SegmentOptions(overlap=128))
    with pytest.raises(ValueError, match="probability dtype"):
        segment_raster(
            model_file, crop_300x200, tmp_path / "e", SegmentOptions(probability_dtype="int16")
        )
    assert not any(tmp_path.glob("*/*.tif"))
