"""Every setting of a SolarSeg run as plain dataclasses, with YAML load/save and
dotted ``key=value`` overrides (``train.epochs=3``, ``data.path=...``).

The resolved config is written into each run folder and into the model file, so a
run can be reproduced by feeding its ``config.yaml`` back to ``python -m core train``.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, UserError
from .models import pretrained
from .models.indices import index_problems
from .models.meta import is_pixel_arch, min_input_side

# Values of train.precision and train.channels_last (resolved in core.models.precision,
# which needs torch; these stay here so the config is checked without it).
PRECISIONS = ("auto", "fp32", "bf16")
CHANNELS_LAST = ("auto", "true", "false")


@dataclass
class SplitConfig:
    """How pairs are split when the dataset has no predefined split."""

    seed: int = 42
    val: float = 0.1
    test: float = 0.2
    # Regex over the image file name whose first group (or whole match) names the
    # plant/site; tiles of one group never land in two splits. None: split by tile.
    group_regex: str | None = None


@dataclass
class AugmentConfig:
    """Augmentations applied identically to image, mask and validity (train only)."""

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True


@dataclass
class DataConfig:
    path: str = "../shared/data/solafune-s2-pv"
    # 1-based band numbers, e.g. [4, 3, 2, 8] for Sentinel-2 R,G,B,NIR; None = all.
    bands: list[int] | None = None
    # Spectral indices added as input channels, computed inside the model from the
    # selected bands (core.models.indices): ndvi, ndwi, ndmi, swir_nd, swir_red.
    indices: list[str] = field(default_factory=list)
    # Sentinel-2 name of each raster band (B1..B12, B8A), for the indices. None: the
    # raster's band descriptions, or the 12-band L2A order (B1..B9, B8A, B11, B12).
    band_names: list[str] | None = None
    # Use only the first N pairs (smoke runs); None = all.
    limit: int | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    upscale: int = 1  # 1, 2, 4 or 8: bicubic for images, nearest for masks
    pad_multiple: int = 32
    # Train on random square crops of this side (model pixels, after upscaling; a
    # multiple of pad_multiple). None = whole padded tiles. Val/test stay whole.
    train_crop: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Leave blank tiles (no positive valid pixel in the training sample, after cropping
    # and augmentation) out of the loss: their pixels are masked out of every loss term,
    # in training and in the val loss; they stay in the batches and in every metric.
    skip_blank_in_loss: bool = False
    # Leave tiles whose mask is all background out of the metrics (IoU, F1, ...).
    skip_blank_in_metrics: bool = False
    num_workers: int = 0


@dataclass
class ModelConfig:
    arch: str = "Unet"  # any segmentation_models_pytorch architecture name
    encoder: str = "resnet18"
    # None (random init, offline), a local weights file (.pt/.pth/.bin), a Sentinel-2
    # encoder that installs offline with the ukis-csmask package (ukis-csmask-4b-l2a,
    # -4b-l1c: bands B2,B3,B4,B8; -6b-l2a, -6b-l1c: also B11,B12; encoder
    # efficientnet-b4; see core.models.pretrained), or "imagenet" (needs the internet).
    encoder_weights: str | None = None
    # BatchNorm momentum while training (PyTorch's convention: the weight of each new
    # batch in the running statistics). None keeps the network's own: 0.1 in most
    # encoders, 0.01 in smp's efficientnet-* encoders, whose running statistics then stay
    # near their starting values (random init, or another dataset's for pretrained
    # weights) for hundreds of steps, so that evaluation disagrees with training in
    # short runs. Evaluation and inference do not use it.
    bn_momentum: float | None = None
    # Extra keyword arguments of the smp architecture, e.g. {encoder_depth: 4,
    # decoder_channels: [128, 64, 32, 16]} (then data.pad_multiple can be 16).
    params: dict[str, Any] = field(default_factory=dict)
    # Fine-tuning: start from the weights of this model file (or run folder). Its
    # architecture, encoder, params and upscale must match these settings; data.bands
    # defaults to its bands (and must equal them when set). See core.training.finetune.
    init_from: str | None = None
    # Normalisation when starting from a model (init_from) or from named pretrained
    # encoder weights: "model" keeps the starting weights' mean/std (what they expect),
    # "data" recomputes them on the training split.
    init_normalisation: str = "model"


@dataclass
class LossTerm:
    """One term of the loss: ``weight * loss_name(**params)``.

    Names: ``dice``, ``bce`` (params: pos_weight), ``weighted_bce`` (pos_weight,
    neg_weight), ``focal`` (alpha, gamma), ``jaccard`` (pos_weight, neg_weight: the
    class-aware soft IoU of the positive and negative class), ``lovasz`` (the Lovasz
    hinge, a convex surrogate of the positive-class IoU).

    ``pos_weight: auto`` (``bce`` and ``weighted_bce``): negative / positive valid
    pixels of the training split's masks, computed when the run starts and recorded in
    its ``loss.json``. Every other param is a number.
    """

    name: str
    weight: float = 1.0
    params: dict[str, float | str] = field(default_factory=dict)


@dataclass
class LossConfig:
    terms: list[LossTerm] = field(
        default_factory=lambda: [LossTerm("bce", 0.5), LossTerm("dice", 0.5)]
    )


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # none | step | plateau | cosine
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.5  # step / plateau decay factor
    plateau_patience: int = 3
    warmup_epochs: int = 0  # linear warm-up before the scheduler takes over


@dataclass
class EarlyStopConfig:
    enabled: bool = True
    monitor: str = "val_loss"  # val_loss | val_iou
    patience: int = 10
    min_delta: float = 0.0


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (parameters and BatchNorm statistics),
    updated after every optimiser step: ``avg = d * avg + (1 - d) * weights``. When
    enabled, every epoch's val/test figures, the best-model choice and the saved model
    are the averaged weights' (the model file's ``averaging`` says so)."""

    enabled: bool = False
    decay: float = 0.999
    # d = min(decay, (1 + n) / (10 + n)) at the n-th update (n = 0, 1, ...), so the
    # average forgets the random start quickly in short runs.
    warmup: bool = True


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    eval_batch_size: int = 32
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    # Arithmetic of the network (training, validation, evaluation, prediction): auto
    # (bf16 autocast on a CPU with native bf16, i.e. AVX-512 BF16 or AMX; on CUDA fp16
    # autocast when ``amp`` is true; else fp32), fp32, or bf16 (forced; emulated, and
    # slower than fp32, on a CPU without native bf16). Losses and probabilities are
    # always computed in fp32 from the network's output. See core.models.precision.
    precision: str = "auto"
    # Memory layout of the network and its inputs: auto (channels-last on the CPU,
    # where oneDNN's convolutions run faster in it; NCHW on CUDA), true or false.
    channels_last: str = "auto"
    amp: bool = True  # CUDA only: what precision auto means there (fp16 autocast or fp32)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    # Thresholds reported in every metrics table; the best on val is scanned separately.
    report_thresholds: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    tta: bool = False  # flip test-time augmentation at evaluation
    # Score the test split every epoch for the curves (never used for any choice);
    # off saves about a fifth of the evaluation work.
    eval_test_each_epoch: bool = True
    # Training time budget: stop before an epoch that would end past it (average epoch).
    max_minutes: float | None = None
    threads: int | None = None  # torch CPU threads; None = torch default

    def __post_init__(self) -> None:
        # YAML's true/false arrive as bools (or "True" once coerced to str).
        self.channels_last = str(self.channels_last).strip().lower()
        self.precision = str(self.precision).strip().lower()


@dataclass
class GbmConfig:
    """Per-pixel gradient-boosted trees (``model.arch: lightgbm``, core.training.pixels):
    features are the selected bands (raw values) and ``data.indices``."""

    # Training pixels: a seeded sample of at most this many valid pixels of the
    # training tiles (None: all of them).
    max_pixels: int | None = 2_000_000
    # Share of positive pixels in that sample (None: as in the data, uniform sample).
    positive_share: float | None = None
    rounds: int = 1000  # boosting rounds at most
    learning_rate: float = 0.05
    num_leaves: int = 63
    # Stop after this many rounds without a better val log-loss (0: never).
    early_stopping: int = 50
    # Any other LightGBM parameter, e.g. {min_data_in_leaf: 100, feature_fraction: 0.8}.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """The whole configuration of a training run."""

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gbm: GbmConfig = field(default_factory=GbmConfig)


class ConfigError(UserError, ValueError):
    """A configuration value or override is invalid."""


#: Version of the config layout. Saved as ``config_version`` in ``config.yaml`` and in
#: the model file; a config without it is version 1. Renaming or moving a setting
#: bumps it and adds an entry to ``RENAMED`` so older run folders and model files
#: still load (see :func:`migrate`).
CONFIG_VERSION = 2

#: ``RENAMED[v]`` maps dotted setting names of version ``v`` to their names in
#: version ``v + 1``. Version 2 only added ``config_version`` itself.
RENAMED: dict[int, dict[str, str]] = {1: {}}


def migrate(d: dict[str, Any], version: int) -> dict[str, Any]:
    """A config dict written at ``version`` brought up to :data:`CONFIG_VERSION`.

    Renamed settings are moved to their new names (a value already at the new name
    wins); the input is not modified. The result has no ``config_version`` key.
    """
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"config_version {version} is newer than this SolarSeg ({CONFIG_VERSION}); "
            "update the plugin"
        )
    out = copy.deepcopy(dict(d or {}))
    out.pop("config_version", None)
    for v in range(max(int(version), 1), CONFIG_VERSION):
        for old, new in RENAMED.get(v, {}).items():
            _move(out, old.split("."), new.split("."))
    return out


def _move(d: dict[str, Any], old: list[str], new: list[str]) -> None:
    node = d
    for k in old[:-1]:
        node = node.get(k)
        if not isinstance(node, dict):
            return
    if old[-1] not in node:
        return
    value = node.pop(old[-1])
    target = d
    for k in new[:-1]:
        target = target.setdefault(k, {})
    target.setdefault(new[-1], value)


def config_version_of(d: dict[str, Any] | None, default: int = 1) -> int:
    """The ``config_version`` of a stored config dict (``default`` when absent)."""
    try:
        return int((d or {}).get("config_version", default))
    except (TypeError, ValueError):
        raise ConfigError(
            f"config_version must be an integer, got {d['config_version']!r}"
        ) from None


def stored_config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as saved in run folders and model files, with its ``config_version``."""
    return {"config_version": CONFIG_VERSION, **to_dict(cfg)}


def load_stored_config(d: dict[str, Any] | None, version: int | None = None) -> RunConfig:
    """A config stored by an earlier run (model file, run folder): migrated from its
    version, and lenient: unknown settings are ignored with a warning, not an error."""
    if not d:
        return RunConfig()
    version = config_version_of(d) if version is None else version
    return from_dict(RunConfig, migrate(d, version), strict=False)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (YAML/JSON/torch.save friendly)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "", strict: bool = True) -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys.

    ``strict=False`` (configs stored by older runs) ignores unknown keys with a warning.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        listed = ", ".join(where + k for k in unknown)
        if strict:
            raise ConfigError(f"unknown setting(s) {listed}")
        warnings.warn(f"stored config: ignoring unknown setting(s) {listed}", stacklevel=2)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], where + f.name, strict)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, strict: bool = True) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return from_dict(tp, value, where + ".", strict)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:  # the first type that takes the value (float | str)
            try:
                return _coerce(candidate, value, where, strict)
            except ConfigError:
                pass
        return _coerce(inner[-1], value, where, strict)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {k: _coerce(args[1], v, f"{where}.{k}", strict) for k, v in value.items()}
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            number = tp(value)
            if tp is int and isinstance(value, float) and value != int(value):
                raise ValueError(value)
            return number
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3) with YAML value parsing."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and value.lower() in ("none", "null"):
        value = None
    return key.strip().split("."), value


def set_value(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set dotted ``key`` (``train.epochs``) in a nested dict to an already typed value."""
    keys = key.strip().split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"setting {key!r}: {k} is not a section")
    node[keys[-1]] = value
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` texts, values parsed as YAML (validated later by
    :func:`from_dict`). Front ends that already hold typed values use :func:`set_value`,
    so a run named ``yes`` or a path with `` #`` is not re-parsed."""
    for text in overrides:
        keys, value = parse_override(text)
        set_value(data, ".".join(keys), value)
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    default_version: int = CONFIG_VERSION,
    check: bool = True,
) -> RunConfig:
    """Load a YAML run config (defaults when ``path`` is None), migrate it, then apply
    typed ``values`` (dotted keys, taken as they are) and finally the ``key=value``
    overrides.

    A file without ``config_version`` is taken as ``default_version`` (the current one
    for a user's config; 1 for a run folder written before versioning).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    # Unknown settings in a user's config stay an error, whatever the version.
    data = migrate(data, config_version_of(data, default_version))
    for key, value in (values or {}).items():
        set_value(data, key, value)
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(RunConfig, data)
    if check:  # check=False: the caller reports every problem (core.training.checks)
        validate(cfg)
    return cfg


def config_problems(cfg: RunConfig) -> list[Problem]:
    """Every value the engine cannot run with, keyed by its setting (no file access)."""
    out: list[Problem] = []

    def refuse(key: str, message: str) -> None:
        out.append(Problem(key, message))

    if cfg.data.upscale not in (1, 2, 4, 8):
        refuse("data.upscale", f"data.upscale must be 1, 2, 4 or 8, got {cfg.data.upscale}")
    if cfg.data.pad_multiple < 1:
        refuse("data.pad_multiple", "data.pad_multiple must be >= 1")
    crop = cfg.data.train_crop
    if crop is not None and (crop < 1 or crop % max(1, cfg.data.pad_multiple)):
        refuse(
            "data.train_crop",
            f"data.train_crop must be a positive multiple of the pad multiple "
            f"({cfg.data.pad_multiple}), got {crop}",
        )
    elif crop is not None and crop < min_input_side(cfg.model.arch):
        refuse(
            "data.train_crop",
            f"data.train_crop {crop} is below the {min_input_side(cfg.model.arch)} px that "
            f"{cfg.model.arch} needs",
        )
    if cfg.data.bands is not None and any(b < 1 for b in cfg.data.bands):
        refuse("data.bands", f"data.bands are 1-based band numbers, got {cfg.data.bands}")
    for key, message in index_problems(cfg.data.indices, cfg.data.band_names):
        refuse(key, message)
    if is_pixel_arch(cfg.model.arch):
        out += gbm_problems(cfg)
    s = cfg.data.split
    if not (0 <= s.val < 1 and 0 <= s.test < 1 and s.val + s.test < 1):
        refuse("data.split.val", "data.split.val and data.split.test must be in [0,1) and sum < 1")
    for key, message in pretrained.config_problems(
        cfg.model.encoder_weights, cfg.model.encoder, cfg.data.bands
    ):
        refuse(key, message)
    if cfg.model.bn_momentum is not None and not 0 < cfg.model.bn_momentum <= 1:
        refuse(
            "model.bn_momentum",
            f"model.bn_momentum must be in (0, 1] or empty, got {cfg.model.bn_momentum}",
        )
    if cfg.model.init_normalisation not in ("model", "data"):
        refuse(
            "model.init_normalisation",
            f"model.init_normalisation must be model or data, got {cfg.model.init_normalisation!r}",
        )
    if cfg.optim.optimizer not in ("adam", "adamw"):
        refuse(
            "optim.optimizer",
            f"optim.optimizer must be adam or adamw, got {cfg.optim.optimizer!r}",
        )
    if cfg.optim.scheduler not in ("none", "step", "plateau", "cosine"):
        refuse(
            "optim.scheduler",
            f"optim.scheduler must be none, step, plateau or cosine, got {cfg.optim.scheduler!r}",
        )
    if cfg.train.early_stop.monitor not in ("val_loss", "val_iou"):
        refuse("train.early_stop.monitor", "train.early_stop.monitor must be val_loss or val_iou")
    if cfg.train.epochs < 1:
        refuse("train.epochs", "train.epochs must be >= 1")
    if cfg.train.precision not in PRECISIONS:
        refuse(
            "train.precision",
            f"train.precision must be auto, fp32 or bf16, got {cfg.train.precision!r}",
        )
    if cfg.train.channels_last not in CHANNELS_LAST:
        refuse(
            "train.channels_last",
            f"train.channels_last must be auto, true or false, got {cfg.train.channels_last!r}",
        )
    if cfg.train.batch_size < 1:
        refuse("train.batch_size", "train.batch_size must be >= 1")
    if cfg.train.ema.enabled and not 0.0 < cfg.train.ema.decay < 1.0:
        refuse(
            "train.ema.decay",
            f"train.ema.decay must be in (0, 1), got {cfg.train.ema.decay}",
        )
    if not cfg.loss.terms:
        refuse("loss.terms", "loss.terms must name at least one loss")
    return out


def gbm_problems(cfg: RunConfig) -> list[Problem]:
    """Values a per-pixel LightGBM run (``model.arch: lightgbm``) cannot run with."""
    g, out = cfg.gbm, []
    if cfg.data.upscale != 1:
        out.append(Problem("data.upscale", "model.arch lightgbm works on native pixels: "
                           f"data.upscale must be 1, got {cfg.data.upscale}"))  # fmt: skip
    if g.max_pixels is not None and g.max_pixels < 100:
        out.append(Problem("gbm.max_pixels", f"gbm.max_pixels must be >= 100, got {g.max_pixels}"))
    if g.positive_share is not None and not 0 < g.positive_share < 1:
        out.append(Problem("gbm.positive_share",
                           f"gbm.positive_share must be in (0, 1), got {g.positive_share}"))  # fmt: skip
    if g.rounds < 1:
        out.append(Problem("gbm.rounds", "gbm.rounds must be >= 1"))
    if not g.learning_rate > 0:
        out.append(Problem("gbm.learning_rate", "gbm.learning_rate must be > 0"))
    if g.num_leaves < 2:
        out.append(Problem("gbm.num_leaves", "gbm.num_leaves must be >= 2"))
    if g.early_stopping < 0:
        out.append(Problem("gbm.early_stopping", "gbm.early_stopping must be >= 0"))
    if cfg.model.init_from:
        out.append(Problem("model.init_from", "model.init_from (fine-tuning) is for networks, "
                           "not model.arch lightgbm"))  # fmt: skip
    return out


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` for the first value :func:`config_problems` refuses."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems[0].message, problems[0].field)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(stored_config_dict(cfg), sort_keys=False))
