"""The plugin object QGIS creates: toolbar, Raster > SolarSeg menu, Processing
provider, the engine environment check, and everything removed again in :meth:`unload`."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QPushButton, QToolBar, QWidget

from .common import PLUGIN_NAME, icon, log, safe_slot, tr

MENU = "&SolarSeg"
# The engine warns once per tile without CRS; inside QGIS every warning becomes a line in
# the message log, so the plugin hides this one (Inspect Errors lays such tiles out on a
# grid anyway). Installed in initGui, removed in unload.
QUIET_WARNINGS = ("ignore", "tiles without a CRS are used as plain arrays")


def _remove_warning_filter(message: str) -> None:
    """Drop the filters :meth:`SolarSegPlugin.initGui` added (matched by message)."""
    warnings.filters[:] = [
        f for f in warnings.filters if not (f[1] is not None and f[1].pattern == message)
    ]
    warnings._filters_mutated()  # noqa: SLF001 (documented way to refresh the cache)


def _forget_submodules(package: str) -> None:
    """Drop every ``package.*`` module, so a reload imports fresh code.

    QGIS's own clean-up misses intermediate packages imported relatively (e.g.
    ``solar_seg_plugin.processing``); the top-level package is left to QGIS.
    """
    for name in [m for m in sys.modules if m.startswith(package + ".")]:
        del sys.modules[name]


class SolarSegPlugin:
    """Wires the tools into QGIS. Heavy modules (torch, dialogs) load on first use."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar: QToolBar | None = None
        self.provider = None
        self.docks: list[QDockWidget] = []
        self.dialogs: dict[str, QWidget] = {}
        self.analyses: list[Any] = []
        self._engine_ok: set[str] = set()  # engine Pythons found usable this session
        self._engine_warning: Any = None  # the "engine is not installed" message bar item

    # --- QGIS entry points -------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 (QGIS API name)
        """Register the Processing provider (also called alone by qgis_process)."""
        if self.provider is not None:
            return
        from .processing.provider import SolarSegProvider

        self.provider = SolarSegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API name)
        warnings.filterwarnings(QUIET_WARNINGS[0], message=QUIET_WARNINGS[1])
        self.initProcessing()
        self.toolbar = self.iface.addToolBar(PLUGIN_NAME)
        self.toolbar.setObjectName("SolarSegToolbar")
        self._add_action("solarsegChips", tr("Create Training Data…"), self.open_chips,
                         "chips.svg")  # fmt: skip
        self._add_action("solarsegTrain", tr("Train…"), self.open_train, "train.svg")
        self._add_action("solarsegSegment", tr("Segment Layer…"), self.open_segment, "segment.svg")
        self._add_action("solarsegInspect", tr("Inspect Errors…"), self.open_inspect, "inspect.svg")
        self._add_action("solarsegEngine", tr("Engine Environment…"), self.show_engine_dialog,
                         "icon.svg", toolbar=False)  # fmt: skip
        self.check_engine()

    def unload(self) -> None:
        """Remove every action, menu entry, toolbar, dock and provider added."""
        for analysis in self.analyses:
            analysis.close()
        self.analyses.clear()
        for dlg in self.dialogs.values():
            close = getattr(dlg, "shutdown", None)
            if close is not None:
                close()
            dlg.close()
            dlg.deleteLater()
        self.dialogs.clear()
        for dock in self.docks:
            self.iface.removeDockWidget(dock)
            dock.deleteLater()
        self.docks.clear()
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            if self.toolbar is not None:
                self.toolbar.removeAction(action)
            action.deleteLater()
        self.actions.clear()
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        self._dismiss_engine_warning()
        _remove_warning_filter(QUIET_WARNINGS[1])
        _forget_submodules(__package__)

    # --- helpers -------------------------------------------------------------------
    def _add_action(
        self, name: str, text: str, slot: Callable[[], Any], icon_name: str, toolbar: bool = True
    ) -> QAction:
        action = QAction(icon(icon_name), text, self.iface.mainWindow())
        action.setObjectName(name)
        action.triggered.connect(safe_slot(lambda _checked=False: slot()))
        if toolbar:
            self.toolbar.addAction(action)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)
        return action

    # --- the engine's Python ----------------------------------------------------------
    def engine_python(self) -> str:
        from .tasks import engine_python

        return engine_python()

    def engine_problem(self) -> str:
        """ "" when the engine's Python has the engine's packages (checked in a subprocess,
        no import in QGIS's process; a good answer is remembered for this session)."""
        from .engine_env import engine_problem

        python = self.engine_python()
        if python in self._engine_ok:
            return ""
        problem = engine_problem(python, timeout=10.0)
        if not problem:
            self._engine_ok.add(python)
        return problem

    def check_engine(self) -> str:
        """At load: a message bar with a button to the installer when the engine's Python
        is not usable; returns the problem ("" when ready)."""
        problem = self.engine_problem()
        if problem:
            log(problem)
            self._dismiss_engine_warning()
            bar = self.iface.messageBar()
            item = bar.createMessage(
                PLUGIN_NAME, tr("the engine is not installed: {}").format(problem)
            )
            button = QPushButton(tr("Set up…"), item)
            button.clicked.connect(lambda _c=False: self.show_engine_dialog())
            item.layout().addWidget(button)
            bar.pushWidget(item, Qgis.Warning)
            self._engine_warning = item
        return problem

    def _dismiss_engine_warning(self) -> None:
        """Take the load-time "engine is not installed" warning off the message bar once
        the engine is usable (it would otherwise come back after every other message)."""
        item, self._engine_warning = self._engine_warning, None
        if item is None:
            return
        try:
            self.iface.messageBar().popWidget(item)
        except RuntimeError:  # closed by the user: the item is already deleted
            pass

    def _engine_ready(self, python: str) -> None:
        """The engine dialog's doctor found ``python`` ready (it imported everything)."""
        self._engine_ok.add(python)
        if python == self.engine_python():
            self._dismiss_engine_warning()

    def show_engine_dialog(self) -> QWidget:
        """The engine environment dialog (doctor report, installer, choose a Python)."""
        from .dialogs.engine_dialog import EngineDialog

        def build() -> QWidget:
            dlg = EngineDialog(self.engine_python(), self.iface.mainWindow())
            dlg.engine_changed.connect(lambda _p: self._engine_ok.clear())
            dlg.engine_ready.connect(safe_slot(self._engine_ready))
            return dlg

        return self._show("engine", build)

    def ensure_engine(self) -> bool:
        """Before a tool opens: is the engine's Python usable? If not, show the dialog."""
        problem = self.engine_problem()
        if problem:
            self.show_engine_dialog()
            return False
        self._dismiss_engine_warning()
        return True

    def _keep(self, key: str, widget: QWidget) -> None:
        old = self.dialogs.pop(key, None)
        if old is not None and old is not widget:
            old.close()
            old.deleteLater()
        self.dialogs[key] = widget

    def _show(self, key: str, factory: Callable[[], QWidget]) -> QWidget:
        dlg = self.dialogs.get(key)
        if dlg is None:
            dlg = factory()
            self._keep(key, dlg)
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()
        return dlg

    # --- tools ---------------------------------------------------------------------
    def open_chips(self) -> QWidget | None:
        if not self.ensure_engine():
            return None
        from .dialogs.chips_dialog import ChipsDialog

        return self._show(
            "chips", lambda: ChipsDialog(self.iface, self.open_train, self.iface.mainWindow())
        )

    def open_train(self, dataset: str | None = None) -> QWidget | None:
        """The Train dialog; ``dataset`` sets ``data.path`` (from Create Training Data)."""
        if not self.ensure_engine():
            return None
        from .dialogs.train_dialog import TrainDialog

        dlg = self._show(
            "train", lambda: TrainDialog(self.iface, self.open_inspect, self.iface.mainWindow())
        )
        if dataset:
            dlg.set_dataset(dataset)
        return dlg

    def open_segment(self) -> QWidget | None:
        if not self.ensure_engine():
            return None
        from .dialogs.segment_dialog import SegmentDialog

        return self._show("segment", lambda: SegmentDialog(self.iface, self.iface.mainWindow()))

    def open_inspect(self, model_path: str | Path | None = None, start: bool = False):
        """Inspect Errors dialog; with ``start`` it runs at once (from the Train dialog)."""
        if not self.ensure_engine():
            return None
        from .dialogs.inspect_dialog import InspectDialog

        dlg = self._show(
            "inspect",
            lambda: InspectDialog(self.iface, self.show_analysis, self.iface.mainWindow()),
        )
        if model_path is not None:
            dlg.set_model(str(model_path))
            if start:
                dlg.start()
        return dlg

    def show_analysis(self, analysis: Any) -> None:
        """Adopt an error analysis (its dock and layers) so unload can remove it."""
        self.analyses.append(analysis)
        analysis.closed.connect(lambda a=analysis: self._forget(a))

    def _forget(self, analysis: Any) -> None:
        if analysis in self.analyses:
            self.analyses.remove(analysis)
