"""The network's spectral-index layer: normalised bands in, bands + indices out.

:func:`attach_indices` adds a :class:`SpectralIndices` submodule
(``spectral_indices``) to a segmentation network and a forward pre-hook that runs it
on the network's input. So the network object stays what it was (its ``encoder``,
``decoder``, first convolution...), takes the same normalised bands as any SolarSeg
model, and every path that runs it (training, evaluation, ``segment``, ONNX and
Deepness export) computes the indices the same way, inside the graph.

The layer de-normalises the bands it needs with the model's mean/std, computes each
index with the formulas of :mod:`core.models.indices` and standardises it with the
statistics of the training split. Its buffers are not persistent: the model file's
state dict is the network's own; the statistics live in ``ModelMeta.indices``, and
:func:`core.models.build.load_model` attaches the layer from there.
"""

from __future__ import annotations

import torch
from torch import nn

from .indices import EPS, RATIO_MAX

ATTRIBUTE = "spectral_indices"


class SpectralIndices(nn.Module):
    """(N, C, H, W) normalised bands -> (N, C + K, H, W): the bands, then K indices."""

    def __init__(self, specs: list[dict], mean: list[float], std: list[float]) -> None:
        super().__init__()
        c = len(mean)
        std_safe = [float(s) if float(s) > 0 else 1.0 for s in std]  # normalize()'s rule
        self.register_buffer("band_mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1),
                             persistent=False)  # fmt: skip
        self.register_buffer("band_std", torch.tensor(std_safe, dtype=torch.float32).view(1, c, 1, 1),
                             persistent=False)  # fmt: skip
        k = len(specs)
        imean = [float(s["mean"]) for s in specs]
        istd = [float(s["std"]) if float(s["std"]) > 0 else 1.0 for s in specs]
        self.register_buffer("index_mean", torch.tensor(imean, dtype=torch.float32).view(1, k, 1, 1),
                             persistent=False)  # fmt: skip
        self.register_buffer("index_std", torch.tensor(istd, dtype=torch.float32).view(1, k, 1, 1),
                             persistent=False)  # fmt: skip
        self.kinds = [str(s["kind"]) for s in specs]
        self.inputs = [(int(s["inputs"][0]), int(s["inputs"][1])) for s in specs]
        self.names = [str(s["name"]) for s in specs]

    def raw(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Input channel ``i`` in raster units (N, 1, H, W), clipped at 0."""
        band = x[:, i : i + 1].float() * self.band_std[:, i : i + 1] + self.band_mean[:, i : i + 1]
        return band.clamp(min=0.0)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The K indices, un-normalised (N, K, H, W), float32."""
        out = []
        for kind, (ia, ib) in zip(self.kinds, self.inputs, strict=True):
            a, b = self.raw(x, ia), self.raw(x, ib)
            if kind == "nd":
                out.append((a - b) / (a + b + EPS))
            else:
                out.append((a / (b + EPS)).clamp(max=RATIO_MAX))
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.kinds:
            return x
        idx = (self.values(x) - self.index_mean) / self.index_std
        return torch.cat([x, idx.to(x.dtype)], dim=1)


def _apply_indices(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the network's input gets its index channels."""
    return (getattr(module, ATTRIBUTE)(args[0]), *args[1:])


def attach_indices(
    model: nn.Module, specs: list[dict], mean: list[float], std: list[float]
) -> nn.Module:
    """Put a :class:`SpectralIndices` layer in front of ``model`` (built for
    ``len(mean) + len(specs)`` input channels); returns ``model``. No-op without specs."""
    if not specs:
        return model
    if hasattr(model, ATTRIBUTE):
        raise ValueError("the model already has a spectral-index layer")
    model.add_module(ATTRIBUTE, SpectralIndices(specs, mean, std))
    model.register_forward_pre_hook(_apply_indices)
    return model


def index_layer(model: nn.Module) -> SpectralIndices | None:
    return getattr(model, ATTRIBUTE, None)
