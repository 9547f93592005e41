"""What a SolarSeg model is, without torch: its metadata, file names and input limits.

Everything here is plain Python, so the ONNX Runtime path (segmenting with an ``.onnx``
file) and the plugin's dialogs can describe and check a model without importing torch
(about 760 MB and 3.5 s).
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, UserError

MODEL_FORMAT = "solarseg-model"
# Version 2: spectral-index input channels (``indices``) or a per-pixel LightGBM model
# (``arch: lightgbm``), which an older SolarSeg would misread. A file without either is
# still written as version 1 (:func:`file_version`), so older readers load it.
MODEL_VERSION = 2
MODEL_FILENAME = "model.pt"
# ``arch`` of a per-pixel gradient-boosted-trees model (core.models.pixel_gbm).
LIGHTGBM = "lightgbm"

# Smallest input side per architecture (measured with smp 0.5): below it, deep output
# strides collapse the features (the tuning notes saw DeepLabV3+ reduce a tile to 1x1;
# PAN's pyramid pooling fails under 128). Datasets pad up to it; segmentation refuses.
MIN_INPUT_SIDE = {"deeplabv3plus": 32, "deeplabv3": 32, "pspnet": 32, "pan": 128}


class ModelFileError(UserError, ValueError):
    """A model file is missing, unreadable or not a SolarSeg model."""


# Key of the SolarSeg metadata (JSON) in an ONNX file's metadata_props.
ONNX_META_KEY = "solarseg"


@dataclass
class ModelMeta:
    """What a model needs at inference time, saved beside the weights."""

    arch: str
    encoder: str
    in_channels: int
    # 1-based band numbers read from the raster, in model-input order.
    bands: list[int]
    mean: list[float]
    std: list[float]
    threshold: float = 0.5
    upscale: int = 1
    pad_multiple: int = 32
    tile_size: int = 256
    overlap: int = 64
    model_params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Layout version of ``config`` (core.config.CONFIG_VERSION when trained); model
    # files written before it existed are version 1.
    config_version: int = 1
    # The training split, so evaluate can check it reproduces it (empty in older
    # files): dataset (absolute path), tiles (count), sha256 (of the sorted
    # "image<TAB>split" lines, image relative to the dataset folder).
    split: dict[str, Any] = field(default_factory=dict)
    # What the network ran in during training (core.models.precision): "fp32", "bf16"
    # (CPU autocast) or "fp16" (CUDA amp), and "contiguous" (NCHW) or "channels_last".
    # Files written before these existed trained in fp32 NCHW on the CPU (or fp16 with
    # CUDA amp). Inference chooses its own precision (the stored train.precision setting,
    # resolved on the machine that runs it), whatever the model was trained with.
    precision: str = "fp32"
    memory_format: str = "contiguous"
    # Weights averaged during training (train.ema): {"kind": "ema", "decay", "warmup",
    # "updates", "epoch"}; empty for the plain weights of the best epoch.
    averaging: dict[str, Any] = field(default_factory=dict)
    # An ensemble (python -m core ensemble): {"size", "combine": "mean_probability",
    # "members": [{"arch", "encoder", "in_channels", "model_params", "source", "sha256",
    # "threshold", "metrics", "averaging", "indices"}, ...], "threshold_from": "val"}; the network
    # is rebuilt from the members (core.models.ensemble), whose weights are the state
    # dict's ``members.<i>.`` entries. Empty for a single model.
    ensemble: dict[str, Any] = field(default_factory=dict)
    # Spectral indices computed from the inputs and appended to them inside the model
    # (core.models.indices): one dict per index with name, kind, sources, bands,
    # inputs, mean and std. Empty in older files and for models without indices.
    indices: list[dict[str, Any]] = field(default_factory=list)
    # Where the encoder's starting weights came from (core.models.build.encoder_source):
    # {} for random init (and in files written before it existed); for a named source
    # such as ukis-csmask-4b-l2a its package, version, ONNX file SHA-256, Sentinel-2
    # band order and normalisation; for a local weights file its path and SHA-256.
    encoder_source: dict[str, Any] = field(default_factory=dict)
    # The Sentinel-2 names of ``bands`` on the training rasters (e.g. B4, B3, B2, B8), so
    # that rasters of other products are fed by name (core.models.band_mapping); empty
    # when the training rasters did not name their bands, and in older files.
    band_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def network_channels(self) -> int:
        """Input channels of the network itself: the bands, then the indices."""
        return self.in_channels + len(self.indices)

    @property
    def is_pixel_model(self) -> bool:
        """A per-pixel LightGBM model (no network): ``arch`` is ``lightgbm``."""
        return is_pixel_arch(self.arch)


def is_pixel_arch(arch: str | None) -> bool:
    return str(arch or "").strip().lower() == LIGHTGBM


def file_version(meta: ModelMeta) -> int:
    """The lowest model-file version that describes ``meta`` (1 unless it has indices
    or is a LightGBM model), so older SolarSeg versions keep loading plain models."""
    return MODEL_VERSION if meta.indices or meta.is_pixel_model else 1


def min_input_side(arch: str) -> int:
    """The smallest input side of ``arch``; an ensemble's ``"A+B"`` needs the largest."""
    return max(
        MIN_INPUT_SIDE.get(part.replace("_", "").replace("-", "").lower(), 1)
        for part in arch.split("+")
    )


def check_input_side(arch: str, height: int, width: int) -> None:
    """Refuse an input too small for the architecture, naming the minimum size."""
    need = min_input_side(arch)
    if min(height, width) < need:
        raise InputError(
            f"{arch} needs inputs of at least {need}x{need} pixels (after upscaling and "
            f"padding), got {height}x{width}; use a larger tile or upscale factor"
        )


def resolve_model_path(path: str | Path) -> Path:
    """A run folder or a model file -> the model file."""
    path = Path(path)
    if path.is_dir():
        candidate = path / MODEL_FILENAME
        if not candidate.exists():
            raise ModelFileError(f"{path}: run folder has no {MODEL_FILENAME}")
        return candidate
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    return path


def display_bands(bands: list[int] | None, in_channels: int) -> list[int]:
    """R,G,B raster bands to show a model's input: Sentinel-2 4,3,2 when all 12 bands
    were used, else the model's first three bands (4,3,2 of 4,3,2,8), repeated if fewer."""
    if not bands:
        return [4, 3, 2] if in_channels >= 12 else [1, 2, 3][: max(1, min(3, in_channels))]
    chosen = list(bands[:3])
    while len(chosen) < 3:
        chosen.append(chosen[-1])
    return chosen


def meta_from_payload(payload: Any, path: Path) -> ModelMeta:
    """The ModelMeta of a loaded model-file dict (format and version checked)."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a SolarSeg model file")
    if payload.get("version", 0) > MODEL_VERSION:
        raise ModelFileError(
            f"{path}: model file version {payload['version']} is newer than this SolarSeg "
            f"({MODEL_VERSION}); update the plugin"
        )
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: not a SolarSeg model file (no metadata)")
    return meta_from_dict(meta)


def meta_from_dict(data: dict[str, Any]) -> ModelMeta:
    """A ModelMeta of stored metadata (unknown keys, from newer versions, dropped).

    Files written before band names were recorded name their bands anyway when a named
    Sentinel-2 encoder took all of them (``encoder_source.bands``, e.g. the six-band
    ukis-csmask models), so they are fed by name too (core.models.band_mapping)."""
    known = ModelMeta.__dataclass_fields__
    meta = ModelMeta(**{k: v for k, v in data.items() if k in known})
    source_bands = list((meta.encoder_source or {}).get("bands") or [])
    if not meta.band_names and source_bands and len(source_bands) == len(meta.bands or []):
        meta.band_names = source_bands
    return meta


def _placeholder(*_: Any, **__: Any) -> None:
    """Stands for torch's tensor and storage classes: the weights are not read."""


class _MetaUnpickler(pickle.Unpickler):
    """Reads a torch zip pickle without torch and without running code from the file:
    plain containers only; torch's tensor-rebuild functions and storage types become a
    placeholder (tensors read as None); any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _placeholder
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None


def read_model_meta(path: str | Path) -> ModelMeta:
    """A model file's metadata without importing torch (QGIS's process reads it this
    way to fill its dialogs); the weights are not loaded."""
    path = resolve_model_path(path)
    return meta_from_payload(read_model_payload(path), path)


def read_model_payload(path: str | Path) -> dict:
    """A model file's top-level dict without importing torch: tensors read as None,
    plain values (metadata, a LightGBM model's text) as they are."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                raise ModelFileError(f"{path}: not a loadable SolarSeg model file (no data.pkl)")
            with z.open(name) as f:
                payload = _MetaUnpickler(f).load()
    except ModelFileError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, AttributeError, IndexError, KeyError) as exc:  # fmt: skip
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelFileError(f"{path}: not a loadable SolarSeg model file ({reason})") from None
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path}: not a SolarSeg model file")
    return payload
