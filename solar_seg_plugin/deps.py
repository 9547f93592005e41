"""Check the engine's Python dependencies without breaking QGIS, and build the exact
pip command that installs them for QGIS's own Python into a plugin-private folder.

At load time only :func:`importlib.util.find_spec` is used (fast, imports nothing);
before a tool runs, :func:`import_problems` really imports what that tool needs, so a
broken install (e.g. a numpy ABI mismatch) is reported instead of crashing later.
The private folder (``<profile>/python/solarseg_deps``) is appended to ``sys.path``,
after QGIS's own packages, so it never shadows QGIS's numpy or GDAL.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from .common import profile_python_dir

# import name -> pip requirement
ENGINE_PACKAGES: dict[str, str] = {
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "rasterio": "rasterio",
    "onnxruntime": "onnxruntime",
    "yaml": "PyYAML",
}
# What each tool needs before it can start.
TRAIN_NEEDS = ("torch", "segmentation_models_pytorch", "rasterio", "yaml")
INSPECT_NEEDS = TRAIN_NEEDS
SEGMENT_NEEDS = ("torch", "segmentation_models_pytorch", "rasterio", "yaml")
ONNX_NEEDS = ("onnxruntime", "rasterio", "yaml")
# CPU wheels of torch: no CUDA download and no triton (which crashes a window-backed QGIS).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEPS_FOLDER = "solarseg_deps"


def deps_dir() -> Path:
    """The plugin-private install folder in the active QGIS profile."""
    return profile_python_dir() / DEPS_FOLDER


def add_deps_dir_to_path(path: Path | None = None) -> bool:
    """Append the private folder to ``sys.path`` (once) if it exists; True if added."""
    path = Path(path or deps_dir())
    if not path.is_dir() or str(path) in sys.path:
        return False
    sys.path.append(str(path))
    importlib.invalidate_caches()
    return True


def missing_modules(
    modules: dict[str, str] | tuple[str, ...] = tuple(ENGINE_PACKAGES),
) -> list[str]:
    """Import names that cannot be found at all (nothing is imported)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def import_problems(modules: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Really import each module; map the ones that fail to their error message."""
    problems: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure to import is reported, never raised
            problems[name] = f"{type(exc).__name__}: {exc}"
    return problems


def python_executable() -> str:
    """The Python interpreter QGIS embeds.

    Inside QGIS ``sys.executable`` is QGIS itself or whatever ``python3`` comes first on
    PATH (e.g. a pyenv shim), so the interpreter is looked up in ``sys.exec_prefix``:
    ``bin/pythonX.Y`` on Linux/macOS, ``python.exe`` on Windows (OSGeo4W).
    """
    major, minor = sys.version_info[:2]
    prefix = Path(sys.exec_prefix)
    candidates = (
        [prefix / "python.exe", prefix / "python3.exe"]
        if os.name == "nt"
        else [prefix / "bin" / f"python{major}.{minor}", prefix / "bin" / "python3"]
    )
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python") and prefix in exe.absolute().parents:
        candidates.insert(0, exe)
    for c in candidates:
        if c.exists():
            return str(c)
    return "python3"


def pip_requirements(import_names: list[str]) -> list[str]:
    reqs = [ENGINE_PACKAGES.get(n, n) for n in import_names]
    # Keep numpy 1.x: QGIS's GDAL bindings are built against it.
    return [*reqs, "numpy<2"]


def pip_command(import_names: list[str], target: Path | None = None) -> list[str]:
    """The pip command that installs ``import_names`` for this QGIS's Python into the
    private folder."""
    cmd = [python_executable(), "-m", "pip", "install", "--upgrade", "--target"]
    cmd.append(str(target or deps_dir()))
    if "torch" in import_names or "segmentation_models_pytorch" in import_names:
        cmd += ["--extra-index-url", TORCH_CPU_INDEX]
    return cmd + pip_requirements(import_names)


def command_text(cmd: list[str]) -> str:
    """The command as one line to paste into a terminal."""
    if os.name == "nt":
        return " ".join(f'"{c}"' if " " in c or "<" in c else c for c in cmd)
    return " ".join(shlex.quote(c) for c in cmd)
