import numpy as np
import pytest

from core.config import SplitConfig
from core.data.discovery import Pair, find_dataset
from core.data.splits import LeakageError, check_leakage, split_pairs
from core.data.stats import BandStats, summarize
from core.data.tiles import read_tile
from tests.rasters import make_folder_dataset, write_raster


def test_stats_exact_and_streaming_equal_two_pass(tmp_path):
    root = make_folder_dataset(tmp_path, n=5)
    index = find_dataset(root)
    for p in index.pairs:
        p.split = "train" if p.id != "4" else "test"
    s = summarize(index.pairs, [2, 1]).stats
    train = [read_tile(p, [2, 1]) for p in index.pairs if p.split == "train"]
    values = np.concatenate([t.image[:, t.valid] for t in train], axis=1).astype(np.float64)
    assert s.bands == [2, 1]
    assert s.count == [values.shape[1]] * 2 == [4 * 24 * 24] * 2
    np.testing.assert_allclose(s.mean, values.mean(1), rtol=1e-12)
    np.testing.assert_allclose(s.std, values.std(1), rtol=1e-10)
    assert s.min == values.min(1).tolist() and s.max == values.max(1).tolist()


def test_stats_ignore_invalid_pixels(tmp_path):
    img = np.array([[[1.0, 3.0], [np.nan, -9999.0]]], np.float32)
    i = write_raster(tmp_path / "a.tif", img)
    m = write_raster(tmp_path / "m.tif", np.zeros((2, 2), np.uint8))
    s = summarize([Pair("a", i, m, split="train")], None).stats
    assert s.count == [2] and s.mean == [2.0] and s.std == [1.0]
    assert (s.min, s.max) == ([1.0], [3.0])


def test_stats_save_load(tmp_path):
    s = BandStats([1], [3], [2.0], [1.0], [0.0], [4.0])
    s.save(tmp_path / "stats.json")
    assert BandStats.load(tmp_path / "stats.json") == s


def test_class_balance(tmp_path):
    index = find_dataset(make_folder_dataset(tmp_path, n=4))
    bal = summarize(index.pairs, None, stats_splits=(None,)).balance["all"]
    # tile i has i*i positives of 24*24 pixels; tile 0 is blank
    assert bal.tiles == 4 and bal.blank_tiles == 1
    assert bal.positive_pixels == 0 + 1 + 4 + 9
    assert bal.valid_pixels == 4 * 576
    assert bal.positive_ratio == pytest.approx(14 / 2304)


def test_real_dataset_balance(solafune):
    index = find_dataset(solafune)
    summary = summarize(index.pairs, [8], stats_splits=(None,))
    bal = summary.balance["all"]
    assert (bal.tiles, bal.blank_tiles) == (1650, 116)
    assert round(bal.positive_ratio, 4) == 0.0923
    assert summary.stats.count == [bal.valid_pixels]


def _pairs(n, groups=None):
    return [Pair(str(i), __import__("pathlib").Path(f"p{i}_{(groups or {}).get(i, i)}.tif"),
                 __import__("pathlib").Path(f"m{i}.tif")) for i in range(n)]  # fmt: skip


def test_seeded_split_by_tile_is_reproducible():
    from core.data.discovery import DatasetIndex

    a = split_pairs(DatasetIndex(None, "folders", _pairs(100)), SplitConfig(seed=1))
    b = split_pairs(DatasetIndex(None, "folders", _pairs(100)), SplitConfig(seed=1))
    c = split_pairs(DatasetIndex(None, "folders", _pairs(100)), SplitConfig(seed=2))
    assert [p.split for p in a] == [p.split for p in b] != [p.split for p in c]
    counts = {s: sum(p.split == s for p in a) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 10, "test": 20}


def test_group_split_never_leaks():
    from core.data.discovery import DatasetIndex

    pairs = [Pair(str(i), __import__("pathlib").Path(f"plant{i % 7}_tile{i}.tif"),
                  __import__("pathlib").Path(f"m{i}.tif")) for i in range(70)]  # fmt: skip
    out = split_pairs(DatasetIndex(None, "folders", pairs), SplitConfig(group_regex=r"(plant\d+)_"))
    by_group = {}
    for p in out:
        by_group.setdefault(p.group, set()).add(p.split)
    assert len(by_group) == 7 and all(len(s) == 1 for s in by_group.values())
    assert {s for v in by_group.values() for s in v} == {"train", "val", "test"}


def test_leakage_check_fails_on_shared_group():
    pairs = _pairs(3)
    for p, s in zip(pairs, ["train", "test", "train"], strict=True):
        p.group, p.split = "plantA" if p.id != "2" else "plantB", s
    with pytest.raises(LeakageError, match="plantA in test\\+train"):
        check_leakage(pairs)


def test_real_split_counts(solafune):
    pairs = split_pairs(find_dataset(solafune), SplitConfig(seed=42, val=0.1, test=0.2))
    counts = {s: sum(p.split == s for p in pairs) for s in ("train", "val", "test")}
    assert counts == {"train": 1155, "val": 165, "test": 330}
