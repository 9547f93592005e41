"""The engine's numpy resampling equals training's torch resampling."""

import numpy as np
import pytest
import torch

from core.data.transforms import downscale_probability, upscale
from core.segment.resample import downscale_mean, upscale_bicubic


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("shape", [(2, 4, 37, 64), (1, 1, 1, 5), (1, 2, 3, 2), (3, 12, 24, 23)])
def test_bicubic_upscale_matches_torch_interpolate(shape, factor):
    x = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    ours = upscale_bicubic(x, factor)
    ref = upscale(torch.from_numpy(x), factor, "bicubic").numpy()
    assert ours.shape == ref.shape == (*shape[:2], shape[2] * factor, shape[3] * factor)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_allclose(ours, ref, atol=2e-6)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_area_downscale_matches_avg_pool(factor):
    p = np.random.default_rng(1).random((2, 1, 16 * factor, 8 * factor)).astype(np.float32)
    ref = downscale_probability(torch.from_numpy(p), factor).numpy()
    np.testing.assert_allclose(downscale_mean(p, factor), ref, atol=1e-7)
    assert downscale_mean(np.full((1, 1, 4, 4), 0.25, np.float32), 2).tolist() == [
        [[[0.25, 0.25], [0.25, 0.25]]]
    ]
