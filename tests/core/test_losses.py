"""Losses against hand computations (math.exp/log), masking, gradients and build_loss."""

from __future__ import annotations

import math

import pytest
import torch

from core.config import LossTerm
from core.training.losses import (
    BCELoss,
    CombinedLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    LovaszLoss,
    WeightedBCELoss,
    build_loss,
)

Z = [2.0, -1.0, 0.5, -3.0]  # logits of a 2x2 tile, row-major
T = [1.0, 0.0, 1.0, 0.0]  # its target


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def bce(z: float, t: float) -> float:
    return -math.log(sig(z)) if t else -math.log(1.0 - sig(z))


def tile(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 2, 2)


def all_valid() -> torch.Tensor:
    return torch.ones(1, 1, 2, 2, dtype=torch.bool)


def hand_jaccard(zs, ts, wp, wn, s=1.0) -> float:
    ps = [sig(z) for z in zs]

    def iou(p, t):
        inter = sum(a * b for a, b in zip(p, t, strict=True))
        return (inter + s) / (sum(p) + sum(t) - inter + s)

    pos = iou(ps, ts)
    neg = iou([1 - p for p in ps], [1 - t for t in ts])
    return 1.0 - (wp * pos + wn * neg) / (wp + wn)


def test_dice_by_hand():
    p = [sig(z) for z in Z]
    inter = p[0] + p[2]
    expected = 1.0 - (2 * inter + 1.0) / (sum(p) + 2.0 + 1.0)
    got = DiceLoss()(tile(Z), tile(T), all_valid()).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_bce_by_hand():
    expected = sum(bce(z, t) for z, t in zip(Z, T, strict=True)) / 4
    assert BCELoss()(tile(Z), tile(T), all_valid()).item() == pytest.approx(expected, rel=1e-6)
    # pos_weight scales the positive terms; the mean is still over the 4 pixels.
    expected_pw = sum((2.0 if t else 1.0) * bce(z, t) for z, t in zip(Z, T, strict=True)) / 4
    got = BCELoss(pos_weight=2.0)(tile(Z), tile(T), all_valid()).item()
    assert got == pytest.approx(expected_pw, rel=1e-6)


def test_weighted_bce_by_hand():
    w = [3.0 if t else 1.0 for t in T]
    expected = sum(wi * bce(z, t) for wi, z, t in zip(w, Z, T, strict=True)) / sum(w)
    got = WeightedBCELoss(pos_weight=3.0, neg_weight=1.0)(tile(Z), tile(T), all_valid()).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_focal_by_hand():
    terms = []
    for z, t in zip(Z, T, strict=True):
        pt = sig(z) if t else 1.0 - sig(z)
        alpha_t = 0.25 if t else 0.75
        terms.append(-alpha_t * (1.0 - pt) ** 2 * math.log(pt))
    got = FocalLoss(alpha=0.25, gamma=2.0)(tile(Z), tile(T), all_valid()).item()
    assert got == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_focal_saturated_logits_stay_finite():
    z = tile([100.0, -100.0, -100.0, 100.0])  # two right, two badly wrong
    loss = FocalLoss()(z, tile(T), all_valid())
    assert math.isfinite(loss.item())
    # wrong pixels: -alpha_t * 1 * log(sigmoid(-100)) = alpha_t * 100
    assert loss.item() == pytest.approx((0.25 * 100 + 0.75 * 100) / 4, rel=1e-4)


@pytest.mark.parametrize("wp,wn", [(0.5, 0.5), (0.7, 0.3), (0.8, 0.2)])
def test_jaccard_by_hand(wp, wn):
    got = JaccardLoss(pos_weight=wp, neg_weight=wn)(tile(Z), tile(T), all_valid()).item()
    assert got == pytest.approx(hand_jaccard(Z, T, wp, wn), rel=1e-6)


ALL_LOSSES = [
    DiceLoss(),
    BCELoss(pos_weight=2.0),
    WeightedBCELoss(pos_weight=3.0, neg_weight=0.5),
    FocalLoss(),
    JaccardLoss(pos_weight=0.8, neg_weight=0.2),
]


@pytest.mark.parametrize("loss", [*ALL_LOSSES, LovaszLoss()], ids=lambda m: type(m).__name__)
def test_invalid_pixels_change_nothing(loss):
    valid = tile([1.0, 1.0, 1.0, 0.0]).bool()
    base = loss(tile(Z), tile(T), valid)
    for bad_logit, bad_target in [(1e6, 1.0), (-1e6, 0.0), (float("nan"), 1.0)]:
        z = tile(Z[:3] + [bad_logit])
        t = tile(T[:3] + [bad_target])
        assert loss(z, t, valid).item() == pytest.approx(base.item(), rel=1e-6)
    # ... and equals the loss of the three valid pixels alone.
    only = loss(
        torch.tensor(Z[:3]).reshape(1, 1, 1, 3),
        torch.tensor(T[:3]).reshape(1, 1, 1, 3),
        torch.ones(1, 1, 1, 3, dtype=torch.bool),
    )
    assert base.item() == pytest.approx(only.item(), rel=1e-6)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda m: type(m).__name__)
def test_gradients_flow_only_to_valid_pixels(loss):
    z = tile(Z).requires_grad_(True)
    valid = tile([1.0, 1.0, 1.0, 0.0]).bool()
    loss(z, tile(T), valid).backward()
    g = z.grad.flatten()
    assert torch.isfinite(g).all()
    assert (g[:3] != 0).all()
    assert g[3].item() == 0.0


@pytest.mark.parametrize("loss", [*ALL_LOSSES, LovaszLoss()], ids=lambda m: type(m).__name__)
def test_no_valid_pixel_gives_zero_with_grad(loss):
    z = tile(Z).requires_grad_(True)
    out = loss(z, tile(T), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    assert out.item() == 0.0
    assert out.requires_grad
    out.backward()
    assert (z.grad == 0).all()


@pytest.mark.parametrize("loss", [DiceLoss(), BCELoss(), JaccardLoss()], ids=str)
def test_sigmoid_applied_exactly_once(loss):
    # Confident, correct logits: near-zero loss. Were the sigmoid applied twice,
    # positives would sit at sigmoid(1)=0.73 and negatives at sigmoid(0)=0.5.
    z = tile([20.0, -20.0, 20.0, -20.0])
    assert loss(z, tile(T), all_valid()).item() < 1e-6
    twice = loss(torch.sigmoid(z), tile(T), all_valid()).item()
    assert twice > 0.1


def test_lovasz_by_hand():
    # hinge errors 1 - z(2t-1): [-1, 0, 0.5, -2]; sorted: 0.5 (t=1), 0 (t=0), -1 (t=1),
    # -2 (t=0). P = 2; Jaccard loss of the first i: 1 - [1,1,0,0]/[2,3,3,4] =
    # [1/2, 2/3, 1, 1], differences [1/2, 1/6, 1/3, 0]; loss = 0.5 * 1/2 + 0 * 1/6 = 0.25.
    z = tile(Z).requires_grad_(True)
    out = LovaszLoss()(z, tile(T), all_valid())
    assert out.item() == pytest.approx(0.25, rel=1e-6)
    out.backward()
    # d/dz of relu(1 - z) * 1/2 for the only positive error (pixel 2, t=1): -1/2
    assert z.grad.flatten().tolist() == pytest.approx([0.0, 0.0, -0.5, 0.0])
    # every pixel right with margin: zero loss; one confident mistake: a positive loss
    assert LovaszLoss()(tile([3.0, -3.0, 3.0, -3.0]), tile(T), all_valid()).item() == 0.0
    assert LovaszLoss()(tile([3.0, 3.0, 3.0, -3.0]), tile(T), all_valid()).item() > 1.0


def test_combined_is_weighted_sum_of_parts():
    combo = CombinedLoss([(0.3, BCELoss()), (0.3, FocalLoss()), (0.4, JaccardLoss(0.8, 0.2))])
    total = combo(tile(Z), tile(T), all_valid()).item()
    parts = combo.last_parts
    assert list(parts) == ["bce", "focal", "jaccard"]
    assert parts["jaccard"] == pytest.approx(hand_jaccard(Z, T, 0.8, 0.2), rel=1e-6)
    expected = 0.3 * parts["bce"] + 0.3 * parts["focal"] + 0.4 * parts["jaccard"]
    assert total == pytest.approx(expected, rel=1e-6)


def test_build_loss_from_config_terms():
    loss = build_loss(
        [
            LossTerm("bce", 0.3),
            LossTerm("focal", 0.3),
            LossTerm("jaccard", 0.4, {"pos_weight": 0.8, "neg_weight": 0.2}),
            LossTerm("dice", 1.0),
            LossTerm("dice", 0.5, {"smooth": 0.0}),
        ]
    )
    assert isinstance(loss, CombinedLoss)
    assert loss.names == ["bce", "focal", "jaccard", "dice", "dice_2"]
    assert loss.weights == [0.3, 0.3, 0.4, 1.0, 0.5]
    jac = loss.losses[2]
    assert (jac.pos_weight, jac.neg_weight) == (0.8, 0.2)
    assert loss.losses[4].smooth == 0.0
    assert math.isfinite(loss(tile(Z), tile(T), all_valid()).item())


def test_build_loss_errors_name_the_term():
    with pytest.raises(ValueError, match=r"'tversky'.*dice, bce, weighted_bce, focal, jaccard"):
        build_loss([LossTerm("tversky")])
    with pytest.raises(ValueError, match=r"'focal'.*beta.*valid params: alpha, gamma"):
        build_loss([LossTerm("focal", 1.0, {"beta": 1.0})])
    with pytest.raises(ValueError, match="no loss terms"):
        build_loss([])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        DiceLoss()(tile(Z), tile(T).reshape(1, 4), all_valid())


# --- the tuning notes' knobs: class-aware Jaccard with weighted BCE and focal, BCE
# pos_weight (a number or auto), blank tiles out of the loss ---------------------------


def hand_weighted_bce(zs, ts, wp, wn) -> float:
    w = [wp if t else wn for t in ts]
    return sum(wi * bce(z, t) for wi, z, t in zip(w, zs, ts, strict=True)) / sum(w)


def hand_focal(zs, ts, alpha=0.25, gamma=2.0) -> float:
    terms = []
    for z, t in zip(zs, ts, strict=True):
        pt = sig(z) if t else 1.0 - sig(z)
        alpha_t = alpha if t else 1.0 - alpha
        terms.append(-alpha_t * (1.0 - pt) ** gamma * math.log(pt))
    return sum(terms) / len(terms)


def test_class_aware_jaccard_with_weighted_bce_and_focal_from_yaml():
    from core.config import load_config

    cfg = load_config(None, [
        "loss.terms=[{name: weighted_bce, weight: 0.3, params: {pos_weight: 3, neg_weight: 1}},"
        " {name: focal, weight: 0.3, params: {alpha: 0.25, gamma: 2}},"
        " {name: jaccard, weight: 0.4, params: {pos_weight: 0.8, neg_weight: 0.2}}]"
    ])  # fmt: skip
    assert cfg.loss.terms[0].params == {"pos_weight": 3.0, "neg_weight": 1.0}
    loss = build_loss(cfg.loss.terms)
    expected = (
        0.3 * hand_weighted_bce(Z, T, 3.0, 1.0)
        + 0.3 * hand_focal(Z, T)
        + 0.4 * hand_jaccard(Z, T, 0.8, 0.2)
    )
    assert loss(tile(Z), tile(T), all_valid()).item() == pytest.approx(expected, rel=1e-6)
    # 0.8 on the positive class: the PV IoU weighs four times the background IoU.
    ps = [sig(z) for z in Z]
    inter = ps[0] + ps[2]
    iou_pos = (inter + 1.0) / (sum(ps) + 2.0 - inter + 1.0)
    assert loss.last_parts["jaccard"] == pytest.approx(
        1.0 - (0.8 * iou_pos + 0.2 * (1.0 - hand_jaccard(Z, T, 0.0, 1.0))), rel=1e-6
    )


def test_pos_weight_auto_is_the_negative_positive_ratio():
    from core.config import load_config
    from core.training.losses import auto_pos_weight, resolve_auto

    # 92 positive of 1000 valid pixels (the Solafune tiles' 9.2 %): 908 / 92.
    assert auto_pos_weight(92, 1000) == pytest.approx(908 / 92)
    cfg = load_config(None, [
        "loss.terms=[{name: bce, weight: 0.5, params: {pos_weight: auto}},"
        " {name: weighted_bce, weight: 0.5, params: {pos_weight: auto, neg_weight: 2}},"
        " {name: jaccard, weight: 1, params: {pos_weight: 0.8, neg_weight: 0.2}}]"
    ])  # fmt: skip
    assert cfg.loss.terms[0].params == {"pos_weight": "auto"}
    terms = resolve_auto(cfg.loss.terms, auto_pos_weight(1, 4))  # 3 negatives per positive
    assert [t.params for t in terms] == [
        {"pos_weight": 3.0}, {"pos_weight": 3.0, "neg_weight": 2.0},
        {"pos_weight": 0.8, "neg_weight": 0.2},
    ]  # fmt: skip
    assert cfg.loss.terms[0].params == {"pos_weight": "auto"}  # the config is left alone
    loss = build_loss(terms)
    bce_3 = sum((3.0 if t else 1.0) * bce(z, t) for z, t in zip(Z, T, strict=True)) / 4
    total = loss(tile(Z), tile(T), all_valid()).item()
    parts = loss.last_parts
    expected = 0.5 * parts["bce"] + 0.5 * parts["weighted_bce"] + parts["jaccard"]
    assert total == pytest.approx(expected, rel=1e-6)
    assert loss.last_parts["bce"] == pytest.approx(bce_3, rel=1e-6)
    assert loss.last_parts["weighted_bce"] == pytest.approx(
        hand_weighted_bce(Z, T, 3.0, 2.0), rel=1e-6
    )


def test_pos_weight_auto_refusals():
    from core.training.losses import auto_pos_weight

    with pytest.raises(ValueError, match=r"'bce': pos_weight auto is computed from the training"):
        build_loss([LossTerm("bce", 1.0, {"pos_weight": "auto"})])
    with pytest.raises(ValueError, match=r"'jaccard': pos_weight must be a number \(auto only"):
        build_loss([LossTerm("jaccard", 1.0, {"pos_weight": "auto"})])
    with pytest.raises(ValueError, match=r"'focal': gamma must be a number, got 'two'"):
        build_loss([LossTerm("focal", 1.0, {"gamma": "two"})])
    with pytest.raises(ValueError, match="0 positive of 500 valid pixels"):
        auto_pos_weight(0, 500)


def test_check_train_accepts_pos_weight_auto_and_names_bad_params(tmp_path):
    from core.config import load_config
    from core.training.checks import _loss_problems

    ok = load_config(None, ["loss.terms=[{name: bce, params: {pos_weight: auto}}]"])
    assert _loss_problems(ok) == []
    bad = load_config(None, ["loss.terms=[{name: dice, params: {smooth: auto}}]"])
    [problem] = _loss_problems(bad)
    assert problem.field == "loss.terms" and "'dice': smooth must be a number" in problem.message


def test_skip_blank_leaves_blank_tiles_out_of_every_term():
    # Tile 0 is the usual one; tile 1 has no positive valid pixel (its one positive is
    # invalid), and confident wrong logits that would dominate any loss.
    z = torch.tensor([Z, [9.0, 9.0, 9.0, -9.0]]).reshape(2, 1, 2, 2)
    t = torch.tensor([T, [0.0, 0.0, 0.0, 1.0]]).reshape(2, 1, 2, 2)
    valid = torch.tensor([[True] * 4, [True, True, True, False]]).reshape(2, 1, 2, 2)
    terms = [LossTerm("bce", 0.5, {"pos_weight": 2.0}), LossTerm("focal", 0.2),
             LossTerm("jaccard", 0.3, {"pos_weight": 0.8, "neg_weight": 0.2})]  # fmt: skip
    expected = (
        0.5 * sum((2.0 if tt else 1.0) * bce(zz, tt) for zz, tt in zip(Z, T, strict=True)) / 4
        + 0.2 * hand_focal(Z, T)
        + 0.3 * hand_jaccard(Z, T, 0.8, 0.2)
    )
    skipping = build_loss(terms, skip_blank=True)
    assert skipping(z, t, valid).item() == pytest.approx(expected, rel=1e-6)
    # Without the setting the blank tile counts (and costs a lot).
    assert build_loss(terms)(z, t, valid).item() > expected + 1.0
    # Only blank tiles: a zero that carries a (zero) gradient.
    zb = z[1:].clone().requires_grad_(True)
    out = skipping(zb, t[1:], valid[1:])
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert (zb.grad == 0).all()
