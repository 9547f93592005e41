"""The one check of a training run's inputs, used by the CLI, the Train dialog and
Processing alike.

:func:`check_train` returns every problem it finds, keyed by the setting it belongs
to, so a dialog can show each one beside its field. :func:`~core.training.loop.train`
calls it before it creates the run folder: refused settings never leave an empty run
behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import RunConfig, config_problems
from ..errors import Problem, UserError
from ..models.meta import is_pixel_arch

# Suffixes of a local encoder weights file (anything else names pretrained weights).
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin")


def check_train(cfg: RunConfig) -> list[Problem]:
    """Problems with ``cfg`` that would stop training, in form order; [] when it can run.

    Checks the values (:func:`~core.config.config_problems`), then the dataset (found,
    pairs, bands present, train and val tiles after the split), the output folder,
    the device, the loss and whether the model can be built with these inputs.
    """
    problems = config_problems(cfg)
    problems += _dataset_problems(cfg)
    problems += _out_dir_problems(cfg.out_dir)
    if is_pixel_arch(cfg.model.arch):  # per-pixel LightGBM: no network, loss or device
        return problems + _lightgbm_problems()
    problems += _device_problems(cfg.train.device)
    problems += _loss_problems(cfg)
    problems += _model_problems(cfg)
    problems += _init_problems(cfg)
    if not any(p.field in ("data.path", "data.bands", "model.encoder_weights") for p in problems):
        problems += _pretrained_problems(cfg)
    return problems


def _lightgbm_problems() -> list[Problem]:
    from .distributed import env_world

    out = []
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        out.append(Problem("model.arch", "model.arch lightgbm needs the lightgbm package "
                           "(pip install lightgbm, see requirements.txt)"))  # fmt: skip
    if env_world() > 1:
        out.append(Problem("model.arch", "model.arch lightgbm trains in one process; "
                           "start it without torchrun"))  # fmt: skip
    return out


def pretrained_bands(cfg: RunConfig) -> list[int] | None:
    """The raster bands named encoder weights (``model.encoder_weights:
    ukis-csmask-4b-l2a``...) are fed: ``data.bands`` checked against the Sentinel-2
    band names of the dataset's first raster (its band descriptions, else the 12- or
    13-band order), or found from them when ``data.bands`` is empty. None for other
    weights. Raises a UserError keyed by its setting."""
    from ..data.discovery import find_dataset
    from ..data.rasters import raster_info
    from ..models import pretrained

    src = pretrained.lookup(cfg.model.encoder_weights)
    if src is None:
        return None
    pretrained.locate(src)  # installed?
    first = find_dataset(cfg.data.path).pairs[0].image
    info = raster_info(first)
    names, how = pretrained.raster_band_names(info.count, info.descriptions, cfg.data.band_names)
    return pretrained.pick_bands(src, cfg.data.bands, names, f"{first.name}: {how}")


def _pretrained_problems(cfg: RunConfig) -> list[Problem]:
    try:
        pretrained_bands(cfg)
    except UserError as exc:
        return [Problem(exc.field or "model.encoder_weights", str(exc), exc)]
    return []


def _init_problems(cfg: RunConfig) -> list[Problem]:
    """A starting model (``model.init_from``) that is missing, unreadable or builds
    another network (:func:`~core.training.finetune.load_init_model`; on a copy, so the
    check does not fill ``data.bands``)."""
    import copy

    from .finetune import load_init_model

    if not cfg.model.init_from:
        return []
    filled = copy.deepcopy(cfg)
    try:
        load_init_model(filled)
    except UserError as exc:
        return [Problem("model.init_from", str(exc), exc)]
    if cfg.data.bands is None:  # the model's bands will be read: does the data have them?
        return [p for p in _dataset_problems(filled) if p.field == "data.bands"]
    return []


def _dataset_problems(cfg: RunConfig) -> list[Problem]:
    from ..data.discovery import find_dataset
    from ..data.rasters import check_bands, raster_info
    from ..data.splits import split_pairs

    if not cfg.data.path:
        return [Problem("data.path", "choose a dataset folder or a CSV manifest")]
    try:
        index = find_dataset(cfg.data.path)
        if cfg.data.limit:
            index.pairs = index.pairs[: cfg.data.limit]
        if not index.pairs:
            return [Problem("data.path", f"{cfg.data.path}: no image/mask pairs found")]
        info = raster_info(index.pairs[0].image)
        pairs = split_pairs(index, cfg.data.split)
    except UserError as exc:
        return [Problem("data.path", str(exc))]
    try:
        check_bands(cfg.data.bands, info.count, index.pairs[0].image)
    except UserError as exc:
        return [Problem("data.bands", str(exc))]
    if cfg.data.indices and not any(p.field.startswith("data.") for p in config_problems(cfg)):
        from ..data.stats import run_indices

        try:  # every source band of every index among the selected bands
            run_indices(cfg.data.indices, cfg.data.bands, cfg.data.band_names, index.pairs[0].image)
        except UserError as exc:
            return [Problem.of("data.indices", exc)]
    missing = [s for s in ("train", "val") if not any(p.split == s for p in pairs)]
    if missing:
        return [
            Problem(
                "data.limit" if cfg.data.limit else "data.split.val",
                f"{cfg.data.path}: with {len(pairs)} tiles the split has no "
                f"{' and no '.join(missing)} tiles; use more tiles or larger split fractions",
            )
        ]
    return []


def _out_dir_problems(out_dir: str) -> list[Problem]:
    """The folder runs go into must exist or be creatable, and be writable. It is not
    created here: a refused run leaves nothing behind."""
    out = Path(out_dir).expanduser()
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return [Problem("out_dir", f"{existing}: not a folder")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem("out_dir", f"{out}: {existing} is not writable")]
    return []


def _device_problems(device: str) -> list[Problem]:
    from ..models.build import resolve_device

    try:
        resolve_device(device)
    except (UserError, RuntimeError) as exc:
        return [Problem("train.device", str(exc))]
    return []


def _loss_problems(cfg: RunConfig) -> list[Problem]:
    from ..training.losses import build_loss, resolve_auto

    if not cfg.loss.terms:
        return []  # already refused by config_problems
    try:
        # pos_weight auto takes its value from the training masks when the run starts.
        build_loss(resolve_auto(cfg.loss.terms, 1.0))
    except (UserError, TypeError) as exc:
        return [Problem("loss.terms", str(exc))]
    return []


def _model_problems(cfg: RunConfig) -> list[Problem]:
    from ..models.build import build_model

    weights = cfg.model.encoder_weights
    local = weights if weights and Path(weights).suffix in WEIGHT_SUFFIXES else None
    if local and not Path(local).expanduser().is_file():
        return [Problem("model.encoder_weights", f"{local}: file not found")]
    bands = len(cfg.data.bands) if cfg.data.bands else 1
    try:
        # No weights: building the network is enough to know the combination works.
        build_model(cfg.model.arch, cfg.model.encoder, bands, None, cfg.model.params)
    except UserError as exc:
        return [Problem(exc.field or _model_field(str(exc)), str(exc))]
    except TypeError as exc:  # an argument the architecture does not take
        return [Problem("model.params", f"model.params: {exc}")]
    except Exception as exc:  # smp raises various errors for unusable combinations
        return [Problem("model.encoder", f"{cfg.model.encoder}: {type(exc).__name__}: {exc}")]
    return []


def _model_field(message: str) -> str:
    return "model.encoder" if "encoder" in message else "model.arch"
