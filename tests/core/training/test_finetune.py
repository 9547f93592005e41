"""Fine-tuning from a model file: weights really loaded, bands and normalisation taken
from the model, everything else the new run's; incompatible models refused."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from core.config import load_config
from core.models.build import ModelMeta, build_model, read_model_file, save_model_file
from core.training.checks import check_train
from core.training.finetune import IncompatibleModelError
from core.training.loop import train
from tests.rasters import make_folder_dataset

MEAN, STD = [400.0, 450.0, 500.0, 550.0], [250.0, 260.0, 270.0, 280.0]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A dataset of 6 synthetic 4-band tiles and a model file to start from."""
    root = tmp_path_factory.mktemp("ft")
    data = make_folder_dataset(root / "data", n=6, size=24, bands=4)
    torch.manual_seed(123)  # not the run's seed: a fresh model would differ
    model = build_model("Unet", "resnet18", 4)
    meta = ModelMeta(arch="Unet", encoder="resnet18", in_channels=4, bands=[1, 2, 3, 4],
                     mean=MEAN, std=STD, threshold=0.3, metrics={"test": {"iou": 0.5}})  # fmt: skip
    save_model_file(root / "start.pt", model, meta)
    return root, data


def config(root, data, **over):
    overrides = [f"data.path={data}", f"out_dir={root / 'runs'}", "train.epochs=1",
                 "train.batch_size=4", "train.early_stop.enabled=false", "train.threads=1",
                 "train.eval_test_each_epoch=false", f"model.init_from={root / 'start.pt'}"]  # fmt: skip
    return load_config(None, overrides + [f"{k}={v}" for k, v in over.items()])


def test_run_starts_from_the_model_weights_bands_and_normalisation(start):
    root, data = start
    result = train(config(root, data, **{"optim.lr": 0.0, "name": "frozen"}))
    _, start_state = read_model_file(root / "start.pt")
    meta, state = read_model_file(result.run_dir / "model.pt")
    params = {n for n, _ in build_model("Unet", "resnet18", 4).named_parameters()}
    assert len(params) > 50
    # lr 0: every learnable weight is still the starting model's, bit for bit.
    assert all(torch.equal(state[n], start_state[n]) for n in params)
    assert (meta.bands, meta.mean, meta.std) == ([1, 2, 3, 4], MEAN, STD)
    stats = json.loads((result.run_dir / "stats.json").read_text())
    assert (stats["mean"], stats["std"]) == (MEAN, STD)
    record = json.loads((result.run_dir / "init_from.json").read_text())
    assert record["path"] == str((root / "start.pt").resolve()) and len(record["sha256"]) == 64
    assert record["metrics"] == {"test": {"iou": 0.5}}
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(root / "start.pt")
    assert saved["data"]["bands"] == [1, 2, 3, 4]
    # Only the weights come from the file: the metrics are the new run's own.
    assert set(meta.metrics) == {"train", "val", "test"}
    # The run record has the plant-level results beside the pixel metrics.
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["plants"]) == {"train", "val", "test"}
    train_plants = metrics["plants"]["train"]
    assert train_plants["found"] + train_plants["missed"] == train_plants["plants"]
    rows = (result.run_dir / "plants_train.csv").read_text().splitlines()
    assert rows[0].startswith("id,tile,found") and len(rows) == 1 + train_plants["plants"]


def test_training_moves_away_from_the_start_and_data_normalisation(start):
    root, data = start
    result = train(config(root, data, **{"model.init_normalisation": "data", "name": "moved"}))
    _, start_state = read_model_file(root / "start.pt")
    meta, state = read_model_file(result.run_dir / "model.pt")
    name = "segmentation_head.0.weight"
    assert not torch.equal(state[name], start_state[name])
    # Still close to the start after one epoch (it did start there).
    fresh = build_model("Unet", "resnet18", 4).state_dict()[name]
    assert (state[name] - start_state[name]).abs().mean() < (fresh - start_state[name]).abs().mean()
    assert meta.mean != MEAN


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"model.encoder": "resnet34"}, "encoder resnet18 (run: resnet34)"),
        ({"data.bands": "[4,3,2,1]"}, "bands [1, 2, 3, 4] (run: [4, 3, 2, 1])"),
        ({"model.arch": "FPN"}, "architecture Unet (run: FPN)"),
        ({"data.upscale": 2}, "upscale 1 (run: data.upscale 2)"),
    ],
)
def test_incompatible_model_is_one_clear_error_and_no_run_folder(start, over, says):
    root, data = start
    out = root / "refused"
    cfg = config(root, data, **over, out_dir=out)
    with pytest.raises(IncompatibleModelError) as exc:
        train(cfg)
    msg = str(exc.value)
    assert msg.startswith(f"{root / 'start.pt'}: cannot start this run") and says in msg
    assert "\n" not in msg and not out.exists()
    # The one check of a run's inputs (train --check, the Train dialog) reports it too.
    problems = check_train(cfg)
    assert [p.field for p in problems] == ["model.init_from"] and problems[0].message == msg
    assert cfg.data.bands in (None, [4, 3, 2, 1])  # the check filled nothing in


def test_model_bands_missing_from_the_data_are_a_problem(start, tmp_path):
    root, _ = start
    three = make_folder_dataset(tmp_path / "three", n=6, size=24, bands=3)
    problems = check_train(config(root, three))
    assert [p.field for p in problems] == ["data.bands"]
    assert "has 3 band(s) but bands [1, 2, 3, 4] were asked for" in problems[0].message


def test_missing_start_model_is_a_problem_of_init_from(start):
    root, data = start
    cfg = config(root, data, **{"model.init_from": str(root / "nope.pt")})
    problems = check_train(cfg)
    assert [p.field for p in problems] == ["model.init_from"]
    assert problems[0].message == f"{root / 'nope.pt'}: model file not found"


def test_bands_are_found_by_name_in_a_dataset_of_another_product(start, tmp_path):
    """A model of Solafune bands 4,3,2,8 (B4, B3, B2, B8) fine-tuned on 4-band rasters
    described B02, B03, B04, B08: data.bands defaults to 3,2,1,4; a model naming a band
    the rasters lack is refused in one line."""
    import rasterio

    from core.training.finetune import load_init_model

    root, _ = start
    data = make_folder_dataset(tmp_path / "data", n=6, size=24, bands=4)
    for image in (data / "images").glob("*.tif"):
        with rasterio.open(image, "r+") as dst:
            for i, name in enumerate(("B02 blue", "B03 green", "B04 red", "B08 nir"), 1):
                dst.set_band_description(i, name)
    _, state = read_model_file(root / "start.pt")
    model = build_model("Unet", "resnet18", 4)
    model.load_state_dict(state)
    meta = ModelMeta(arch="Unet", encoder="resnet18", in_channels=4, bands=[4, 3, 2, 8],
                     band_names=["B4", "B3", "B2", "B8"], mean=MEAN, std=STD)  # fmt: skip
    save_model_file(tmp_path / "named.pt", model, meta)
    cfg = config(root, data, **{"model.init_from": str(tmp_path / "named.pt")})
    load_init_model(cfg)
    assert cfg.data.bands == [3, 2, 1, 4]
    # The same bands given by hand are the model's; its numbers would not be.
    assert check_train(config(root, data, **{"model.init_from": str(tmp_path / "named.pt"),
                                             "data.bands": "[3,2,1,4]"})) == []  # fmt: skip
    meta.band_names = ["B4", "B3", "B2", "B11"]
    save_model_file(tmp_path / "swir.pt", model, meta)
    problems = check_train(config(root, data, **{"model.init_from": str(tmp_path / "swir.pt")}))
    assert [p.field for p in problems] == ["model.init_from"]
    assert problems[0].message.startswith(f"{tmp_path / 'swir.pt'}: {data / 'images'}")
    assert "has no B11 (its bands: B2, B3, B4, B8)" in problems[0].message
