"""Helpers for the segmentation tests: real-data crops, small models, reference passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import nn

from core.data.rasters import normalize, valid_mask
from core.models.build import ModelMeta, build_model


def band_stats(path: Path) -> tuple[list[float], list[float]]:
    """Per-band mean and std of a (real) raster, as a model file would carry them."""
    with rasterio.open(path) as src:
        a = src.read().astype(np.float64)
    flat = a.reshape(a.shape[0], -1)
    return flat.mean(1).tolist(), flat.std(1).tolist()


def calibrated_unet(path: Path, mean: list[float], std: list[float], encoder: str = "resnet18"):
    """Random-init smp Unet whose BatchNorm statistics are those of the real scene (one
    train-mode pass with cumulative averaging), so its probabilities vary across the
    image like a real model's instead of sitting near one value."""
    torch.manual_seed(0)
    model = build_model("Unet", encoder, 4)
    with rasterio.open(path) as src:
        a = src.read(window=Window(0, 0, 256, 256)).astype(np.float32)
    x = torch.from_numpy(normalize(a, valid_mask(a, None), mean, std))[None]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # running stats = the batch's stats after one pass
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


class LocalNet(nn.Module):
    """Three 3x3 convolutions: every output pixel depends only on the input pixels at
    most 3 away (receptive-field radius 3). Tiled and whole-image passes of such a
    network must agree wherever a window's padding is out of reach."""

    radius = 3

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(4, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 1, 3, padding=1),
        )
        with torch.no_grad():  # spread the logits so probabilities span most of 0..1
            self.body[-1].weight.mul_(20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def local_meta(mean: list[float], std: list[float], upscale: int = 1) -> ModelMeta:
    return ModelMeta(
        arch="Unet",
        encoder="local",
        in_channels=4,
        bands=[1, 2, 3, 4],
        mean=mean,
        std=std,
        upscale=upscale,
        tile_size=128,
        overlap=32,
    )


def crop_raster(
    src_path: Path,
    dst_path: Path,
    row: int,
    col: int,
    height: int,
    width: int,
    dtype: str | None = None,
    nodata: float | None = None,
    edit=None,
) -> Path:
    """Copy a window of a real raster (georeferenced, same CRS) to a new GeoTIFF,
    optionally cast, with a declared nodata, and edited by ``edit(array)``."""
    with rasterio.open(src_path) as src:
        win = Window(col, row, width, height)
        data = src.read(window=win)
        profile = src.profile.copy()
        profile.update(width=width, height=height, transform=src.window_transform(win))
    if dtype:
        data = data.astype(dtype)
        profile["dtype"] = dtype
    if edit is not None:
        data = edit(data)
    profile.update(nodata=nodata, compress="deflate", tiled=False)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
    return dst_path


def whole_image_probability(
    model: nn.Module, path: Path, mean: list[float], std: list[float], multiple: int = 1
) -> np.ndarray:
    """One forward pass over the whole raster (reflect-padded at the bottom/right to a
    multiple of ``multiple``): the reference a tiled run must reproduce."""
    with rasterio.open(path) as src:
        a = src.read().astype(np.float32)
    _, h, w = a.shape
    x = normalize(a, valid_mask(a, None), mean, std)
    ph, pw = -(-h // multiple) * multiple - h, -(-w // multiple) * multiple - w
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(x)[None]))[0, 0, :h, :w].numpy()
