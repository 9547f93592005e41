"""Model inference on tile datasets: probabilities at native resolution.

Sigmoid is applied exactly once, here (models output logits). Predictions are made
at the upscaled, padded size the model was trained on, cropped, and brought back to
each tile's native grid by area averaging, so every metric is computed at native
resolution on the tile's own validity mask.

The network runs in the given :class:`~core.models.precision.Numerics` (precision and
memory format; fp32 NCHW unless told); its logits are cast to float32 before the
sigmoid, so probabilities are float32 whatever it ran in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..data.dataset import TileDataset
from ..data.transforms import downscale_probability
from ..models.precision import FP32, Numerics
from ..progress import CancelFn, Progress, ProgressFn, check_cancel, never_cancel, no_progress

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def forward_logits(model: nn.Module, x: torch.Tensor, numerics: Numerics = FP32) -> torch.Tensor:
    """The model's logits as float32, the network run in ``numerics`` (the model is
    expected in its memory format already: :meth:`Numerics.prepare_model`)."""
    with numerics.autocast(x.device.type):
        return model(numerics.prepare_input(x)).float()


class ProbabilityNet(nn.Module):
    """In place of a network: a function of numpy batches that returns probabilities
    (a segment backend's ``predict``, e.g. an int8 ONNX graph on ONNX Runtime), for
    ``evaluate --precision int8``. :func:`forward_probability` applies no sigmoid to it."""

    outputs_probability = True

    def __init__(self, predict):
        super().__init__()
        self.predict = predict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = self.predict(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32))
        return torch.from_numpy(prob).to(x.device)


def _probability(model: nn.Module, x: torch.Tensor, numerics: Numerics) -> torch.Tensor:
    if getattr(model, "outputs_probability", False):
        return model(x)
    return torch.sigmoid(forward_logits(model, x, numerics))


def forward_probability(
    model: nn.Module, x: torch.Tensor, tta: bool = False, numerics: Numerics = FP32
) -> torch.Tensor:
    """Sigmoid of the model's float32 logits (a :class:`ProbabilityNet`'s output as it
    is), optionally averaged over flips (TTA)."""
    if not tta:
        return _probability(model, x, numerics)
    total = torch.zeros((x.shape[0], 1, *x.shape[2:]), device=x.device)
    for dims in FLIPS:
        xi = x.flip(dims) if dims else x
        p = _probability(model, xi, numerics)
        total += p.flip(dims) if dims else p
    return total / len(FLIPS)


def iter_native_probabilities(
    model: nn.Module,
    dataset: TileDataset,
    device: torch.device,
    batch_size: int = 32,
    tta: bool = False,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    stage: str = "predict",
    numerics: Numerics = FP32,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (tile index, probability (H, W) float32 at native resolution) in order."""
    for idx, prob, _ in iter_batches(
        model, dataset, device, batch_size, tta, progress, cancel, stage, numerics=numerics
    ):
        for j, i in enumerate(idx):
            yield i, to_native(prob[j : j + 1], dataset, i)


def to_native(prob: torch.Tensor, dataset: TileDataset, i: int) -> np.ndarray:
    """(1, 1, H', W') probabilities of tile ``i`` -> (H, W) at its native size."""
    h, w = dataset.native_shapes[i]
    f = dataset.factor
    return downscale_probability(prob[:, :, : h * f, : w * f], f)[0, 0].cpu().numpy()


def iter_batches(
    model: nn.Module,
    dataset: TileDataset,
    device: torch.device,
    batch_size: int = 32,
    tta: bool = False,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
    stage: str = "predict",
    with_targets: bool = False,
    numerics: Numerics = FP32,
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """Yield (indices, probabilities (N,1,H',W'), logits or None) batch by batch, in
    order, both float32. With ``with_targets`` the logits of the plain forward pass are
    returned too (for a validation loss), so the model runs once per batch. The model is
    put in ``numerics``' memory format (a no-op when it already is)."""
    model = numerics.prepare_model(model)
    model.eval()
    n = len(dataset)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            check_cancel(cancel)
            idx = list(range(start, min(start + batch_size, n)))
            x = torch.stack([dataset[i][0] for i in idx]).to(device)
            if with_targets and not tta:
                logits = forward_logits(model, x, numerics)
                prob = torch.sigmoid(logits)
            else:
                logits = None
                prob = forward_probability(model, x, tta, numerics)
            yield idx, prob, logits
            progress(Progress(stage, idx[-1] / n + 1 / n, f"{idx[-1] + 1}/{n} tiles"))
