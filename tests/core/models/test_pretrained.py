"""Named Sentinel-2-pretrained encoder weights (model.encoder_weights: ukis-csmask-*):
the conversion of the installed ONNX file, its cache, the band checks and the record
in the model file."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.ukis_encoder_check import encoder_feature_names, float32_graph, run_onnx
from core.config import ConfigError, RunConfig, config_problems, load_config
from core.data.rasters import read_image
from core.errors import InputError, MissingInputError
from core.models import pretrained
from core.models.build import build_model, load_model, read_model_file
from core.training.checks import check_train
from core.training.loop import train
from tests.conftest import REPO

NAME = "ukis-csmask-4b-l2a"
SOLAFUNE_RGBN = [2, 3, 4, 8]  # B2, B3, B4, B8 in the Solafune 12-band order


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SOLARSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_encoder_matches_onnx_runtime_on_a_real_tile(solafune, cache):
    """The converted encoder's five feature maps on a real Sentinel-2 tile agree with
    ONNX Runtime's intermediate outputs of the shipped file: within 1e-4 of their
    largest value against the graph made float32 (measured ~1e-5: the mapping), within
    2e-3 against the graph as shipped (float16 arithmetic; measured ~5e-4). The file
    declares a fixed 256 x 256 input; its convolutions' padding is constant, so the
    check runs at 128 x 128 (half the time) with the input's size declared free."""
    import onnx

    src = pretrained.SOURCES[NAME]
    loc = pretrained.locate(src)
    stats = loc.stats()
    img, _ = read_image(solafune / "s2_image" / "train_s2_image_0.tif", SOLAFUNE_RGBN)
    x = F.interpolate(torch.from_numpy(img)[None] / 1e4, size=(128, 128), mode="bicubic")
    mean = torch.tensor(stats["mean"])[None, :, None, None]
    std = torch.tensor(stats["std"])[None, :, None, None]
    x = ((x - mean) / std).float()

    torch.manual_seed(0)
    model = build_model("Unet", "efficientnet-b4", 4, NAME).eval()
    with torch.no_grad():
        ours = [f.numpy() for f in model.encoder(x)[1:]]
    graph = onnx.load(str(loc.onnx))
    for dim in graph.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    names = encoder_feature_names(graph.graph)
    assert len(names) == len(ours) == 5
    for graph_, tol in ((float32_graph(graph), 1e-4), (graph, 2e-3)):
        for name, o, t in zip(names, ours, run_onnx(graph_, x.numpy(), names), strict=True):
            assert o.shape == t.shape, name
            rel = np.abs(o - t).max() / np.abs(t).max()
            assert rel < tol, (name, rel)

    # Converted once, cached by the file's SHA-256; the cached weights are the same.
    sha = pretrained.file_sha256(loc.onnx)
    cached = list((cache / "encoders").glob(f"{NAME}-{sha[:16]}-*.pt"))
    assert len(cached) == 1
    state, record = pretrained.encoder_state(src)
    assert record["sha256"] == sha
    again = build_model("Unet", "efficientnet-b4", 4, NAME).encoder.state_dict()
    for k, v in state.items():  # every converted tensor, exactly (float16 -> float32)
        torch.testing.assert_close(again[k], v.float(), rtol=0, atol=0)


@pytest.fixture(scope="module")
def ukis_run(solafune, tmp_path_factory):
    """One short run from the named weights (data.bands left empty, NDVI as an extra
    input channel), its config."""
    tmp = tmp_path_factory.mktemp("ukis_run")
    cfg = load_config(None, [
        f"data.path={solafune}", f"out_dir={tmp / 'runs'}", "data.limit=16",
        "model.encoder=efficientnet-b4", f"model.encoder_weights={NAME}", "train.epochs=1",
        # the whole encoder is loaded; running only its first three stages keeps it quick
        "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}",
        "train.batch_size=8", "train.tta=false", "train.eval_test_each_epoch=false",
        "train.threads=2", "train.report_thresholds=[0.5]", "data.indices=[ndvi]",
    ])  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOLARSEG_CACHE_DIR", str(tmp / "cache"))
        return cfg, train(cfg).run_dir


def test_model_file_records_the_source_bands_and_normalisation(ukis_run):
    """A run from the named weights (data.bands left empty: found from the Solafune
    12-band order) keeps the bands B2,B3,B4,B8, the encoder's normalisation and its
    source (package, version, ONNX SHA-256, band order) in the model file."""
    _, run_dir = ukis_run
    meta, _ = read_model_file(run_dir)
    src = meta.encoder_source
    assert src["name"] == NAME and src["package"] == "ukis-csmask"
    assert src["version"] == importlib.metadata.version("ukis-csmask")
    loc = pretrained.locate(pretrained.SOURCES[NAME])
    assert src["sha256"] == pretrained.file_sha256(loc.onnx)
    assert src["bands"] == ["B2", "B3", "B4", "B8"]
    assert src["licence"] == "Apache-2.0" and "DLR" in src["copyright"]
    assert meta.bands == SOLAFUNE_RGBN and meta.config["data"]["bands"] == SOLAFUNE_RGBN
    mean, std = pretrained.normalisation(pretrained.SOURCES[NAME])
    assert meta.mean == pytest.approx(mean) and meta.std == pytest.approx(std)
    assert meta.mean[0] == pytest.approx(loc.stats()["mean"][0] * 1e4)  # reflectance x 1e4
    assert (run_dir / "encoder_source.json").exists()
    assert [s["name"] for s in meta.indices] == ["ndvi"]  # a 5th channel after the bands


def test_loading_and_resuming_need_no_package(ukis_run, monkeypatch):
    cfg, run_dir = ukis_run
    src = read_model_file(run_dir)[0].encoder_source

    def absent(src):
        raise MissingInputError("no package")

    monkeypatch.setattr(pretrained, "locate", absent)
    load_model(run_dir)
    train(cfg, resume=run_dir)
    assert read_model_file(run_dir)[0].encoder_source == src


def test_config_problems_name_the_expected_encoder_and_bands():
    cfg = RunConfig()
    cfg.model.encoder_weights = NAME
    cfg.data.bands = [4, 3, 2]
    fields = {p.field: p.message for p in config_problems(cfg)}
    assert set(fields) == {"model.encoder", "data.bands"}
    assert "set model.encoder to efficientnet-b4" in fields["model.encoder"]
    assert "B2 (blue), B3 (green), B4 (red), B8 (nir)" in fields["data.bands"]
    cfg.model.encoder, cfg.data.bands = "efficientnet-b4", None
    assert config_problems(cfg) == []
    cfg.model.encoder_weights = "ukis-csmask-5b"
    (problem,) = config_problems(cfg)
    assert problem.field == "model.encoder_weights" and "ukis-csmask-6b-l2a" in problem.message


def test_check_train_refuses_bands_in_another_order(solafune, tmp_path):
    base = [f"data.path={solafune}", f"out_dir={tmp_path}", "data.limit=30",
            "model.encoder=efficientnet-b4", f"model.encoder_weights={NAME}"]  # fmt: skip
    problems = check_train(load_config(None, [*base, "data.bands=[4,3,2,8]"]))
    assert [p.field for p in problems] == ["data.bands"]
    assert "(B4, B3, B2, B8)" in problems[0].message
    assert "data.bands [2, 3, 4, 8] here" in problems[0].message
    assert check_train(load_config(None, [*base, "data.bands=[2,3,4,8]"])) == []
    assert check_train(load_config(None, base)) == []  # found from the 12-band order
    six = [*base[:-1], "model.encoder_weights=ukis-csmask-6b-l2a"]
    assert check_train(load_config(None, [*six, "data.bands=[2,3,4,8,11,12]"])) == []
    committed = load_config(REPO / "configs" / "rgbn_ukis.yaml", base[:3])
    assert check_train(committed) == [] and committed.data.bands == SOLAFUNE_RGBN
    swir = load_config(REPO / "configs" / "rgbn_swir_ukis.yaml", base[:3])
    assert check_train(swir) == [] and swir.data.bands == [2, 3, 4, 8, 11, 12]
    assert swir.model.encoder_weights == "ukis-csmask-6b-l2a"


def test_band_names_from_descriptions_and_band_orders(austria, scenes):
    from core.data.rasters import raster_info

    src = pretrained.SOURCES["ukis-csmask-6b-l2a"]
    # Austria: 11 bands described B01..B12 without B09.
    info = raster_info(next((austria / "images").glob("*.tif")))
    names, how = pretrained.raster_band_names(info.count, info.descriptions)
    assert how == "band descriptions"
    assert pretrained.pick_bands(src, None, names, how) == [2, 3, 4, 8, 10, 11]
    # A 4-band scene described "B02 blue" ... "B08 nir".
    info = raster_info(scenes / "sentinel2_b2b3b4b8_300px.tif")
    names, how = pretrained.raster_band_names(info.count, info.descriptions)
    four = pretrained.SOURCES[NAME]
    assert pretrained.pick_bands(four, None, names, how) == [1, 2, 3, 4]
    with pytest.raises(InputError, match="the dataset has no B11, B12") as e:
        pretrained.pick_bands(src, None, names, how)
    assert e.value.field == "data.bands"
    # No descriptions, 4 bands: cannot tell; data.bands is then trusted, or
    # data.band_names says which band is which.
    names, how = pretrained.raster_band_names(4, (None,) * 4)
    assert names is None
    with pytest.raises(InputError, match="data.bands must be set"):
        pretrained.pick_bands(four, None, names, how)
    assert pretrained.pick_bands(four, [3, 2, 1, 4], names, how) == [3, 2, 1, 4]
    names, how = pretrained.raster_band_names(4, (None,) * 4, ["B4", "B3", "B2", "B8"])
    assert how == "data.band_names"
    assert pretrained.pick_bands(four, None, names, how) == [3, 2, 1, 4]


def test_index_channels_after_the_bands_start_at_zero(cache):
    """data.indices append channels after the bands: the stem's weights for them start
    at zero, so the network starts as the pretrained one."""
    with pytest.raises(InputError, match="takes 4 bands") as e:
        build_model("Unet", "efficientnet-b4", 3, NAME)
    assert e.value.field == "data.bands"
    four = build_model("Unet", "efficientnet-b4", 4, NAME).encoder._conv_stem.weight
    six = build_model("Unet", "efficientnet-b4", 6, NAME).encoder._conv_stem.weight
    torch.testing.assert_close(six[:, :4], four, rtol=0, atol=0)
    assert not six[:, 4:].any()


def test_missing_or_changed_package(cache, monkeypatch):
    src = pretrained.SOURCES[NAME]
    monkeypatch.setattr(pretrained, "file_sha256", lambda path: "0" * 64)
    with pytest.raises(MissingInputError, match="the installed file was changed"):
        pretrained.encoder_state(src)

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(MissingInputError, match="pip install ukis-csmask==1.0.0") as e:
        pretrained.locate(src)
    assert e.value.field == "model.encoder_weights"


def test_bn_momentum_setting():
    """smp's efficientnet encoders keep BatchNorm momentum 0.01 (lukemelas'); the
    setting overrides every BatchNorm layer for training, and refuses values outside
    (0, 1]."""
    from core.models.build import set_bn_momentum

    model = build_model("Unet", "efficientnet-b4", 4)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {round(m.momentum, 6) for m in model.encoder.modules() if m in bns} == {0.01}
    assert set_bn_momentum(model, None) == 0
    assert set_bn_momentum(model, 0.1) == len(bns) and {m.momentum for m in bns} == {0.1}
    cfg = RunConfig()
    for bad in (0.0, 1.5):
        cfg.model.bn_momentum = bad
        assert [p.field for p in config_problems(cfg)] == ["model.bn_momentum"]
    cfg.model.bn_momentum = 0.1
    assert config_problems(cfg) == []


def test_bands_after_the_encoders_start_at_zero_with_the_datas_normalisation(solafune, tmp_path):
    """All 12 Solafune bands from the six-band encoder (its B2, B3, B4, B8, B11, B12
    first): the six keep the encoder's normalisation, the other six get the data's, and
    their stem weights start at zero. Bands in another order, or fewer, are refused."""
    from core.data.discovery import find_dataset
    from core.data.stats import summarize

    six = "ukis-csmask-6b-l2a"
    bands = [2, 3, 4, 8, 11, 12, 1, 5, 6, 7, 9, 10]
    base = [f"data.path={solafune}", f"out_dir={tmp_path / 'runs'}", "data.limit=16",
            "model.encoder=efficientnet-b4", f"model.encoder_weights={six}"]  # fmt: skip
    wrong = check_train(load_config(None, [*base, "data.bands=[1,2,3,4,8,11,12]"]))
    assert [p.field for p in wrong] == ["data.bands"]
    assert "data.bands [2, 3, 4, 8, 11, 12] here" in wrong[0].message
    with pytest.raises(ConfigError, match=r"data.bands \[2, 3, 4\] do not fit .* 6 Sentinel-2 bands") as e:  # fmt: skip
        load_config(None, [*base, "data.bands=[2,3,4]"])
    assert e.value.field == "data.bands"
    cfg = load_config(None, [*base, f"data.bands={bands}", "train.epochs=1",
        "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}",
        "train.batch_size=8", "train.tta=false", "train.eval_test_each_epoch=false",
        "train.threads=2", "train.report_thresholds=[0.5]", "optim.lr=0"])  # fmt: skip
    assert check_train(cfg) == []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOLARSEG_CACHE_DIR", str(tmp_path / "cache"))
        run_dir = train(cfg).run_dir
        mean, std = pretrained.normalisation(pretrained.SOURCES[six])
        model, meta = load_model(run_dir)
    assert meta.bands == bands and meta.encoder_source["bands"][4:] == ["B11", "B12"]
    assert meta.mean[:6] == pytest.approx(mean) and meta.std[:6] == pytest.approx(std)
    data = summarize(find_dataset(run_dir / "split.csv").pairs, bands).stats
    assert meta.mean[6:] == pytest.approx(data.mean[6:]) and meta.std[6:] == pytest.approx(data.std[6:])  # fmt: skip
    assert len(meta.mean) == len(meta.std) == 12
    stem = model.encoder._conv_stem.weight
    assert stem.shape[1] == 12 and not stem[:, 6:].any() and stem[:, :6].abs().sum() > 0
