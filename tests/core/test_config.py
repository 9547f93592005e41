"""Typed settings from front ends reach the config as they are; overrides parse YAML."""

import pytest

from core.config import ConfigError, load_config


def test_typed_values_are_not_parsed_again(tmp_path):
    out = tmp_path / "runs #1"
    cfg = load_config(None, values={"name": "yes", "out_dir": str(out), "data.bands": [4, 3, 2, 8]})
    assert cfg.name == "yes"
    assert str(cfg.out_dir) == str(out)
    assert cfg.data.bands == [4, 3, 2, 8]


def test_the_same_text_as_an_override_is_yaml():
    # What the Processing algorithm used to do: "yes" becomes a bool, " #" a comment.
    cfg = load_config(None, ["name=yes", "out_dir=/tmp/runs #1"])
    assert cfg.name == "True"
    assert str(cfg.out_dir) == "/tmp/runs"


def test_overrides_apply_after_values_and_errors_name_the_setting():
    cfg = load_config(None, ["train.epochs=7"], values={"train.epochs": 3})
    assert cfg.train.epochs == 7
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, values={"train.epochs": "many"})
    with pytest.raises(ConfigError, match="epoch"):
        load_config(None, values={"train.epoch": 3})


def test_comma_separated_lists_are_stripped():
    """A list typed in a field or an override ("ndvi, ndwi") gives clean names."""
    from core.config import RunConfig, from_dict

    cfg = from_dict(RunConfig, {"data": {"indices": "ndvi, ndwi", "bands": "4, 3,2 ,8"}})
    assert cfg.data.indices == ["ndvi", "ndwi"]
    assert cfg.data.bands == [4, 3, 2, 8]
