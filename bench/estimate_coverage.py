"""On paper (issue 12): workers x hours to segment Austria, the EU and Europe once at
10 m, from measured throughput.

    .venv/bin/python bench/estimate_coverage.py RESULTS.json [MORE.json ...]
        [--int8-ratio R] [--gpu WORK/gpu.json] [--resolution-m 10] [--upscale 1]
        [--workers 10,100,1000] [--area NAME=KM2 ...]

Measured figures, km²/min of one worker, come from the JSON the benchmarks write
(``--json PATH``, or the ``results.json`` in their work folder); the format is
recognised:

- ``bench/segment_bench.py``: ``throughput.torch`` / ``throughput.onnx`` (one process
  on this machine's cores, one large raster, end to end; no polygons);
- ``bench/segment_many.py``: ``results.local_1_worker`` (one Dask worker using this
  machine's cores: many small scenes with polygons and the merge, cluster start and
  model load included, so it is lower);
- ``bench/gpu_bench.py`` (``bench/gpu.sh``), also through ``--gpu``: one rate per run on
  one GPU (torch fp32/fp16/bf16, ONNX Runtime CUDA);
- ``bench/quantize.py``: ``speed.variants.<name>.median`` windows/s of a trained model
  (with its upscale, ``speed.upscale``) on a ``speed.size``² mosaic of the 10 m Sentinel-2
  scene: ORT fp32 and int8, torch bf16 and fp32, each a measured rate.

Arithmetic (:func:`rate_at`, :func:`worker_hours`):

- The network's work is per pixel, so a rate measured at ``p`` m per pixel covers
  ``(r / p)²`` times the km² at ``r`` m (``--resolution-m``, 10: Sentinel-2's R, G, B and
  NIR). A model with ``--upscale u`` runs ``u²`` times the pixels: a rate measured with
  a model of upscale ``m`` is multiplied by ``(m / u)²`` (segment_bench's and
  segment-many's model has upscale 1, quantize.py's trained model 4, as
  configs/rgbn.yaml; without ``--upscale`` every rate stays as measured).
- worker-hours = km² / (km²/min) / 60; hours on ``N`` workers = worker-hours / N
  (perfect scaling: scenes are independent; reading the imagery from storage and
  cloud-free compositing are not counted); workers for a day = ceil(worker-hours / 24).
- ``--int8-ratio R``: the CPU rates times ``R`` (the measured int8 / fp32 windows/s of
  the same raster and model), printed beside fp32.

Areas (each km² once; Sentinel-2 tiles overlap, a real tiling reads about 20 % more):
Austria 83,879 km²; the EU27 about 4,233,000 km²; Europe about 10,180,000 km², the
continent's usual figure including European Russia (to the Urals), whole area with
inland waters, so a slight over-estimate of land. ``--area NAME=KM2`` replaces or adds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

AREAS_KM2 = {
    "Austria": 83_879.0,
    "EU27": 4_233_000.0,
    "Europe (incl. European Russia)": 10_180_000.0,
}
#: Pixel size of ../shared/data/scenes/rgbn_haiti_5m.tif, every benchmark's raster;
#: used for results written before the benchmarks recorded it.
BENCH_PIXEL_M = 5.0
#: bench/quantize.py's mosaic: the Sentinel-2 scene (no georeferencing) at its 10 m.
QUANTIZE_PIXEL_M = 10.0
#: bench/quantize.py's variants: (backend, precision).
VARIANTS = {"ort_fp32": ("onnx", "fp32"), "ort_int8": ("onnx", "int8"),
            "torch_bf16_cl": ("torch", "bf16"), "torch_fp32_cl": ("torch", "fp32"),
            "ort_int8_qop": ("onnx", "int8 QOperator"), "ort_int8_pt": ("onnx", "int8 per-tensor")}  # fmt: skip


@dataclass(frozen=True)
class Rate:
    """km² per minute of one worker, measured at ``pixel_m`` metres per pixel."""

    label: str
    km2_per_min: float
    pixel_m: float
    kind: str = "cpu"  # cpu | gpu
    precision: str = "fp32"
    upscale: int = 1  # of the model the rate was measured with


def rate_at(
    km2_per_min: float, pixel_m: float, resolution_m: float, upscale: int = 1,
    measured_upscale: int = 1,
) -> float:  # fmt: skip
    """km²/min at ``resolution_m`` of a rate measured at ``pixel_m`` (same pixels per
    minute) with a model of upscale ``measured_upscale``, for a model that upscales its
    input ``upscale`` times per side."""
    if min(km2_per_min, pixel_m, resolution_m) <= 0 or min(upscale, measured_upscale) < 1:
        raise ValueError("rates, pixel sizes and the upscale must be positive")
    return km2_per_min * (resolution_m / pixel_m) ** 2 * (measured_upscale / upscale) ** 2


def worker_hours(area_km2: float, km2_per_min: float) -> float:
    return area_km2 / km2_per_min / 60.0


def workers_for(hours: float, work_hours: float) -> int:
    """Workers that finish ``work_hours`` of work within ``hours`` (at least 1)."""
    return max(1, math.ceil(work_hours / hours - 1e-9))


def _pixel_m(entry: dict) -> float:
    if entry.get("pixel_m"):
        return float(entry["pixel_m"])
    area = entry.get("area_km2", entry.get("km2"))
    if area and entry.get("pixels"):
        return math.sqrt(float(area) * 1e6 / float(entry["pixels"]))
    return BENCH_PIXEL_M


def rates_from(data: dict, source: str = "") -> list[Rate]:
    """The per-worker rates in one benchmark JSON (format recognised; see the module)."""
    where = f" [{source}]" if source else ""
    out: list[Rate] = []
    if "segment" in data and "runs" in data.get("segment", {}):  # gpu_bench.py
        machine = data.get("machine", {})
        kind = "gpu" if machine.get("gpus", 1) else "cpu"  # gpu_bench.py --device cpu: a check
        who = f"1 {kind.upper() if kind == 'gpu' else 'process'} ({machine.get('device', '?')})"
        for key, run in data["segment"]["runs"].items():
            if "km2_per_minute" in run:
                label = f"{who}, {key.replace('_', ' ')}{where}"
                out.append(Rate(label, float(run["km2_per_minute"]), _pixel_m(run), kind,
                                run.get("precision", "fp32")))  # fmt: skip
    elif "throughput" in data:  # segment_bench.py
        m = data.get("machine", {})
        machine = f"{m.get('nproc', '?')} cores" + (f", {m['cpu']}" if m.get("cpu") else "")
        for name in ("torch", "onnx"):
            run = data["throughput"].get(name)
            if run and "km2_per_minute" in run:
                label = f"1 process on the CPU ({machine}), {name} fp32{where}"
                out.append(Rate(label, float(run["km2_per_minute"]), _pixel_m(run)))
    elif "variants" in data.get("speed", {}):  # quantize.py
        speed = data["speed"]
        km2 = speed["size"] ** 2 * QUANTIZE_PIXEL_M**2 / 1e6
        machine = f"{data.get('cores', '?')} cores" + (
            f", {data['cpu']}" if data.get("cpu") else ""
        )
        for name, v in speed["variants"].items():
            backend, precision = VARIANTS.get(name, (name, "fp32"))
            rate = km2 / (speed["windows"] / v["median"]) * 60.0
            label = f"1 process on the CPU ({machine}), {backend} {precision}, trained model{where}"
            out.append(Rate(label, rate, QUANTIZE_PIXEL_M, "cpu", precision,
                            int(speed.get("upscale", 1))))  # fmt: skip
    elif "results" in data:  # segment_many.py
        run = data["results"].get("local_1_worker")
        if run and "km2_per_min" in run:
            label = (
                f"1 Dask worker on the machine ({data.get('machine', '?')}), segment-many{where}"
            )
            out.append(Rate(label, float(run["km2_per_min"]), _pixel_m(run)))
    if not out:
        raise ValueError(f"{source or 'JSON'}: no km²/min figures in a format this script knows")
    return out


def parse_area(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=KM2, got {text!r}")
    return name, float(value.replace(",", "").replace("_", ""))


def table(
    rates: list[Rate],
    areas: dict[str, float],
    resolution_m: float,
    upscale: int | None,
    workers: list[int],
    int8_ratio: float | None,
) -> list[str]:
    """The printed estimate: one block per rate (and per int8 variant of a CPU rate)."""
    rows: list[Rate] = []
    for r in rates:
        rows.append(r)
        if int8_ratio and r.kind == "cpu" and r.precision == "fp32":
            rows.append(replace(r, label=f"{r.label}, int8 (fp32 x {int8_ratio:g})",
                                km2_per_min=r.km2_per_min * int8_ratio, precision="int8"))  # fmt: skip
    name_w = max(len(a) for a in areas)
    lines = []
    for r in rows:
        up = r.upscale if upscale is None else upscale
        at = rate_at(r.km2_per_min, r.pixel_m, resolution_m, up, r.upscale)
        lines += [
            f"{r.label}",
            f"  {r.km2_per_min:,.1f} km²/min measured at {r.pixel_m:g} m"
            + (f" (upscale {r.upscale})" if r.upscale > 1 else "")
            + f" = {at:,.1f} km²/min at {resolution_m:g} m"
            + (f", upscale {up}" if up > 1 else ""),
            f"  {'area':<{name_w}} {'km²':>12} {'worker-h':>10}"
            + "".join(f" {f'h on {n}':>10}" for n in workers)
            + f" {'workers/24 h':>13}",
        ]
        for name, km2 in areas.items():
            wh = worker_hours(km2, at)
            lines.append(
                f"  {name:<{name_w}} {km2:>12,.0f} {wh:>10,.2f}"
                + "".join(f" {wh / n:>10,.2f}" for n in workers)
                + f" {workers_for(24.0, wh):>13,}"
            )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="*", type=Path, help="benchmark JSON files")
    p.add_argument("--gpu", type=Path, action="append", default=[], help="bench/gpu.sh's gpu.json")
    p.add_argument("--int8-ratio", type=float, default=None, help="int8 / fp32 speed, measured")
    p.add_argument("--resolution-m", type=float, default=10.0, help="pixel size to cover (m)")
    p.add_argument("--upscale", type=int, default=None,
                   help="the model's upscale factor (default: each rate's own)")  # fmt: skip
    p.add_argument("--workers", default="10,100,1000", help="worker counts for the hours columns")
    p.add_argument("--area", type=parse_area, action="append", default=[], metavar="NAME=KM2")
    args = p.parse_args(argv)
    if not args.results and not args.gpu:
        p.error("give at least one benchmark JSON (or --gpu)")
    if args.int8_ratio is not None and args.int8_ratio <= 0:
        p.error("--int8-ratio must be positive")
    rates: list[Rate] = []
    for path in [*args.results, *args.gpu]:
        try:
            rates += rates_from(json.loads(path.read_text()), path.name)
        except (OSError, ValueError) as exc:
            print(f"estimate_coverage: {exc}", file=sys.stderr)
            return 2
    areas = {**AREAS_KM2, **dict(args.area)}
    workers = [int(n) for n in args.workers.split(",") if n.strip()]
    print(
        f"Segmenting once at {args.resolution_m:g} m per pixel; a worker = what the rate was "
        "measured on; hours on N workers assume perfect scaling (independent scenes), no "
        "time for fetching imagery or compositing."
    )
    print(
        (
            "Each model as measured (its upscale in brackets)"
            if args.upscale is None
            else f"Every rate converted to a model of upscale {args.upscale}"
        )
        + " (segment_bench's and segment-many's model has upscale 1; a model trained with "
        "upscale u, e.g. configs/rgbn.yaml's 4, needs u² the time: --upscale)."
    )
    print("Areas: " + "; ".join(f"{n} {km2:,.0f} km²" for n, km2 in areas.items()) + ".")
    print()
    print("\n".join(table(rates, areas, args.resolution_m, args.upscale, workers,
                          args.int8_ratio)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
