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
TOOLS = {"solarsegChips", "solarsegTrain", "solarsegSegment", "solarsegInspect"}  # toolbar and menu
ACTIONS = TOOLS | {"solarsegEngine"}  # menu


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
    assert {a.objectName() for a in toolbars[0].actions()} == TOOLS
    menu_calls = iface.addPluginToRasterMenu.call_args_list
    assert [c.args[0] for c in menu_calls] == ["&SolarSeg"] * 5
    assert {c.args[1].objectName() for c in menu_calls} == ACTIONS
    provider = registry.providerById("solarseg")
    assert provider is not None
    assert {a.id() for a in provider.algorithms()} == {
        "solarseg:segmentraster", "solarseg:segmentmany", "solarseg:evaluatemodel",
        "solarseg:trainmodel", "solarseg:createtrainingdata",
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


def test_actions_open_dialogs_and_unload_closes_them(qgis_plugin_env, tmp_path):
    from solar_seg_plugin.common import Settings

    iface = qgis_plugin_env
    main = iface.mainWindow()
    assert qgis.utils.loadPlugin(PLUGIN) and qgis.utils.startPlugin(PLUGIN)
    plugin = qgis.utils.plugins[PLUGIN]
    actions = {a.objectName(): a for a in main.findChildren(QAction) if a.objectName() in ACTIONS}
    for name in sorted(TOOLS):
        actions[name].trigger()
    kinds = {k: type(d).__name__ for k, d in plugin.dialogs.items()}
    assert kinds == {"train": "TrainDialog", "segment": "SegmentDialog", "inspect": "InspectDialog",
                     "chips": "ChipsDialog"}  # fmt: skip
    assert all(d.isVisible() for d in plugin.dialogs.values())
    dialogs = list(plugin.dialogs.values())
    # an engine Python without the engine's packages opens the engine dialog instead
    plugin._engine_ok.clear()
    Settings().set("engine_python", str(tmp_path / "no-such-python"))
    assert not plugin.ensure_engine()
    assert type(plugin.dialogs["engine"]).__name__ == "EngineDialog"
    assert plugin.dialogs["engine"].python == str(tmp_path / "no-such-python")
    dialogs.append(plugin.dialogs["engine"])
    actions["solarsegEngine"].trigger()  # the menu entry shows the same dialog
    assert list(plugin.dialogs).count("engine") == 1

    assert qgis.utils.unloadPlugin(PLUGIN)
    flush_deletes()
    assert all(sip.isdeleted(d) for d in dialogs)


def test_engine_warning_leaves_the_message_bar_once_the_engine_is_ready(qgis_plugin_env, tmp_path):
    """At load, an unusable engine Python gives a warning with "Set up…"; once an engine
    Python is ready (the dialog's doctor, or the check before a tool) the warning goes,
    instead of coming back after every later message (seen in the real QGIS desktop)."""
    from solar_seg_plugin.common import Settings

    from .test_engine_env import PROJECT_PYTHON

    bar = qgis_plugin_env.messageBar()
    bar.clearWidgets()
    Settings().set("engine_python", str(tmp_path / "no-such-python"))
    assert qgis.utils.loadPlugin(PLUGIN) and qgis.utils.startPlugin(PLUGIN)
    plugin = qgis.utils.plugins[PLUGIN]

    def warnings_shown() -> list[str]:
        return [i.text() for i in bar.items() if "engine is not installed" in i.text()]

    assert len(warnings_shown()) == 1
    # the engine dialog: the user points it at a Python whose doctor reports ready
    Settings().set("engine_python", str(PROJECT_PYTHON))
    dlg = plugin.show_engine_dialog()
    dlg.engine_ready.emit(str(PROJECT_PYTHON))
    assert warnings_shown() == [] and str(PROJECT_PYTHON) in plugin._engine_ok

    # or: the check before a tool finds the engine ready
    Settings().set("engine_python", str(tmp_path / "no-such-python"))
    plugin._engine_ok.clear()
    assert plugin.check_engine() and len(warnings_shown()) == 1
    Settings().set("engine_python", str(PROJECT_PYTHON))
    assert plugin.ensure_engine() and warnings_shown() == []
    assert qgis.utils.unloadPlugin(PLUGIN)
