"""``python -m core doctor``: the engine environment's diagnostics, on the project's own
venv (real versions), and with broken packages reported as values, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.cli.doctor import MISSING, format_report, package_version
from tests.conftest import REPO


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
        timeout=300, env=env,
    )  # fmt: skip


def test_jsonl_result_has_the_real_versions():
    import numpy
    import rasterio
    import segmentation_models_pytorch as smp
    import torch
    import yaml

    out = doctor("--jsonl", "doctor")
    assert out.returncode == 0, out.stderr
    (event,) = [json.loads(line) for line in out.stdout.splitlines()]  # one event only
    assert event["event"] == "result" and event["command"] == "doctor"
    data = event["data"]
    assert data["ok"] is True and data["problems"] == {}
    assert Path(data["python"]) == Path(sys.executable)
    assert data["python_version"] == ".".join(map(str, sys.version_info[:3]))
    pkgs = data["packages"]
    assert pkgs["torch"] == torch.__version__
    assert pkgs["segmentation-models-pytorch"] == smp.__version__
    assert pkgs["numpy"] == numpy.__version__
    assert pkgs["rasterio"] == rasterio.__version__
    assert pkgs["PyYAML"] == yaml.__version__
    assert data["rasterio_gdal"] == rasterio.__gdal_version__
    assert data["cuda_available"] is torch.cuda.is_available()
    assert data["cuda_version"] == torch.version.cuda
    assert data["threads"] == torch.get_num_threads()
    if not torch.cuda.is_available():
        assert (
            data["device"].startswith("CPU: ")
            and f"({torch.get_num_threads()} threads)" in (data["device"])
        )


def test_text_report_names_every_package():
    out = doctor("doctor")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["engine", "ready"]
    labels = {line.split("  ")[0] for line in lines}
    for label in ("python", "device", "CUDA available", "CUDA version", "torch", "numpy",
                  "segmentation-models-pytorch", "onnxruntime", "rasterio", "PyYAML"):  # fmt: skip
        assert label in labels, label


def test_broken_and_missing_packages_are_values(tmp_path):
    # a torch that fails the way the system's old sympy made it fail, shadowing the real one
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'equal_valued' from 'sympy.core.numbers'\")\n"
    )
    (tmp_path / "onnxruntime.py").write_text("import solarseg_no_such_dependency\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = doctor("--jsonl", "doctor", "--strict", env=env)
    assert out.returncode == 1, out.stderr  # --strict: not ready
    data = json.loads(out.stdout.splitlines()[-1])["data"]
    torch_error = "ImportError: cannot import name 'equal_valued' from 'sympy.core.numbers'"
    assert data["packages"]["torch"] == torch_error
    assert data["ok"] is False and data["problems"]["torch"] == torch_error
    # a missing dependency inside a package is its error, not "missing"
    assert data["packages"]["onnxruntime"] == (
        "ModuleNotFoundError: No module named 'solarseg_no_such_dependency'"
    )
    assert data["device"].startswith("CPU: ") and data["cuda_available"] is False
    assert "onnxruntime" not in data["problems"]  # optional
    text = format_report(data)
    assert text.splitlines()[0].endswith(
        "NOT ready: torch, torchvision, segmentation-models-pytorch"
    )
    assert package_version("solarseg_no_such_module") == (MISSING, None)
