"""SolarSeg QGIS plugin: QGIS imports this package and calls :func:`classFactory`.

The engine lives in the ``core`` folder inside this package (a symlink in the source
tree, a real folder in the packaged zip) and is imported relatively as
``solar_seg_plugin.core``, so no bare top-level ``core`` lands on QGIS's ``sys.path``.
Nothing heavy (torch, rasterio) is imported here: a missing dependency must not stop
QGIS from loading the plugin.
"""

from __future__ import annotations


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    """Create the plugin instance for QGIS."""
    from .plugin import SolarSegPlugin

    return SolarSegPlugin(iface)
