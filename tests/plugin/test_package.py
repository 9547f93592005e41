"""`make package` and `make install`: a zip QGIS's "Install from ZIP" accepts (one top
folder, engine inside, no links) and a profile with the plugin linked and enabled."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_package_zip_is_self_contained(tmp_path):
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "package.sh"), str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (zip_path,) = (tmp_path / "dist").glob("solar_seg_plugin-*.zip")
    assert zip_path.name == "solar_seg_plugin-0.1.0.zip"
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        z.extractall(tmp_path / "plugins")
    assert {n.split("/")[0] for n in names} == {"solar_seg_plugin"}
    for needed in ("__init__.py", "metadata.txt", "plugin.py", "core/__init__.py",
                   "core/training/loop.py", "core/segment/__init__.py", "resources/icon.png",
                   "resources/error.qml", "resources/mask.qml", "engine_env.py",
                   "engine-requirements.txt"):  # fmt: skip
        assert f"solar_seg_plugin/{needed}" in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    root = tmp_path / "plugins" / "solar_seg_plugin"
    assert not [p for p in root.rglob("*") if p.is_symlink()]
    # the extracted folder alone is enough to import the plugin and its engine
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import solar_seg_plugin, solar_seg_plugin.plugin, solar_seg_plugin.core.training.loop;"
        "assert solar_seg_plugin.__file__.startswith(sys.argv[1]);"
        "assert 'core' not in sys.modules; print('ok')"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "plugins")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    # the engine's command line runs from the extracted plugin as a package module
    cli = subprocess.run(
        [sys.executable, "-m", "solar_seg_plugin.core", "--help"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path / "plugins",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    for command in ("stats", "train", "evaluate", "segment", "export-onnx"):
        assert command in cli.stdout, command


def test_install_links_and_enables(tmp_path):
    profile = tmp_path / "profiles" / "default"
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_plugin.sh"), str(profile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    link = profile / "python" / "plugins" / "solar_seg_plugin"
    assert link.is_symlink() and link.resolve() == (REPO / "solar_seg_plugin").resolve()
    assert (link / "core" / "__init__.py").is_file()
    ini = (profile / "QGIS" / "QGIS3.ini").read_text()
    assert "[PythonPlugins]" in ini and "solar_seg_plugin=true" in ini
