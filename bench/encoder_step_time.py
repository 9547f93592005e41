"""Training and evaluation step time of encoders, interleaved so that they share the load.

    .venv/bin/python bench/encoder_step_time.py [--encoders resnet18,efficientnet-b4]
        [--rounds 5] [--steps 2] [--threads 2] [--batch 8] [--size 96]
        [--eval-batch 32] [--eval-size 128] [--precision auto] [--channels-last auto]

Unet with each encoder (random init, 4 bands, one logit), in the numerics the engine
picks (:class:`core.models.precision.Numerics`; ``auto`` = bf16 + channels-last on a
CPU with native bf16). Training step: forward + BCE + Dice loss on float32
logits + backward + AdamW on ``--batch`` tiles of ``--size`` px (``configs/rgbn.yaml``
trains on 8 crops of 96 px). Evaluation step: inference on ``--eval-batch`` tiles of
``--eval-size`` px (4x-upscaled Solafune tiles pad to 128). Every round runs each encoder
once (``--steps`` timed steps); the report gives median tiles/s and the median of the
same-round time ratios to the first encoder (robust to load that drifts between rounds).
On a shared machine only the ratios mean something.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default="resnet18,efficientnet-b4")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--eval-size", type=int, default=128)
    p.add_argument("--precision", default="auto")
    p.add_argument("--channels-last", default="auto")
    a = p.parse_args(argv)

    import torch

    from core.config import LossTerm
    from core.models.build import build_model
    from core.models.precision import Numerics
    from core.training.losses import build_loss

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    encoders = [e for e in a.encoders.split(",") if e]
    num = Numerics.resolve(a.precision, a.channels_last, torch.device("cpu"), False)
    loss_fn = build_loss([LossTerm("bce", 0.5), LossTerm("dice", 0.5)])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 4, a.size, a.size, generator=g)
    y = (torch.rand(a.batch, 1, a.size, a.size, generator=g) > 0.9).float()
    v = torch.ones_like(y, dtype=torch.bool)
    xe = torch.randn(a.eval_batch, 4, a.eval_size, a.eval_size, generator=g)
    setups = {}
    for enc in encoders:
        model = num.prepare_model(build_model("Unet", enc, 4, None, {}))
        params = sum(t.numel() for t in model.parameters())
        setups[enc] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), params)

    def train_step(enc: str) -> None:
        model, opt, _ = setups[enc]
        model.train()
        opt.zero_grad(set_to_none=True)
        with num.autocast("cpu"):
            logits = model(num.prepare_input(x))
        loss_fn(logits.float(), y, v).backward()
        opt.step()

    def eval_step(enc: str) -> None:
        model = setups[enc][0]
        model.eval()
        with torch.inference_mode(), num.autocast("cpu"):
            torch.sigmoid(model(num.prepare_input(xe))).float()

    load = os.getloadavg()[0]
    print(f"numerics {num.precision} {num.memory_format}, {a.threads} threads, load {load:.2f}")
    for what, step, tiles in (("train", train_step, a.batch), ("eval", eval_step, a.eval_batch)):
        secs: dict[str, list[float]] = {e: [] for e in encoders}
        for enc in encoders:
            for _ in range(a.warmup):
                step(enc)
        for r in range(a.rounds):
            for enc in encoders:
                t = time.perf_counter()
                for _ in range(a.steps):
                    step(enc)
                secs[enc].append((time.perf_counter() - t) / a.steps)
            print(f"[{what} round {r + 1}] " + " ".join(f"{e}={secs[e][-1]:.2f}s" for e in encoders),
                  flush=True)  # fmt: skip
        ref = secs[encoders[0]]
        print(f"{what}: {'encoder':<18} {'params':>10} {'s/step':>8} {'tiles/s':>8} {'x time':>7}")
        for enc in encoders:
            med = statistics.median(secs[enc])
            ratio = statistics.median(s / r for s, r in zip(secs[enc], ref, strict=True))
            print(f"{what}: {enc:<18} {setups[enc][2]:>10,} {med:>8.3f} {tiles / med:>8.1f} "
                  f"{ratio:>7.2f}")  # fmt: skip
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
