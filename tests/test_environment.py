"""The stack the plugin relies on: no triton, numpy < 2, a QGIS-free engine."""

import importlib.util
import subprocess
import sys

import numpy

from tests.conftest import REPO


def test_triton_absent_and_numpy_below_2():
    assert importlib.util.find_spec("triton") is None, "triton crashes window-backed QGIS"
    assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__


def test_core_imports_no_qgis():
    code = (
        "import sys, core, core.cli.main, core.models.build, core.data.dataset, core.data.stats;"
        "import pkgutil, importlib;"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(core.__path__, 'core.') if not m.name.endswith('__main__')];"
        "bad=[m for m in sys.modules if m.split('.')[0]=='qgis'];"
        "print(len([m for m in sys.modules if m.startswith('core.')]), bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, bad = out.stdout.strip().split(" ", 1)
    assert int(count) >= 8 and bad == "[]"


def test_core_uses_relative_imports_only():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "core").rglob("*.py")
        if any(
            line.lstrip().startswith(("from core", "import core"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
