"""bf16 autocast and channels-last on real Sentinel-2 tiles: a 1-epoch bf16 +
channels-last run against the same fp32 NCHW run (same tiles, split and seed), the
precision recorded in the run record and the model file, and bf16 probabilities
against fp32 ones of the same model, in the evaluator and the segment backend.

Tolerances (measured on these tiles: max |p_bf16 - p_fp32| 0.008, mean 0.0012; val IoU
after one epoch 0.0188 fp32 vs 0.0182 bf16): probabilities within 0.03 at every pixel
and 0.005 on average; val IoU within 0.05. bf16 keeps 8 bits of mantissa (relative
rounding 2^-9 = 0.002 per operation), so a network's logits move by about 1e-2 and the
sigmoid (slope <= 1/4) moves probabilities by a few 1e-3. On a CPU without native
bf16 (no AVX-512 BF16 / AMX) the bf16 run is emulated and slow, but the same."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.config import load_config
from core.evaluation.evaluate import predict_split, tile_dataset
from core.models.build import load_model, read_model_file
from core.models.meta import read_model_meta
from core.segment.backends import TorchBackend
from core.training.loop import train

PROB_MAX, PROB_MEAN, IOU_TOL = 0.03, 0.005, 0.05


@pytest.fixture(scope="module")
def paired_runs(solafune, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, precision, channels_last in (("fp32", "fp32", "false"), ("bf16", "bf16", "true")):
        overrides = [f"data.path={solafune}", "data.limit=24", "data.bands=[4,3,2,8]",
                     "train.epochs=1", "train.batch_size=8", "train.threads=2",
                     "train.early_stop.enabled=false", "train.eval_test_each_epoch=false",
                     f"out_dir={out}", f"name={name}", f"train.precision={precision}",
                     f"train.channels_last={channels_last}"]  # fmt: skip
        runs[name] = train(load_config(None, overrides))
    return runs


def test_bf16_channels_last_run_matches_fp32_and_records_its_numerics(paired_runs):
    fp32, bf16 = paired_runs["fp32"], paired_runs["bf16"]
    assert (fp32.precision, fp32.memory_format) == ("fp32", "contiguous")
    assert (bf16.precision, bf16.memory_format) == ("bf16", "channels_last")
    for result in (fp32, bf16):
        assert result.status == "completed"
        run = json.loads((result.run_dir / "run.json").read_text())
        assert (run["precision"], run["memory_format"]) == (result.precision, result.memory_format)
        meta, state = read_model_file(result.run_dir / "model.pt")
        assert (meta.precision, meta.memory_format) == (result.precision, result.memory_format)
        assert read_model_meta(result.run_dir).precision == result.precision  # torch-free
        # Weights are stored NCHW-contiguous and float32, whatever the run's layout.
        assert all(t.is_contiguous() and t.dtype != torch.bfloat16 for t in state.values())
        for split in ("train", "val", "test"):
            assert math.isfinite(result.metrics[split]["iou"])
    assert abs(bf16.metrics["val"]["iou"] - fp32.metrics["val"]["iou"]) <= IOU_TOL
    loss = [float(r.split(",")[2]) for r in
            (bf16.run_dir / "history.csv").read_text().splitlines()[1:]]  # fmt: skip
    assert all(math.isfinite(v) for v in loss)


def _agree(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32
    diff = np.abs(a - b)
    assert diff.max() <= PROB_MAX and diff.mean() <= PROB_MEAN, (diff.max(), diff.mean())


def test_bf16_probabilities_agree_with_fp32_on_real_tiles(paired_runs):
    run = paired_runs["fp32"].run_dir
    _, p32 = predict_split(run, split="val", device="cpu", precision="fp32")
    _, pbf = predict_split(run, split="val", device="cpu", precision="bf16")
    assert [p.tile_id for p in p32] == [p.tile_id for p in pbf]
    _agree(np.concatenate([p.prob.ravel() for p in p32]),
           np.concatenate([p.prob.ravel() for p in pbf]))  # fmt: skip
    assert not all(np.array_equal(a.prob, b.prob) for a, b in zip(p32, pbf, strict=True))


def test_segment_backend_precision_option_on_a_real_tile(paired_runs):
    run = paired_runs["fp32"].run_dir
    _, meta = load_model(run / "model.pt")
    _, preds = predict_split(run, split="val", device="cpu", precision="fp32")
    ds = tile_dataset(meta, [p.pair for p in preds[:4]])
    batch = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    out = {}
    for precision in ("fp32", "bf16"):
        model, _ = load_model(run / "model.pt")
        backend = TorchBackend(model, "cpu", precision=precision)
        assert backend.precision == precision and backend.channels_last
        out[precision] = backend.predict(batch)
    assert out["fp32"].shape == (len(ds), 1, *batch.shape[2:])
    _agree(out["fp32"], out["bf16"])
