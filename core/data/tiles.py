"""Read one image/mask pair with every check the engine relies on.

Masks may be {0,1} or {0,255} (both binary); any other value, or a mask whose size
or georeferencing differs from its image, is an error naming the file. Pixels equal
to the mask's declared nodata are invalid, like the image's nodata pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .discovery import Pair
from .masks import read_mask_values  # noqa: F401 (public here too)
from .rasters import RasterError, check_bands, open_raster, reading, valid_mask


class NoCRSWarning(UserWarning):
    """A tile has no CRS; it is used, but cannot be placed on a map."""


@dataclass
class Tile:
    """One tile at native resolution: float32 image (C,H,W), uint8 mask {0,1} (H,W),
    and the validity mask (H,W)."""

    id: str
    image: np.ndarray
    mask: np.ndarray
    valid: np.ndarray


def read_tile(pair: Pair, bands: list[int] | None = None) -> Tile:
    """Read and check a pair: band selection, sizes, georeferencing, mask values."""
    with open_raster(pair.image) as img, open_raster(pair.mask) as msk:
        sel = check_bands(bands, img.count, pair.image)
        if (msk.width, msk.height) != (img.width, img.height):
            raise RasterError(
                f"{pair.mask}: mask is {msk.width}x{msk.height} but image {pair.image.name} "
                f"is {img.width}x{img.height}"
            )
        if msk.count != 1:
            raise RasterError(f"{pair.mask}: mask must have 1 band, found {msk.count}")
        if img.crs is not None and msk.crs is not None:
            if img.crs != msk.crs:
                raise RasterError(
                    f"{pair.mask}: mask CRS {msk.crs} differs from image CRS {img.crs} "
                    f"({pair.image.name})"
                )
        elif (img.crs is None) != (msk.crs is None):
            which = pair.image if img.crs is None else pair.mask
            raise RasterError(f"{which}: has no CRS while its pair has one")
        else:
            # One message for all such tiles, so Python shows it once, not per tile.
            warnings.warn(
                "tiles without a CRS are used as plain arrays", NoCRSWarning, stacklevel=2
            )
        if not img.transform.almost_equals(msk.transform):
            raise RasterError(
                f"{pair.mask}: mask transform {tuple(msk.transform)[:6]} differs from image "
                f"transform {tuple(img.transform)[:6]} ({pair.image.name})"
            )
        with reading(pair.image):
            data = img.read(sel)
        valid = valid_mask(data, img.nodata)
        with reading(pair.mask):
            mask_data = msk.read(1)
        mask, mask_valid = read_mask_values(mask_data, msk.nodata, pair.mask)
    valid &= mask_valid
    image = np.where(valid[None], data.astype(np.float32), np.float32(0))
    return Tile(id=pair.id, image=image, mask=mask, valid=valid)
