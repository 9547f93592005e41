"""Weight averaging (train.ema): the average against hand computations, and a real
training run that evaluates, chooses and saves the averaged weights (and resumes them),
with pos_weight auto and blank tiles out of the loss recorded in the run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from core.config import load_config
from core.models.build import read_model_file
from core.progress import Progress
from core.training.averaging import WeightEMA
from core.training.loop import train


class Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def test_ema_of_a_scalar_by_hand():
    model = Scalar()  # starts at 0
    fixed = WeightEMA(model, decay=0.5, warmup=False)
    warm = WeightEMA(model, decay=0.9, warmup=True)
    for value in (1.0, 2.0, 3.0):  # the weights after three optimiser steps
        model.w.data.fill_(value)
        fixed.update(model)
        warm.update(model)
    # d = 0.5: 0.5*0 + 0.5*1 = 0.5; 0.5*0.5 + 0.5*2 = 1.25; 0.5*1.25 + 0.5*3 = 2.125
    assert fixed.module.w.item() == pytest.approx(2.125, abs=1e-7)
    # warm-up d_n = min(0.9, (1+n)/(10+n)) = 1/10, 2/11, 3/12:
    # 0.1*0 + 0.9*1 = 0.9; (2/11)*0.9 + (9/11)*2 = 1.8; 0.25*1.8 + 0.75*3 = 2.7
    assert warm.module.w.item() == pytest.approx(2.7, abs=1e-6)
    assert [warm.decay_at(n) for n in (0, 1, 2, 80, 10_000)] == pytest.approx(
        [0.1, 2 / 11, 0.25, 81 / 90, 0.9]
    )
    assert fixed.updates == 3 and not fixed.module.w.requires_grad


def test_ema_of_a_tiny_network_after_n_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Conv2d(3, 1, 1))
    ema = WeightEMA(model, decay=0.8, warmup=True)
    expected = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for n in range(6):
        x = torch.randn(4, 2, 5, 5)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        ema.update(model)
        d = min(0.8, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:  # BatchNorm running statistics included
                expected[k] = d * expected[k] + (1 - d) * v.detach().double()
            else:
                expected[k] = v.detach().clone().double()
    got = ema.module.state_dict()
    assert set(got) == set(expected)
    for k, v in got.items():
        torch.testing.assert_close(v.double(), expected[k], rtol=0, atol=1e-6, msg=k)
    assert got["1.num_batches_tracked"].item() == 6
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])
    # The copy evaluates as a network, and checkpoints round-trip.
    again = WeightEMA(model, decay=0.8)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 6
    assert all(torch.equal(again.module.state_dict()[k], got[k]) for k in got)


def test_ema_decay_is_checked():
    from core.config import config_problems

    cfg = load_config(None, ["train.ema.enabled=true", "train.ema.decay=1.0"], check=False)
    [problem] = config_problems(cfg)
    assert problem.field == "train.ema.decay" and "(0, 1)" in problem.message


def config(solafune, out, **over):
    overrides = [f"data.path={solafune}", "data.limit=40", "data.bands=[4,3,2,8]",
                 "train.epochs=2", "train.batch_size=8", f"out_dir={out}",
                 "train.early_stop.enabled=false", "train.threads=2",
                 "train.eval_test_each_epoch=false", "train.precision=fp32",
                 "train.ema.enabled=true", "train.ema.decay=0.9", "data.skip_blank_in_loss=true",
                 "loss.terms=[{name: bce, weight: 0.5, params: {pos_weight: auto}}, "
                 "{name: jaccard, weight: 0.5, params: {pos_weight: 0.8, neg_weight: 0.2}}]"]  # fmt: skip
    return load_config(None, overrides + [f"{k}={v}" for k, v in over.items()])


def test_training_evaluates_chooses_and_saves_the_averaged_weights(solafune, tmp_path):
    """Cancelled after epoch 1 and resumed == straight through, with the EMA in the
    checkpoint; the model file holds the EMA weights of the best epoch and says so."""
    straight = train(config(solafune, tmp_path / "a"))
    assert straight.status == "completed" and straight.best_epoch in (1, 2)
    run = straight.run_dir
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    meta, state = read_model_file(run / "model.pt")
    n_train = sum(r.endswith(",train") for r in (run / "split.csv").read_text().splitlines())
    steps = n_train // 8  # optimiser steps per epoch (batch 8, last partial batch dropped)
    assert ck["ema"]["updates"] == 2 * steps and steps > 0
    assert meta.averaging == {"kind": "ema", "decay": 0.9, "warmup": True,
                              "updates": steps * straight.best_epoch,
                              "epoch": straight.best_epoch}  # fmt: skip
    if straight.best_epoch == 2:  # the last epoch's EMA weights, not the raw ones
        ema, raw = ck["ema"]["weights"], ck["model"]
        assert all(torch.equal(state[k], ema[k]) for k in state)
        assert not all(torch.equal(state[k], raw[k]) for k in state)
    # pos_weight auto from the training masks' balance, recorded in loss.json.
    loss = json.loads((run / "loss.json").read_text())
    balance = json.loads((run / "dataset.json").read_text())["balance"]["train"]
    pos, valid = balance["positive_pixels"], balance["valid_pixels"]
    assert loss["pos_weight_auto"]["value"] == pytest.approx((valid - pos) / pos)
    assert loss["terms"][0]["params"] == {"pos_weight": pytest.approx((valid - pos) / pos)}
    assert loss["skip_blank"] is True
    # Blank tiles are out of the loss, not out of the metrics: val counts every pixel.
    val = json.loads((run / "metrics.json").read_text())["splits"]["val"]
    all_val = json.loads((run / "dataset.json").read_text())["balance"]["val"]["valid_pixels"]
    assert val["tp"] + val["fp"] + val["fn"] + val["tn"] == all_val

    done = {"n": 0}

    def progress(p: Progress) -> None:
        done["n"] += "history_row" in p.info

    first = train(config(solafune, tmp_path / "b"), progress=progress,
                  cancel=lambda: done["n"] >= 1)  # fmt: skip
    assert first.status == "cancelled"
    resumed = train(None, resume=first.run_dir)
    rows = [r.split(",")[:-1] for r in (run / "history.csv").read_text().splitlines()]
    again = [r.split(",")[:-1] for r in (resumed.run_dir / "history.csv").read_text().splitlines()]
    assert again == rows  # same losses and val IoU of the averaged weights, every epoch
    _, resumed_state = read_model_file(resumed.run_dir / "model.pt")
    assert all(torch.equal(resumed_state[k], state[k]) for k in state)
