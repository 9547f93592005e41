import csv

import numpy as np
import pytest

from core.data.discovery import DatasetError, find_dataset, write_manifest
from tests.rasters import make_folder_dataset, write_raster


def test_real_solafune_folders(solafune):
    index = find_dataset(solafune)
    assert index.form == "folders"
    assert len(index.pairs) == 1650
    first = index.pairs[0]
    assert (first.id, first.image.name, first.mask.name) == (
        "0",
        "train_s2_image_0.tif",
        "train_mask_0.tif",
    )
    assert index.pairs[-1].id == "1649"
    assert not index.has_predefined_split


def test_solarplantsbrazil_layout_keeps_splits(tmp_path):
    img = np.ones((4, 8, 8), np.float32)
    msk = np.zeros((8, 8), np.uint8)
    for split, nums in (("train", [1, 2, 3]), ("val", [4]), ("test", [5, 6])):
        for n in nums:
            write_raster(tmp_path / split / "input" / f"img({n}).tif", img)
            write_raster(tmp_path / split / "labels" / f"target({n}).tif", msk)
    index = find_dataset(tmp_path)
    assert index.form == "solarplantsbrazil"
    assert index.split_counts() == {"train": 3, "val": 1, "test": 2}
    assert index.has_predefined_split
    assert {p.id for p in index.pairs if p.split == "test"} == {"test/5", "test/6"}


def test_unpaired_and_duplicate_files_listed_in_one_error(tmp_path):
    make_folder_dataset(tmp_path, n=3)
    (tmp_path / "masks" / "mask_2.tif").unlink()
    write_raster(tmp_path / "masks" / "mask_9.tif", np.zeros((4, 4), np.uint8))
    write_raster(tmp_path / "images" / "img_01.tif", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(DatasetError) as err:
        find_dataset(tmp_path)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "img_2.tif: image has no mask with number 2" in msg
    assert "mask_9.tif: mask has no image with number 9" in msg
    assert "duplicate image number 1 (also" in msg and "img_01.tif" in msg


def test_empty_folders_are_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="expected"):
        find_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        find_dataset(tmp_path / "nope")


def test_manifest_roundtrip_with_groups_and_splits(tmp_path):
    make_folder_dataset(tmp_path / "d", n=4)
    index = find_dataset(tmp_path / "d")
    for i, p in enumerate(index.pairs):
        p.group, p.split = f"plant{i // 2}", "train" if i < 2 else "test"
    write_manifest(index.pairs, tmp_path / "split.csv")
    again = find_dataset(tmp_path / "split.csv")
    assert again.form == "manifest"
    assert [(p.id, p.group, p.split) for p in again.pairs] == [
        ("0", "plant0", "train"), ("1", "plant0", "train"),
        ("2", "plant1", "test"), ("3", "plant1", "test"),
    ]  # fmt: skip
    assert again.pairs[3].image == (tmp_path / "d" / "images" / "img_3.tif").resolve()


def test_manifest_relative_paths_and_errors(tmp_path):
    make_folder_dataset(tmp_path, n=2)
    rows = [["image", "mask"], ["images/img_0.tif", "masks/mask_0.tif"],
            ["images/img_1.tif", "masks/missing.tif"]]  # fmt: skip
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DatasetError, match=r"manifest.csv:3: .*missing.tif does not exist"):
        find_dataset(tmp_path)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["image", "label"], ["a", "b"]])
    with pytest.raises(DatasetError, match="needs columns image and mask"):
        find_dataset(path)
