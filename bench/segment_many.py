"""Benchmark of ``segment-many`` (issue 12): the same scenes on 1 and on 2 Dask workers
of a LocalCluster, and on a separate ``dask scheduler`` + 2 ``dask worker`` processes on
loopback (the multi-machine path), all in one run so the ratio shares the machine's load.

    .venv/bin/python bench/segment_many.py [--scenes 8] [--work /tmp/solarseg-many]
        [--skip-external] [--json PATH]

Scenes (built in ``--work``, never in the repository): overlapping 300 x 280 crops of
the real scene ``../shared/data/scenes/rgbn_haiti_5m.tif`` (R,G,B,NIR, 5 m, EPSG:32618;
2.1 km² each), the only georeferenced four-band scene there (the Sentinel-2 300 px scene
has no georeferencing, so no km²). Model:
a random-init Unet resnet18 on bands 1-4 (tile 256, overlap 64): speed does not depend
on the weights. Each configuration writes into its own output folder (nothing is
skipped), with polygons (segment-many always makes them) and the merged GeoPackage.
Times are wall clock of the whole ``segment_many`` call: cluster start, model load on
each worker, every scene, the merge. Torch threads: 2 for the lone worker, 1 each for two. Results: ``--work/results.json``
and, with ``--json PATH``, PATH too (``bench/estimate_coverage.py`` reads
``results.local_1_worker``: km2_per_min, pixels, pixel_m).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENES = (REPO / ".." / "shared" / "data" / "scenes").resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def crop(src_path: Path, dst: Path, row: int, col: int, h: int, w: int) -> Path:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        win = Window(col, row, w, h)
        data = src.read(window=win)
        profile = src.profile.copy()
        profile.update(width=w, height=h, transform=src.window_transform(win), tiled=False)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def build_scenes(n: int, work: Path) -> list[Path]:
    d = work / "scenes"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    haiti = SCENES / "rgbn_haiti_5m.tif"
    offsets = [(0, 0), (0, 215), (123, 0), (123, 215), (60, 100), (0, 100), (123, 100), (60, 0)]
    out = []
    for i in range(n):
        r, c = offsets[i % len(offsets)]
        out.append(crop(haiti, d / f"haiti_{i:02d}.tif", r, c, 280, 300))
    return out


def build_model(work: Path) -> Path:
    import numpy as np
    import rasterio

    from core.models.build import ModelMeta, build_model, save_model_file

    with rasterio.open(SCENES / "rgbn_haiti_5m.tif") as src:
        a = src.read().astype(np.float64).reshape(4, -1)
    meta = ModelMeta(arch="Unet", encoder="resnet18", in_channels=4, bands=[1, 2, 3, 4],
                     mean=a.mean(1).tolist(), std=a.std(1).tolist(), threshold=0.5,
                     tile_size=256, overlap=64)  # fmt: skip
    path = work / "model.pt"
    save_model_file(path, build_model("Unet", "resnet18", 4).eval(), meta)
    return path


def run(model: Path, scenes: list[Path], out: Path, cluster) -> dict:
    from core.segment.many import segment_many
    from core.segment.options import SegmentOptions

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = segment_many(model, scenes, out, SegmentOptions(), cluster)
    wall = time.perf_counter() - t0
    km2 = sum(r.km2 or 0 for r in result.rows)
    pixels = sum(r.pixels or 0 for r in result.rows)
    assert result.counts == {"done": len(scenes)}, result.counts
    return {
        "seconds": wall,
        "scenes": len(scenes),
        "km2": km2,
        "pixels": pixels,
        "pixel_m": (km2 * 1e6 / pixels) ** 0.5 if pixels else None,
        "scenes_per_min": len(scenes) / wall * 60,
        "km2_per_min": km2 / wall * 60,
        "scene_seconds_sum": sum(r.seconds or 0 for r in result.rows),
        "panels_merged": result.panels,
    }


def external_cluster(work: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    """`dask scheduler` and `dask worker` processes on loopback, as on other machines."""
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sched_file = work / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    procs = [subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(sched_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]  # fmt: skip
    deadline = time.monotonic() + 120
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    for _ in range(workers):
        procs.append(subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-dashboard",
             "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
    from distributed import Client

    with Client(address) as client:
        client.wait_for_workers(workers, timeout=180)
    return address, procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/solarseg-many"))
    parser.add_argument("--skip-external", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results JSON here too")
    args = parser.parse_args()
    from core.segment.many import ClusterOptions

    args.work.mkdir(parents=True, exist_ok=True)
    scenes = build_scenes(args.scenes, args.work)
    model = build_model(args.work)
    load_before = os.getloadavg()
    results = {
        "local_1_worker": run(model, scenes, args.work / "out1", ClusterOptions(workers=1)),
        "local_2_workers": run(model, scenes, args.work / "out2", ClusterOptions(workers=2)),
    }
    if not args.skip_external:
        address, procs = external_cluster(args.work, 2)
        try:
            results["external_2_workers"] = run(
                model, scenes, args.work / "out3", ClusterOptions(scheduler=address)
            )
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                p.wait(30)
    one, two = results["local_1_worker"], results["local_2_workers"]
    report = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "results": results,
        "ratio_2_vs_1": two["scenes_per_min"] / one["scenes_per_min"],
    }
    (args.work / "results.json").write_text(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
