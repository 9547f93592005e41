"""PyTorch dataset of tiles: (image, mask, valid) tensors ready for a model.

Each item is normalised with the training-split statistics at native size, upscaled
(bicubic image, nearest mask/validity), padded at the bottom/right to one fixed size
per dataset (a multiple of the model's stride; padding marked invalid) and, for the
training split, augmented identically for image, mask and validity. Tiles of
different sizes can therefore share a batch with the default collate.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import AugmentConfig
from .discovery import Pair
from .rasters import normalize, raster_info
from .tiles import Tile, read_tile
from .transforms import augment, pad_to, padded_size, upscale

# Upper bound for cached model-ready tiles of one dataset (1,155 twelve-band tiles at
# 4x upscale take about 0.9 GB).
PREPARED_CACHE_BYTES = 2 * 1024**3


class TileDataset(Dataset):
    """Tiles of one split.

    Args:
        pairs: the split's pairs.
        bands: 1-based band selection (None = all bands).
        mean, std: per-band normalisation (from the training split).
        upscale: 1, 2, 4 or 8.
        pad_multiple: padded height/width are multiples of this.
        augment: augmentation settings, or None (val/test).
        cache: keep native tiles in memory after the first read (tiles are small).
        min_size: pad at least to this side (architectures with a deep stride).
        crop: if set and smaller than the padded size, every item is a random square
            crop of this side (model pixels) taken inside the tile's own extent. Tiles
            are padded to the largest tile, so a few 26 px tiles make every 4x batch
            128 px wide; cropping to 96 trains on 0.56x the pixels (for training only).
    """

    def __init__(
        self,
        pairs: list[Pair],
        bands: list[int] | None,
        mean: list[float],
        std: list[float],
        upscale: int = 1,
        pad_multiple: int = 32,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache: bool = True,
        min_size: int = 1,
        crop: int | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.bands = bands
        self.mean, self.std = mean, std
        self.factor = upscale
        self.augment_cfg = augment
        self.seed = seed
        # Augmentation/crop randomness of the main process (num_workers=0): one stream
        # from ``seed``, so a run is reproducible. DataLoader workers replace it lazily
        # (see :meth:`_rng`), otherwise every worker would copy this generator's state
        # and repeat the same augmentation stream.
        self.rng = np.random.default_rng(seed)
        self._rng_worker_seed: int | None = None
        self.cache: dict[int, Tile] | None = {} if cache else None
        self._prepared: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._prepared_bytes = 0
        infos = [raster_info(p.image) for p in self.pairs]
        self.native_shapes = [(i.height, i.width) for i in infos]
        max_h = max((h for h, _ in self.native_shapes), default=1)
        max_w = max((w for _, w in self.native_shapes), default=1)
        side = max(max_h, max_w) * upscale  # square, so 90-degree rotations keep the shape
        self.size = max(padded_size(side, pad_multiple), padded_size(min_size, pad_multiple))
        self.crop = crop if crop is not None and crop < self.size else None

    def __len__(self) -> int:
        return len(self.pairs)

    def tile(self, i: int) -> Tile:
        """The native tile (cached)."""
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        tile = read_tile(self.pairs[i], self.bands)
        if self.cache is not None:
            self.cache[i] = tile
        return tile

    def prepared(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised, upscaled and padded arrays of tile ``i``, before augmentation.

        Cached while the cache stays under ``PREPARED_CACHE_BYTES``: upscaling is the
        costly step and its result is the same every epoch.
        """
        if i in self._prepared:
            return self._prepared[i]
        tile = self.tile(i)
        image = torch.from_numpy(normalize(tile.image, tile.valid, self.mean, self.std))
        mask = torch.from_numpy(tile.mask)
        valid = torch.from_numpy(tile.valid)
        if self.factor > 1:
            image = upscale(image, self.factor, "bicubic")
            mask = upscale(mask[None], self.factor, "nearest")[0]
            valid = upscale(valid[None].to(torch.uint8), self.factor, "nearest")[0].bool()
        out = pad_to(image.numpy(), mask.numpy(), valid.numpy(), self.size, self.size)
        nbytes = sum(a.nbytes for a in out)
        if self.cache is not None and self._prepared_bytes + nbytes <= PREPARED_CACHE_BYTES:
            self._prepared[i] = out
            self._prepared_bytes += nbytes
        return out

    def _rng(self) -> np.random.Generator:
        """The generator for augmentations and crops.

        In a DataLoader worker it is seeded from torch's per-worker seed (the loader's
        base seed + worker id, new every epoch and derived from the loader's generator),
        so workers never share a stream and a seeded loader stays reproducible.
        """
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._rng_worker_seed:
            self.rng = np.random.default_rng([self.seed, info.seed])
            self._rng_worker_seed = info.seed
        return self.rng

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask, valid = self.prepared(i)
        if self.crop is not None or self.augment_cfg is not None:
            rng = self._rng()
        if self.crop is not None:
            image, mask, valid = self._random_crop(i, image, mask, valid, rng)
        if self.augment_cfg is not None:
            image, mask, valid = augment(image, mask, valid, self.augment_cfg, rng)
        return (
            torch.from_numpy(image),
            torch.from_numpy(mask.astype(np.float32))[None],
            torch.from_numpy(valid)[None],
        )

    def _random_crop(
        self,
        i: int,
        image: np.ndarray,
        mask: np.ndarray,
        valid: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A ``crop`` x ``crop`` window inside the tile's upscaled extent (padding is at
        the bottom/right, so a tile smaller than the crop keeps its origin)."""
        h, w = (side * self.factor for side in self.native_shapes[i])
        y = int(rng.integers(0, max(h - self.crop, 0) + 1))
        x = int(rng.integers(0, max(w - self.crop, 0) + 1))
        window = (slice(y, y + self.crop), slice(x, x + self.crop))
        return (
            np.ascontiguousarray(image[(slice(None), *window)]),
            np.ascontiguousarray(mask[window]),
            np.ascontiguousarray(valid[window]),
        )
