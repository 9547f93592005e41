"""Weight averaging during training: an exponential moving average (EMA) of the weights.

:class:`WeightEMA` keeps a copy of the network whose floating-point parameters and
buffers (BatchNorm running statistics included) follow the trained network after each
optimiser step::

    avg <- d * avg + (1 - d) * weights,   d = min(decay, (1 + n) / (10 + n))

``n`` counts the updates before this one (0, 1, 2, ...); without ``warmup`` ``d`` is
``decay`` throughout. Integer buffers (BatchNorm's ``num_batches_tracked``) are copied.
The copy is always in eval mode and never gets gradients; the training loop evaluates
it every epoch, picks the best epoch from it and saves it as the run's model (the
model file's ``averaging`` metadata says so, :meth:`WeightEMA.record`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """Exponential moving average of ``model``'s weights (see the module docstring)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """The decay of the update made after ``n`` earlier updates."""
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (after an optimiser step)."""
        d = self.decay_at(self.updates)
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(value.to(avg.dtype), 1.0 - d)  # avg + (1-d)(value - avg)
            else:
                avg.copy_(value)
        self.updates += 1

    def record(self, epoch: int | None = None) -> dict[str, Any]:
        """What the model file says about the averaged weights it holds."""
        out: dict[str, Any] = {"kind": "ema", "decay": self.decay, "warmup": self.warmup,
                               "updates": self.updates}  # fmt: skip
        if epoch is not None:
            out["epoch"] = int(epoch)
        return out

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint (tensors and builtins only)."""
        weights = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return {"weights": weights, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
