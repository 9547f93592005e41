"""Fixtures of the segmentation tests: the real Haiti scene and small models made for it.

The repository root is put on sys.path by tests/conftest.py; the ``scenes`` fixture
there fails (does not skip) when ../shared/data is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.models.build import ModelMeta, save_model_file
from core.models.onnx_export import export_onnx
from tests.core.segment.helpers import band_stats, calibrated_unet


@pytest.fixture(scope="session")
def haiti(scenes: Path) -> Path:
    path = scenes / "rgbn_haiti_5m.tif"
    assert path.is_file(), f"real scene missing: {path}"
    return path


@pytest.fixture(scope="session")
def landsat(scenes: Path) -> Path:
    path = scenes / "landsat8_b2b3b4_foz_30m.tif"
    assert path.is_file(), f"real scene missing: {path}"
    return path


@pytest.fixture(scope="session")
def haiti_stats(haiti: Path) -> tuple[list[float], list[float]]:
    return band_stats(haiti)


@pytest.fixture(scope="session")
def unet(haiti: Path, haiti_stats):
    mean, std = haiti_stats
    return calibrated_unet(haiti, mean, std)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory, unet, haiti_stats) -> Path:
    """A 4-band Unet resnet18 model file (bands 1..4, tile 128, overlap 32)."""
    mean, std = haiti_stats
    meta = ModelMeta(
        arch="Unet",
        encoder="resnet18",
        in_channels=4,
        bands=[1, 2, 3, 4],
        mean=mean,
        std=std,
        threshold=0.6,
        tile_size=128,
        overlap=32,
    )
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model_file(path, unet, meta)
    return path


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory, model_file: Path) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model_file, path, resolution_cm=500)
    return path
