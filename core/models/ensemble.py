"""Ensembles: several trained models as one model file whose network averages their
probabilities (``python -m core ensemble A.pt B.pt ... -o ens.pt``).

The network, :class:`MeanProbabilityEnsemble`, holds the members and returns the
**logit of the mean of their probabilities**, so everything downstream (the sigmoid of
``segment``/``evaluate``, the threshold, the ONNX graph's sigmoid) is unchanged::

    logit(mean_i sigmoid(z_i)) = logsumexp_i(logsigmoid(z_i)) - logsumexp_i(logsigmoid(-z_i))

computed in log space (exact, no ``log(0)``), from member logits clipped to
+-:data:`LOGIT_CLIP` (beyond which a float32 probability is already 0 or 1).

The model file is an ordinary SolarSeg model file: a plain dict loaded with
``torch.load(weights_only=True)``. Its metadata's ``ensemble`` entry lists the members
(architecture, encoder, input channels, model params, source path, SHA-256 of the
source file, threshold, metrics, weight averaging) and the state dict holds member
``i``'s weights under ``members.<i>.``; ``core.models.build.load_model`` rebuilds the
network from that metadata alone, so no code is ever unpickled. Combining files and
choosing the threshold is :mod:`core.training.ensemble`'s.

Members must agree on what goes in and comes out: bands, normalisation (mean and std),
spectral indices (each member keeps its own index statistics, in its ``indices``),
upscale, pad multiple, input channels and the training split (the ensemble's threshold
is chosen on the members' common val split). Architectures and encoders may differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io import file_sha256
from .meta import ModelFileError, ModelMeta

COMBINE = "mean_probability"
# Member logits are clipped to +-LOGIT_CLIP before averaging: sigmoid(40) is 1.0 in
# float32, so no probability changes, and log-space terms stay finite in ONNX Runtime.
LOGIT_CLIP = 40.0


class IncompatibleMembersError(ModelFileError):
    """Two models cannot form an ensemble (other inputs, normalisation or split)."""


class MeanProbabilityEnsemble(nn.Module):
    """Members' logits -> the logit of the mean of their probabilities (float32)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.stack([m(x).float() for m in self.members])
        z = z.clamp(-LOGIT_CLIP, LOGIT_CLIP)
        return torch.logsumexp(F.logsigmoid(z), dim=0) - torch.logsumexp(F.logsigmoid(-z), dim=0)


def check_compatible(paths: Sequence[Path], metas: Sequence[ModelMeta]) -> None:
    """Refuse members that cannot be averaged: one line naming both files and the
    first difference (:class:`IncompatibleMembersError`)."""
    if len(paths) < 2:
        raise IncompatibleMembersError("an ensemble needs at least two model files", "models")
    for path, meta in zip(paths, metas, strict=True):
        if meta.is_pixel_model:
            raise IncompatibleMembersError(
                f"{path} is a per-pixel LightGBM model; average it with a network by "
                "evaluate --blend instead",
                "models",
            )
        if meta.ensemble:
            raise IncompatibleMembersError(
                f"{path} is already an ensemble of {meta.ensemble.get('size')} models; "
                "list its member files instead",
                "models",
            )
    first, ref = paths[0], metas[0]
    for path, meta in zip(paths[1:], metas[1:], strict=True):
        difference = _difference(ref, meta)
        if difference:
            raise IncompatibleMembersError(
                f"cannot ensemble {first} and {path}: {difference}; members must have the "
                "same bands, normalisation, upscale, pad multiple, input channels and "
                "training split",
                "models",
            )


def _difference(a: ModelMeta, b: ModelMeta) -> str | None:
    """The first input/output difference of two single models, as words, or None."""
    if a.in_channels != b.in_channels:
        return f"input channels {a.in_channels} vs {b.in_channels}"
    if list(a.bands) != list(b.bands):
        return f"bands {list(a.bands)} vs {list(b.bands)}"
    for name in ("mean", "std"):
        x, y = np.asarray(getattr(a, name), float), np.asarray(getattr(b, name), float)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-6, atol=0.0):
            return f"normalisation {name} {getattr(a, name)} vs {getattr(b, name)}"
    names_a, names_b = [i["name"] for i in a.indices], [i["name"] for i in b.indices]
    if names_a != names_b:
        return f"spectral indices {names_a} vs {names_b}"
    if a.upscale != b.upscale:
        return f"upscale {a.upscale} vs {b.upscale}"
    if a.pad_multiple != b.pad_multiple:
        return f"pad multiple {a.pad_multiple} vs {b.pad_multiple}"
    sa, sb = a.split.get("sha256"), b.split.get("sha256")
    if sa != sb:
        return (
            f"training split {a.split.get('tiles')} tiles ({str(sa)[:12]}) vs "
            f"{b.split.get('tiles')} tiles ({str(sb)[:12]}): the ensemble's threshold is "
            "chosen on their common val split"
        )
    return None


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def ensemble_meta(paths: Sequence[Path], metas: Sequence[ModelMeta]) -> ModelMeta:
    """The metadata of the ensemble of ``metas`` (threshold 0.5 and no metrics yet)."""
    from dataclasses import replace

    ref = metas[0]
    members = []
    for path, meta in zip(paths, metas, strict=True):
        members.append({
            "arch": meta.arch, "encoder": meta.encoder, "in_channels": meta.in_channels,
            "model_params": dict(meta.model_params or {}),
            "source": str(Path(path).resolve()), "sha256": file_sha256(Path(path)),
            "threshold": meta.threshold,
            "metrics": {s: meta.metrics[s] for s in ("val", "test") if s in meta.metrics},
            "averaging": dict(meta.averaging or {}),
            "indices": [dict(i) for i in meta.indices],
        })  # fmt: skip
    return replace(
        ref,
        arch="+".join(_unique([m.arch for m in metas])),
        encoder="+".join(_unique([m.encoder for m in metas])),
        model_params={},
        threshold=0.5,
        metrics={},
        averaging={},
        ensemble={"size": len(members), "combine": COMBINE, "members": members},
    )
