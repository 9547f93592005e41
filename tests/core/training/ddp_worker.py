"""Helpers run as separate processes by test_distributed.py (plain or under torchrun).

``python ddp_worker.py counts OUT.json DATASET``: scores the val and test splits of a
fixed, seeded untrained model the way training does (per-epoch loss and counts, then
the final threshold scan, per-image rows and plants), under DDP when torchrun started
it, and writes the figures (rank 0) to OUT.json.

``python ddp_worker.py audit AUDIT_DIR -- ARGS``: runs ``python -m core ARGS`` with an
audit hook that records every file this process opens for writing, renames, makes or
removes, and writes the list to AUDIT_DIR/rank<RANK>.json at exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))


def counts(out: str, dataset: str) -> None:
    import torch

    from core.config import load_config
    from core.evaluation.evaluate import predict_dataset, tile_dataset
    from core.evaluation.scoring import evaluate_predictions
    from core.models.build import ModelMeta, build_model
    from core.training import distributed
    from core.training.loop import _evaluate_epoch, make_datasets, prepare_data
    from core.training.losses import build_loss

    cfg = load_config(None, [f"data.path={dataset}", "data.limit=40", "data.bands=[4,3,2,8]",
                             "train.eval_batch_size=3", "data.split.val=0.3"])  # fmt: skip
    dist = distributed.setup("cpu", 1)
    torch.set_num_threads(1)
    pairs, stats, _ = prepare_data(cfg)
    datasets = make_datasets(cfg, pairs, stats)
    torch.manual_seed(7)
    model = build_model(cfg.model.arch, cfg.model.encoder, 4, None, {}).eval()
    device = torch.device("cpu")
    loss_fn = build_loss(cfg.loss.terms)
    result: dict = {"world": dist.world}
    meta = ModelMeta(arch=cfg.model.arch, encoder=cfg.model.encoder, in_channels=4,
                     bands=[4, 3, 2, 8], mean=list(stats.mean), std=list(stats.std),
                     threshold=0.5, upscale=1, pad_multiple=32,
                     config={"train": {"eval_batch_size": 3}})  # fmt: skip
    for split in ("val", "test"):
        loss, c = _evaluate_epoch(
            model, datasets[split], loss_fn, device, cfg, lambda: False, dist=dist
        )
        view = distributed.shard(dist, tile_dataset(meta, datasets[split].pairs), 3)
        preds = predict_dataset(model, meta, view, device)
        scan = distributed.reduce_scan(dist, evaluate_predictions(preds, 0.5, False, True).scan)
        threshold, _ = scan.best("iou")
        scored = distributed.score_split(dist, preds, view, threshold, False)
        result[split] = {
            "tiles": len(datasets[split]),
            "loss": loss,
            "counts": [c.tp, c.fp, c.fn, c.tn],
            "scan": scan.table(json_safe=True),
            "hist": [scan.hist_pos.tolist(), scan.hist_neg.tolist()],
            "threshold": threshold,
            "final": scored.metrics,
            "rows": scored.rows,
            "plants": scored.plants.summary(),
            "plant_rows": [vars(r) for r in scored.plants.rows],
        }
    if dist.is_main:
        Path(out).write_text(json.dumps(result))
    distributed.teardown(dist)


def audit(audit_dir: str, args: list[str]) -> int:
    writes: list[list] = []

    def hook(event: str, a: tuple) -> None:
        if event == "open":
            path, mode, flags = a
            writing = (isinstance(mode, str) and any(m in mode for m in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing and isinstance(path, str | bytes | os.PathLike):
                writes.append([event, os.fsdecode(path)])
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate"):
            writes.append([event, os.fsdecode(a[0]) if a and a[0] is not None else ""])

    sys.addaudithook(hook)
    from core.cli.main import main

    code = 1
    try:
        code = main(args)
    finally:
        record = [list(w) for w in writes]  # copied before our own write below
        target = Path(audit_dir) / f"rank{os.environ.get('RANK', '0')}.json"
        target.write_text(json.dumps({"code": code, "writes": record}))
    return code


if __name__ == "__main__":
    if sys.argv[1] == "counts":
        counts(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "audit":
        sys.exit(audit(sys.argv[2], sys.argv[4:] if sys.argv[3] == "--" else sys.argv[3:]))
