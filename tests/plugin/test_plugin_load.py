"""The plugin loads the way QGIS loads plugins and unloads leaving nothing behind."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QAction, QToolBar

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "solar_seg_plugin"
ACTIONS = {"solarsegTrain", "solarsegSegment", "solarsegInspect"}


def flush_deletes() -> None:
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


@pytest.fixture()
def qgis_plugin_env(qgis_iface, monkeypatch):
    """qgis.utils set up as QGIS does: plugin paths, iface, available plugins."""
    monkeypatch.setattr(qgis.utils, "iface", qgis_iface)
    monkeypatch.setattr(qgis.utils, "plugin_paths", [str(REPO)])
    if str(REPO) not in sys.path:
        monkeypatch.syspath_prepend(str(REPO))
    qgis.utils.updateAvailablePlugins()
    assert PLUGIN in qgis.utils.available_plugins
    yield qgis_iface
    if qgis.utils.isPluginLoaded(PLUGIN):
        qgis.utils.unloadPlugin(PLUGIN)


def test_metadata_is_complete():
    qgis.utils.plugin_paths = [str(REPO)]
    qgis.utils.updateAvailablePlugins()
    meta = {
        k: qgis.utils.pluginMetadata(PLUGIN, k)
        for k in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                  "email", "repository", "tracker", "homepage", "category", "icon",
                  "hasProcessingProvider", "tags", "experimental")
    }  # fmt: skip
    assert "__error__" not in meta.values(), meta
    assert meta["name"] == "SolarSeg"
    assert meta["qgisMinimumVersion"] == "3.22"
    assert meta["version"] == "0.1.0"
    assert meta["category"] == "Raster"
    assert meta["hasProcessingProvider"] == "yes"
    assert (REPO / PLUGIN / meta["icon"]).is_file()


def test_load_start_unload(qgis_plugin_env):
    iface = qgis_plugin_env
    main = iface.mainWindow()
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("solarseg") is None

    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startPlugin(PLUGIN)
    assert qgis.utils.isPluginLoaded(PLUGIN)
    plugin = qgis.utils.plugins[PLUGIN]

    actions = {a.objectName(): a for a in main.findChildren(QAction) if a.objectName() in ACTIONS}
    assert set(actions) == ACTIONS
    toolbars = [t for t in main.findChildren(QToolBar) if t.objectName() == "SolarSegToolbar"]
    assert len(toolbars) == 1
    assert {a.objectName() for a in toolbars[0].actions()} == ACTIONS
    menu_calls = iface.addPluginToRasterMenu.call_args_list
    assert [c.args[0] for c in menu_calls] == ["&SolarSeg"] * 3
    assert {c.args[1].objectName() for c in menu_calls} == ACTIONS
    provider = registry.providerById("solarseg")
    assert provider is not None
    assert {a.id() for a in provider.algorithms()} == {
        "solarseg:segmentraster", "solarseg:evaluatemodel", "solarseg:trainmodel"
    }  # fmt: skip
    # engine imported as a subpackage of the plugin, never as a bare top-level "core"
    assert plugin.__class__.__module__ == f"{PLUGIN}.plugin"
    quiet = [f for f in warnings.filters if f[1] is not None and "without a CRS" in f[1].pattern]
    assert len(quiet) == 1

    toolbar = toolbars[0]
    assert qgis.utils.unloadPlugin(PLUGIN)
    flush_deletes()
    assert not qgis.utils.isPluginLoaded(PLUGIN)
    assert registry.providerById("solarseg") is None
    assert sip.isdeleted(toolbar)
    assert not [a for a in main.findChildren(QAction) if a.objectName() in ACTIONS]
    removed = iface.removePluginRasterMenu.call_args_list
    assert {c.args[1] for c in removed} == {c.args[1] for c in menu_calls}
    assert not [m for m in sys.modules if m == PLUGIN or m.startswith(PLUGIN + ".")]
    assert not [f for f in warnings.filters if f[1] is not None and "without a CRS" in f[1].pattern]

    # loading a second time works (QGIS "reload plugin")
    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startPlugin(PLUGIN)
    assert registry.providerById("solarseg") is not None
    assert qgis.utils.unloadPlugin(PLUGIN)
    assert registry.providerById("solarseg") is None


def test_import_puts_no_bare_core_on_sys_modules():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import solar_seg_plugin, solar_seg_plugin.plugin, solar_seg_plugin.processing.provider;"
        "import solar_seg_plugin.core.config, solar_seg_plugin.core.data.discovery;"
        "bad = [m for m in sys.modules if m == 'core' or m.startswith('core.')];"
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_missing_dependency_message_and_pip_command(qgis_plugin_env, tmp_path):
    from solar_seg_plugin import deps
    from solar_seg_plugin.dialogs.deps_dialog import DependenciesDialog
    from solar_seg_plugin.plugin import SolarSegPlugin

    iface = qgis_plugin_env
    plugin = SolarSegPlugin(iface)
    missing = plugin.check_dependencies(("solarseg_no_such_module", "json"))
    assert missing == ["solarseg_no_such_module"]
    texts = [item.text() for item in iface.messageBar().items()]
    assert any("solarseg_no_such_module" in t for t in texts), texts

    problems = deps.import_problems(["solarseg_no_such_module", "json"])
    assert list(problems) == ["solarseg_no_such_module"]
    dlg = DependenciesDialog(problems, target=tmp_path / "deps")
    command = dlg.command_edit.toPlainText()
    assert deps.python_executable() in command
    assert f"--target {tmp_path / 'deps'}" in command
    assert "solarseg_no_such_module" in command
    assert "solarseg_no_such_module" in dlg.problem_label.text()
    exe = deps.python_executable()
    assert Path(exe).exists() and Path(sys.exec_prefix) in Path(exe).absolute().parents
    same = subprocess.run(
        [exe, "-c", "import sys; print(sys.version_info[:2], sys.exec_prefix)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert same.stdout.strip() == f"{tuple(sys.version_info[:2])} {sys.exec_prefix}"
    # the private folder is appended (never prepended) to sys.path, once
    (tmp_path / "deps").mkdir()
    try:
        assert deps.add_deps_dir_to_path(tmp_path / "deps")
        assert sys.path[-1] == str(tmp_path / "deps")
        assert not deps.add_deps_dir_to_path(tmp_path / "deps")
    finally:
        sys.path.remove(str(tmp_path / "deps"))
    dlg.deleteLater()
    iface.messageBar().clearWidgets()


def test_actions_open_dialogs_and_unload_closes_them(qgis_plugin_env):
    iface = qgis_plugin_env
    main = iface.mainWindow()
    assert qgis.utils.loadPlugin(PLUGIN) and qgis.utils.startPlugin(PLUGIN)
    plugin = qgis.utils.plugins[PLUGIN]
    actions = {a.objectName(): a for a in main.findChildren(QAction) if a.objectName() in ACTIONS}
    for name in ("solarsegTrain", "solarsegSegment", "solarsegInspect"):
        actions[name].trigger()
    kinds = {k: type(d).__name__ for k, d in plugin.dialogs.items()}
    assert kinds == {"train": "TrainDialog", "segment": "SegmentDialog", "inspect": "InspectDialog"}
    assert all(d.isVisible() for d in plugin.dialogs.values())
    dialogs = list(plugin.dialogs.values())
    # a missing engine package opens the installer dialog instead of the tool
    assert not plugin.ensure_engine(("solarseg_no_such_module",))
    assert type(plugin.dialogs["deps"]).__name__ == "DependenciesDialog"
    dialogs.append(plugin.dialogs["deps"])

    assert qgis.utils.unloadPlugin(PLUGIN)
    flush_deletes()
    assert all(sip.isdeleted(d) for d in dialogs)


def make_wheel(folder: Path, name: str = "solarseg_demo_pkg", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (installable offline, no build step)."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            z.writestr(path, text)
    return wheel


def test_install_button_runs_pip_into_the_private_folder(qgis_app, tmp_path):
    """The dialog's Install runs pip (QProcess) into the private folder, adds it to
    sys.path and re-imports: here with a local wheel, since CI has no internet."""
    from solar_seg_plugin import deps
    from solar_seg_plugin.dialogs.deps_dialog import DependenciesDialog

    from .conftest import wait_until

    target = tmp_path / "solarseg_deps"
    wheel = make_wheel(tmp_path)
    dlg = DependenciesDialog({"solarseg_demo_pkg": "not installed"}, target=target)
    dlg.command = [deps.python_executable(), "-m", "pip", "install", "--no-index", "--no-deps",
                   "--target", str(target), str(wheel)]  # fmt: skip
    try:
        dlg.install_button.click()
        wait_until(lambda: dlg.process is None, 120, "pip")
        assert "exit code 0" in dlg.log.toPlainText(), dlg.log.toPlainText()
        assert (target / "solarseg_demo_pkg" / "__init__.py").is_file()
        assert str(target) == sys.path[-1]
        assert dlg.problems == {}
        import solarseg_demo_pkg

        assert solarseg_demo_pkg.VALUE == 42
    finally:
        if str(target) in sys.path:
            sys.path.remove(str(target))
        sys.modules.pop("solarseg_demo_pkg", None)
        dlg.deleteLater()
