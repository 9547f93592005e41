"""``python -m core doctor``: what this Python offers the engine, as a bug-report block.

Run by the plugin in the engine's own Python (its "Engine environment" dialog), and by
hand. Every package is imported here, one at a time; a failure becomes that package's
value (``missing``, or the error's first line), never a crash of the command, so the
report is complete exactly when something is wrong.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# (import name, label) in report order. The first group is what every engine command
# needs; osgeo writes segmentation outputs; the rest are optional features.
REQUIRED = (
    ("numpy", "numpy"),
    ("yaml", "PyYAML"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("segmentation_models_pytorch", "segmentation-models-pytorch"),
    ("rasterio", "rasterio"),
    ("osgeo.gdal", "GDAL bindings (osgeo)"),
)
OPTIONAL = (
    ("onnxruntime", "onnxruntime"),
    ("onnx", "onnx"),
    ("matplotlib", "matplotlib"),
    ("sklearn", "scikit-learn"),
    ("lightgbm", "lightgbm"),
    ("ukis_csmask", "ukis-csmask"),  # model.encoder_weights: ukis-csmask-*
)
MISSING = "missing"


def one_line(exc: BaseException) -> str:
    """``ImportError: cannot import name 'x' from 'y'`` (first line only)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def package_version(module: str) -> tuple[str, Any]:
    """(version or ``missing`` or the error line, the module or None)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # the package itself is absent -> "missing"; a dependency inside it -> the error
        top = module.split(".")[0]
        return (MISSING if exc.name in (module, top) else one_line(exc)), None
    except Exception as exc:  # any import failure is a value of the report
        return one_line(exc), None
    return str(getattr(mod, "__version__", None) or "unknown"), mod


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def collect() -> dict[str, Any]:
    """The diagnostics as a flat-ish dict (JSON-serialisable)."""
    report: dict[str, Any] = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "prefix": sys.prefix,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    packages: dict[str, str] = {}
    modules: dict[str, Any] = {}
    for module, label in (*REQUIRED, *OPTIONAL):
        packages[label], modules[module] = package_version(module)
    report["packages"] = packages
    torch = modules.get("torch")
    report["cuda_available"] = False
    report["cuda_version"] = None
    report["threads"] = None
    device = f"CPU: {cpu_name()}"
    if torch is not None:
        try:
            report["threads"] = torch.get_num_threads()
            report["cuda_version"] = getattr(torch.version, "cuda", None)
            report["cuda_available"] = bool(torch.cuda.is_available())
            if report["cuda_available"]:
                device = f"CUDA: {torch.cuda.get_device_name(0)}"
        except Exception as exc:  # a broken CUDA setup is reported, not raised
            report["cuda_error"] = one_line(exc)
    if report["threads"]:
        device += f" ({report['threads']} threads)" if device.startswith("CPU") else ""
    report["device"] = device
    rasterio = modules.get("rasterio")
    report["rasterio_gdal"] = getattr(rasterio, "__gdal_version__", None) if rasterio else None
    ort = modules.get("onnxruntime")
    if ort is not None:
        try:
            report["onnxruntime_providers"] = list(ort.get_available_providers())
        except Exception as exc:
            report["onnxruntime_providers"] = [one_line(exc)]
    report["problems"] = {
        label: packages[label] for _, label in REQUIRED if not _is_version(packages[label])
    }
    report["ok"] = not report["problems"]
    return report


def _is_version(value: str) -> bool:
    return value != MISSING and ":" not in value


def format_report(r: dict[str, Any]) -> str:
    """The report as aligned text lines (what "Copy report" puts on the clipboard)."""
    rows = [
        ("engine", "ready" if r["ok"] else "NOT ready: " + ", ".join(r["problems"])),
        ("python", f"{r['python']} ({r['python_version']})"),
        ("platform", r["platform"]),
        ("device", r["device"]),
        ("CUDA available", "yes" if r["cuda_available"] else "no"),
        ("CUDA version", r["cuda_version"] or "none (CPU build)"),
    ]
    if r.get("cuda_error"):
        rows.append(("CUDA error", r["cuda_error"]))
    for label, value in r["packages"].items():
        if label == "rasterio" and r.get("rasterio_gdal"):
            value += f" (GDAL {r['rasterio_gdal']})"
        rows.append((label, value))
    if r.get("onnxruntime_providers"):
        rows.append(("onnxruntime providers", ", ".join(r["onnxruntime_providers"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_doctor(args: argparse.Namespace) -> int:
    report = collect()
    args.session.result(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0 if report["ok"] or not args.strict else 1


def add_doctor_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="diagnostics of this Python: torch, CUDA, device, package versions"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a required package does not import")  # fmt: skip
    # doctor must run where rasterio or torch are broken: main() skips its rasterio setup
    p.set_defaults(func=cmd_doctor, bare=True)
