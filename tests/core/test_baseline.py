from core.config import load_config
from core.data.discovery import find_dataset
from core.data.splits import split_pairs
from core.data.tiles import read_tile
from core.evaluation.baseline import run_baselines


def test_baselines_scored_on_the_run_split(solafune):
    cfg = load_config(None, [f"data.path={solafune}", "data.limit=150", "data.bands=[4,3,2,8]"])
    rows = run_baselines(cfg)
    assert [(r["baseline"].split(" ")[0], r["split"]) for r in rows] == [
        ("NIR", "val"), ("NIR", "test"), ("logistic", "val"), ("logistic", "test")
    ]  # fmt: skip
    index = find_dataset(solafune)
    index.pairs = index.pairs[:150]
    test = [p for p in split_pairs(index, cfg.data.split) if p.split == "test"]
    valid = sum(int(read_tile(p, [8]).valid.sum()) for p in test)
    for r in rows:
        if r["split"] == "test":
            assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == valid
        assert 0 <= r["iou"] <= 1 and 0 < r["threshold"] < 1
    logistic_test = rows[3]
    assert logistic_test["iou"] > 0.2  # a real classifier, not a constant
