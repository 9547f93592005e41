"""Build segmentation models and read/write the self-describing model file.

A model file is a ``torch.save`` of a plain dict (no pickled classes), so it loads
with ``torch.load(weights_only=True)`` and a file from someone else cannot run code.
Everything needed to use the weights travels with them: architecture, encoder, band
selection, normalisation statistics, upscale factor, pad multiple, threshold, the
training config and the final metrics.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io import atomic_write_bytes
from .meta import (  # noqa: F401  (re-exported: the model file's public names)
    MIN_INPUT_SIDE,
    MODEL_FILENAME,
    MODEL_FORMAT,
    MODEL_VERSION,
    ModelFileError,
    ModelMeta,
    check_input_side,
    file_version,
    meta_from_payload,
    min_input_side,
    resolve_model_path,
)


def build_model(
    arch: str,
    encoder: str,
    in_channels: int,
    encoder_weights: str | None = None,
    params: dict[str, Any] | None = None,
) -> nn.Module:
    """Any segmentation_models_pytorch architecture by name, one logit channel out.

    ``encoder_weights`` may be None (random init, works offline), a name of
    :data:`core.models.pretrained.SOURCES` (Sentinel-2 weights from an installed
    package, offline), ``"imagenet"`` (or another smp weight name; needs the internet
    or a populated cache), or a path to a local ``.pt``/``.pth`` state dict for the
    encoder. With a 3-band pretrained encoder and more input bands, smp adapts the
    first convolution.
    """
    import segmentation_models_pytorch as smp

    from . import pretrained

    names = {n.lower(): n for n in _smp_architectures()}
    key = arch.replace("_", "").replace("-", "").lower()
    if key not in names:
        raise InputError(f"unknown architecture {arch!r}; choose one of {sorted(names.values())}")
    cls = getattr(smp, names[key])
    _check_params(cls, params or {})
    local = None
    if encoder_weights and (Path(encoder_weights).suffix in (".pt", ".pth", ".bin")):
        local, encoder_weights = Path(encoder_weights), None
    named = pretrained.lookup(encoder_weights)
    if named is not None:
        if encoder != pretrained.ENCODER:
            raise InputError(
                f"model.encoder_weights {named.name} are for encoder {pretrained.ENCODER}, "
                f"not {encoder}",
                "model.encoder",
            )
        if in_channels < len(named.bands):  # more: spectral-index channels after them
            raise InputError(
                f"model.encoder_weights {named.name} takes {len(named.bands)} bands "
                f"({named.band_text}), not {in_channels}",
                "data.bands",
            )
        encoder_weights = None
    try:
        model = cls(
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=1,
            activation=None,  # logits out: sigmoid is applied once, by losses/metrics
            **(params or {}),
        )
    except KeyError:
        raise InputError(_unknown_encoder(encoder, arch), "model.encoder") from None
    except TypeError as exc:
        raise InputError(f"{arch}: invalid model.params {params}: {exc}") from None
    if local is not None:
        _load_local_encoder(model, local)
    if named is not None:
        pretrained.load_encoder(model, named)
    return model


def set_bn_momentum(model: nn.Module, momentum: float | None) -> int:
    """Set every BatchNorm layer's momentum (None: leave them); the number changed."""
    if momentum is None:
        return 0
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = float(momentum)
    return len(layers)


def encoder_source(encoder_weights: str | None) -> dict[str, Any]:
    """Where a run's starting encoder weights came from, for the model file: {} for
    random init; for a named source its package, version, file SHA-256, bands and
    normalisation; for a local file its path and SHA-256; else the smp weight name."""
    from . import pretrained

    if not encoder_weights:
        return {}
    named = pretrained.lookup(encoder_weights)
    if named is not None:
        loc = pretrained.locate(named)
        return pretrained.source_record(loc, pretrained.file_sha256(loc.onnx))
    path = Path(encoder_weights).expanduser()
    if path.suffix in (".pt", ".pth", ".bin"):
        return {"name": "file", "path": str(path.resolve()), "sha256": pretrained.file_sha256(path)}
    return {"name": str(encoder_weights)}


def _unknown_encoder(encoder: str, arch: str) -> str:
    """One line: the encoder is unknown, with the closest names smp has."""
    import difflib

    from segmentation_models_pytorch.encoders import get_encoder_names

    names = get_encoder_names()
    close = difflib.get_close_matches(encoder, names, n=4, cutoff=0.4) or names[:4]
    return (
        f"unknown encoder {encoder!r} for {arch}; did you mean {', '.join(close)}? "
        f"({len(names)} encoders: segmentation_models_pytorch.encoders.get_encoder_names())"
    )


def _check_params(cls: type, params: dict[str, Any]) -> None:
    """smp swallows unknown keyword arguments; refuse them here, naming the valid ones."""
    import inspect

    named = {
        n
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"
    }
    fixed = {"encoder_name", "encoder_weights", "in_channels", "classes", "activation"}
    unknown = sorted(set(params) - (named - fixed))
    if unknown:
        raise InputError(
            f"{cls.__name__}: invalid model.params {unknown}; valid: {sorted(named - fixed)}"
        )


def _smp_architectures() -> list[str]:
    import segmentation_models_pytorch as smp

    return [
        n
        for n in dir(smp)
        if isinstance(getattr(smp, n), type)
        and issubclass(getattr(smp, n), nn.Module)
        and n[0].isupper()
        and hasattr(getattr(smp, n), "forward")
        and n not in ("SegmentationModel",)
    ]


def _load_local_encoder(model: nn.Module, path: Path) -> None:
    """Load encoder weights from a local file, adapting a 3-channel first conv."""
    if not path.exists():
        raise ModelFileError(f"{path}: encoder weights file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    enc = model.encoder
    own = enc.state_dict()
    for k, v in list(state.items()):
        if k in own and own[k].shape != v.shape and v.ndim == 4 and own[k].ndim == 4:
            # Same recipe as smp's patch_first_conv: repeat RGB weights, rescale.
            reps = int(np.ceil(own[k].shape[1] / v.shape[1]))
            state[k] = v.repeat(1, reps, 1, 1)[:, : own[k].shape[1]] * (
                v.shape[1] / own[k].shape[1]
            )
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ModelFileError(f"{path}: no tensor matches encoder {type(enc).__name__}")
    own.update(matched)
    enc.load_state_dict(own)


def save_model_file(
    path: str | Path, model: nn.Module | None, meta: ModelMeta, extra: dict | None = None
) -> None:
    """Write weights + metadata atomically (never a truncated model file). ``model``
    None (a LightGBM model) saves no weights; ``extra`` adds plain top-level entries
    (the LightGBM model's text)."""
    state = model.state_dict() if model is not None else {}
    payload = {
        "format": MODEL_FORMAT,
        "version": file_version(meta),
        "meta": _plain(meta.to_dict()),
        # Contiguous (NCHW) weights whatever layout the model ran in (channels-last).
        # The index layer's buffers are not persistent: its statistics are in the meta.
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()},
        **_plain(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _plain(obj: Any) -> Any:
    """Only builtin containers and scalars, so ``weights_only=True`` can load it."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


def read_model_file(path: str | Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """Metadata and state dict, loaded with ``weights_only=True``."""
    path = resolve_model_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors name many types; report them as one
        # torch's message runs over many lines (and suggests weights_only=False, which
        # would run code from the file): keep the reason, on one line.
        reason = "damaged, another format, or objects that could run code; refused"
        if "Weights only load failed" not in str(exc):
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelFileError(f"{path}: not a loadable SolarSeg model file ({reason})") from None
    meta = meta_from_payload(payload, path)
    return meta, payload["state_dict"]


def build_network(meta: ModelMeta, encoder_weights: str | None = None) -> nn.Module:
    """The network ``meta`` describes (random weights): the architecture for the bands
    plus the index channels, with its spectral-index layer in front when it has one."""
    from .index_module import attach_indices

    model = build_model(
        meta.arch, meta.encoder, meta.network_channels, encoder_weights, meta.model_params
    )
    return attach_indices(model, meta.indices, meta.mean, meta.std)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Rebuild the network from a model file (or run folder), in eval mode. An
    ensemble's network is rebuilt from its members' metadata (:mod:`.ensemble`)."""
    meta, state = read_model_file(path)
    if meta.is_pixel_model:
        raise ModelFileError(
            f"{resolve_model_path(path)}: a per-pixel LightGBM model has no network; "
            "evaluate and segment run it, ONNX export does not apply"
        )
    model = ensemble_network(meta) if meta.ensemble else build_network(meta)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, meta


def ensemble_network(meta: ModelMeta) -> nn.Module:
    """The (untrained) network of an ensemble model file, from its metadata alone: its
    members' networks in a :class:`~.ensemble.MeanProbabilityEnsemble`."""
    from .ensemble import MeanProbabilityEnsemble

    members = meta.ensemble.get("members") or []
    if not members:
        raise ModelFileError("ensemble model file lists no members")
    return MeanProbabilityEnsemble(
        [
            build_network(
                ModelMeta(
                    m["arch"],
                    m["encoder"],
                    int(m["in_channels"]),
                    meta.bands,
                    meta.mean,
                    meta.std,
                    model_params=dict(m.get("model_params") or {}),
                    indices=list(m.get("indices") or []),
                )
            )  # fmt: skip
            for m in members
        ]
    )


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU; ``cpu``; ``cuda``
    or ``cuda:N`` (refused without a CUDA GPU, or when GPU ``N`` does not exist); other
    torch device names (``mps``...) as torch reads them. A name torch does not know is
    refused with the names it can take."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(
            f"unknown device {name!r}; use auto, cpu, cuda or cuda:N", "device"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was asked for but no CUDA GPU is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(
                f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    return device
