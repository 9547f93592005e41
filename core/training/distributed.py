"""Training on several processes or machines with ``torchrun`` (PyTorch DDP).

``torchrun --nproc_per_node N -m core train --config FILE`` starts N copies of the
command; each finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment and
:func:`setup` joins them in one process group: **gloo** on CPU, **NCCL** on CUDA
(device ``cuda:LOCAL_RANK``). Without those variables (or with ``WORLD_SIZE`` 1)
nothing here does anything and training is exactly the single-process one.

What each rank does (see :func:`core.training.loop.train`):

* **Data.** Every rank reads the dataset, computes the same split and statistics, and
  builds the same datasets. The training tiles are dealt by a seeded
  :class:`~torch.utils.data.DistributedSampler` (``seed = train.seed``,
  ``set_epoch`` every epoch): each epoch is one permutation shared by all ranks, cut
  into disjoint, equally long shards (the last few tiles of the permutation are
  repeated when the count does not divide, so every rank takes the same number of
  steps).
* **Augmentation.** Rank ``r``'s augmentation and crop stream is
  ``numpy.random.default_rng([train.seed, r])``, and its DataLoader generator (which
  seeds worker processes) is seeded with :func:`rank_seed` ``(train.seed, r)``. So a
  given seed and world size give the same stream on each rank every time (runs are
  reproducible), and the ranks' streams differ from each other (no two ranks flip
  the same way in lockstep). Torch's, numpy's and Python's global generators are
  seeded with ``train.seed`` on every rank, so every rank builds the same initial
  weights (DDP also broadcasts rank 0's at the start).
* **Model.** Wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`:
  gradients are averaged over ranks at every step, so all ranks hold the same weights.
  BatchNorm statistics are rank 0's, not synchronised: DDP broadcasts them before each
  step, and :func:`sync_buffers` again before each evaluation.
* **Metrics.** Validation and test are split by whole evaluation batches (batch ``b``
  of ``train.eval_batch_size`` tiles goes to rank ``b mod N``), so every batch holds
  exactly the tiles a single process would batch together. Confusion counts, the
  threshold scan's counts and histograms, and tile counts are all-reduced (SUM,
  int64: exact); per-batch loss sums, per-image rows and per-tile plant results are
  gathered and added up in the single process's order. Metrics over a split are
  therefore those of a single-process evaluation of the same weights. Early stopping,
  the LR schedule and the time budget are decided from these reduced values (the
  same on every rank).
* **Output.** Only rank 0 creates the run folder and writes into it (config, split,
  stats, history, checkpoints, model, metrics, plots); the others write nothing and
  report no progress. ``run.json`` records ``world_size`` and ``backend``. Rank 0
  checks the settings (:func:`~core.training.checks.check_train`) and shares the
  verdict: a refusal stops every rank, and only rank 0 prints it.
* **Cancel.** torchrun forwards SIGTERM to every rank; the ranks agree on it once per
  training batch (an all-reduce of a flag) and after each evaluation, stop together
  and rank 0 keeps the best model as in a single process.
* **Resume.** ``torchrun ... -m core train --resume RUN_DIR``: rank 0 checks the run
  folder (a refusal stops every rank, one error line); every rank then reads the same
  config, split, statistics and ``checkpoint.pt`` (weights, optimiser, schedule,
  scaler, history) from the shared folder, and the ranks compare a digest of those
  files before going on (:func:`agree`). Training continues at the epoch after the
  checkpoint's: the sampler's ``set_epoch`` takes the absolute epoch, so the data
  order is the uninterrupted run's. The checkpoint holds every rank's random states;
  resuming with the same world size continues exactly, with another world size each
  rank starts from its seed-derived streams (data order stays that of the epoch).
  Rank 0 alone writes, as always.

Every node must see the dataset under the same path, and the output folder (rank 0
writes it; the other ranks read the best model file from it for the final evaluation).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError, Problem, UserError, raise_problems
from ..evaluation.metrics import ConfusionCounts, ThresholdScan
from ..progress import CancelFn, Cancelled


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, world size, backend and device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None
    device: torch.device | None = None
    threads: int | None = None  # torch threads of this process (set by setup)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict:
        """What ``run.json`` notes about the process group."""
        return {"world_size": self.world, "backend": self.backend,
                "threads_per_process": self.threads}  # fmt: skip


SINGLE = Dist()


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    return env_rank() == 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def process_threads(threads: int | None, cores: int, local_world: int) -> int:
    """Torch threads of one of ``local_world`` processes on a machine of ``cores``
    cores: ``threads`` (train.threads) capped at the process's share of the cores, or
    that share. Never more threads than cores: oversubscribed OpenMP threads spin-wait
    on each other (configs/rgbn.yaml's 2 threads in each of 2 processes on 2 cores
    made epochs 9x slower than 1 process, docs/benchmarks.md)."""
    share = max(1, cores // max(1, local_world))
    return min(int(threads), share) if threads else share


def setup(device_name: str, threads: int | None) -> Dist:
    """Join torchrun's process group (no-op outside torchrun or with one process).

    Backend: NCCL when the device resolves to CUDA (``cuda:LOCAL_RANK``), gloo on CPU.
    Torch threads per process: :func:`process_threads` (``threads`` capped at the
    cores divided by the processes on this machine).
    """
    world = env_world()
    if world <= 1:
        return SINGLE
    import torch.distributed as tdist

    from ..models.build import resolve_device

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise InputError(
                f"torchrun started {local_world} processes on this machine, which has {gpus} "
                f"CUDA GPU(s): use --nproc_per_node {gpus} or fewer (or train.device=cpu)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend)
    n = process_threads(threads, _cores(), local_world)
    torch.set_num_threads(n)
    return Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, local_world, backend,
                device, n)  # fmt: skip


def teardown(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()


# --- collectives (identity for a single process) -------------------------------------


def _tensor(d: Dist, values, dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=d.device or "cpu")


def sum_ints(d: Dist, values: list[int]) -> list[int]:
    """Element-wise sum over ranks (int64, exact)."""
    if not d.enabled:
        return list(values)
    import torch.distributed as tdist

    t = _tensor(d, values, torch.int64)
    tdist.all_reduce(t)
    return [int(v) for v in t.cpu().tolist()]


def sum_floats(d: Dist, values: list[float]) -> list[float]:
    if not d.enabled:
        return list(values)
    import torch.distributed as tdist

    t = _tensor(d, values, torch.float64)
    tdist.all_reduce(t)
    return [float(v) for v in t.cpu().tolist()]


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank when it is true on any."""
    if not d.enabled:
        return bool(flag)
    return sum_ints(d, [int(bool(flag))])[0] > 0


def all_gather(d: Dist, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list for a single process)."""
    if not d.enabled:
        return [obj]
    import torch.distributed as tdist

    out: list[Any] = [None] * d.world
    tdist.all_gather_object(out, obj)
    return out


def from_main(d: Dist, fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 only, its result given to every rank. An exception on
    rank 0 is re-raised there and stops the others with a quiet :class:`Refused`."""
    if not d.enabled:
        return fn()
    import torch.distributed as tdist

    box: list[Any] = [None]
    if d.is_main:
        try:
            box[0] = ("ok", fn())
        except UserError as exc:
            box[0] = ("error", str(exc))
            tdist.broadcast_object_list(box, src=0)
            raise
    tdist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise Refused(value)
    return value


class Refused(InputError):
    """Rank 0 refused the run (and says why); the other ranks stop without a word."""

    quiet = True


def check_on_main(d: Dist, check: Callable[[], list[Problem]]) -> None:
    """Run ``check`` on rank 0 and stop every rank when it finds problems; rank 0
    raises them (its error lines), the others raise a quiet :class:`Refused`."""
    if not d.enabled:
        raise_problems(check())
        return
    found: list[Problem] = []

    def run() -> list[str]:  # messages only: every rank can unpickle them
        found.extend(check())
        return [p.message for p in found]

    messages = from_main(d, run)
    if d.is_main:
        raise_problems(found)
    elif messages:
        raise Refused("; ".join(messages))


def agree(d: Dist, value: Any, what: str) -> None:
    """Stop every rank unless all hold the same ``value`` (e.g. a digest of the files
    they read): rank 0 raises an :class:`InputError` naming ``what`` and the ranks that
    differ, the others a quiet :class:`Refused`."""
    if not d.enabled:
        return
    values = all_gather(d, value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        message = (
            f"{what} differs on rank(s) {', '.join(map(str, differ))} from rank 0's: every "
            "node must see the same files under the same paths"
        )
        raise InputError(message) if d.is_main else Refused(message)


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def collective_cancel(d: Dist, cancel: CancelFn) -> CancelFn:
    """``cancel`` itself for a single process; for DDP, a check that all ranks call at
    the same points (once per training batch) and that is true on all when any rank
    was asked to stop."""
    if not d.enabled:
        return cancel
    return lambda: any_rank(d, cancel())


# --- data --------------------------------------------------------------------------


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for rank ``rank``, derived deterministically from (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0]) >> 1


def loader_seed(d: Dist, seed: int) -> int:
    """The training DataLoader generator's seed: ``seed`` itself for one process."""
    return seed if not d.enabled else rank_seed(seed, d.rank)


def seed_augmentation(d: Dist, ds, seed: int) -> None:
    """Rank ``r``'s augmentation stream: ``default_rng([seed, r])`` (unchanged for one
    process: ``default_rng(seed)``, set by the dataset)."""
    if d.enabled:
        ds.rng = np.random.default_rng([seed, d.rank])


def train_sampler(d: Dist, dataset, seed: int):
    """A seeded DistributedSampler (None for a single process: the loader shuffles)."""
    if not d.enabled:
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(
        dataset, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed, drop_last=False
    )


def set_epoch(sampler, epoch: int) -> None:
    if sampler is not None:
        sampler.set_epoch(epoch)


def wrap_model(d: Dist, model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (``model`` itself for one process).
    Evaluate the unwrapped model: ranks run different numbers of evaluation batches."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [d.device.index] if d.device is not None and d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sync_buffers(d: Dist, model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts
    them before each training forward, but that forward then updates each rank's copy
    from its own batch: after an epoch they differ, and an evaluation must use the
    model rank 0 saves."""
    if not d.enabled:
        return
    import torch.distributed as tdist

    with torch.no_grad():
        for buf in model.buffers():
            tdist.broadcast(buf, src=0)


# --- sharded evaluation --------------------------------------------------------------


def batch_shard(n: int, batch_size: int, d: Dist) -> list[int]:
    """Indices of the whole evaluation batches of rank ``d.rank``: batch ``b`` (tiles
    ``b*bs .. b*bs+bs-1``) goes to rank ``b mod world``. Concatenated in order and cut
    again every ``batch_size`` tiles, they give back exactly those batches (only the
    last batch of the split can be short, and it is the last of its rank)."""
    starts = range(0, n, batch_size)[d.rank :: d.world]
    return [i for s in starts for i in range(s, min(s + batch_size, n))]


class ShardView:
    """Tiles ``indices`` of a :class:`~core.data.dataset.TileDataset`, as a dataset of
    their own for :func:`~core.evaluation.predict.iter_batches`: same padding, same
    normalisation, ``indices[k]`` is item ``k``."""

    def __init__(self, ds, indices: list[int]) -> None:
        self.base, self.indices = ds, list(indices)
        self.pairs = [ds.pairs[i] for i in self.indices]
        self.native_shapes = [ds.native_shapes[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return self.base[self.indices[k]]

    def tile(self, k: int):
        return self.base.tile(self.indices[k])

    def __getattr__(self, name: str):  # factor, size, bands, mean, std...
        return getattr(self.base, name)


def shard(d: Dist, ds, batch_size: int):
    """This rank's evaluation batches of ``ds`` (``ds`` itself for one process)."""
    if not d.enabled:
        return ds
    return ShardView(ds, batch_shard(len(ds), batch_size, d))


def gather_epoch_eval(
    d: Dist, batch_losses: list[float], n: int, counts: ConfusionCounts, cancelled: bool
) -> tuple[float, ConfusionCounts]:
    """Mean validation loss and counts over the whole split, as one process computes
    them: the per-batch loss sums are added in batch order (rank ``b mod world``
    holds batch ``b``), the counts summed exactly. Raises :class:`Cancelled` on every
    rank when any rank was cancelled."""
    if not d.enabled:
        total = 0.0
        for v in batch_losses:
            total += v
        return total / max(n, 1), counts
    if any_rank(d, cancelled):
        raise Cancelled("cancelled by user")
    per_rank = all_gather(d, batch_losses)
    total, b = 0.0, 0
    while True:
        rank, k = b % d.world, b // d.world
        if k >= len(per_rank[rank]):
            break
        total += per_rank[rank][k]
        b += 1
    tp, fp, fn, tn, n_all = sum_ints(d, [counts.tp, counts.fp, counts.fn, counts.tn, n])
    return total / max(n_all, 1), ConfusionCounts(tp, fp, fn, tn)


def reduce_scan(d: Dist, scan: ThresholdScan) -> ThresholdScan:
    """The scan over the whole split: counts and histograms summed over ranks."""
    if not d.enabled:
        return scan
    k = len(scan.thresholds)
    flat = np.concatenate([scan._pos_ge, scan._neg_ge, [scan.n_pos, scan.n_neg],
                           scan.hist_pos, scan.hist_neg]).astype(np.int64)  # fmt: skip
    total = np.asarray(sum_ints(d, flat.tolist()), dtype=np.int64)
    out = ThresholdScan(scan.thresholds)
    out._pos_ge, out._neg_ge = total[:k], total[k : 2 * k]
    out.n_pos, out.n_neg = int(total[2 * k]), int(total[2 * k + 1])
    h = len(scan.hist_pos)
    out.hist_pos = total[2 * k + 2 : 2 * k + 2 + h]
    out.hist_neg = total[2 * k + 2 + h :]
    return out


def score_split(d: Dist, preds: list, view, threshold: float, skip_blank: bool):
    """Final scoring of one split at ``threshold``: counts, per-image rows and plants.

    One process: :func:`~core.evaluation.scoring.evaluate_predictions` and
    :func:`~core.evaluation.plants.plants_of_predictions`, as always. DDP: each rank
    scores its tiles; counts are all-reduced, per-image rows and per-tile plant results
    gathered and put back in the split's tile order, plants summed in that order (the
    same floating-point sums as one process)."""
    from ..evaluation.plants import PlantMetrics, plants_of_predictions
    from ..evaluation.scoring import EvalResult, evaluate_predictions

    if not d.enabled:
        result = evaluate_predictions(preds, threshold, skip_blank)
        result.plants = plants_of_predictions(preds, threshold)
        return result
    local = evaluate_predictions(preds, threshold, skip_blank)
    tiles = [(view.indices[k], local.rows[k], plants_of_predictions([p], threshold))
             for k, p in enumerate(preds)]  # fmt: skip
    c = local.counts
    tp, fp, fn, tn = sum_ints(d, [c.tp, c.fp, c.fn, c.tn])
    counts = ConfusionCounts(tp, fp, fn, tn)
    everything = sorted((t for part in all_gather(d, tiles) for t in part), key=lambda t: t[0])
    plants = PlantMetrics()
    for _, _, p in everything:
        plants += p
    metrics = counts.metrics(json_safe=True)
    metrics["threshold"] = threshold
    result = EvalResult(counts, metrics, threshold, [t[1] for t in everything])
    result.plants = plants
    return result


# --- checkpoints --------------------------------------------------------------------


def gather_random_states(d: Dist, states: dict) -> dict:
    """Rank 0's states, plus every rank's under ``rng_ranks`` (DDP) for exact resume."""
    if not d.enabled:
        return states
    return {**states, "rng_ranks": all_gather(d, states), "world_size": d.world}


def own_random_states(d: Dist, ck: dict) -> dict:
    """The checkpoint as this rank should restore it: its own states when the
    checkpoint was written by as many ranks, else its fresh seed-derived ones (only
    the global generators and the epoch are then restored)."""
    if not d.enabled:
        return ck
    ranks = ck.get("rng_ranks")
    if ranks is not None and len(ranks) == d.world:
        return {**ck, **ranks[d.rank]}
    keep = {k: v for k, v in ck.items() if k not in ("rng_loader", "rng_augment")}
    return {**keep, "rng_loader": None, "rng_augment": None}


__all__ = ["Dist", "SINGLE", "setup", "teardown", "Refused", "is_main_process"]
