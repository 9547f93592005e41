"""int8 and bf16 inference against fp32 (issue 12, part 3): speed end to end on one
raster, and test IoU on the model's seed-42 test split, fp32 and int8 side by side.

    .venv/bin/python bench/quantize.py --model RUN_OR_MODEL.pt [--size 1024] [--rounds 3]
        [--variants ort_fp32,ort_int8,torch_bf16_cl,torch_fp32_cl] [--tile N]
        [--calibration-tiles 64] [--no-accuracy] [--tta/--no-tta]
        [--work /tmp/solarseg-quantize] [--json FILE]

Speed. The raster is a ``--size`` x ``--size`` mosaic of the real Sentinel-2 scene
``../shared/data/scenes/sentinel2_b2b3b4b8_300px.tif`` (B02, B03, B04, B08; uint16
reflectance, as the Solafune tiles) and its mirror images, built in ``--work``, segmented
with bands 3,2,1,4 (R, G, B, NIR in the model's order) and the model's tile and overlap
(``--tile`` to change). Every variant's backend is loaded once, beforehand (for int8:
the quantisation, cached in ``--work``); then each round runs every variant once, in
the order given, through ``segment_with_backend`` (reading, normalising, upscaling,
predicting, blending, writing probability.tif and mask.tif): windows/s end to end,
model load excluded. Reported: the median over rounds per variant, its ratio to
``ort_fp32``'s median and the median of the same-round ratios (robust to load that
drifts between rounds), and the load average before and after.

Variants: ``ort_fp32`` (the fp32 ONNX export on ONNX Runtime), ``ort_int8`` (the
engine's int8: QDQ, per-channel weights, float tail), ``torch_bf16_cl`` (bf16 autocast,
channels-last), ``torch_fp32_cl`` (fp32, channels-last: the torch backend's CPU
default), and, to compare quantisation recipes, ``ort_int8_qop`` (QOperator format)
and ``ort_int8_pt`` (per-tensor weights).

Accuracy (unless ``--no-accuracy``): the model's test split (reproduced and checked
against the model file, as ``evaluate`` does) predicted by fp32 PyTorch and by the
int8 graph (``--tta``: as the model was trained), scored at the model's threshold;
IoU, F1 and the maximum and mean |int8 - fp32| probability over every valid pixel,
and the IoU of the int8 mask against the fp32 mask.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.segment_bench import build_mosaic  # noqa: E402
from bench.train_throughput import cpu_model  # noqa: E402

SCENE = (REPO / ".." / "shared" / "data" / "scenes" / "sentinel2_b2b3b4b8_300px.tif").resolve()
SCENE_BANDS = [3, 2, 1, 4]  # B04, B03, B02, B08 of the scene -> the model's R, G, B, NIR
DEFAULT_VARIANTS = ("ort_fp32", "ort_int8", "torch_bf16_cl", "torch_fp32_cl")
ALL_VARIANTS = DEFAULT_VARIANTS + ("ort_int8_qop", "ort_int8_pt")
BASE = "ort_fp32"


def load_variant(name: str, model: Path, work: Path, calibration_tiles: int):
    """(backend, meta, seconds to load) of a variant."""
    from core.models.quantize import QuantSettings
    from core.segment.backends import OnnxBackend, TorchBackend, load_backend
    from core.segment.int8 import int8_model

    t0 = time.perf_counter()
    if name == "ort_fp32":
        backend, meta = load_backend(model, "onnx", "cpu")
    elif name.startswith("ort_int8"):
        settings = {
            "ort_int8": QuantSettings(),
            "ort_int8_qop": QuantSettings(quant_format="qoperator"),
            "ort_int8_pt": QuantSettings(per_channel=False),
        }[name]
        path = int8_model(model, tiles=calibration_tiles, cache=work / "int8", settings=settings)
        backend = OnnxBackend(path, device="cpu")
        meta = backend.meta
    else:
        from core.models.build import load_model

        net, meta = load_model(model, "cpu")
        precision = "bf16" if name == "torch_bf16_cl" else "fp32"
        backend = TorchBackend(net, "cpu", precision=precision, channels_last=True)
    return backend, meta, time.perf_counter() - t0


def speed(args, model: Path, work: Path) -> dict:
    from core.segment.engine import SegmentOptions, segment_with_backend

    raster = build_mosaic(args.size, work / f"s2_mosaic_{args.size}.tif", SCENE)
    loaded = {}
    for name in args.variants:
        backend, meta, seconds = load_variant(name, model, work, args.calibration_tiles)
        loaded[name] = (backend, meta)
        print(f"loaded {name} in {seconds:.1f} s ({getattr(backend, 'precision', '?')})",
              flush=True)  # fmt: skip
    overlap = args.overlap if args.overlap is not None or not args.tile else args.tile // 4
    options = SegmentOptions(bands=SCENE_BANDS, tile_size=args.tile, overlap=overlap,
                             batch_size=args.batch_size, overwrite=True)  # fmt: skip
    # Warm-up: one untimed pass each (first-run allocations, oneDNN kernel selection).
    for name, (backend, meta) in loaded.items():
        segment_with_backend(backend, meta, raster, work / "out" / name, options)
    rates: dict[str, list[float]] = {name: [] for name in loaded}
    windows = 0
    for r in range(args.rounds):
        for name, (backend, meta) in loaded.items():
            result = segment_with_backend(backend, meta, raster, work / "out" / name, options)
            windows = result.windows
            rates[name].append(result.windows / result.timings["total_s"])
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rates.items()),
              flush=True)  # fmt: skip
    base = rates.get(BASE)
    rows = {}
    for name, values in rates.items():
        row = {"windows_per_s": values, "median": statistics.median(values)}
        if base:
            row["x_ort_fp32"] = row["median"] / statistics.median(base)
            row["same_round_x"] = statistics.median(
                v / b for v, b in zip(values, base, strict=True)
            )
        rows[name] = row
    meta = next(iter(loaded.values()))[1]
    return {
        "raster": str(raster), "size": args.size, "windows": windows,
        "tile": args.tile or meta.tile_size, "overlap": meta.overlap if overlap is None
        else overlap, "upscale": meta.upscale, "variants": rows,
    }  # fmt: skip


def accuracy(args, model: Path, work: Path) -> dict:
    from core.evaluation.evaluate import config_of_model, predict_split
    from core.evaluation.scoring import evaluate_predictions

    os.environ.setdefault("SOLARSEG_CACHE_DIR", str(work))  # int8_model's cache: work/int8
    out = {}
    preds = {}
    for precision in ("fp32", "int8"):
        t0 = time.perf_counter()
        meta, preds[precision] = predict_split(
            model, None, "test", tta=args.tta, device="cpu", precision=precision,
            calibration_tiles=args.calibration_tiles,
        )  # fmt: skip
        skip = config_of_model(meta).data.skip_blank_in_metrics
        m = evaluate_predictions(preds[precision], meta.threshold, skip).metrics
        out[precision] = {k: m[k] for k in ("iou", "f1", "precision", "recall", "tp", "fp", "fn")}
        out[precision]["seconds"] = time.perf_counter() - t0
        print(f"test split, {precision}: IoU {m['iou']:.4f} F1 {m['f1']:.4f} "
              f"({len(preds[precision])} tiles, {out[precision]['seconds']:.0f} s)", flush=True)  # fmt: skip
    diffs, inter, union = [], 0, 0
    for a, b in zip(preds["fp32"], preds["int8"], strict=True):
        v = a.valid
        diffs.append(np.abs(a.prob - b.prob)[v])
        ma, mb = a.prob[v] >= meta.threshold, b.prob[v] >= meta.threshold
        inter, union = inter + int((ma & mb).sum()), union + int((ma | mb).sum())
    d = np.concatenate(diffs)
    out["tiles"] = len(preds["fp32"])
    out["threshold"] = meta.threshold
    out["tta"] = args.tta if args.tta is not None else config_of_model(meta).train.tta
    out["iou_difference"] = out["int8"]["iou"] - out["fp32"]["iou"]
    out["max_prob_diff"] = float(d.max())
    out["mean_prob_diff"] = float(d.mean())
    out["mask_iou_int8_vs_fp32"] = inter / union if union else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="run folder or model file (.pt)")
    p.add_argument("--size", type=int, default=1024, help="mosaic side in pixels")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, of {', '.join(ALL_VARIANTS)}")  # fmt: skip
    p.add_argument("--tile", type=int, default=None, help="window side (default: the model's)")
    p.add_argument("--overlap", type=int, default=None,
                   help="default: the model's, or a quarter of --tile")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--calibration-tiles", type=int, default=64)
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    p.add_argument("--no-speed", dest="speed", action="store_false")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="accuracy: flip TTA (default: as the model was trained)")  # fmt: skip
    p.add_argument("--work", type=Path, default=Path("/tmp/solarseg-quantize"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from core.data.tiles import NoCRSWarning

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the scene has no CRS
    warnings.simplefilter("ignore", NoCRSWarning)  # nor the Solafune tiles
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(ALL_VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {ALL_VARIANTS}")
    import onnxruntime
    import torch

    from core.models.meta import resolve_model_path
    from core.models.precision import cpu_bf16_support, cpu_flags

    model = resolve_model_path(args.model)
    args.work.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": str(model), "cpu": cpu_model(), "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags, "native_bf16": cpu_bf16_support(flags=flags),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__, "load_before": os.getloadavg(),
    }  # fmt: skip
    print(f"{report['cpu']}, {report['cores']} cores, VNNI {report['avx512_vnni']}, native "
          f"bf16 {report['native_bf16']}; load {report['load_before']}", flush=True)  # fmt: skip
    if args.speed:
        report["speed"] = speed(args, model, args.work)
    report["load_after_speed"] = os.getloadavg()
    if args.accuracy:
        report["accuracy"] = accuracy(args, model, args.work)
    report["load_after"] = os.getloadavg()
    if "speed" in report:
        s = report["speed"]
        print(f"\n{s['size']}² mosaic, {s['windows']} windows of {s['tile']} px (x{s['upscale']}"
              f" upscale), {args.rounds} interleaved rounds")  # fmt: skip
        print("| variant | windows/s (median) | x ort_fp32 | same-round x |\n|---|---|---|---|")
        for name, row in s["variants"].items():
            print(f"| {name} | {row['median']:.3f} | {row.get('x_ort_fp32', float('nan')):.2f} "
                  f"| {row.get('same_round_x', float('nan')):.2f} |")  # fmt: skip
    if "accuracy" in report:
        a = report["accuracy"]
        print(f"\ntest split ({a['tiles']} tiles, threshold {a['threshold']}, TTA {a['tta']}): "
              f"IoU fp32 {a['fp32']['iou']:.4f} | int8 {a['int8']['iou']:.4f} "
              f"(int8 - fp32 {a['iou_difference']:+.4f}); F1 {a['fp32']['f1']:.4f} | "
              f"{a['int8']['f1']:.4f}; |prob diff| max {a['max_prob_diff']:.4f} mean "
              f"{a['mean_prob_diff']:.5f}; int8 mask IoU vs fp32 {a['mask_iou_int8_vs_fp32']:.4f}")  # fmt: skip
    print(f"load average: before {report['load_before']}, after speed "
          f"{report['load_after_speed']}, after {report['load_after']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
