"""Are a raster's values on the scale the model was trained on?

A model normalises each band with the mean and standard deviation of its training
data. Applied to a raster whose values live on another scale (an 8-bit RGB export
instead of Sentinel-2 reflectance x 10,000, reflectance in 0-1, bands in another order),
it still produces a mask, and a confidently wrong one: a 1-epoch Solafune model on
the 8-bit Haiti scene marked 368 of its 519 ha as panels. Nothing fails, so the user
needs to be told. This module compares a decimated sample of the raster with the
model's statistics and returns one warning line when they disagree.

The test is deliberately loose (scene content really does differ from training tiles):
a band is flagged when the raster's mean is more than ``max_z`` training standard
deviations from the training mean, or when its mean and the training mean differ by
more than ``max_ratio`` in either direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.rasters import open_raster, reading, valid_mask

#: Side (pixels) of the decimated read: enough pixels for a mean, one read per band.
SAMPLE_SIDE = 512


@dataclass(frozen=True)
class BandDrift:
    """One model input: the raster's sampled mean against the model's statistics."""

    band: int  # 1-based raster band
    raster_mean: float
    model_mean: float
    model_std: float

    @property
    def z(self) -> float:
        """Distance of the raster's mean from the training mean, in training std."""
        return (self.raster_mean - self.model_mean) / max(self.model_std, 1e-12)

    @property
    def ratio(self) -> float:
        """Raster mean / training mean (inf when the training mean is about zero)."""
        if abs(self.model_mean) < 1e-12:
            return float("inf") if abs(self.raster_mean) > 1e-12 else 1.0
        return self.raster_mean / self.model_mean

    def off(self, max_z: float, max_ratio: float) -> bool:
        r = self.ratio
        off_ratio = r <= 0 or not (1.0 / max_ratio <= r <= max_ratio)
        return abs(self.z) > max_z or off_ratio


def sample_bands(
    raster_path: str | Path, bands: list[int], nodata: float | None = None
) -> np.ndarray:
    """Valid pixels of ``bands`` from a decimated read of the whole raster:
    an array (len(bands), n) of float64 (n may be 0 when everything is nodata)."""
    with open_raster(raster_path) as src:
        scale = max(src.width, src.height) / SAMPLE_SIDE
        h = max(1, min(src.height, round(src.height / max(scale, 1.0))))
        w = max(1, min(src.width, round(src.width / max(scale, 1.0))))
        with reading(raster_path):
            data = src.read(bands, out_shape=(len(bands), h, w)).astype(np.float64)
        nodata = src.nodata if nodata is None else nodata
    valid = valid_mask(data, nodata)
    return data[:, valid]


def band_drift(
    sample: np.ndarray, bands: list[int], mean: list[float], std: list[float]
) -> list[BandDrift]:
    """Per model input, the sample's mean against the training mean/std."""
    if sample.shape[1] == 0:
        return []
    means = sample.mean(axis=1)
    return [
        BandDrift(int(b), float(m), float(mu), float(sd))
        for b, m, mu, sd in zip(bands, means, mean, std, strict=True)
    ]


def drift_warning(
    raster_path: str | Path,
    bands: list[int],
    mean: list[float],
    std: list[float],
    nodata: float | None = None,
    max_z: float = 4.0,
    max_ratio: float = 4.0,
) -> str | None:
    """One line naming the raster and its most distant band when the raster's values
    do not look like the model's training data, else None."""
    drifts = band_drift(sample_bands(raster_path, bands, nodata), bands, mean, std)
    off = [d for d in drifts if d.off(max_z, max_ratio)]
    if not off:
        return None
    worst = max(off, key=lambda d: abs(d.z))
    others = f" (and {len(off) - 1} more band(s))" if len(off) > 1 else ""
    return (
        f"{Path(raster_path).name}: its values do not look like the model's training data: "
        f"band {worst.band} has mean {worst.raster_mean:.4g} against {worst.model_mean:.4g} "
        f"± {worst.model_std:.4g} in training ({worst.ratio:.2g}x){others}; the mask may be "
        f"wrong: check the band mapping and the value scale (e.g. 8-bit against "
        f"reflectance x 10,000)"
    )
