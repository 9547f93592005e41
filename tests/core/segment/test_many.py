"""segment-many on Dask distributed: real crops of the Haiti scene (overlapping), a
truncated file and the 3-band Landsat scene (wrong bands) as the bad scenes.

Machine budget: small crops, LocalClusters of 2 workers x 1 thread, or 1 in-process
worker where worker processes are not what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from osgeo import ogr

from core.progress import Cancelled
from core.segment.engine import segment_raster
from core.segment.many import (
    MARKER_FILENAME,
    ClusterOptions,
    check_segment_many,
    collect_scenes,
    read_summary,
    segment_many,
)
from core.segment.options import SegmentOptions
from tests.conftest import REPO
from tests.core.segment.helpers import crop_raster

distributed = pytest.importorskip("distributed")

# (row, col) of 200 x 220 crops of the 515 x 403 Haiti scene: neighbours overlap.
CROPS = [(0, 0), (0, 160), (150, 80)]
OUTPUTS = ("probability.tif", "mask.tif", "panels.gpkg")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, haiti: Path, landsat: Path) -> dict:
    d = tmp_path_factory.mktemp("many-in")
    crops = [
        crop_raster(haiti, d / f"haiti_{i}.tif", r, c, 200, 220) for i, (r, c) in enumerate(CROPS)
    ]
    broken = d / "broken.tif"
    broken.write_bytes(crops[0].read_bytes()[:3000])  # header intact, blocks cut
    listing = tmp_path_factory.mktemp("many-list") / "scenes.txt"
    lines = ["# the good and the bad", *[str(p) for p in crops], str(broken), str(landsat)]
    listing.write_text("\n".join(lines) + "\n")
    return {"dir": d, "crops": crops, "broken": broken, "landsat": landsat, "list": listing}


def features(path: Path) -> list[tuple[str, float]]:
    ds = ogr.Open(str(path))
    return [(f.GetField("scene"), f.GetField("area_m2")) for f in ds.GetLayer(0)]


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_collect_scenes_folder_list_and_name_clashes(inputs, tmp_path):
    scenes = collect_scenes([inputs["list"]])
    assert [s.name for s in scenes] == ["haiti_0", "haiti_1", "haiti_2", "broken",
                                        "landsat8_b2b3b4_foz_30m"]  # fmt: skip
    assert [s.name for s in collect_scenes([inputs["dir"]])] == [
        "broken", "haiti_0", "haiti_1", "haiti_2"
    ]  # fmt: skip
    other = tmp_path / "x"
    other.mkdir()
    twin = other / "haiti_0.tif"
    twin.write_bytes(b"")
    names = [s.name for s in collect_scenes([inputs["crops"][0], twin, inputs["crops"][0]])]
    assert names == ["haiti_0", "haiti_0-2"]  # the same file once; a clash gets -2


def test_check_refuses_bad_model_options_and_empty_folder(inputs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    problems, _ = check_segment_many(
        tmp_path / "nope.pt", [empty], tmp_path / "out",
        SegmentOptions(overlap=-1), ClusterOptions(workers=0, scheduler="localhost:8786"),
    )  # fmt: skip
    fields = {p.field for p in problems}
    assert {"model", "inputs", "overlap", "workers", "scheduler"} <= fields


def test_two_worker_cli_run_jsonl_summary_merge_and_equal_to_segment(inputs, model_file, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "core", "--jsonl", "segment-many", str(model_file),
        str(inputs["list"]), "--out", str(out), "--workers", "2", "--threads-per-worker", "1",
        "--min-area", "50",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {e["event"] for e in events} == {"progress", "result"}
    progress = [e for e in events if e["event"] == "progress"]
    many = [e for e in progress if e["stage"] == "segment-many" and "km2_total" in e["info"]]
    assert many[-1]["info"]["scenes_done"] == 5 and many[-1]["info"]["scenes_total"] == 5
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = events[-1]
    assert result["event"] == "result" and result["command"] == "segment-many"
    data = result["data"]
    assert data["workers"] == 2 and data["counts"] == {"done": 3, "failed": 2}

    rows = {r["scene"]: r for r in read_summary(out / "summary.csv")}
    assert list(rows) == ["haiti_0", "haiti_1", "haiti_2", "broken", "landsat8_b2b3b4_foz_30m"]
    for name in ("haiti_0", "haiti_1", "haiti_2"):
        r = rows[name]
        assert r["status"] == "done" and r["error"] == ""
        assert int(r["pixels"]) == 200 * 220 and float(r["km2"]) == pytest.approx(1.1)
        assert int(r["panels"]) > 0 and float(r["seconds"]) > 0 and float(r["hectares"]) > 0
        assert 0 < int(r["panels_merged"]) <= int(r["panels"])
        assert r["bands"] == "1,2,3,4 (the model's band numbers)"  # Haiti names no bands
        assert sorted(p.name for p in (out / name).iterdir()) == sorted([*OUTPUTS, MARKER_FILENAME])
    assert rows["broken"]["status"] == "failed" and "damaged" in rows["broken"]["error"]
    assert rows["broken"]["pixels"] == str(200 * 220)  # header read; blocks are not
    bad = rows["landsat8_b2b3b4_foz_30m"]
    assert bad["status"] == "failed" and "has 3 band(s)" in bad["error"]
    assert not (out / "broken").exists() and not (out / "landsat8_b2b3b4_foz_30m").exists()

    # Merged polygons: scene field, each scene's kept count, overlaps counted once.
    feats = features(out / "panels.gpkg")
    assert len(feats) == data["panels"] == sum(int(rows[n]["panels_merged"]) for n in
                                               ("haiti_0", "haiti_1", "haiti_2"))  # fmt: skip
    assert {s for s, _ in feats} == {"haiti_0", "haiti_1", "haiti_2"}
    assert len(feats) < sum(int(rows[n]["panels"]) for n in ("haiti_0", "haiti_1", "haiti_2"))
    assert_no_cross_scene_duplicates(out / "panels.gpkg")

    # Per-scene outputs equal `segment`'s for the same raster and options.
    ref = tmp_path / "ref"
    segment_raster(model_file, inputs["crops"][1], ref,
                   SegmentOptions(polygons=True, min_area_m2=50))  # fmt: skip
    for name in ("probability.tif", "mask.tif"):
        np.testing.assert_array_equal(read(out / "haiti_1" / name), read(ref / name))
    assert len(features_plain(out / "haiti_1" / "panels.gpkg")) == len(
        features_plain(ref / "panels.gpkg")
    )

    # Resume: everything complete is skipped and not touched.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("haiti_*/*")}
    again = segment_many(
        model_file, [inputs["list"]], out, SegmentOptions(min_area_m2=50),
        ClusterOptions(workers=1, processes=False),
    )  # fmt: skip
    assert again.counts == {"skipped": 3, "failed": 2}
    assert {p: p.stat().st_mtime_ns for p in out.glob("haiti_*/*")} == stamps
    assert len(features(out / "panels.gpkg")) == len(feats)
    rows2 = {r["scene"]: r for r in read_summary(out / "summary.csv")}
    assert rows2["haiti_2"]["status"] == "skipped"
    assert rows2["haiti_2"]["bands"] == "1,2,3,4 (the model's band numbers)"  # from its marker
    assert rows2["haiti_2"]["panels"] == rows["haiti_2"]["panels"]

    # Other options into the same folder: refused, nothing touched.
    problems, _ = check_segment_many(model_file, [inputs["list"]], out,
                                     SegmentOptions(polygons=True, threshold=0.3))  # fmt: skip
    assert [p.field for p in problems] == ["out"] and "--overwrite" in problems[0].message


def features_plain(path: Path) -> list:
    ds = ogr.Open(str(path))
    return [f.GetGeometryRef().ExportToWkt() for f in ds.GetLayer(0)]


def assert_no_cross_scene_duplicates(path: Path) -> None:
    """No two kept polygons of different scenes overlap by more than 1 % of the smaller."""
    ds = ogr.Open(str(path))
    feats = [(f.GetField("scene"), f.GetGeometryRef().Clone()) for f in ds.GetLayer(0)]
    for i, (s1, g1) in enumerate(feats):
        for s2, g2 in feats[i + 1 :]:
            if s1 != s2 and g1.Intersects(g2):
                inter = g1.Intersection(g2)
                if inter.GetDimension() == 2:
                    assert inter.GetArea() <= 0.01 * min(g1.GetArea(), g2.GetArea())


def test_resume_redoes_a_scene_whose_outputs_are_incomplete(inputs, model_file, tmp_path):
    out = tmp_path / "out"
    crops = inputs["crops"][:2]
    cluster = ClusterOptions(workers=1, processes=False)
    first = segment_many(model_file, crops, out, SegmentOptions(), cluster)
    assert first.counts == {"done": 2}
    (out / "haiti_1" / "mask.tif").unlink()  # as if the run died mid-scene
    (out / "haiti_1" / ".mask.tif.123-abc.part").write_bytes(b"half")
    keep = (out / "haiti_0" / "mask.tif").stat().st_mtime_ns
    events = []
    second = segment_many(model_file, crops, out, SegmentOptions(), cluster, events.append)
    assert [r.status for r in second.rows] == ["skipped", "done"]
    assert (out / "haiti_0" / "mask.tif").stat().st_mtime_ns == keep
    assert sorted(p.name for p in (out / "haiti_1").iterdir()) == sorted(
        [*OUTPUTS, MARKER_FILENAME]
    )
    info = [e.info for e in events if e.stage == "segment-many" and "km2_total" in e.info]
    assert info[-1]["scenes_skipped"] == 1 and info[-1]["scenes_done"] == 2


def test_cancel_stops_and_keeps_complete_scenes(inputs, model_file, tmp_path):
    out = tmp_path / "out"
    seen = []

    def cancel() -> bool:  # after the first finished scene
        return any(e.info.get("scenes_done", 0) >= 1 for e in seen)

    with pytest.raises(Cancelled):
        segment_many(
            model_file, inputs["crops"], out, SegmentOptions(),
            ClusterOptions(workers=1, processes=False), seen.append, cancel,
        )  # fmt: skip
    rows = read_summary(out / "summary.csv")
    statuses = [r["status"] for r in rows]
    assert statuses[0] == "done" and "cancelled" in statuses
    assert not (out / "panels.gpkg").exists()
    assert not list(out.rglob(".*.part"))
    for r in rows:
        if r["status"] != "done":
            assert not (out / r["scene"] / MARKER_FILENAME).exists()


def test_external_scheduler_survives_a_killed_worker(inputs, model_file, tmp_path):
    """A worker process killed (SIGKILL) mid-scene: its nanny starts a new one, the
    scheduler runs the scene again, and no partial file remains."""
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as cluster:  # fmt: skip
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)  # worker address -> process id
            killed: list[int] = []

            def killer() -> None:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and not killed:
                    busy = [a for a, keys in client.processing().items() if keys]
                    if busy and list(out.glob("*/.*.part")):  # a scene is being written
                        os.kill(pids[busy[0]], signal.SIGKILL)
                        killed.append(pids[busy[0]])
                        return
                    time.sleep(0.02)

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            result = segment_many(
                model_file, inputs["crops"], out, SegmentOptions(),
                ClusterOptions(scheduler=cluster.scheduler_address),
            )  # fmt: skip
            thread.join(5)
    assert killed, "no worker was killed (no scene was seen mid-write)"
    assert result.counts == {"done": 3}
    assert not list(out.rglob(".*.part")) and not list(out.rglob("*.scratch.gpkg"))
    ref = tmp_path / "ref"
    segment_raster(model_file, inputs["crops"][0], ref, SegmentOptions(polygons=True))
    np.testing.assert_array_equal(read(out / "haiti_0" / "mask.tif"), read(ref / "mask.tif"))
