"""Spectral indices as input channels: formulas on a synthetic pixel, band resolution
and refusals, and a real run with indices that trains, segments and exports to ONNX
with the same probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from core.config import config_problems, load_config
from core.models.build import ModelMeta, load_model, read_model_file, save_model_file
from core.models.index_module import SpectralIndices, attach_indices
from core.models.indices import (
    L2A_12,
    RATIO_MAX,
    index_values,
    raster_band_names,
    resolve_indices,
)
from core.models.meta import read_model_meta
from core.training.checks import check_train

# One 12-band L2A pixel (reflectance x 10,000), bands B1..B9, B8A, B11, B12.
PIXEL = {"B1": 300.0, "B2": 420.0, "B3": 650.0, "B4": 800.0, "B5": 1100.0, "B6": 1500.0,
         "B7": 1700.0, "B8": 2100.0, "B8A": 2200.0, "B9": 2300.0, "B11": 3100.0,
         "B12": 2600.0}  # fmt: skip
EXPECTED = {
    "ndvi": (2100 - 800) / (2100 + 800),
    "ndwi": (650 - 2100) / (650 + 2100),
    "ndmi": (2100 - 3100) / (2100 + 3100),
    "swir_nd": (3100 - 2600) / (3100 + 2600),
    "swir_red": 3100 / 800,
}


def test_index_values_on_a_pixel_equal_the_formulas():
    raw = np.array([PIXEL[b] for b in L2A_12], np.float32)
    bands = list(range(1, 13))
    specs = resolve_indices(list(EXPECTED), bands, list(L2A_12))
    assert [s["bands"] for s in specs] == [[8, 4], [3, 8], [8, 11], [11, 12], [11, 4]]
    assert [s["inputs"] for s in specs] == [[7, 3], [2, 7], [7, 10], [10, 11], [10, 3]]
    got = index_values(raw[:, None], specs, axis=0)[:, 0]
    assert got == pytest.approx(list(EXPECTED.values()), rel=1e-5)

    # The torch layer: normalised bands in, the same indices (standardised) appended.
    mean = [float(v) for v in np.linspace(500, 2500, 12)]
    std = [float(v) for v in np.linspace(100, 900, 12)]
    specs = [{**s, "mean": 0.1 * k, "std": 1.0 + k} for k, s in enumerate(specs)]
    layer = SpectralIndices(specs, mean, std)
    x = torch.from_numpy((raw - np.array(mean, np.float32)) / np.array(std, np.float32))
    x = x.view(1, 12, 1, 1).repeat(2, 1, 3, 3)
    out = layer(x)
    assert out.shape == (2, 17, 3, 3)
    assert torch.equal(out[:, :12], x)
    assert layer.values(x)[0, :, 1, 1].tolist() == pytest.approx(list(EXPECTED.values()), rel=1e-5)
    want = [(v - 0.1 * k) / (1.0 + k) for k, v in enumerate(EXPECTED.values())]
    assert out[1, 12:, 2, 0].tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_indices_are_safe_on_zero_and_negative_bands():
    raw = np.array([[0.0, 0.0, -5.0, 100.0], [0.0, 50.0, 10.0, 0.0]], np.float32)  # (2 bands, 4 px)
    specs = [{"name": "n", "kind": "nd", "inputs": [0, 1]},
             {"name": "r", "kind": "ratio", "inputs": [0, 1]}]  # fmt: skip
    nd, ratio = index_values(raw, specs, axis=0)
    assert nd.tolist() == pytest.approx([0.0, -1.0, -1.0, 1.0], abs=1e-6)
    assert ratio.tolist() == pytest.approx([0.0, 0.0, 0.0, RATIO_MAX])
    layer = SpectralIndices([{**s, "mean": 0.0, "std": 1.0} for s in specs], [0.0, 0.0], [1.0, 1.0])
    got = layer.values(torch.from_numpy(raw).view(1, 2, 1, 4))[0, :, 0]
    assert np.allclose(got.numpy(), np.stack([nd, ratio]), atol=1e-6)
    assert torch.isfinite(got).all()


def test_band_names_from_setting_descriptions_or_the_12_band_order():
    assert raster_band_names(12) == list(L2A_12)
    austria = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    names = raster_band_names(11, austria)
    assert names.index("B11") + 1 == 10  # not band 11, as in the 12-band tiles
    spyndex = ("B02 blue", "B03 green", "B04 red", "B08 nir")
    assert raster_band_names(4, spyndex) == ["B2", "B3", "B4", "B8"]
    assert raster_band_names(4, None, ["b4", "B03", "B2", "B8"]) == ["B4", "B3", "B2", "B8"]
    with pytest.raises(ValueError, match="data.band_names") as info:
        raster_band_names(4)
    assert info.value.field == "data.band_names"


def test_config_refuses_unknown_indices_and_band_names():
    cfg = load_config(None, ["data.indices=[ndvi,evi]", "data.band_names=[B4,red]"], check=False)
    problems = config_problems(cfg)
    assert [p.field for p in problems] == ["data.indices", "data.band_names"]
    assert "evi" in problems[0].message and "red" in problems[1].message


def test_check_train_refuses_an_index_whose_band_is_not_selected(solafune, tmp_path):
    cfg = load_config(None, [f"data.path={solafune}", "data.limit=20", f"out_dir={tmp_path}",
                             "data.bands=[4,3,2,8]", "data.indices=[ndvi,swir_nd]"],
                      check=False)  # fmt: skip
    problems = check_train(cfg)
    assert len(problems) == 1 and problems[0].field == "data.indices"
    assert "swir_nd" in problems[0].message and "B11 (raster band 11)" in problems[0].message
    assert "data.bands [4, 3, 2, 8]" in problems[0].message
    cfg.data.indices = ["ndvi", "ndwi"]  # B8, B4, B3: all selected
    assert check_train(cfg) == []


def test_old_model_files_read_without_indices(tmp_path):
    """A file written before indices existed (version 1, no ``indices`` key) still
    reads, torch-free and with torch; a file with indices is version 2."""
    net = torch.nn.Conv2d(4, 1, 1)
    meta = ModelMeta("Unet", "resnet18", 4, [1, 2, 3, 4], [0.0] * 4, [1.0] * 4)
    old = meta.to_dict()
    old.pop("indices")
    path = tmp_path / "old.pt"
    torch.save({"format": "solarseg-model", "version": 1, "meta": old,
                "state_dict": net.state_dict()}, path)  # fmt: skip
    assert read_model_meta(path).indices == [] and read_model_file(path)[0].indices == []
    save_model_file(tmp_path / "plain.pt", net, meta)
    assert torch.load(tmp_path / "plain.pt", weights_only=True)["version"] == 1
    meta.indices = resolve_indices(["ndvi"], [4, 3, 2, 8], list(L2A_12))
    save_model_file(tmp_path / "indexed.pt", net, meta)
    assert torch.load(tmp_path / "indexed.pt", weights_only=True)["version"] == 2
    assert read_model_meta(tmp_path / "indexed.pt").indices == meta.indices


def test_attached_layer_keeps_the_network_and_its_state_dict():
    import segmentation_models_pytorch as smp

    net = smp.Unet("resnet18", encoder_weights=None, in_channels=6, classes=1)
    specs = resolve_indices(["ndvi", "ndwi"], [4, 3, 2, 8], list(L2A_12))
    keys = set(net.state_dict())
    attach_indices(net, specs, [1000.0] * 4, [300.0] * 4)
    assert set(net.state_dict()) == keys  # statistics live in the meta, not the weights
    assert net(torch.zeros(2, 4, 32, 32)).shape == (2, 1, 32, 32)


@pytest.fixture(scope="module")
def indexed_run(solafune, tmp_path_factory):
    from core.training.loop import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, [f"data.path={solafune}", "data.limit=24", "data.bands=[4,3,2,8]",
                             "data.indices=[ndvi,ndwi]", "train.epochs=1", "train.batch_size=8",
                             "train.threads=2", "train.early_stop.enabled=false",
                             "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}",
                             "data.pad_multiple=8", f"out_dir={out}", "name=idx"])  # fmt: skip
    return train(cfg)


def test_a_model_with_indices_trains_segments_and_exports_to_onnx(indexed_run, scenes, tmp_path):
    from core.evaluation.evaluate import evaluate
    from core.models.onnx_export import export_onnx
    from core.segment import SegmentOptions, segment_raster

    run = indexed_run.run_dir
    assert indexed_run.status == "completed" and (run / "indices.json").is_file()
    meta = read_model_meta(run)
    assert [s["name"] for s in meta.indices] == ["ndvi", "ndwi"]
    assert meta.in_channels == 4 and meta.network_channels == 6
    assert all(s["std"] > 0 and s["mean"] != 0 for s in meta.indices)
    model, _ = load_model(run)
    assert model.encoder.conv1.in_channels == 6
    # evaluate reproduces the run's test counts exactly (same index layer).
    result = evaluate(run, split="test", device="cpu")
    assert {k: result.metrics[k] for k in "tp fp fn tn".split()} == {
        k: indexed_run.metrics["test"][k] for k in "tp fp fn tn".split()
    }

    onnx_file = export_onnx(run, tmp_path / "idx.onnx", tile_size=64, overlap=16)
    # A real 4-band Sentinel-2 scene (B2, B3, B4, B8) mapped onto the model's B4, B3, B2, B8.
    scene = scenes / "sentinel2_b2b3b4b8_300px.tif"
    probs = {}
    for name, path in (("torch", run), ("onnx", onnx_file)):
        options = SegmentOptions(backend=name, bands=[3, 2, 1, 4], tile_size=64, overlap=16,
                                 device="cpu")  # fmt: skip
        res = segment_raster(path, scene, tmp_path / name, options)
        with rasterio.open(res.probability_path) as src:
            probs[name] = src.read(1)
    assert np.isfinite(probs["torch"]).all() and probs["torch"].std() > 1e-3
    assert np.abs(probs["torch"] - probs["onnx"]).max() < 1e-3


def test_an_ensemble_of_models_with_indices_keeps_their_index_layers(indexed_run, tmp_path):
    from core.models.onnx_export import export_onnx
    from core.training.ensemble import make_ensemble

    run = indexed_run.run_dir
    ens = make_ensemble([run, run], tmp_path / "ens.pt", device="cpu")
    assert [i["name"] for i in ens.meta.ensemble["members"][0]["indices"]] == ["ndvi", "ndwi"]
    single, _ = load_model(run)
    both, meta = load_model(ens.path)
    assert meta.indices == read_model_meta(run).indices
    x = torch.randn(2, 4, 24, 24)
    with torch.inference_mode():
        assert torch.allclose(torch.sigmoid(both(x)), torch.sigmoid(single(x)), atol=1e-5)
    export_onnx(ens.path, tmp_path / "ens.onnx", tile_size=64, overlap=16)  # checked vs torch
