"""Integer-factor resampling of window batches in numpy, for the segmentation engine.

Bicubic upscaling matches ``torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)`` (Keys kernel, a = -0.75, border indices clamped), which is what
training uses, to float32 rounding; downscaling is the area average
(``avg_pool2d``). Being numpy, an upscaled model runs on ONNX Runtime without torch.
"""

from __future__ import annotations

import numpy as np

_A = -0.75  # PyTorch's bicubic coefficient


def _cubic(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    near = ((_A + 2) * t - (_A + 3)) * t * t + 1
    far = ((_A * t - 5 * _A) * t + 8 * _A) * t - 4 * _A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _upscale_axis(x: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Bicubic upscale along ``axis`` (-1 or -2) as ``factor`` polyphase 4-tap filters
    over an edge-padded copy (edge padding is PyTorch's index clamping): output
    ``i * f + p`` samples the input at ``i + d_p``, ``d_p = (p + 0.5) / f - 0.5``.
    Phases are stacked right after ``axis`` and merged, so every write is contiguous."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = np.pad(x, pad, mode="edge")
    phases = []
    for p in range(factor):
        d = (p + 0.5) / factor - 0.5
        lo = int(np.floor(d))
        acc = None
        for k in range(-1, 3):
            w = np.float32(_cubic(np.array(d - lo - k)))
            taps = np.take(xp, np.arange(lo + k + 2, lo + k + 2 + n), axis=axis)
            acc = w * taps if acc is None else acc + w * taps
        phases.append(acc)
    stacked = np.stack(phases, axis=x.ndim + axis + 1)  # (..., n, f[, W])
    shape = list(x.shape)
    shape[axis] = n * factor
    return stacked.reshape(shape)


def upscale_bicubic(x: np.ndarray, factor: int) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, C, H*f, W*f), separable bicubic."""
    if factor == 1:
        return x
    x = x.astype(np.float32, copy=False)
    return np.ascontiguousarray(_upscale_axis(_upscale_axis(x, factor, -1), factor, -2))


def downscale_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """(N, C, H*f, W*f) -> (N, C, H, W), mean of each f x f block."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // factor, factor, w // factor, factor)
    return np.ascontiguousarray(blocks.mean(axis=(3, 5), dtype=np.float32))
