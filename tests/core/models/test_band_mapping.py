"""Models are fed by Sentinel-2 band name on rasters that name their bands.

Real rasters of three band layouts: the 12-band Solafune tiles (no descriptions: the
L2A order), the 11-band Austria chips (B01..B12 without B09, described) and the 4-band
Sentinel-2 scene (``B02 blue``, ``B03 green``, ``B04 red``, ``B08 nir``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from core.data.discovery import Pair
from core.errors import RasterError
from core.evaluation.evaluate import dataset_bands
from core.models.band_mapping import choose_bands, input_band_names
from core.models.build import build_model, read_model_file, save_model_file
from core.models.meta import ModelMeta, read_model_meta
from core.models.onnx_export import export_onnx
from core.segment import SegmentOptions, segment_raster

SIX = ["B2", "B3", "B4", "B8", "B11", "B12"]


def _descriptions(path: Path) -> tuple[int, tuple]:
    with rasterio.open(path) as src:
        return src.count, tuple(src.descriptions)


@pytest.fixture(scope="module")
def austria_chip(austria: Path) -> Path:
    return sorted((austria / "images").glob("*.tif"))[0]


@pytest.fixture(scope="module")
def s2_scene(scenes: Path) -> Path:
    return scenes / "sentinel2_b2b3b4b8_300px.tif"


@pytest.fixture(scope="module")
def named_model(solafune_model: Path, tmp_path_factory) -> Path:
    """The trained 4,3,2,8 Solafune model file, with the band names training records."""
    meta, state = read_model_file(solafune_model)
    net = build_model(meta.arch, meta.encoder, meta.in_channels)
    net.load_state_dict(state)
    path = tmp_path_factory.mktemp("named") / "model.pt"
    save_model_file(path, net, replace(meta, band_names=["B4", "B3", "B2", "B8"]))
    return path


@pytest.fixture(scope="module")
def six_band_model(tmp_path_factory) -> Path:
    """A six-input model of Solafune bands 2,3,4,8,11,12 (random weights: only the
    band choice is tested)."""
    torch.manual_seed(0)
    net = build_model("Unet", "resnet18", 6).eval()
    meta = ModelMeta(arch="Unet", encoder="resnet18", in_channels=6, bands=[2, 3, 4, 8, 11, 12],
                     band_names=SIX, mean=[1000.0] * 6, std=[500.0] * 6, tile_size=64,
                     overlap=16)  # fmt: skip
    path = tmp_path_factory.mktemp("six") / "model.pt"
    save_model_file(path, net, meta)
    return path


def test_training_names_come_from_descriptions_or_the_l2a_order(solafune, austria_chip):
    tile = sorted((solafune / "s2_image").glob("*.tif"))[0]
    assert input_band_names([4, 3, 2, 8], *_descriptions(tile)) == ["B4", "B3", "B2", "B8"]
    assert input_band_names([10, 11], *_descriptions(austria_chip)) == ["B11", "B12"]
    # An undescribed 4-band raster names nothing: such a model is fed by number.
    assert input_band_names([1, 2, 3, 4], 4, (None,) * 4) == []
    assert input_band_names([1, 2], 4, (None,) * 4, ["B2", "B3", "B4", "B8"]) == ["B2", "B3"]


def test_choose_bands_maps_names_onto_each_layout(austria_chip, s2_scene):
    austria = _descriptions(austria_chip)
    chosen = choose_bands([2, 3, 4, 8, 11, 12], SIX, *austria, "chip.tif")
    assert chosen.bands == [2, 3, 4, 8, 10, 11]
    assert "trained on bands 2,3,4,8,11,12" in chosen.how
    rgbn = choose_bands([4, 3, 2, 8], ["B4", "B3", "B2", "B8"], *_descriptions(s2_scene), "s")
    assert rgbn.bands == [3, 2, 1, 4]
    # Nothing to go by: the caller uses the model's numbers.
    assert choose_bands([4, 3, 2, 8], [], *austria, "chip.tif") is None
    assert choose_bands([1, 2, 3, 4], ["B4", "B3", "B2", "B8"], 4, (None,) * 4, "x") is None
    with pytest.raises(RasterError, match=r"^scene\.tif: has no B11, B12 \(its bands: B2, B3, "):
        choose_bands([2, 3, 4, 8, 11, 12], SIX, *_descriptions(s2_scene), "scene.tif")


def test_segment_feeds_a_named_model_by_name(named_model, solafune_model, s2_scene, tmp_path):
    # The 4-band scene has no band 8: by number the model cannot run on it ...
    with pytest.raises(RasterError, match=r"needs bands \[4, 3, 2, 8\]"):
        segment_raster(solafune_model, s2_scene, tmp_path / "numbers")
    # ... by name it takes B4, B3, B2, B8 = bands 3, 2, 1, 4, exactly as the hand mapping.
    named = segment_raster(named_model, s2_scene, tmp_path / "names")
    assert named.bands == [3, 2, 1, 4]
    assert named.band_source.startswith("by band name (B4, B3, B2, B8)")
    by_hand = segment_raster(
        solafune_model, s2_scene, tmp_path / "hand", SegmentOptions(bands=[3, 2, 1, 4])
    )
    assert by_hand.band_source == "as given"
    with rasterio.open(named.probability_path) as a, rasterio.open(by_hand.probability_path) as b:
        pa, pb = a.read(1), b.read(1)
        assert a.crs == b.crs and a.transform == b.transform
    assert np.array_equal(pa, pb, equal_nan=True) and np.isfinite(pa).all()


def test_six_band_model_on_the_eleven_band_austria_chips(six_band_model, austria_chip, tmp_path):
    result = segment_raster(six_band_model, austria_chip, tmp_path / "named")
    assert result.bands == [2, 3, 4, 8, 10, 11]
    hand = segment_raster(
        six_band_model, austria_chip, tmp_path / "hand", SegmentOptions(bands=[2, 3, 4, 8, 10, 11])
    )
    with rasterio.open(result.probability_path) as a, rasterio.open(hand.probability_path) as b:
        assert np.array_equal(a.read(1), b.read(1), equal_nan=True)
    # Evaluation reads a dataset's tiles the same way.
    pair = Pair("chip", austria_chip, austria_chip)
    meta = read_model_meta(six_band_model)
    assert dataset_bands(meta, [pair]) == [2, 3, 4, 8, 10, 11]
    with pytest.raises(RasterError, match="has 11 band.*band.s. \\[12\\] do not exist"):
        dataset_bands(replace(meta, band_names=[]), [pair])
    with pytest.raises(RasterError, match="has no B9"):
        dataset_bands(replace(meta, band_names=["B2", "B3", "B4", "B8", "B9", "B12"]), [pair])


def test_segment_many_reads_each_product_by_name(six_band_model, austria, s2_scene, tmp_path):
    """One run over scenes of two products: the 11-band Austria chips are read by name,
    the 4-band scene (no SWIR) fails with its reason; summary.csv says which bands."""
    from core.segment.many import ClusterOptions, read_summary, segment_many

    chips = sorted((austria / "images").glob("*.tif"))[:2]
    result = segment_many(six_band_model, [*chips, s2_scene], tmp_path / "many", None,
                          ClusterOptions(workers=1, processes=False))  # fmt: skip
    assert result.counts == {"done": 2, "failed": 1}
    rows = {r["scene"]: r for r in read_summary(tmp_path / "many" / "summary.csv")}
    for chip in chips:
        assert rows[chip.stem]["bands"] == (
            "2,3,4,8,10,11 (by band name (B2, B3, B4, B8, B11, B12); the model was trained on "
            "bands 2,3,4,8,11,12)"
        )
    failed = rows[s2_scene.stem]
    assert failed["status"] == "failed" and "has no B11, B12" in failed["error"]


def test_onnx_file_carries_the_band_names(named_model, s2_scene, tmp_path):
    onnx = tmp_path / "model.onnx"
    export_onnx(named_model, onnx)
    result = segment_raster(onnx, s2_scene, tmp_path / "onnx", SegmentOptions(backend="onnx"))
    assert result.bands == [3, 2, 1, 4]


def test_older_files_of_a_named_encoder_are_named_by_its_bands(tmp_path):
    """Files written before band names were recorded: a named Sentinel-2 encoder that
    took every input (the six-band ukis-csmask runs) names them; otherwise none."""
    net = build_model("Unet", "resnet18", 6)
    source = {"name": "ukis-csmask-6b-l2a", "bands": SIX}
    old = ModelMeta(arch="Unet", encoder="resnet18", in_channels=6, bands=[2, 3, 4, 8, 11, 12],
                    mean=[0.0] * 6, std=[1.0] * 6, encoder_source=source)  # fmt: skip
    save_model_file(tmp_path / "old.pt", net, old)
    assert read_model_meta(tmp_path / "old.pt").band_names == SIX
    # Twelve inputs from a six-band encoder: the other six are not named by it.
    net12 = build_model("Unet", "resnet18", 12)
    save_model_file(tmp_path / "old12.pt", net12, replace(old, in_channels=12, bands=list(range(1, 13)),
                    mean=[0.0] * 12, std=[1.0] * 12))  # fmt: skip
    assert read_model_meta(tmp_path / "old12.pt").band_names == []
