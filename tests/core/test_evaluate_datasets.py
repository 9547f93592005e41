"""Evaluate on other datasets, the stored training split and versioned stored configs,
with a tiny real training run (24 tiles, 1 epoch)."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from core import config as config_mod
from core.config import CONFIG_VERSION, ConfigError, load_config, load_stored_config, migrate
from core.data.discovery import find_dataset
from core.data.tiles import read_tile
from core.errors import UserError
from core.evaluation.evaluate import SplitMismatchError, evaluate
from core.models.build import read_model_file
from core.training.loop import train
from core.training.runs import load_run_config
from tests.conftest import REPO

LIMIT = 24


@pytest.fixture(scope="module")
def tiny_run(solafune, tmp_path_factory):
    overrides = [f"data.path={solafune}", f"data.limit={LIMIT}", "data.bands=[4,3,2,8]",
                 "train.epochs=1", "train.batch_size=8", "train.threads=2",
                 "train.early_stop.enabled=false", "train.eval_test_each_epoch=false",
                 f"out_dir={tmp_path_factory.mktemp('runs')}", "name=limit24"]  # fmt: skip
    return train(load_config(None, overrides))


@pytest.fixture(scope="module")
def other_pairs(solafune):
    """40 real tiles the run never saw (its limit took the first 24)."""
    pairs = find_dataset(solafune).pairs
    return pairs[500:540]


def write_manifest(path, pairs):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask"])
        for p in pairs:
            w.writerow([p.image, p.mask])
    return path


def test_model_file_records_config_version_and_split(tiny_run, solafune):
    meta, _ = read_model_file(tiny_run.run_dir / "model.pt")
    assert meta.config_version == CONFIG_VERSION and meta.config["config_version"] == CONFIG_VERSION
    assert meta.split["tiles"] == LIMIT and len(meta.split["sha256"]) == 64
    assert meta.split["dataset"] == str(solafune.resolve())
    saved = yaml.safe_load((tiny_run.run_dir / "config.yaml").read_text())
    assert saved["config_version"] == CONFIG_VERSION
    assert load_run_config(tiny_run.run_dir).data.limit == LIMIT


def test_split_all_on_another_dataset_scores_every_tile(tiny_run, other_pairs, tmp_path):
    manifest = write_manifest(tmp_path / "other.csv", other_pairs)
    out_csv = tmp_path / "per_image.csv"
    out = subprocess.run(
        [sys.executable, "-m", "core", "evaluate", str(tiny_run.run_dir), str(manifest),
         "--split", "all", "--csv", str(out_csv), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 40
    assert {r["tile_id"] for r in rows} == {p.image.stem for p in other_pairs}
    valid = sum(int(read_tile(p, [4, 3, 2, 8]).valid.sum()) for p in other_pairs)
    assert sum(int(r["valid_pixels"]) for r in rows) == valid
    m = json.loads(out.stdout)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == valid
    plants = m["plants"]  # plant-level results beside the pixel metrics
    assert plants["found"] + plants["missed"] == plants["plants"] > 0
    plant_rows = list(csv.DictReader((tiny_run.run_dir / "evaluate_all_plants.csv").open()))
    assert len(plant_rows) == plants["plants"]
    assert sum(int(r["reference_pixels"]) for r in plant_rows) == m["tp"] + m["fn"]


def test_split_test_on_another_dataset_uses_its_seeded_split_without_limit(
    tiny_run, other_pairs, tmp_path
):
    # A folder dataset (no predefined split) of the 40 tiles: the stored seeded split
    # settings give round(0.2 * 40) = 8 test tiles, not a share of the first 24.
    for sub in ("s2_image", "mask"):
        (tmp_path / "other" / sub).mkdir(parents=True)
    for p in other_pairs:
        shutil.copy(p.image, tmp_path / "other" / "s2_image" / p.image.name)
        shutil.copy(p.mask, tmp_path / "other" / "mask" / p.mask.name)
    result = evaluate(tiny_run.run_dir, tmp_path / "other", "test")
    assert len(result.rows) == 8
    assert len(evaluate(tiny_run.run_dir, tmp_path / "other", "all").rows) == 40


def test_changed_training_dataset_is_a_clear_error(tiny_run, solafune, tmp_path):
    # A copy of the first 25 tiles, recorded as the training dataset: same split.
    data = tmp_path / "copy"
    for sub in ("s2_image", "mask"):
        (data / sub).mkdir(parents=True)
    for p in find_dataset(solafune).pairs[: LIMIT + 1]:
        shutil.copy(p.image, data / "s2_image" / p.image.name)
        shutil.copy(p.mask, data / "mask" / p.mask.name)
    payload = torch.load(tiny_run.run_dir / "model.pt", weights_only=True)
    payload["meta"]["split"]["dataset"] = str(data)
    model = tmp_path / "model.pt"
    torch.save(payload, model)
    want = evaluate(tiny_run.run_dir, split="test").counts
    assert evaluate(model, split="test").counts == want
    assert evaluate(model, data, split="test").counts == want  # same dataset, named

    first = find_dataset(data).pairs[0]
    first.image.unlink()
    first.mask.unlink()
    for dataset in (None, data):
        with pytest.raises(SplitMismatchError) as err:
            evaluate(model, dataset, split="test")
        assert isinstance(err.value, UserError)
        assert str(model) in str(err.value) and str(data) in str(err.value)


def test_old_format_model_file_still_evaluates(tiny_run, tmp_path):
    payload = torch.load(tiny_run.run_dir / "model.pt", weights_only=True)
    meta = payload["meta"]
    del meta["config_version"], meta["split"], meta["config"]["config_version"]
    meta["config"]["data"]["retired_setting"] = 3  # a setting a later version dropped
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    meta_old, _ = read_model_file(old)
    assert meta_old.config_version == 1 and meta_old.split == {}
    with pytest.warns(UserWarning, match="data.retired_setting"):
        got = evaluate(old, split="test")
    assert got.counts == evaluate(tiny_run.run_dir, split="test").counts


def test_migrate_renamed_setting(monkeypatch):
    monkeypatch.setattr(config_mod, "RENAMED", {1: {"data.max_tiles": "data.limit"}})
    old = {"data": {"max_tiles": 7, "bands": [1, 2]}, "train": {"epochs": 2}}
    new = migrate(old, 1)
    assert new["data"] == {"limit": 7, "bands": [1, 2]} and "max_tiles" in old["data"]
    assert load_stored_config(old).data.limit == 7  # no version: version 1
    assert migrate({"config_version": 2, "data": {"max_tiles": 7}}, 2) == {"data": {"max_tiles": 7}}
    with pytest.raises(ConfigError, match="newer"):
        migrate({}, CONFIG_VERSION + 1)


def test_unknown_setting_in_user_config_still_raises(tmp_path):
    with pytest.raises(ConfigError, match="data.retired_setting"):
        load_config(None, ["data.retired_setting=3"])
    path = tmp_path / "c.yaml"
    path.write_text(f"config_version: {CONFIG_VERSION}\ndata:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="data.bogus"):
        load_config(path)


def test_check_evaluate_keys_every_problem_by_field(tiny_run, tmp_path):
    from core.errors import ValidationError
    from core.evaluation.evaluate import check_evaluate, evaluate

    run = tiny_run.run_dir
    assert check_evaluate(run, None, "test") == []
    problems = check_evaluate(run, tmp_path / "nowhere", "test", 1.5, "cuda")
    assert [p.field for p in problems] == ["threshold", "device", "dataset"]
    assert str(tmp_path / "nowhere") in problems[2].message
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    assert [p.field for p in check_evaluate(bad, None, "nope")] == ["split", "model"]
    with pytest.raises(ValidationError) as info:
        evaluate(bad, None, "nope", out_csv=tmp_path / "rows.csv")
    assert not (tmp_path / "rows.csv").exists()
    assert "split must be train, val, test or all" in str(info.value)
