"""Which raster bands feed a model's inputs: by Sentinel-2 band name where both the model
and the raster name their bands, else by band number.

Band numbers differ between Sentinel-2 products: the Solafune tiles are 12-band L2A
(B1..B9, B11, B12: B11 is band 11), the Austria chips have 11 bands without B9 (B11 is
band 10), a 4-band export is B2, B3, B4, B8 (B8 is band 4). A model file records the
raster bands it was trained on (``ModelMeta.bands``) and, when the training rasters
named them, their Sentinel-2 names (``ModelMeta.band_names``). A raster names its bands
in its band descriptions (``B02``, ``B8A``, ``B04 red``...; a 12-band raster without
descriptions is taken as the L2A order, as spectral indices do,
:func:`core.models.indices.raster_band_names`). When both are known, the inputs are
found by name, so a model trained on one product segments another without a hand-made
``--bands`` mapping; a named band the raster lacks is refused in one line naming it.
Otherwise the model's band numbers are used, as before band names were recorded.

Plain Python (no torch, no rasterio): callers pass the raster's band count and
descriptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError, RasterError
from .indices import raster_band_names


@dataclass(frozen=True)
class BandChoice:
    """The raster bands (1-based, in model-input order) and how they were chosen."""

    bands: list[int]
    how: str  # one line for logs and results, e.g. "by band name (B4, B3, B2, B8)"


def named_bands(
    count: int, descriptions: Sequence[str | None] | None, band_names: list[str] | None = None
) -> list[str] | None:
    """The Sentinel-2 name of each band of a raster with ``count`` bands (``band_names``,
    the ``data.band_names`` setting, first), or None when its bands are not known by
    name (descriptions missing or not Sentinel-2 names, and not 12 bands)."""
    try:
        return raster_band_names(count, descriptions, band_names)
    except InputError:
        return None


def input_band_names(
    bands: Sequence[int],
    count: int,
    descriptions: Sequence[str | None] | None,
    band_names: list[str] | None = None,
) -> list[str]:
    """The Sentinel-2 names of a model's input ``bands`` on its training raster (the
    ``data.band_names`` setting first, then the raster's own names), or [] when they
    are not known: such a model is then fed by band number."""
    names = named_bands(count, descriptions, band_names)
    if names is None or any(b < 1 or b > len(names) for b in bands):
        return []
    return [names[b - 1] for b in bands]


def choose_bands(
    model_bands: Sequence[int],
    model_names: Sequence[str] | None,
    count: int,
    descriptions: Sequence[str | None] | None,
    source: str,
    band_names: list[str] | None = None,
) -> BandChoice | None:
    """The raster bands that carry the model's named inputs, or None when the model or
    the raster does not name its bands (the caller then uses the band numbers);
    ``band_names`` (``data.band_names``) names the raster's bands first. Raises
    RasterError keyed ``bands`` naming the bands ``source`` (the raster) lacks."""
    if not model_names or len(model_names) != len(model_bands):
        return None
    names = named_bands(count, descriptions, band_names)
    if names is None:
        return None
    missing = [n for n in model_names if n not in names]
    if missing:
        raise RasterError(
            f"{source}: has no {', '.join(missing)} (its bands: {', '.join(names)}), but the "
            f"model takes {', '.join(model_names)}; map the raster's bands onto the model's "
            f"inputs explicitly (--bands)",
            "bands",
        )
    bands = [names.index(n) + 1 for n in model_names]
    how = f"by band name ({', '.join(model_names)})"
    if bands != list(model_bands):
        how += f"; the model was trained on bands {','.join(map(str, model_bands))}"
    return BandChoice(bands, how)
