"""A per-pixel LightGBM model as a SolarSeg model file (``arch: lightgbm``).

Each valid pixel is classified on its own from its features: the selected bands (raw
raster values, in the model's band order) followed by the model's spectral indices
(:mod:`core.models.indices`, un-normalised: trees need no scaling). The model file is
the usual self-describing ``model.pt`` dict: ``meta`` (a :class:`ModelMeta` with
``arch: lightgbm``, bands, the band mean/std used to de-normalise ``segment``'s
normalised windows, threshold, indices, training config, metrics, split) and
``lightgbm``, the booster as LightGBM's own text format (also written as
``model.txt`` in the run folder). No tensors: it is read without torch, so evaluation
and ``segment`` of a LightGBM model need only numpy and lightgbm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .indices import index_values
from .meta import (
    ModelFileError,
    ModelMeta,
    meta_from_payload,
    read_model_payload,
    resolve_model_path,
)

#: Key of the booster's text in the model file's top-level dict.
PAYLOAD_KEY = "lightgbm"
TEXT_FILENAME = "model.txt"


def features(raw: np.ndarray, specs: list[dict]) -> np.ndarray:
    """(C, N) raw band values -> (N, C + K) float32: the bands, then the indices."""
    raw = np.asarray(raw, np.float32)
    return np.ascontiguousarray(np.concatenate([raw, index_values(raw, specs, axis=0)]).T)


def feature_names(bands: list[int], specs: list[dict]) -> list[str]:
    return [f"band_{b}" for b in bands] + [str(s["name"]) for s in specs]


class PixelModel:
    """A LightGBM booster with its metadata: probabilities of raw pixels, of tiles and
    of normalised batches (what ``segment``'s backends receive)."""

    def __init__(self, meta: ModelMeta, text: str, threads: int = 0) -> None:
        import lightgbm

        self.meta = meta
        self.text = text
        self.threads = int(threads or 0)
        self.booster = lightgbm.Booster(model_str=text)
        want = self.meta.network_channels
        if self.booster.num_feature() != want:
            raise ModelFileError(
                f"LightGBM model has {self.booster.num_feature()} features, its metadata "
                f"{want} (bands + indices)"
            )

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> PixelModel:
        """Read a LightGBM model file (or its run folder), without torch."""
        path = resolve_model_path(path)
        payload = read_model_payload(path)
        meta = meta_from_payload(payload, path)
        text = payload.get(PAYLOAD_KEY)
        if not meta.is_pixel_model or not isinstance(text, str):
            raise ModelFileError(f"{path}: not a LightGBM model file")
        if threads is None:
            threads = (meta.config.get("train") or {}).get("threads") or 0
        return cls(meta, text, threads)

    def predict_pixels(self, raw: np.ndarray) -> np.ndarray:
        """(C, N) raw band values -> (N,) float32 probabilities."""
        if raw.shape[1] == 0:
            return np.zeros(0, np.float32)
        x = features(raw, self.meta.indices)
        prob = self.booster.predict(x, num_threads=self.threads)
        return np.asarray(prob, np.float32)

    def predict_image(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """(C, H, W) raw bands -> (H, W) float32 probabilities (0 where not valid)."""
        c, h, w = raw.shape
        valid = np.ones((h, w), bool) if valid is None else valid.astype(bool)
        out = np.zeros((h, w), np.float32)
        out[valid] = self.predict_pixels(raw[:, valid])
        return out

    def denormalise(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) ``(raw - mean) / std`` (std 0 counted as 1) -> raw values."""
        mean = np.asarray(self.meta.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.meta.std, np.float32).reshape(1, -1, 1, 1)
        return batch.astype(np.float32) * np.where(std > 0, std, np.float32(1)) + mean

    def predict_normalised(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) normalised batch -> (N, 1, H, W) float32 probabilities."""
        n, c, h, w = batch.shape
        raw = self.denormalise(batch).transpose(1, 0, 2, 3).reshape(c, -1)
        return self.predict_pixels(raw).reshape(n, 1, h, w)
