"""Training and evaluation throughput of the engine's numerics settings (issue 11,
lever 1): fp32 NCHW (the engine before ``train.precision`` / ``train.channels_last``),
channels-last, bf16 autocast, bf16 autocast + channels-last, and that last one with the
network under ``torch.compile`` (not an engine setting: what compilation would add).

    .venv/bin/python bench/train_throughput.py [--rounds 7] [--steps 3] [--threads 2]
        [--batch 16] [--size 96] [--eval-batch 32] [--eval-size 128] [--json FILE]

Model: Unet resnet18 (random init), 4 input bands. Training step: forward + loss
(BCE + Dice, computed in fp32 on ``logits.float()``) + backward + AdamW, a batch of
``--batch`` random tiles of ``--size`` px (the engine's ``configs/rgbn.yaml`` trains on
96 px crops). Evaluation step: ``inference_mode`` forward + sigmoid on ``--eval-batch``
tiles of ``--eval-size`` px (rgbn's 4x upscaled tiles pad to 128 px).

The variants go through the engine's own code (:class:`core.models.precision.Numerics`,
the same calls the training loop and the predictor make). Machines here are shared, so
absolute times mean little: after ``--warmup`` untimed steps of each
variant, every round runs each variant once (``--steps`` timed steps), in the order A,
B, C, D, A, B, C, D, ..., and the report gives the median tiles/s per variant over rounds,
its ratio to fp32 NCHW's median and the median of the same-round ratios (robust to
load that drifts between rounds), with the load average before and after.

On a CPU without native bf16 (no ``avx512_bf16`` / ``amx_bf16``), bf16 autocast is
emulated by oneDNN and is expected to be slower than fp32: ``train.precision: auto``
then stays fp32 (the report says which the CPU has).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# name: (precision, channels-last, torch.compile). The compiled variant is not an engine
# setting: it measures what TorchInductor's C++ backend would add (issue 11, lever 1).
VARIANTS = {
    "fp32_nchw": ("fp32", False, False),
    "fp32_channels_last": ("fp32", True, False),
    "bf16_nchw": ("bf16", False, False),
    "bf16_channels_last": ("bf16", True, False),
    "bf16_channels_last_compiled": ("bf16", True, True),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant, first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--eval-size", type=int, default=128)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args(argv)

    import torch

    from core.config import LossTerm
    from core.models.build import build_model
    from core.models.precision import Numerics, cpu_bf16_support
    from core.training.losses import build_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = [v for v in args.variants.split(",") if v]
    base = build_model("Unet", "resnet18", 4, None, {})
    init = {k: v.clone() for k, v in base.state_dict().items()}
    loss_fn = build_loss([LossTerm("bce", 0.5), LossTerm("dice", 0.5)])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, args.size, args.size, generator=g)
    y = (torch.rand(args.batch, 1, args.size, args.size, generator=g) > 0.9).float()
    v = torch.ones_like(y, dtype=torch.bool)
    xe = torch.randn(args.eval_batch, 4, args.eval_size, args.eval_size, generator=g)

    # One model + optimizer per variant, built once; each is reset to the same weights.
    setups = {}
    for name in names:
        prec, cl, compiled = VARIANTS[name]
        num = Numerics(prec, cl)
        model = build_model("Unet", "resnet18", 4, None, {})
        model.load_state_dict(init)
        model = num.prepare_model(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        # The warm-up steps pay the compilation (about 1.5 min per mode on 2 cores).
        run = torch.compile(model) if compiled else model
        setups[name] = (num, model, opt, run)

    def train_step(name: str) -> None:
        num, model, opt, run = setups[name]
        model.train()
        xi = num.prepare_input(x)
        opt.zero_grad(set_to_none=True)
        with num.autocast("cpu"):
            logits = run(xi)
        loss = loss_fn(logits.float(), y, v)
        loss.backward()
        opt.step()

    def eval_step(name: str) -> None:
        num, model, _, run = setups[name]
        model.eval()
        with torch.inference_mode(), num.autocast("cpu"):
            torch.sigmoid(run(num.prepare_input(xe))).float()

    def measure(step, tiles: int, what: str) -> dict[str, list[float]]:
        rates: dict[str, list[float]] = {n: [] for n in names}
        for name in names:  # oneDNN primitives, allocator caches, first-call costs
            for _ in range(args.warmup):
                step(name)
        for r in range(args.rounds):
            for name in names:
                t = time.perf_counter()
                for _ in range(args.steps):
                    step(name)
                rates[name].append(tiles * args.steps / (time.perf_counter() - t))
            line = " ".join(f"{n}={rates[n][-1]:.1f}" for n in names)
            print(f"[bench] {what} round {r + 1}/{args.rounds}: {line}", flush=True)
        return rates

    load_before = os.getloadavg()
    out: dict = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_bf16_support(),
        "threads": args.threads,
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "loadavg_before": load_before,
    }
    for what, step, tiles in (("train", train_step, args.batch),
                              ("eval", eval_step, args.eval_batch)):  # fmt: skip
        if what == "eval" and args.skip_eval:
            continue
        rates = measure(step, tiles, what)
        med = {n: statistics.median(r) for n, r in rates.items()}
        ref = med.get("fp32_nchw")
        base = rates.get("fp32_nchw")
        out[what] = {
            n: {
                "tiles_per_s": med[n],
                "ratio": (med[n] / ref) if ref else None,
                # Same-round ratios: robust to load that drifts between rounds.
                "round_ratio": statistics.median(a / b for a, b in zip(rates[n], base, strict=True))
                if base
                else None,
                "rounds": rates[n],
            }  # fmt: skip
            for n in names
        }
    out["loadavg_after"] = os.getloadavg()
    print(f"\nCPU {out['cpu']} ({out['cpu_capability']}, native bf16: {out['native_bf16']}), "
          f"torch {out['torch']}, {args.threads} threads, {args.rounds} interleaved rounds")  # fmt: skip
    print(f"load average before {load_before[0]:.2f} / after {out['loadavg_after'][0]:.2f}")
    for what in ("train", "eval"):
        if what not in out:
            continue
        shape = (f"batch {args.batch} x 4 x {args.size}^2, fwd+bwd+AdamW" if what == "train"
                 else f"batch {args.eval_batch} x 4 x {args.eval_size}^2, inference")  # fmt: skip
        print(f"\n{what} ({shape})")
        print(f"{'variant':<20} {'tiles/s':>9} {'x fp32 NCHW':>12} {'same-round x':>13}")
        for n, r in out[what].items():
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            rr = f"{r['round_ratio']:.2f}" if r["round_ratio"] is not None else "-"
            print(f"{n:<20} {r['tiles_per_s']:>9.2f} {ratio:>12} {rr:>13}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
