"""The value-scale warning of segment (core.segment.drift) on real rasters."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from core.segment.drift import band_drift, drift_warning, sample_bands

# Training statistics of bands 4,3,2,8 (R, G, B, NIR) of the Solafune tiles, as the
# engine computed them for configs/rgbn.yaml (the run's stats.json, 633,335 pixels).
MEAN = [878.61, 851.78, 673.15, 2201.36]
STD = [376.51, 315.55, 324.12, 695.70]


def test_eight_bit_scene_is_flagged(scenes):
    """The uint8 Haiti scene (R,G,B,NIR 5 m) is not on Sentinel-2's reflectance scale."""
    path = scenes / "rgbn_haiti_5m.tif"
    warning = drift_warning(path, [1, 2, 3, 4], MEAN, STD)
    assert warning is not None
    assert warning.startswith("rgbn_haiti_5m.tif: its values do not look like")
    # NIR is the most distant band: mean about 116 against 2201 (-3 std, 0.05x).
    assert "band 4 has mean" in warning and "and 3 more band(s)" in warning
    drifts = band_drift(sample_bands(path, [1, 2, 3, 4]), [1, 2, 3, 4], MEAN, STD)
    assert [round(d.ratio, 2) for d in drifts] == pytest.approx([0.14, 0.15, 0.19, 0.05], abs=0.02)


def test_sentinel2_tiles_and_chips_pass(solafune, austria):
    """Real Sentinel-2 data of the same scale: a Solafune tile and an Austrian chip."""
    tile = solafune / "s2_image" / "train_s2_image_0.tif"
    assert drift_warning(tile, [4, 3, 2, 8], MEAN, STD) is None
    chip = austria / "images" / "S2_2022_102.tif"
    assert drift_warning(chip, [4, 3, 2, 8], MEAN, STD) is None


def test_reflectance_in_zero_one_is_flagged(tmp_path, solafune):
    """The same tile divided by 10,000 (reflectance 0-1): flagged by the ratio."""
    with rasterio.open(solafune / "s2_image" / "train_s2_image_0.tif") as src:
        data, profile = src.read(), src.profile
    out = tmp_path / "reflectance.tif"
    profile.update(dtype="float32")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write((data / 10_000).astype(np.float32))
    warning = drift_warning(out, [4, 3, 2, 8], MEAN, STD)
    assert (
        warning is not None and "reflectance.tif" in warning and "band 8 has mean 0.26" in warning
    )


def test_all_nodata_gives_no_warning(tmp_path):
    out = tmp_path / "empty.tif"
    with rasterio.open(
        out, "w", driver="GTiff", width=8, height=8, count=4, dtype="float32", nodata=-9999
    ) as dst:
        dst.write(np.full((4, 8, 8), -9999, np.float32))
    assert sample_bands(out, [1, 2, 3, 4]).shape == (4, 0)
    assert drift_warning(out, [1, 2, 3, 4], MEAN, STD) is None


def test_segment_warns_and_still_writes(haiti, unet, tmp_path):
    """A model trained on Sentinel-2 statistics applied to the 8-bit Haiti scene: the
    result and the CLI say so, and the outputs are written as usual."""
    import subprocess
    import sys

    from core.models.build import ModelMeta, save_model_file
    from core.segment.engine import SegmentOptions, segment_raster
    from tests.conftest import REPO

    meta = ModelMeta(arch="Unet", encoder="resnet18", in_channels=4, bands=[1, 2, 3, 4],
                     mean=MEAN, std=STD, tile_size=256, overlap=32)  # fmt: skip
    model = tmp_path / "s2.pt"
    save_model_file(model, unet, meta)
    reports = []
    result = segment_raster(model, haiti, tmp_path / "a", SegmentOptions(), reports.append)
    assert len(result.warnings) == 1 and "rgbn_haiti_5m.tif" in result.warnings[0]
    assert [r.message for r in reports if r.stage == "warning"] == result.warnings
    assert result.mask_path.is_file()
    cli = subprocess.run(
        [sys.executable, "-m", "core", "segment", str(model), str(haiti), "--out",
         str(tmp_path / "b")],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"warning: {result.warnings[0]}" in cli.stderr
