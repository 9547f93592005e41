"""Segmentation losses for binary PV masks, all masked by a validity map.

Every loss takes raw logits (N,1,H,W) and applies the sigmoid exactly once, inside
the loss (numerically stable, and never squashing probabilities twice). Pixels whose
``valid`` flag is False (nodata, padding) are left out of numerator and denominator
alike, so padding a tile or masking nodata never changes the loss of the real pixels.
If a batch has no valid pixel at all the loss is a zero that still carries a gradient.

``build_loss`` turns the config's list of :class:`~.config.LossTerm` into a weighted
:class:`CombinedLoss`, e.g. ``0.3 bce + 0.3 focal + 0.4 jaccard(pos_weight=0.8, neg_weight=0.2)``.
``pos_weight: auto`` of ``bce`` / ``weighted_bce`` is replaced by the training split's
negative/positive pixel ratio (:func:`resolve_auto`) before the loss is built, and
``skip_blank`` leaves the samples without a positive valid pixel out of every term.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LossTerm
from ..errors import InputError


def _prepare(logits: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Float32 logits and target with invalid pixels zeroed, and the float validity mask.

    Invalid logits are replaced (not multiplied) by 0, so a NaN or inf there cannot
    leak into the loss or its gradient.
    """
    if valid is None:
        valid = torch.ones_like(logits, dtype=torch.bool)
    if not (logits.shape == target.shape == valid.shape):
        raise ValueError(
            f"logits {tuple(logits.shape)}, target {tuple(target.shape)} and valid "
            f"{tuple(valid.shape)} must have the same shape"
        )
    valid = valid.bool()
    zero = logits.new_zeros((), dtype=torch.float32)
    x = torch.where(valid, logits.float(), zero)
    t = torch.where(valid, target.float(), zero)
    return x, t, valid.float()


def _masked_mean(values: Tensor, weights: Tensor, x: Tensor) -> Tensor:
    """sum(values*weights)/sum(weights); a zero attached to ``x``'s graph if sum(weights)==0."""
    denom = weights.sum()
    if denom.item() <= 0:
        return x.sum() * 0.0
    return (values * weights).sum() / denom


class DiceLoss(nn.Module):
    """``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` over the valid pixels of the batch."""

    name = "dice"

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = float(smooth)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        x, t, v = _prepare(logits, target, valid)
        if v.sum().item() == 0:
            return x.sum() * 0.0
        p = torch.sigmoid(x) * v
        inter = (p * t).sum()
        return 1.0 - (2.0 * inter + self.smooth) / (p.sum() + t.sum() + self.smooth)


class BCELoss(nn.Module):
    """Binary cross-entropy with logits (``pos_weight`` on positives), mean over valid pixels."""

    name = "bce"

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = float(pos_weight)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        x, t, v = _prepare(logits, target, valid)
        pw = torch.tensor(self.pos_weight, dtype=x.dtype, device=x.device)
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw)
        return _masked_mean(bce, v, x)


class WeightedBCELoss(nn.Module):
    """Per-pixel BCE weighted ``pos_weight`` on positives and ``neg_weight`` on negatives,
    normalised by the sum of the weights over valid pixels."""

    name = "weighted_bce"

    def __init__(self, pos_weight: float = 1.0, neg_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = float(pos_weight)
        self.neg_weight = float(neg_weight)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        x, t, v = _prepare(logits, target, valid)
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        w = (self.pos_weight * t + self.neg_weight * (1.0 - t)) * v
        return _masked_mean(bce, w, x)


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017), ``-alpha_t (1-p_t)^gamma log(p_t)``, mean over
    valid pixels; ``alpha_t`` is ``alpha`` on positives and ``1-alpha`` on negatives.

    Computed in log space via ``logsigmoid`` so saturated logits stay finite.
    """

    name = "focal"

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        x, t, v = _prepare(logits, target, valid)
        log_p, log_1mp = F.logsigmoid(x), F.logsigmoid(-x)
        log_pt = t * log_p + (1.0 - t) * log_1mp  # log p_t
        log_1mpt = t * log_1mp + (1.0 - t) * log_p  # log (1 - p_t)
        alpha_t = self.alpha * t + (1.0 - self.alpha) * (1.0 - t)
        focal = -alpha_t * torch.exp(self.gamma * log_1mpt) * log_pt
        return _masked_mean(focal, v, x)


class JaccardLoss(nn.Module):
    """Class-aware soft Jaccard: ``1 - (wp*IoU_pos + wn*IoU_neg) / (wp + wn)``.

    ``IoU_pos = (sum(p t) + s) / (sum(p) + sum(t) - sum(p t) + s)``; ``IoU_neg`` is the
    same with ``1-p`` and ``1-t``. Weighting the positive class up (0.7/0.3, 0.8/0.2)
    keeps the rare PV class from being drowned by the background.
    """

    name = "jaccard"

    def __init__(
        self, pos_weight: float = 0.5, neg_weight: float = 0.5, smooth: float = 1.0
    ) -> None:
        super().__init__()
        if pos_weight + neg_weight <= 0:
            raise InputError("jaccard: pos_weight + neg_weight must be > 0")
        self.pos_weight = float(pos_weight)
        self.neg_weight = float(neg_weight)
        self.smooth = float(smooth)

    def _iou(self, p: Tensor, t: Tensor) -> Tensor:
        inter = (p * t).sum()
        return (inter + self.smooth) / (p.sum() + t.sum() - inter + self.smooth)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        x, t, v = _prepare(logits, target, valid)
        if v.sum().item() == 0:
            return x.sum() * 0.0
        p = torch.sigmoid(x)
        iou_pos = self._iou(p * v, t * v)
        iou_neg = self._iou((1.0 - p) * v, (1.0 - t) * v)
        score = self.pos_weight * iou_pos + self.neg_weight * iou_neg
        return 1.0 - score / (self.pos_weight + self.neg_weight)


class LovaszLoss(nn.Module):
    """Lovasz hinge (Berman et al., 2018): a convex surrogate of ``1 - IoU`` of the
    positive class, over the valid pixels of the batch. It optimises the metric itself,
    where Dice and soft Jaccard optimise a smooth proxy.

    With hinge errors ``e = 1 - logit * (2t - 1)`` sorted in decreasing order, the loss
    is ``sum(relu(e_i) * g_i)``, ``g`` the discrete gradient of the Jaccard loss of the
    first ``i`` errors (see :func:`_lovasz_grad`).
    """

    name = "lovasz"

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        x, t, v = _prepare(logits, target, valid)
        keep = v.reshape(-1) > 0
        if not bool(keep.any()):
            return x.sum() * 0.0
        x, t = x.reshape(-1)[keep], t.reshape(-1)[keep]
        errors = 1.0 - x * (2.0 * t - 1.0)
        errors_sorted, order = torch.sort(errors, descending=True)
        grad = _lovasz_grad(t[order])
        return torch.dot(F.relu(errors_sorted), grad)


def _lovasz_grad(t_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss, for targets sorted by
    decreasing error: ``J_i = 1 - (P - cumsum(t)_i) / (P + cumsum(1 - t)_i)``,
    ``g = J_i - J_{i-1}``."""
    positives = t_sorted.sum()
    intersection = positives - t_sorted.cumsum(0)
    union = positives + (1.0 - t_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if jaccard.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def drop_blank(target: Tensor, valid: Tensor | None) -> Tensor:
    """``valid`` with every sample (first axis) that has no positive valid pixel set
    invalid: such a blank tile then counts in no loss term, whatever its logits."""
    if valid is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    valid = valid.bool()
    has_positive = ((target > 0.5) & valid).flatten(1).any(1)
    return valid & has_positive.view(-1, *([1] * (valid.dim() - 1)))


class CombinedLoss(nn.Module):
    """``sum(weight * loss)`` over ``terms``.

    After each call ``last_parts`` maps every term's name to its (unweighted) value,
    for logging; a name used twice gets a ``_2``, ``_3`` ... suffix. ``skip_blank``:
    samples without a positive valid pixel are masked out of every term
    (:func:`drop_blank`); a batch of blank tiles only gives a zero that carries a
    gradient.
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]], skip_blank: bool = False) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        self.skip_blank = bool(skip_blank)
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList(m for _, m in terms)
        self.names: list[str] = []
        for _, m in terms:
            base = getattr(m, "name", type(m).__name__.lower())
            name, k = base, 1
            while name in self.names:
                k += 1
                name = f"{base}_{k}"
            self.names.append(name)
        self.last_parts: dict[str, float] = {}

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        if self.skip_blank:
            valid = drop_blank(target, valid)
        total: Tensor | None = None
        parts: dict[str, float] = {}
        for name, w, loss in zip(self.names, self.weights, self.losses, strict=True):
            value = loss(logits, target, valid)
            parts[name] = float(value.detach())
            total = w * value if total is None else total + w * value
        self.last_parts = parts
        assert total is not None
        return total


LOSSES: dict[str, type[nn.Module]] = {
    cls.name: cls
    for cls in (DiceLoss, BCELoss, WeightedBCELoss, FocalLoss, JaccardLoss, LovaszLoss)
}


#: The value of a param computed from the training data, and the params that take it.
AUTO = "auto"
AUTO_PARAMS = {"bce": ("pos_weight",), "weighted_bce": ("pos_weight",)}


def needs_class_balance(terms: Sequence[LossTerm]) -> bool:
    """Whether a term has a param set to ``auto`` (resolved by :func:`resolve_auto`)."""
    return any(_is_auto(v) for t in terms for v in t.params.values())


def _is_auto(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def auto_pos_weight(positive_pixels: int, valid_pixels: int) -> float:
    """``pos_weight: auto``: negative / positive valid pixels (the weight that makes the
    positives weigh as much as the negatives in BCE)."""
    positive, valid = int(positive_pixels), int(valid_pixels)
    if positive <= 0 or valid <= positive:
        raise InputError(
            f"loss pos_weight auto: the training masks have {positive} positive of {valid} "
            "valid pixels; a class ratio needs both classes (give a number instead)",
            "loss.terms",
        )
    return (valid - positive) / positive


def resolve_auto(terms: Sequence[LossTerm], pos_weight: float) -> list[LossTerm]:
    """Copies of ``terms`` with every ``pos_weight: auto`` replaced by ``pos_weight``
    (:func:`auto_pos_weight`); other params are left for :func:`build_loss` to check."""
    out = []
    for term in terms:
        params = {
            k: (float(pos_weight) if _is_auto(v) and k in AUTO_PARAMS.get(term.name, ()) else v)
            for k, v in term.params.items()
        }
        out.append(dataclasses.replace(term, params=params))
    return out


def _number(term: LossTerm, key: str, value: object) -> float:
    """A param's value as a float; one line naming the term and param otherwise."""
    if _is_auto(value):
        if key in AUTO_PARAMS.get(term.name, ()):
            raise InputError(
                f"loss term {term.name!r}: {key} auto is computed from the training masks "
                "when a run starts; here it needs a number",
                "loss.terms",
            )
        takes = ", ".join(f"{n}.{p}" for n, ps in AUTO_PARAMS.items() for p in ps)
        raise InputError(
            f"loss term {term.name!r}: {key} must be a number (auto only for {takes})",
            "loss.terms",
        )
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(
            f"loss term {term.name!r}: {key} must be a number, got {value!r}", "loss.terms"
        ) from None
    if not math.isfinite(number):
        raise InputError(f"loss term {term.name!r}: {key} must be finite", "loss.terms")
    return number


def build_loss(terms: Sequence[LossTerm], skip_blank: bool = False) -> CombinedLoss:
    """A :class:`CombinedLoss` from config terms; ``ValueError`` on unknown names or params
    (``auto`` params must be resolved first, :func:`resolve_auto`)."""
    if not terms:
        raise InputError(f"no loss terms given; valid names: {', '.join(LOSSES)}")
    built: list[tuple[float, nn.Module]] = []
    for term in terms:
        cls = LOSSES.get(term.name)
        if cls is None:
            raise InputError(f"unknown loss term {term.name!r}; valid names: {', '.join(LOSSES)}")
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(term.params) - set(allowed))
        if unknown:
            raise InputError(
                f"loss term {term.name!r}: unknown param(s) {', '.join(unknown)}; "
                f"valid params: {', '.join(allowed)}"
            )
        params = {k: _number(term, k, v) for k, v in term.params.items()}
        built.append((float(term.weight), cls(**params)))
    return CombinedLoss(built, skip_blank=skip_blank)
