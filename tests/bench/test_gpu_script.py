"""bench/gpu.sh without a GPU: one clear line on stderr, a non-zero exit, nothing
written, in seconds (only bash builtins run before nvidia-smi is found; with a GPU that
torch cannot see, only torch is imported). And bench/gpu_bench.py's choice of runs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu.sh"


def load_gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "bench" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_bench", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                          capture_output=True, text=True).stdout  # fmt: skip


@pytest.fixture
def sandbox(tmp_path):
    """A PATH folder for a fake nvidia-smi, an empty TMPDIR and an empty cwd."""
    dirs = {name: tmp_path / name for name in ("bin", "tmp", "cwd")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def run(sandbox, path: str, **env) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k not in ("PATH", "TMPDIR", "PY")}
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)], cwd=sandbox["cwd"], capture_output=True, text=True,
        timeout=120, env={**keep, "PATH": path, "TMPDIR": str(sandbox["tmp"]), **env},
    )  # fmt: skip


def assert_nothing_written(sandbox, before: str) -> None:
    assert list(sandbox["tmp"].iterdir()) == [] and list(sandbox["cwd"].iterdir()) == []
    assert git_status() == before


def fake_nvidia_smi(sandbox, body: str) -> None:
    fake = sandbox["bin"] / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)


def test_no_nvidia_smi_stops_at_once_with_one_line(sandbox):
    before = git_status()
    out = run(sandbox, str(sandbox["bin"]))  # nothing on PATH: not even coreutils
    assert out.returncode == 1
    assert out.stderr == "bench/gpu.sh: no NVIDIA GPU (nvidia-smi not found)\n"
    assert out.stdout == ""
    assert_nothing_written(sandbox, before)


def test_nvidia_smi_without_a_driver(sandbox):
    fake_nvidia_smi(sandbox, "echo \"NVIDIA-SMI has failed because it couldn't communicate "
                             "with the NVIDIA driver.\"\nexit 9")  # fmt: skip
    before = git_status()
    out = run(sandbox, str(sandbox["bin"]))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (
        "bench/gpu.sh: no NVIDIA GPU (nvidia-smi: NVIDIA-SMI has failed because it couldn't "
        "communicate with the NVIDIA driver.)\n"
    )
    assert_nothing_written(sandbox, before)


def test_a_gpu_that_torch_cannot_use_is_one_line_too(sandbox):
    """nvidia-smi lists a GPU but torch sees none (CUDA_VISIBLE_DEVICES empty here, a
    too-old driver elsewhere): gpu_bench.py stops before writing anything."""
    fake_nvidia_smi(sandbox, 'echo "NVIDIA A10G"')
    before = git_status()
    out = run(sandbox, f"{sandbox['bin']}:/usr/bin:/bin", PY=sys.executable,
              CUDA_VISIBLE_DEVICES="")  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("bench/gpu.sh: torch "), out.stderr[-2000:]
    assert "sees no CUDA GPU" in last or "CPU build" in last
    assert_nothing_written(sandbox, before)


def test_segment_runs_follow_the_gpu_and_onnx_runtime():
    gpu_bench = load_gpu_bench()
    cpu_ort = ["AzureExecutionProvider", "CPUExecutionProvider"]
    gpu_ort = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    runs = gpu_bench.segment_runs(bf16=True, providers=gpu_ort)
    assert [(b, p) for b, p, why in runs if why is None] == [
        ("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16"), ("onnx", "fp32")]  # fmt: skip
    skipped = {(b, p): why for b, p, why in gpu_bench.segment_runs(False, cpu_ort) if why}
    assert set(skipped) == {("torch", "bf16"), ("onnx", "fp32")}
    assert "onnxruntime-gpu" in skipped[("onnx", "fp32")]


def test_steady_tiles_per_s_leaves_out_each_epochs_first_step():
    gpu_bench = load_gpu_bench()
    stamps = {1: [(1, 0.0), (2, 5.0), (3, 6.0), (4, 7.0)], 2: [(1, 10.0), (2, 12.0), (3, 13.0)]}
    rate = gpu_bench.steady_tiles_per_s(stamps, batch=32)
    assert rate["epoch"] == 2 and rate["steps"] == 2 and rate["tiles_per_s"] == 32 * 2 / 3.0
    rate = gpu_bench.steady_tiles_per_s({1: stamps[1], 2: [(1, 10.0)]}, batch=8)
    assert rate["epoch"] == 1 and rate["tiles_per_s"] == 8 * 3 / 7.0
