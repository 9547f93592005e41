"""Segmenting a truncated or corrupt raster: one ``error:`` line naming the file, exit
status 2, and no output left behind (the truncated scene opens; its reads fail)."""

from pathlib import Path

import numpy as np
import pytest

from core.cli.main import main
from core.data.rasters import RasterError
from core.segment.engine import segment_raster


def truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.fixture(params=["truncated", "random"])
def damaged_scene(request, haiti, tmp_path) -> Path:
    path = tmp_path / "scene.tif"
    if request.param == "truncated":
        return truncated_copy(haiti, path)
    path.write_bytes(np.random.default_rng(0).bytes(20_000))
    return path


def test_cli_segment_damaged_scene(model_file, damaged_scene, tmp_path, capfd):
    out = tmp_path / "out"
    code = main(["segment", str(model_file), str(damaged_scene), "--out", str(out)])
    assert code == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert str(damaged_scene) in errors[0], err
    assert all(line.startswith("[") for line in lines[:-1]), err  # no traceback, no "ERROR 1:"
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], left


def test_truncated_scene_fails_in_the_reader_thread(model_file, haiti, tmp_path):
    bad = truncated_copy(haiti, tmp_path / "scene.tif")
    with pytest.raises(RasterError, match="cannot read band data"):
        segment_raster(model_file, bad, tmp_path / "out")
    assert not any((tmp_path / "out").glob("*"))
