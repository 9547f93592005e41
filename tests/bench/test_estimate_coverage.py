"""bench/estimate_coverage.py: the arithmetic of the on-paper estimate and the three
benchmark JSON formats it reads (no benchmark is run)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def ec():
    path = REPO / "bench" / "estimate_coverage.py"
    spec = importlib.util.spec_from_file_location("estimate_coverage", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("estimate_coverage", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SEGMENT_BENCH = {  # bench/segment_bench.py's results.json (figures of docs/benchmarks.md)
    "machine": {"nproc": 2, "cpu": "AMD EPYC"},
    "throughput": {
        "torch": {"km2_per_minute": 541.0, "pixels": 8192**2, "area_km2": 8192**2 * 25 / 1e6},
        "onnx": {"km2_per_minute": 624.0, "pixels": 8192**2, "area_km2": 8192**2 * 25 / 1e6},
    },
}
SEGMENT_MANY = {"machine": "x86_64, 2 cores", "results": {
    "local_1_worker": {"km2_per_min": 14.7, "km2": 16.8},  # before pixels were recorded
    "local_2_workers": {"km2_per_min": 12.2, "km2": 16.8}}}  # fmt: skip
QUANTIZE = {"cpu": "AMD EPYC", "cores": 2, "speed": {"size": 1024, "windows": 25, "upscale": 4,
    "variants": {"ort_fp32": {"median": 1.048}, "ort_int8": {"median": 2.185}}}}  # fmt: skip
GPU = {"machine": {"device": "NVIDIA A10G"}, "segment": {"runs": {
    "torch_fp16": {"km2_per_minute": 12000.0, "pixel_m": 5.0, "precision": "fp16"},
    "onnx_fp32": {"skipped": "no CUDAExecutionProvider"}}}}  # fmt: skip


def test_rate_scales_with_pixel_area_and_upscale(ec):
    assert ec.rate_at(624.0, 5.0, 10.0) == pytest.approx(2496.0)  # 4x the km² per pixel
    assert ec.rate_at(624.0, 10.0, 10.0) == 624.0
    assert ec.rate_at(624.0, 5.0, 10.0, upscale=4) == pytest.approx(2496.0 / 16)
    # measured with an upscale-4 model: as it is for upscale 4, 16x for upscale 1
    assert ec.rate_at(100.0, 10.0, 10.0, 4, measured_upscale=4) == 100.0
    assert ec.rate_at(100.0, 10.0, 10.0, 1, measured_upscale=4) == pytest.approx(1600.0)
    with pytest.raises(ValueError):
        ec.rate_at(0.0, 5.0, 10.0)


def test_worker_hours_and_workers_for_a_day(ec):
    assert ec.worker_hours(84_000, 100.0) == pytest.approx(14.0)  # 840 min
    wh = ec.worker_hours(10_180_000, 2496.0)
    assert wh == pytest.approx(10_180_000 / 2496.0 / 60)  # about 68 worker-hours
    assert ec.workers_for(24.0, wh) == math.ceil(wh / 24) == 3
    assert ec.workers_for(24.0, 48.0) == 2  # exactly two days of work: 2 workers
    assert ec.workers_for(24.0, 0.5) == 1


def test_reads_the_three_benchmark_formats(ec):
    cpu = ec.rates_from(SEGMENT_BENCH)
    assert [r.km2_per_min for r in cpu] == [541.0, 624.0]
    assert all(r.pixel_m == pytest.approx(5.0) and r.kind == "cpu" for r in cpu)
    (many,) = ec.rates_from(SEGMENT_MANY)  # one worker = the whole machine
    assert many.km2_per_min == 14.7 and many.pixel_m == ec.BENCH_PIXEL_M
    (gpu,) = ec.rates_from(GPU)  # skipped runs give no rate
    assert gpu.kind == "gpu" and gpu.precision == "fp16" and "A10G" in gpu.label
    fp32, int8 = ec.rates_from(QUANTIZE)  # 1024² px at 10 m = 104.86 km² per 25 windows
    assert fp32.km2_per_min == pytest.approx(104.8576 / (25 / 1.048) * 60)
    assert (fp32.precision, int8.precision, int8.upscale) == ("fp32", "int8", 4)
    assert int8.km2_per_min / fp32.km2_per_min == pytest.approx(2.185 / 1.048)
    with pytest.raises(ValueError, match="no km²/min"):
        ec.rates_from({"something": "else"})


def test_printed_estimate(ec, tmp_path, capsys):
    bench = tmp_path / "results.json"
    bench.write_text(json.dumps(SEGMENT_BENCH))
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps(GPU))
    assert ec.main([str(bench), "--gpu", str(gpu), "--int8-ratio", "2", "--workers", "1,10"]) == 0
    out = capsys.readouterr().out
    assert "Austria 83,879 km²" in out and "EU27 4,233,000 km²" in out
    assert "Europe (incl. European Russia) 10,180,000 km²" in out
    # onnx fp32: 624 km²/min at 5 m -> 2,496 at 10 m; Austria 83,879 / 2,496 / 60 = 0.56 h
    assert "624.0 km²/min measured at 5 m = 2,496.0 km²/min at 10 m" in out
    block = out[out.index("onnx fp32 [results.json]\n") :]
    austria = next(line for line in block.splitlines() if line.strip().startswith("Austria"))
    assert austria.split()[1:5] == ["83,879", "0.56", "0.56", "0.06"]
    # int8 doubles the CPU rates only; the GPU row stays as measured
    assert "onnx fp32 [results.json], int8 (fp32 x 2)" in out
    assert "1,248.0 km²/min measured at 5 m" in out
    assert "int8" not in out[out.index("1 GPU") :]
    assert "12,000.0 km²/min measured at 5 m = 48,000.0 km²/min at 10 m" in out


def test_area_override_and_bad_input(ec, tmp_path, capsys):
    bench = tmp_path / "r.json"
    bench.write_text(json.dumps(SEGMENT_BENCH))
    assert ec.main([str(bench), "--area", "Tyrol=12,648", "--area", "Austria=84000"]) == 0
    out = capsys.readouterr().out
    assert "Tyrol 12,648 km²" in out and "Austria 84,000 km²" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert ec.main([str(bad)]) == 2
    assert "no km²/min figures" in capsys.readouterr().err
