"""Spectral indices as extra input channels: the registry, band resolution, formulas.

``data.indices: [ndvi, swir_nd, ...]`` adds one input channel per index. Each index is
a function of two Sentinel-2 bands (:data:`REGISTRY`); the bands are found among the
run's selected raster bands through the raster's Sentinel-2 band names
(:func:`raster_band_names`). An index is computed from the *raw* band values (the
network's input, de-normalised with the model's mean/std), with two safe forms:

- ``nd`` (normalised difference): ``(a - b) / (a + b + EPS)`` with ``a, b`` clipped at
  0 first, so the value is in [-1, 1] and 0 where both bands are 0;
- ``ratio``: ``min(a / (b + EPS), RATIO_MAX)``, ``a, b`` clipped at 0.

A resolved index is a plain dict, stored in the model file's metadata
(``ModelMeta.indices``): ``name``, ``kind``, ``sources`` (Sentinel-2 band names),
``bands`` (1-based raster bands), ``inputs`` (0-based positions among the model's
inputs, which is what the formulas read), ``mean`` and ``std`` (of the index over the
training pixels; the network sees ``(index - mean) / std``). The network's module is
:class:`core.models.index_module.SpectralIndices`; this module is plain Python + numpy
(no torch), for the torch-free readers and the per-pixel LightGBM model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

EPS = 1e-6
RATIO_MAX = 100.0

#: Sentinel-2 band names (MSI), in their usual order.
SENTINEL2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11",
                   "B12")  # fmt: skip
#: The band order of 12-band Sentinel-2 L2A rasters such as the Solafune tiles (no B10):
#: raster band i is ``L2A_12[i - 1]``. Used when a raster names no bands.
L2A_12 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")


@dataclass(frozen=True)
class IndexDef:
    """One index: ``kind`` (nd or ratio) of Sentinel-2 bands ``a`` and ``b``."""

    name: str
    kind: str
    a: str
    b: str
    about: str

    @property
    def formula(self) -> str:
        if self.kind == "nd":
            return f"({self.a}-{self.b})/({self.a}+{self.b})"
        return f"{self.a}/{self.b}"


REGISTRY: dict[str, IndexDef] = {
    d.name: d
    for d in (
        IndexDef("ndvi", "nd", "B8", "B4", "vegetation (NIR, red)"),
        IndexDef("ndwi", "nd", "B3", "B8", "water (green, NIR; McFeeters)"),
        IndexDef("ndmi", "nd", "B8", "B11", "NIR-SWIR difference (moisture; -NDBI)"),
        IndexDef("swir_nd", "nd", "B11", "B12", "SWIR1-SWIR2 normalised difference"),
        IndexDef("swir_red", "ratio", "B11", "B4", "SWIR1 / red ratio"),
    )
}
KINDS = ("nd", "ratio")


def canonical_band_name(name: str) -> str | None:
    """``"B08"``, ``"b8"``, ``"B08 nir"`` -> ``"B8"``; ``"B8a"`` -> ``"B8A"``; None if
    the text does not start with a Sentinel-2 band name."""
    m = re.match(r"\s*[Bb]0*(\d{1,2})([Aa]?)(?![0-9A-Za-z])", str(name))
    if not m:
        return None
    out = f"B{int(m.group(1))}{m.group(2).upper()}"
    return out if out in SENTINEL2_BANDS else None


def index_problems(names: list[str], band_names: list[str] | None) -> list[tuple[str, str]]:
    """(setting, message) for unknown index names and band names (no file access)."""
    out = []
    unknown = [n for n in names if str(n).lower() not in REGISTRY]
    if unknown:
        out.append(("data.indices", f"unknown index(es) {unknown}; choose from {sorted(REGISTRY)}"))
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        out.append(("data.indices", f"data.indices lists {dupes} more than once"))
    if band_names is not None:
        bad = [b for b in band_names if canonical_band_name(b) is None]
        if bad:
            out.append(
                (
                    "data.band_names",
                    f"data.band_names {bad} are not Sentinel-2 band names "
                    f"({', '.join(SENTINEL2_BANDS)})",
                )  # fmt: skip
            )
    return out


def raster_band_names(
    count: int, descriptions: tuple | list | None = None, band_names: list[str] | None = None
) -> list[str]:
    """The Sentinel-2 name of each raster band (1-based order): ``band_names`` (the
    ``data.band_names`` setting) when given, else the raster's band descriptions when
    every one names a Sentinel-2 band (B01..B12, B8A), else :data:`L2A_12` for a
    12-band raster. Anything else is refused (field ``data.band_names``)."""
    if band_names is not None:
        names = [canonical_band_name(b) or str(b) for b in band_names]
        if len(names) < count:
            raise InputError(
                f"data.band_names names {len(names)} band(s) but the raster has {count}",
                "data.band_names",
            )
        return names[:count]
    described = [canonical_band_name(d) if d else None for d in (descriptions or ())]
    if described and len(described) == count and all(described):
        return described  # type: ignore[return-value]
    if count == len(L2A_12):
        return list(L2A_12)
    raise InputError(
        f"the raster has {count} band(s) without Sentinel-2 band names; set "
        f"data.band_names (e.g. [B4, B3, B2, B8]) so that spectral indices find their bands",
        "data.band_names",
    )


def resolve_indices(names: list[str], bands: list[int], raster_names: list[str]) -> list[dict]:
    """The indices ``names`` on the model inputs ``bands`` (1-based raster bands, in
    input order) of a raster whose band ``i`` is ``raster_names[i - 1]``. Each source
    band must be among ``bands``; otherwise one InputError (field ``data.indices``)
    names the index and the band to add. Statistics are left at mean 0, std 1."""
    out = []
    for name in names:
        d = REGISTRY[str(name).lower()]
        inputs, numbers = [], []
        for source in (d.a, d.b):
            if source not in raster_names:
                raise InputError(
                    f"index {d.name} needs {source}, which the raster does not have (its "
                    f"bands: {', '.join(raster_names)})",
                    "data.indices",
                )
            number = raster_names.index(source) + 1
            if number not in bands:
                raise InputError(
                    f"index {d.name} = {d.formula} needs {source} (raster band {number}), "
                    f"which is not among data.bands {list(bands)}; add band {number} or "
                    f"drop {d.name}",
                    "data.indices",
                )
            inputs.append(list(bands).index(number))
            numbers.append(number)
        out.append({"name": d.name, "kind": d.kind, "sources": [d.a, d.b], "bands": numbers,
                    "inputs": inputs, "mean": 0.0, "std": 1.0})  # fmt: skip
    return out


def index_values(raw: np.ndarray, specs: list[dict], axis: int = 0) -> np.ndarray:
    """The indices of raw band values, float32, stacked along ``axis`` (the band axis
    of ``raw``; one entry per spec, un-normalised). ``raw[..., inputs[k], ...]`` is read."""
    raw = np.asarray(raw, np.float32)
    out = []
    for s in specs:
        a = np.maximum(np.take(raw, s["inputs"][0], axis=axis), np.float32(0))
        b = np.maximum(np.take(raw, s["inputs"][1], axis=axis), np.float32(0))
        if s["kind"] == "nd":
            v = (a - b) / (a + b + np.float32(EPS))
        else:
            v = np.minimum(a / (b + np.float32(EPS)), np.float32(RATIO_MAX))
        out.append(v.astype(np.float32, copy=False))
    if not out:
        shape = list(raw.shape)
        shape[axis] = 0
        return np.zeros(shape, np.float32)
    return np.stack(out, axis=axis)


def describe(specs: list[dict[str, Any]]) -> str:
    """One line: ``ndvi (B8-B4)/(B8+B4) [bands 8,4]; ...`` ('none' without indices)."""
    if not specs:
        return "none"
    parts = []
    for s in specs:
        a, b = s["sources"]
        formula = f"({a}-{b})/({a}+{b})" if s["kind"] == "nd" else f"{a}/{b}"
        parts.append(f"{s['name']} {formula} [bands {s['bands'][0]},{s['bands'][1]}]")
    return "; ".join(parts)
