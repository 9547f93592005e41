"""Benchmark on one NVIDIA GPU (issue 12, section 4): training tiles/s and segmentation
km²/min with this repository's ``.venv``; nothing is installed. Start it with
``bench/gpu.sh``, which first checks that the machine has a GPU at all.

    bench/gpu.sh [WORK_DIR]          # WORK_DIR default: ${TMPDIR:-/tmp}/solarseg-gpu
    .venv/bin/python bench/gpu_bench.py --work DIR [--budget-s 270] [--size 8192]

1. **Training**: ``configs/rgbn.yaml`` (Unet resnet18, bands 4,3,2,8, upscale 4, 96 px
   crops) on ``../shared/data/solafune-s2-pv`` for 2 epochs on ``cuda``, with
   ``train.precision=auto`` (on CUDA: fp16 autocast with a gradient scaler,
   ``train.amp``; ``--train-precision bf16|fp32`` to force another), batch 32, 2 data
   loader processes (``data.num_workers``), no time budget of the config's own
   (``train.max_minutes`` is set from ``--budget-s``).
   *Tiles/s*: epoch 2's training steps after its first (data loading, forward,
   backward and optimiser step; validation excluded), batch size x steps / seconds.
2. **Segmentation** of the benchmark raster of ``docs/benchmarks_segment.md``: the
   ``--size``² mosaic of ``../shared/data/scenes/rgbn_haiti_5m.tif`` (8,192² = 1,678 km²
   at 5 m) with the same random-init Unet resnet34 (tile 256, overlap 64), built in
   ``--work`` by ``bench/segment_bench.py``'s own functions. End to end
   (``segment_with_backend``, model loaded and warmed up: read, normalise, predict,
   blend, write probability.tif and mask.tif) with torch on CUDA in fp32, fp16
   autocast and bf16 autocast (GPUs with native bf16), and with ONNX Runtime's CUDA
   execution provider when onnxruntime-gpu is installed (else noted as skipped).
3. Prints the device, tiles/s and km²/min, and writes ``WORK/gpu.json`` (its ``rates``
   are what ``bench/estimate_coverage.py --gpu`` reads).

``--device cpu`` (with a small ``--size`` and ``--train-limit``) runs the same code on
the CPU, to check this script on a machine without a GPU; its figures are no GPU's.

**Budget**: the whole run is meant to end within ``--budget-s`` (default 270 s, so that
``gpu.sh`` ends within 5 minutes): training gets at most 40 % of it, and a
segmentation run that would end past it (judged by the previous run's time) is skipped
and reported as such. The mosaic and the model are kept in ``--work`` for a second run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = (REPO / ".." / "shared" / "data" / "solafune-s2-pv").resolve()
CONFIG = REPO / "configs" / "rgbn.yaml"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PREFIX = "bench/gpu.sh:"


def fail(message: str) -> int:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)
    return 1


def say(message: str) -> None:
    print(message, flush=True)


def cuda_problem() -> str | None:
    """Why torch in this Python cannot use a GPU (None when it can). Imports torch only."""
    import torch

    build = torch.version.cuda
    if not build:
        return f"torch {torch.__version__} in {sys.prefix} is a CPU build (no CUDA)"
    if not torch.cuda.is_available():
        return (
            f"torch {torch.__version__} (CUDA {build}) in {sys.prefix} sees no CUDA GPU "
            "(driver older than its CUDA, or CUDA_VISIBLE_DEVICES empty?)"
        )
    return None


def native_bf16() -> bool:
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no emulation flag
        return torch.cuda.get_device_capability()[0] >= 8


def device_info(device: str) -> dict:
    import onnxruntime as ort
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "device": torch.cuda.get_device_name(0),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "memory_gb": round(props.total_memory / 1e9, 1),
            "gpus": torch.cuda.device_count(),
            "native_bf16": native_bf16(),
        }
    else:  # checking the script without a GPU
        gpu = {"device": f"CPU ({platform.machine()}, not a GPU)", "capability": "-",
               "memory_gb": 0, "gpus": 0, "native_bf16": True}  # fmt: skip
    return {
        **gpu,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------- training
def train_overrides(
    work: Path, device: str, precision: str, batch: int, minutes: float, limit: int, loaders: int
) -> list[str]:
    return [f"data.path={DATASET}", f"out_dir={work / 'runs'}", "name=gpu", "train.epochs=2",
            f"train.device={device}", f"train.precision={precision}",
            f"train.batch_size={batch}", "train.threads=null",
            f"train.max_minutes={minutes:.2f}", "train.early_stop.enabled=false",
            f"data.num_workers={loaders}",
            *([f"data.limit={limit}"] if limit else [])]  # fmt: skip


def steady_tiles_per_s(stamps: dict[int, list[tuple[int, float]]], batch: int) -> dict:
    """Tiles/s of the last epoch with at least 3 batch reports: batch size x (steps after
    the first) / seconds from the first step's report to the last's."""
    for epoch in sorted(stamps, reverse=True):
        rows = stamps[epoch]
        if len(rows) >= 3:
            steps = rows[-1][0] - rows[0][0]
            seconds = rows[-1][1] - rows[0][1]
            return {"epoch": epoch, "steps": steps, "seconds": seconds,
                    "tiles_per_s": batch * steps / seconds}  # fmt: skip
    return {"epoch": None, "steps": 0, "seconds": 0.0, "tiles_per_s": float("nan")}


def run_training(args: argparse.Namespace, minutes: float) -> dict:
    from core.config import load_config
    from core.training.loop import train

    overrides = train_overrides(args.work, args.device, args.train_precision, args.train_batch,
                                minutes, args.train_limit, args.train_workers)  # fmt: skip
    say(
        f"training: .venv/bin/python -m core train --config configs/rgbn.yaml {' '.join(overrides)}"
    )
    cfg = load_config(CONFIG, overrides)
    stamps: dict[int, list[tuple[int, float]]] = {}

    def progress(p) -> None:
        info = p.info
        if p.stage == "train" and "batch" in info and "history_row" not in info:
            stamps.setdefault(info["epoch"], []).append((info["batch"], time.perf_counter()))
        if "history_row" in info:
            row = info["history_row"]
            say(f"  epoch {row['epoch']}: {row['seconds']:.1f} s (incl. validation), "
                f"train loss {row['train_loss']:.4f}, val IoU {row['val_iou']:.4f}")  # fmt: skip

    t0 = time.perf_counter()
    result = train(cfg, progress)
    wall = time.perf_counter() - t0
    rate = steady_tiles_per_s(stamps, cfg.train.batch_size)
    history = (result.run_dir / "history.csv").read_text().splitlines()
    out = {
        "config": "configs/rgbn.yaml",
        "overrides": overrides,
        "run_dir": str(result.run_dir),
        "status": result.status,
        "epochs": len(history) - 1,
        "precision": result.precision,
        "memory_format": result.memory_format,
        "device": result.device,
        "batch_size": cfg.train.batch_size,
        "wall_s": wall,
        "test_iou": result.metrics.get("test", {}).get("iou"),
        **{f"steady_{k}": v for k, v in rate.items()},
        "tiles_per_s": rate["tiles_per_s"],
    }
    del result
    empty_cache(args.device)
    return out


def empty_cache(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------ segmentation
def segment_runs(
    bf16: bool, providers: list[str], device: str = "cuda"
) -> list[tuple[str, str, str | None]]:
    """(backend, precision, reason skipped or None) in the order they run."""
    runs = [("torch", "fp32", None)]
    runs.append(("torch", "fp16", None if device == "cuda" else "fp16 runs on CUDA only"))
    runs.append(("torch", "bf16", None if bf16 else "no native bf16 on this GPU"))
    cuda_ep = "CUDAExecutionProvider" in providers or device == "cpu"
    runs.append(("onnx", "fp32", None if cuda_ep else
                 "ONNX Runtime has no CUDAExecutionProvider (onnxruntime-gpu not installed)"))  # fmt: skip
    return runs


def run_segmentation(args: argparse.Namespace, deadline: float, info: dict) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from segment_bench import OVERLAP, TILE, build_mosaic, default_model

    from core.segment.backends import load_backend
    from core.segment.engine import SegmentOptions, segment_with_backend

    work, size, batch, device = args.work, args.size, args.segment_batch, args.device
    t = time.perf_counter()
    raster = build_mosaic(size, work / f"mosaic_{size}.tif")
    model = default_model(work)
    say(f"segmentation: {raster.name} ({size} x {size} px, 5 m), random-init Unet resnet34 "
        f"({time.perf_counter() - t:.0f} s to build or find them)")  # fmt: skip
    out: dict = {"raster": str(raster), "size": size, "model": str(model), "tile": TILE,
                 "overlap": OVERLAP, "batch_size": batch, "runs": {}}  # fmt: skip
    last_s = 60.0  # a first guess for the budget check
    for backend_name, precision, skipped in segment_runs(
        info["native_bf16"], info["onnxruntime_providers"], device
    ):
        key = f"{backend_name}_{precision}"
        if skipped is None and time.monotonic() + last_s > deadline:
            skipped = "not run: it would end past the time budget"
        if skipped:
            out["runs"][key] = {"skipped": skipped}
            say(f"  {key:<11} skipped: {skipped}")
            continue
        t = time.perf_counter()
        backend, meta = load_backend(model, backend_name, device, precision=precision)
        load_s = time.perf_counter() - t
        backend.predict(np.zeros((batch, 4, TILE, TILE), np.float32))  # warm-up (cuDNN)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        dest = work / f"out_{key}"
        shutil.rmtree(dest, ignore_errors=True)
        options = SegmentOptions(tile_size=TILE, overlap=OVERLAP, batch_size=batch,
                                 backend=backend_name, device=device, precision=precision)  # fmt: skip
        result = segment_with_backend(backend, meta, raster, dest, options)
        last_s = result.seconds + load_s
        providers_used = getattr(backend, "providers", None)
        out["runs"][key] = {
            "backend": backend_name,
            "precision": precision,
            "providers": providers_used,
            "load_s": load_s,
            "seconds": result.seconds,
            "windows": result.windows,
            "windows_per_s": result.windows / result.seconds,
            "pixels": result.pixels,
            "area_km2": result.area_km2,
            "pixel_m": (result.area_km2 * 1e6 / result.pixels) ** 0.5,
            "km2_per_minute": result.km2_per_minute,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0,
        }
        say(f"  {key:<11} {result.seconds:6.1f} s  {result.windows / result.seconds:7.1f} "
            f"windows/s  {result.km2_per_minute:8.0f} km²/min")  # fmt: skip
        shutil.rmtree(dest, ignore_errors=True)  # 0.3 GB of outputs per run
        del backend
        empty_cache(device)
    return out


def rates(info: dict, seg: dict) -> list[dict]:
    """The figures ``bench/estimate_coverage.py`` reads: km²/min of one GPU per run."""
    out = []
    gpu = info["gpus"] > 0  # else a --device cpu check of this script
    for key, run in seg.get("runs", {}).items():
        if "km2_per_minute" in run:
            who = f"1 GPU ({info['device']})" if gpu else f"1 process ({info['device']})"
            out.append({"label": f"{who}, {key.replace('_', ' ')}",
                        "km2_per_min": run["km2_per_minute"], "pixel_m": run["pixel_m"],
                        "kind": "gpu" if gpu else "cpu", "precision": run["precision"]})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (created)")
    p.add_argument("--budget-s", type=float, default=270.0, help="wall-time budget")
    p.add_argument("--size", type=int, default=8192, help="side of the benchmark raster")
    p.add_argument("--train-precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--segment-batch", type=int, default=32)
    p.add_argument("--train-limit", type=int, default=0, help="data.limit (0: every tile)")
    p.add_argument("--train-workers", type=int, default=2, help="data.num_workers (loaders)")
    p.add_argument("--skip", default="", help="comma list of: train,segment")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: check this script without a GPU (not a benchmark)")  # fmt: skip
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*no geotransform.*")  # as the CLI does
    warnings.filterwarnings("ignore", message="tiles without a CRS")
    start = time.monotonic()
    deadline = start + args.budget_s

    # Checks first: nothing is written when this Python cannot use the GPU.
    problem = cuda_problem() if args.device == "cuda" else None
    if problem:
        return fail(problem)
    if not DATASET.is_dir():
        return fail(f"dataset not found: {DATASET} (../shared/data beside the repository)")
    args.work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    info = device_info(args.device)
    say(f"device: {info['device']} (compute {info['capability']}, {info['memory_gb']} GB, "
        f"{info['gpus']} GPU(s)); torch {info['torch']} CUDA {info['torch_cuda']}, cuDNN "
        f"{info['cudnn']}; onnxruntime {info['onnxruntime']} "
        f"({', '.join(info['onnxruntime_providers'])})")  # fmt: skip
    report: dict = {"machine": info, "command": "bench/gpu.sh", "budget_s": args.budget_s}
    path = args.work / "gpu.json"

    def save() -> None:
        report["rates"] = rates(info, report.get("segment", {}))
        report["seconds"] = time.monotonic() - start
        path.write_text(json.dumps(report, indent=2) + "\n")

    if "train" not in skip:
        minutes = 0.4 * args.budget_s / 60
        report["train"] = run_training(args, minutes)
        save()
    if "segment" not in skip:
        report["segment"] = run_segmentation(args, deadline, info)
        save()
    save()

    say("")
    say(f"device             {info['device']}")
    tr = report.get("train")
    if tr:
        say(f"training           {tr['tiles_per_s']:.1f} tiles/s ({tr['precision']}, batch "
            f"{tr['batch_size']}, epoch {tr['steady_epoch']}, {tr['epochs']} epochs in "
            f"{tr['wall_s']:.0f} s incl. evaluation)")  # fmt: skip
    for key, run in report.get("segment", {}).get("runs", {}).items():
        if "km2_per_minute" in run:
            say(f"segment {key:<11} {run['km2_per_minute']:.0f} km²/min "
                f"({run['windows_per_s']:.1f} windows/s, {run['area_km2']:.0f} km² in "
                f"{run['seconds']:.1f} s)")  # fmt: skip
        else:
            say(f"segment {key:<11} skipped: {run['skipped']}")
    say(f"total              {time.monotonic() - start:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
