"""Shape transforms: upscaling, padding to the model's multiple, cropping back, and
synchronized augmentation of image, mask and validity.

Order used everywhere: normalise at native size -> upscale (bicubic image, nearest
mask/validity) -> pad (reflect; padding marked invalid) -> model -> crop -> back to
native (area average of probabilities). Metrics are always computed at native size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def padded_size(size: int, multiple: int) -> int:
    return int(math.ceil(size / multiple) * multiple)


def upscale(image: torch.Tensor, factor: int, mode: str = "bicubic") -> torch.Tensor:
    """Upscale (..., H, W) by an integer factor; bicubic for images, nearest for masks."""
    if factor == 1:
        return image
    squeeze = image.ndim == 3
    x = image[None] if squeeze else image
    dtype = x.dtype
    x = x.float()
    if mode == "nearest":
        out = F.interpolate(x, scale_factor=factor, mode="nearest")
    else:
        out = F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
    out = out.to(dtype)
    return out[0] if squeeze else out


def downscale_probability(prob: torch.Tensor, factor: int) -> torch.Tensor:
    """Bring (N, 1, H*f, W*f) probabilities back to native size by area averaging."""
    if factor == 1:
        return prob
    return F.avg_pool2d(prob, kernel_size=factor, stride=factor)


def pad_to(
    image: np.ndarray, mask: np.ndarray, valid: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad at the bottom/right to (height, width): reflect for the image (repeated
    when the pad exceeds the tile), zeros for mask, False for validity."""
    h, w = valid.shape
    ph, pw = height - h, width - w
    if ph < 0 or pw < 0:
        raise ValueError(f"tile {h}x{w} is larger than the pad target {height}x{width}")
    if ph == 0 and pw == 0:
        return image, mask, valid
    mode = "reflect" if h > 1 and w > 1 else "edge"
    image = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode)
    mask = np.pad(mask, ((0, ph), (0, pw)))
    valid = np.pad(valid, ((0, ph), (0, pw)), constant_values=False)
    return image, mask, valid


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical random flips / 90-degree rotations of (C,H,W), (H,W), (H,W) arrays.

    numpy views, made contiguous once: far cheaper than torch ops on small tiles.
    """
    arrays = [image, mask[None], valid[None]]
    if cfg.hflip and rng.random() < 0.5:
        arrays = [a[..., ::-1] for a in arrays]
    if cfg.vflip and rng.random() < 0.5:
        arrays = [a[..., ::-1, :] for a in arrays]
    if cfg.rot90 and image.shape[-1] == image.shape[-2]:
        k = int(rng.integers(0, 4))
        if k:
            arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    image, mask, valid = (np.ascontiguousarray(a) for a in arrays)
    return image, mask[0], valid[0]
