"""Fixtures shared by the engine's tests: a small model of the real Solafune tiles and
its int8 quantisation (tests of ``--precision int8`` in models/, segment/, evaluation/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.data.discovery import find_dataset
from core.data.rasters import normalize
from core.data.tiles import read_tile
from core.models.build import ModelMeta, build_model, save_model_file
from core.segment.windows import pad_to_tile

BANDS = [4, 3, 2, 8]  # R, G, B, NIR of the Solafune tiles
INT8_TILES = 16  # calibration tiles of the int8 fixture


TRAIN_STEPS = 60  # AdamW steps of 16 tiles (0.1-0.6 s each on 1 thread)


@pytest.fixture(scope="session")
def solafune_model(solafune: Path, tmp_path_factory) -> Path:
    """A 4-band (4,3,2,8) Unet resnet18 model file briefly trained on real Solafune tiles
    (TRAIN_STEPS steps of BCE on the train split of the first 200 tiles, upscale 1,
    tiles reflect-padded to 32 px as the segment engine pads windows). Not a good model,
    but a trained one: random weights amplify 8-bit noise far more than trained ones,
    so an int8 test on them would test the wrong thing. Its config records the Solafune
    folder (first 200 tiles, the default seed-42 split) as its training dataset, so int8
    calibrates on it by default. Tile 64, overlap 16, threshold 0.5."""
    from core.config import load_stored_config
    from core.data.splits import split_pairs

    config = {"data": {"path": str(solafune), "bands": BANDS, "limit": 200}}
    index = find_dataset(solafune)
    index.pairs = index.pairs[:200]
    train = [p for p in split_pairs(index, load_stored_config(config, 2).data.split)
             if p.split == "train"]  # fmt: skip
    tiles = [read_tile(p, BANDS) for p in train]
    flat = np.concatenate([t.image.reshape(4, -1) for t in tiles], axis=1)
    mean, std = flat.mean(1).tolist(), flat.std(1).tolist()
    x = np.stack([pad_to_tile(normalize(t.image, t.valid, mean, std), 32) for t in tiles])
    y = np.stack([pad_to_tile(np.stack([t.mask, t.valid]).astype(np.float32), 32) for t in tiles])
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", 4)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8x faster than 2 on a shared 2-core machine (measured)
    try:
        model.train()
        for _ in range(TRAIN_STEPS):
            idx = torch.from_numpy(rng.choice(len(x), 16, replace=False))
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(x[idx]), y[idx, :1], weight=y[idx, 1:]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    meta = ModelMeta(
        arch="Unet", encoder="resnet18", in_channels=4, bands=BANDS, mean=mean, std=std,
        threshold=0.5, upscale=1, tile_size=64, overlap=16, config_version=2, config=config,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("solafune_model") / "model.pt"
    save_model_file(path, model, meta)
    return path


@pytest.fixture(scope="session")
def int8_cache(tmp_path_factory) -> Path:
    """A SOLARSEG_CACHE_DIR folder (quantised files in its int8/ sub-folder)."""
    return tmp_path_factory.mktemp("solarseg_cache")


@pytest.fixture(scope="session")
def solafune_int8(solafune_model: Path, int8_cache: Path) -> Path:
    """``solafune_model`` quantised (calibrated on INT8_TILES tiles of its train split),
    in ``int8_cache`` where ``segment --precision int8 --calibration-tiles 16`` finds it."""
    from core.segment.int8 import int8_model

    return int8_model(solafune_model, tiles=INT8_TILES, cache=int8_cache / "int8")


@pytest.fixture
def use_int8_cache(int8_cache: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SOLARSEG_CACHE_DIR", str(int8_cache))
    return int8_cache
