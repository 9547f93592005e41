"""A truncated or corrupt GeoTIFF gives one ``error:`` line naming the file (exit 2)
in ``stats`` and ``train``, whether it fails at open or only when its blocks are read."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.cli.main import main
from core.data.discovery import Pair
from core.data.rasters import RasterError, open_raster, read_image
from core.data.tiles import read_tile

N_TILES = 12


def truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def random_tif(dst: Path, size: int = 6000) -> Path:
    dst.write_bytes(np.random.default_rng(0).bytes(size))
    return dst


def damaged_dataset(solafune: Path, root: Path, damage: str, which: str = "image") -> Path:
    """A copy of the first tiles of the real data set with tile 0's image (or mask)
    truncated or replaced by random bytes."""
    (root / "s2_image").mkdir(parents=True)
    (root / "mask").mkdir()
    for i in range(N_TILES):
        shutil.copy(solafune / "s2_image" / f"train_s2_image_{i}.tif", root / "s2_image")
        shutil.copy(solafune / "mask" / f"train_mask_{i}.tif", root / "mask")
    folder, name = ("s2_image", "train_s2_image_0.tif")
    if which == "mask":
        folder, name = ("mask", "train_mask_0.tif")
    bad = root / folder / name
    os.chmod(bad, 0o644)
    if damage == "truncated":
        truncated_copy(solafune / folder / name, bad)
    else:
        random_tif(bad)
    return bad


def one_error_line(capfd, path: Path) -> str:
    """Assert stderr (Python's and GDAL's own C-level output) holds exactly one error
    line, naming path, last; other lines may only be progress reports ("[stage] ...")."""
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert str(path) in errors[0], err
    assert all(line.startswith("[") for line in lines[:-1]), err  # no traceback, no "ERROR 1:"
    return errors[0]


@pytest.fixture
def truncated_tile(solafune, tmp_path) -> Path:
    return truncated_copy(solafune / "s2_image" / "train_s2_image_0.tif", tmp_path / "t.tif")


def test_truncated_tile_opens_but_fails_at_read_time(truncated_tile):
    with open_raster(truncated_tile) as src:  # the header is intact
        assert src.count == 12
    with pytest.raises(RasterError) as info:
        read_image(truncated_tile)
    msg = str(info.value)
    assert msg.startswith(f"{truncated_tile}: cannot read band data (file truncated or damaged: ")
    assert "\n" not in msg and msg.count(str(truncated_tile)) == 1


def test_truncated_tile_in_a_pair(solafune, truncated_tile):
    pair = Pair("0", truncated_tile, solafune / "mask" / "train_mask_0.tif")
    with pytest.raises(RasterError, match="cannot read band data"):
        read_tile(pair)


def test_random_bytes_fail_at_open(tmp_path):
    path = random_tif(tmp_path / "noise.tif")
    with pytest.raises(RasterError) as info:
        open_raster(path)
    assert str(info.value).startswith(f"{path}: not a readable raster (")
    assert "\n" not in str(info.value)


def test_truncated_haiti_scene_fails_on_read(scenes, tmp_path):
    path = truncated_copy(scenes / "rgbn_haiti_5m.tif", tmp_path / "haiti.tif")
    with pytest.raises(RasterError, match="truncated or damaged"):
        read_image(path)


@pytest.mark.parametrize(
    "damage,which", [("truncated", "image"), ("random", "image"), ("truncated", "mask")]
)
def test_cli_stats_damaged_tile(solafune, tmp_path, capfd, damage, which):
    bad = damaged_dataset(solafune, tmp_path / "ds", damage, which)
    assert main(["stats", str(tmp_path / "ds")]) == 2
    line = one_error_line(capfd, bad)
    assert ("cannot read band data" if damage == "truncated" else "not a readable raster") in line


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_cli_train_damaged_tile(solafune, tmp_path, capfd, damage):
    bad = damaged_dataset(solafune, tmp_path / "ds", damage)
    code = main([
        "train", f"data.path={tmp_path / 'ds'}", "data.limit=12", "data.bands=[4,3,2,8]",
        "train.epochs=1", "train.batch_size=4", f"out_dir={tmp_path / 'runs'}",
        "train.threads=1",
    ])  # fmt: skip
    assert code == 2
    one_error_line(capfd, bad)
