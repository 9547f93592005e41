"""SolarSeg engine: data, training, evaluation and segmentation of PV plants.

This package never imports ``qgis``. Inside it, imports are relative so the engine
works both as the top-level package ``core`` (tests, ``python -m core``) and as
``solar_seg_plugin.core`` inside the installed QGIS plugin.
"""

__version__ = "0.1.0"
