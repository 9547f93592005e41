"""Benchmark of whole-raster segmentation (issue 4): throughput, overhead, ONNX Runtime
against PyTorch, peak memory against raster size, and a peer (geoai-py) beside ours.

    .venv/bin/python bench/segment_bench.py [--model PATH] [--size 8192]
        [--memory-sizes 2048,10240] [--work /tmp/solarseg-bench] [--doc FILE]

What it does, all on rasters built in ``--work`` (never in the repository):

1. Builds four-band uint8 GeoTIFFs by mosaicking the real scene
   ``../shared/data/scenes/rgbn_haiti_5m.tif`` (515 x 403, R,G,B,NIR, 5 m, EPSG:32618)
   with mirrored copies (no seams) to ``--size`` and to each of ``--memory-sizes``.
2. Model: ``--model`` (run folder / model file), else a random-init Unet resnet34 (4
   bands, BatchNorm statistics set on the real scene) written to ``--work`` — the speed
   of a random and a trained network of one architecture is the same.
3. For each backend, in this process: the bare forward passes (``backend.predict``) on
   the engine's windows and batches (reading untimed), the end-to-end
   ``segment_with_backend`` on the same raster (reading, normalising, predicting,
   blending, writing probability.tif and mask.tif; model already loaded), and the bare
   passes again. Overhead = end-to-end / mean of the two bare passes. The ONNX file is
   exported once, beforehand.
4. Peak RSS per raster size and backend, each run in a fresh child process started by
   an intermediate process that reports ``getrusage(RUSAGE_CHILDREN).ru_maxrss``.
5. Peer: geoai-py's sliding-window inference (``semantic_inference_on_geotiff``, used by
   ``geoai.semantic_segmentation``, and the newer ``geoai.inference.predict_geotiff``)
   run with the same model and raster by the interpreter given in ``--peer-python``
   (a throwaway venv, never the project's), timed and measured the same way.

Results go to ``--work/results.json``, with ``--json PATH`` to PATH as well (what
``bench/estimate_coverage.py`` reads: ``throughput.<backend>.km2_per_minute``, ``pixels``,
``area_km2``), and with ``--doc`` to a Markdown section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENE = (REPO / ".." / "shared" / "data" / "scenes" / "rgbn_haiti_5m.tif").resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TILE, OVERLAP, BATCH = 256, 64, 8


# ----------------------------------------------------------------------------- inputs
def build_mosaic(size: int, path: Path, scene: Path = SCENE) -> Path:
    """A size x size raster: the real ``scene`` and its mirror images, tiled (no seams)."""
    import rasterio
    from rasterio.windows import Window

    if path.exists():
        return path
    with rasterio.open(scene) as src:
        scene = src.read()
        profile = src.profile.copy()
    _, h, w = scene.shape
    row = np.concatenate([scene, scene[:, :, ::-1]] * (size // (2 * w) + 1), axis=2)[:, :, :size]
    block = np.concatenate([row, row[:, ::-1]], axis=1)  # 2h rows, seamless period
    profile.update(
        width=size, height=size, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", predictor=2, interleave="pixel", photometric="MINISBLACK",
        BIGTIFF="IF_SAFER",
    )  # fmt: skip
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, size, 1024):
            rows = np.arange(y, min(y + 1024, size)) % (2 * h)
            dst.write(block[:, rows], window=Window(0, y, size, len(rows)))
    tmp.rename(path)
    return path


def default_model(work: Path) -> Path:
    """Random-init Unet resnet34, 4 bands, BatchNorm statistics from the real scene."""
    import rasterio
    import torch

    from core.data.rasters import normalize, valid_mask
    from core.models.build import ModelMeta, build_model, save_model_file

    path = work / "unet_resnet34_random.pt"
    if path.exists():
        return path
    with rasterio.open(SCENE) as src:
        a = src.read().astype(np.float32)
    flat = a.reshape(4, -1)
    mean, std = flat.mean(1).tolist(), flat.std(1).tolist()
    torch.manual_seed(0)
    model = build_model("Unet", "resnet34", 4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    x = torch.from_numpy(normalize(a, valid_mask(a, None), mean, std))[None, :, :256, :256]
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    meta = ModelMeta(
        arch="Unet", encoder="resnet34", in_channels=4, bands=[1, 2, 3, 4], mean=mean,
        std=std, tile_size=TILE, overlap=OVERLAP,
        config={"note": "random init, BatchNorm statistics from rgbn_haiti_5m.tif; speed only"},
    )  # fmt: skip
    save_model_file(path, model, meta)
    return path


# ------------------------------------------------------------------------ measurements
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare_forward_seconds(backend, meta, raster: Path, batch_size: int) -> tuple[float, int]:
    """Seconds spent in ``backend.predict`` over the engine's own windows and batches
    (the reads between calls are not timed)."""
    from core.segment.engine import SegmentOptions, make_predict
    from core.segment.inputs import WindowReader, batched, plan_raster
    from core.segment.windows import WindowGrid

    plan = plan_raster(raster, meta, SegmentOptions(tile_size=TILE, overlap=OVERLAP))
    grid = WindowGrid(plan.grid.height, plan.grid.width, plan.tile, plan.overlap)
    predict = make_predict(backend, plan.upscale)
    reader = WindowReader(plan)
    total, n = 0.0, 0
    try:
        for windows in batched(iter(grid), batch_size):
            batch = reader.read_batch(windows)
            t = time.perf_counter()
            predict(batch.x)
            total += time.perf_counter() - t
            n += len(windows)
    finally:
        reader.close()
    return total, n


def micro(model: Path, onnx_path: Path, repeats: int = 7) -> dict:
    """Tiles/s of the bare networks on one batch of 8 random 4 x 256 x 256 tiles (median
    of ``repeats`` after a warm-up), as the environment notes measure them: PyTorch in
    its default (NCHW) layout, PyTorch channels-last (what TorchBackend uses on CPU),
    ONNX Runtime with its default session options (what OnnxBackend uses)."""
    import onnxruntime as ort
    import torch

    from core.models.build import load_model

    x = np.random.default_rng(0).standard_normal((BATCH, 4, TILE, TILE)).astype(np.float32)

    def rate(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return BATCH / float(np.median(times))

    net, _ = load_model(model, "cpu")
    xt = torch.from_numpy(x)
    out: dict = {"loadavg_1min_before": os.getloadavg()[0]}
    with torch.inference_mode():
        out["torch_nchw"] = rate(lambda: net(xt))
        net = net.to(memory_format=torch.channels_last)
        xc = xt.contiguous(memory_format=torch.channels_last)
        out["torch_channels_last"] = rate(lambda: net(xc))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out["onnxruntime"] = rate(lambda: session.run(None, {"input": x}))
    out["onnx_vs_torch_nchw"] = out["onnxruntime"] / out["torch_nchw"]
    out["onnx_vs_torch_channels_last"] = out["onnxruntime"] / out["torch_channels_last"]
    out.update(ort_ceiling(net, onnx_path, x, rate))
    out["ort_thread_scaling"] = out["onnxruntime"] / out["ort_1_thread"]
    for key in ("torch_nchw", "torch_channels_last", "onnxruntime"):
        out[f"{key}_gflops"] = out[key] * out["gflop_per_tile"]
    out["loadavg_1min_after"] = os.getloadavg()[0]
    print(f"[bench] micro: {json.dumps(out)}", flush=True)
    return out


def ort_ceiling(net, onnx_path: Path, x: np.ndarray, rate) -> dict:
    """Where ONNX Runtime's time goes, and how close it runs to this CPU's limit.

    - ``ort_op_share``: share of ORT's kernel time per operator type (its profiler), on
      the batch above. Convolutions near 100 % leave no graph-level fix.
    - ``ort_1_thread`` / ``ort_thread_scaling``: tiles/s on one thread, and the 2-thread
      rate over it (2.0 = both cores fully used).
    - ``gflop_per_tile`` (``torch.utils.flop_counter``, multiply-add = 2 FLOP) and the
      GFLOP/s each runtime reaches, against ``peak_gflops``: cores x the clock
      /proc/cpuinfo reports x 32 FP32 FLOP/cycle (two 256-bit FMA pipes, which is what
      AVX-512 runs on in AMD Zen 4); the real clock can boost above it.
    """
    import collections

    import onnxruntime as ort
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out: dict = {}
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(onnx_path.with_suffix(""))
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, {"input": x})
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    out["ort_op_share"] = {op: round(t / total, 4) for op, t in per_op.most_common(6)}
    one = ort.SessionOptions()
    one.intra_op_num_threads = 1
    single = ort.InferenceSession(str(onnx_path), one, providers=["CPUExecutionProvider"])
    out["ort_1_thread"] = rate(lambda: single.run(None, {"input": x}))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.from_numpy(x[:1]))
    out["gflop_per_tile"] = counter.get_total_flops() / 1e9
    mhz = [
        float(v) for v in re.findall(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
    ]
    if mhz:
        out["peak_gflops"] = (os.cpu_count() or 1) * max(mhz) / 1e3 * 32
    return out


def throughput(model: Path, onnx_path: Path, raster: Path, work: Path) -> dict:
    from core.segment.backends import load_backend
    from core.segment.engine import SegmentOptions, segment_with_backend

    out: dict = {}
    for name, path in (("torch", model), ("onnx", onnx_path)):
        t = time.perf_counter()
        backend, meta = load_backend(path, name, "cpu")
        load_s = time.perf_counter() - t
        # Warm-up on a small batch so one-off allocations are not timed in either pass.
        backend.predict(np.zeros((BATCH, 4, TILE, TILE), np.float32))
        dest = work / f"out_{name}"
        shutil.rmtree(dest, ignore_errors=True)
        load0 = os.getloadavg()[0]
        # bare, end to end, bare again: the mean of the two bare passes brackets the
        # end-to-end run, so a drift in machine speed does not bias the overhead.
        bare1, n = bare_forward_seconds(backend, meta, raster, BATCH)
        result = segment_with_backend(
            backend, meta, raster, dest,
            SegmentOptions(tile_size=TILE, overlap=OVERLAP, batch_size=BATCH, backend=name),
        )  # fmt: skip
        bare2, _ = bare_forward_seconds(backend, meta, raster, BATCH)
        bare = (bare1 + bare2) / 2
        assert n == result.windows
        out[name] = {
            "load_s": load_s,
            "windows": result.windows,
            "pixels": result.pixels,
            "area_km2": result.area_km2,
            "end_to_end_s": result.seconds,
            "bare_forward_s": bare,
            "bare_forward_passes_s": [bare1, bare2],
            "overhead": result.seconds / bare,
            "windows_per_s": result.windows / result.seconds,
            "bare_windows_per_s": n / bare,
            "km2_per_minute": result.km2_per_minute,
            "probability_mb": result.probability_path.stat().st_size / 1e6,
            "loadavg_1min_before": load0,
            "loadavg_1min_after": os.getloadavg()[0],
        }
        print(f"[bench] {name}: {json.dumps(out[name])}", flush=True)
        del backend
    out["onnx_vs_torch_bare"] = out["torch"]["bare_forward_s"] / out["onnx"]["bare_forward_s"]
    out["onnx_vs_torch_end_to_end"] = out["torch"]["end_to_end_s"] / out["onnx"]["end_to_end_s"]
    return out


def measured_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` under a fresh intermediate process; its RUSAGE_CHILDREN peak RSS is
    the peak of ``cmd`` alone. ``cmd`` prints one JSON line last."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr[-3000:],"
        " 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    report = json.loads(proc.stdout)
    result = {"rc": report["rc"], "peak_rss_mb": report["maxrss_kb"] / 1024, "wall_s": wall}
    lines = [ln for ln in report["stdout"].splitlines() if ln.startswith("{")]
    if report["rc"] == 0 and lines:
        result.update(json.loads(lines[-1]))
    else:
        result["error"] = (report["stderr"] or report["stdout"])[-1500:]
    return result


# ------------------------------------------------------------------- child processes
def child_segment(args: argparse.Namespace) -> None:
    from core.segment.backends import load_backend
    from core.segment.engine import SegmentOptions, segment_with_backend

    backend, meta = load_backend(args.model, args.backend, "cpu")
    after_load = rss_mb()
    result = segment_with_backend(
        backend, meta, args.raster, args.out,
        SegmentOptions(tile_size=TILE, overlap=OVERLAP, batch_size=BATCH, backend=args.backend,
                       overwrite=True),
    )  # fmt: skip
    print(json.dumps({"after_load_rss_mb": after_load, "seconds": result.seconds,
                      "windows": result.windows}))  # fmt: skip


def child_geoai(args: argparse.Namespace) -> None:
    """Runs under the peer's interpreter: geoai-py's inference with our network."""
    # Import everything geoai needs before timing (geoai.utils pulls in leafmap, torchgeo,
    # ...: many seconds that are not inference).
    import geoai
    import geoai.utils  # noqa: F401
    import torch
    from geoai.inference import predict_geotiff
    from geoai.train import semantic_inference_on_geotiff

    from core.models.build import load_model

    model, _ = load_model(args.model, "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    after_load = rss_mb()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if args.child == "geoai-semantic":

        class TwoClass(torch.nn.Module):
            """softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]: geoai's 2-class path."""

            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                z = self.inner(x)
                return torch.cat([torch.zeros_like(z), z], dim=1)

        semantic_inference_on_geotiff(
            TwoClass(model), args.raster, str(Path(args.out) / "mask.tif"),
            window_size=TILE, overlap=OVERLAP, batch_size=BATCH, num_channels=4,
            num_classes=2, device=torch.device("cpu"),
            probability_path=str(Path(args.out) / "probability.tif"), quiet=True,
        )  # fmt: skip
    else:

        class Prob(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return torch.sigmoid(self.inner(x))

        predict_geotiff(
            Prob(model), args.raster, str(Path(args.out) / "probability.tif"),
            tile_size=TILE, overlap=OVERLAP, batch_size=BATCH, num_classes=1,
            blend_mode="cosine", device="cpu", verbose=False,
        )  # fmt: skip
    seconds = time.perf_counter() - t
    print(json.dumps({"after_load_rss_mb": after_load, "seconds": seconds,
                      "geoai_version": geoai.__version__}))  # fmt: skip


# -------------------------------------------------------------------------------- main
def machine() -> dict:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    mem = next(
        int(ln.split()[1]) // 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )  # fmt: skip
    import onnxruntime
    import torch

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_mb": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="run folder or model file; default: random Unet resnet34")
    p.add_argument("--size", type=int, default=8192, help="side of the throughput raster")
    p.add_argument("--memory-sizes", default="2048,10240", help="raster sides for peak RSS")
    p.add_argument("--memory-backends", default="torch,onnx", help="backends for peak RSS")
    p.add_argument("--work", default="/tmp/solarseg-bench", help="scratch folder")
    p.add_argument("--peer-python", default="/tmp/geoai-venv/bin/python",
                   help="interpreter with geoai-py installed (a throwaway venv)")  # fmt: skip
    p.add_argument("--peer-sizes", default="2048,8192", help="raster sides for the peer")
    p.add_argument("--skip", default="", help="comma list of: micro,throughput,memory,peer")
    p.add_argument("--doc", help="write the Markdown section here")
    p.add_argument("--json", help="write the results JSON here too (bench/estimate_coverage.py)")
    # children
    p.add_argument("--child", choices=("segment", "geoai-semantic", "geoai-predict"))
    p.add_argument("--raster")
    p.add_argument("--backend")
    p.add_argument("--out")
    args = p.parse_args(argv)

    if args.child == "segment":
        child_segment(args)
        return 0
    if args.child:
        child_geoai(args)
        return 0

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    results_path = work / "results.json"
    results: dict = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = machine()
    results["command"] = " ".join(
        [".venv/bin/python", "bench/segment_bench.py", *(argv or sys.argv[1:])]
    )
    model = Path(args.model) if args.model else default_model(work)
    results["model"] = str(model)
    from core.models.build import resolve_model_path
    from core.models.onnx_export import export_onnx

    model = resolve_model_path(model)
    onnx_path = work / (model.stem + ".onnx")
    export_onnx(model, onnx_path)

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))

    if "micro" not in skip:
        results["micro"] = micro(model, onnx_path)
        save()

    if "throughput" not in skip:
        raster = build_mosaic(args.size, work / f"mosaic_{args.size}.tif")
        results["throughput"] = {"raster": str(raster), "size": args.size,
                                 **throughput(model, onnx_path, raster, work)}  # fmt: skip
        save()

    if "memory" not in skip:
        memory = results.setdefault("memory", {})
        for size in [int(s) for s in args.memory_sizes.split(",")]:
            raster = build_mosaic(size, work / f"mosaic_{size}.tif")
            wanted = args.memory_backends.split(",")
            for name, path in (("torch", model), ("onnx", onnx_path)):
                if name not in wanted:
                    continue
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "segment",
                       "--raster", str(raster), "--model", str(path), "--backend", name,
                       "--out", str(work / f"mem_{name}_{size}")]  # fmt: skip
                memory[f"{name}_{size}"] = measured_child(cmd)
                print(f"[bench] memory {name} {size}: {memory[f'{name}_{size}']}", flush=True)
                save()
        sizes = [int(s) for s in args.memory_sizes.split(",")]
        for name in args.memory_backends.split(","):
            small, large = memory[f"{name}_{sizes[0]}"], memory[f"{name}_{sizes[-1]}"]
            memory[f"{name}_ratio"] = large["peak_rss_mb"] / small["peak_rss_mb"]
        save()

    if "peer" not in skip:
        peer = results.setdefault("peer", {})
        if not Path(args.peer_python).exists():
            peer["error"] = f"{args.peer_python} not found (geoai-py venv missing)"
        else:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            for size in [int(s) for s in args.peer_sizes.split(",")]:
                raster = build_mosaic(size, work / f"mosaic_{size}.tif")
                for fn in ("geoai-semantic", "geoai-predict"):
                    cmd = [args.peer_python, str(Path(__file__).resolve()), "--child", fn,
                           "--raster", str(raster), "--model", str(model),
                           "--out", str(work / f"peer_{fn}_{size}")]  # fmt: skip
                    peer[f"{fn}_{size}"] = measured_child(cmd, env)
                    print(f"[bench] peer {fn} {size}: {peer[f'{fn}_{size}']}", flush=True)
                    save()
    save()
    if args.doc:
        Path(args.doc).write_text(render(results))
    print(json.dumps(results, indent=2))
    return 0


def render(r: dict) -> str:
    """The Markdown section (numbers only; the analysis is written by hand below it)."""
    m = r["machine"]
    lines = [
        "## Whole-raster segmentation (issue 4)",
        "",
        f"- Command: `{r['command']}`",
        f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['mem_mb'] // 1024} GB RAM; "
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"onnxruntime {m['onnxruntime']}; {m['date']}",
        f"- Model: `{r['model']}`",
        f"- Windows {TILE} px, overlap {OVERLAP} px, batch {BATCH}; outputs probability.tif "
        "(float32) + mask.tif, no polygons.",
        "",
    ]
    t = r.get("throughput")
    if t:
        lines += [
            f"### Throughput on a {t['size']} x {t['size']} four-band raster "
            f"({t['torch']['area_km2']:.0f} km² at 5 m, {t['torch']['windows']} windows)",
            "",
            "| backend | end-to-end s | windows/s | km²/min | bare forward s | bare windows/s "
            "| overhead (goal <= 1.15) | load avg 1 min before / after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ("torch", "onnx"):
            b = t[name]
            lines.append(
                f"| {name} | {b['end_to_end_s']:.1f} | {b['windows_per_s']:.2f} | "
                f"{b['km2_per_minute']:.1f} | {b['bare_forward_s']:.1f} | "
                f"{b['bare_windows_per_s']:.2f} | {b['overhead']:.3f} | "
                f"{b['loadavg_1min_before']:.2f} / {b['loadavg_1min_after']:.2f} |"
            )
        lines += [
            "",
            f"ONNX Runtime vs PyTorch on the same windows (goal >= 1.7): "
            f"**{t['onnx_vs_torch_bare']:.2f}x** bare forward, "
            f"{t['onnx_vs_torch_end_to_end']:.2f}x end to end.",
            "",
        ]
    mc = r.get("micro")
    if mc:
        lines += [
            f"### Bare networks, one batch of {BATCH} tiles of 4 x {TILE} x {TILE} "
            "(median tiles/s, as in the environment notes)",
            "",
            "| PyTorch NCHW | PyTorch channels-last (TorchBackend) | ONNX Runtime "
            "| ORT / PyTorch NCHW | ORT / PyTorch channels-last |",
            "|---|---|---|---|---|",
            f"| {mc['torch_nchw']:.2f} | {mc['torch_channels_last']:.2f} | "
            f"{mc['onnxruntime']:.2f} | {mc['onnx_vs_torch_nchw']:.2f} | "
            f"{mc['onnx_vs_torch_channels_last']:.2f} |",
            "",
        ]
        if "gflop_per_tile" in mc:
            share = ", ".join(f"{op} {v:.1%}" for op, v in mc["ort_op_share"].items())
            peak = mc.get("peak_gflops")
            lines += [
                f"Compute ceiling: {mc['gflop_per_tile']:.1f} GFLOP per tile; PyTorch NCHW "
                f"{mc['torch_nchw_gflops']:.0f}, channels-last "
                f"{mc['torch_channels_last_gflops']:.0f}, ONNX Runtime "
                f"{mc['onnxruntime_gflops']:.0f} GFLOP/s"
                + (
                    f" ({mc['onnxruntime_gflops'] / peak:.0%} of the nominal FP32 peak, "
                    f"{peak:.0f} GFLOP/s at the clock /proc/cpuinfo reports; boost clocks "
                    "are higher)"
                    if peak
                    else ""
                )
                + f". ORT kernel time: {share}. ORT on 1 thread: {mc['ort_1_thread']:.2f} "
                f"tiles/s (2 threads / 1 = {mc['ort_thread_scaling']:.2f}).",
                "",
            ]
    mem = r.get("memory")
    if mem:
        lines += [
            "### Peak RSS against raster size (fresh child process per run)",
            "",
            "| backend | raster | peak RSS MB | RSS after loading the model MB | seconds |",
            "|---|---|---|---|---|",
        ]
        runs = sorted(
            (int(k.split("_")[1]), k.split("_")[0], v)
            for k, v in mem.items()
            if not k.endswith("_ratio")
        )
        for size, name, v in runs:
            lines.append(
                f"| {name} | {size} x {size} | {v['peak_rss_mb']:.0f} | "
                f"{v.get('after_load_rss_mb', float('nan')):.0f} | {v.get('seconds', float('nan')):.1f} |"
            )
        ratios = ", ".join(f"{k[:-6]} {v:.3f}" for k, v in mem.items() if k.endswith("_ratio"))
        lines += ["", f"Larger / smaller peak (goal <= 1.3): **{ratios}**.", ""]
    peer = r.get("peer")
    if peer:
        lines += ["### Peer: geoai-py on the same rasters and network", ""]
        if "error" in peer:
            lines.append(f"Not run: {peer['error']}")
        else:
            lines += [
                "| run | raster | seconds | peak RSS MB | RSS after loading MB |",
                "|---|---|---|---|---|",
            ]
            rows = []
            for key, v in peer.items():
                fn, size = key.rsplit("_", 1)
                rows.append((int(size), f"geoai-py {fn.removeprefix('geoai-')}", v))
                ours = (mem or {}).get(f"torch_{size}")
                if ours and fn == "geoai-semantic":
                    rows.append((int(size), "SolarSeg segment (torch)", ours))
            for size, label, v in sorted(rows, key=lambda row: (row[0], row[1])):
                if "error" in v:
                    lines.append(f"| {label} | {size} | failed: {v['error'][-200:]!r} | | |")
                    continue
                lines.append(
                    f"| {label} | {size} x {size} | {v['seconds']:.1f} | "
                    f"{v['peak_rss_mb']:.0f} | {v['after_load_rss_mb']:.0f} |"
                )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
