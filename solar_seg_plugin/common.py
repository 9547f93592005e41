"""Small helpers shared by the plugin: translation, settings, paths, messages."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

PLUGIN_NAME = "SolarSeg"
SETTINGS_PREFIX = "solarseg/"
PLUGIN_DIR = Path(__file__).resolve().parent
RESOURCES = PLUGIN_DIR / "resources"


def tr(text: str, context: str = PLUGIN_NAME) -> str:
    """Translate a user-visible string (Qt translation context ``SolarSeg``)."""
    return QCoreApplication.translate(context, text)


def icon(name: str = "icon.svg") -> QIcon:
    return QIcon(str(RESOURCES / name))


def style_path(name: str) -> str:
    """Path of a QML style in ``resources/`` (e.g. ``mask.qml``)."""
    return str(RESOURCES / name)


class Settings:
    """Typed access to the plugin's QgsSettings, every key under ``solarseg/``."""

    def __init__(self, settings: QgsSettings | None = None) -> None:
        self._s = settings or QgsSettings()

    def get(self, key: str, default: Any = None, type_: type | None = None) -> Any:
        full = SETTINGS_PREFIX + key
        if type_ is None:
            return self._s.value(full, default)
        value = self._s.value(full, default)
        if value is None:
            return default
        try:
            if type_ is bool:
                return value if isinstance(value, bool) else str(value).lower() in ("1", "true")
            return type_(value)
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value: Any) -> None:
        self._s.setValue(SETTINGS_PREFIX + key, value)

    def remove(self, key: str) -> None:
        self._s.remove(SETTINGS_PREFIX + key)


def log(message: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
    """Write to QGIS's message log panel (tab "SolarSeg")."""
    QgsMessageLog.logMessage(message, PLUGIN_NAME, level)


def profile_python_dir() -> Path:
    """``<active profile>/python`` (where QGIS keeps plugins of this profile)."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "python"


def parse_bands(text: str) -> list[int] | None:
    """``"4,3,2,8"`` -> [4, 3, 2, 8]; empty or ``all`` -> None. ValueError otherwise."""
    text = (text or "").strip()
    if not text or text.lower() == "all":
        return None
    try:
        bands = [int(b) for b in text.replace(" ", ",").split(",") if b.strip()]
    except ValueError:
        raise ValueError(tr("bands must be 1-based numbers like 4,3,2,8")) from None
    if not bands or any(b < 1 for b in bands):
        raise ValueError(tr("bands must be 1-based numbers like 4,3,2,8"))
    return bands


def format_bands(bands: list[int] | None) -> str:
    return "" if not bands else ",".join(str(b) for b in bands)


def raster_shape(path: str | Path) -> tuple[int, int, int]:
    """(bands, width, height) of a raster, read with QGIS's own GDAL; OSError with one
    line naming the file when GDAL cannot open it."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")  # no "ERROR 4" lines; the message says it
    try:
        ds = gdal.Open(str(path))
        reason = gdal.GetLastErrorMsg()
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise OSError(f"{path}: {reason.splitlines()[0] if reason else 'not a readable raster'}")
    return ds.RasterCount, ds.RasterXSize, ds.RasterYSize


def safe_slot(slot: Callable[..., Any]) -> Callable[..., Any]:
    """``slot`` for a Qt signal, made safe: PyQt aborts the whole of QGIS (qFatal) when
    a Python slot raises, so an exception is logged with its traceback and shown in
    QGIS's message bar instead."""

    @functools.wraps(slot)
    def run(*args: Any) -> Any:
        try:
            return slot(*args)
        except Exception as exc:  # a bug in a slot must not take QGIS down
            log(f"SolarSeg: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", Qgis.Critical)
            try:
                from qgis.utils import iface

                if iface is not None:
                    iface.messageBar().pushMessage(
                        "SolarSeg", f"{type(exc).__name__}: {exc}", Qgis.Critical
                    )
            except Exception:  # no interface (tests, Processing): the log has it
                pass
            return None

    return run
