"""``--precision int8`` (and bf16 on ONNX Runtime) for ``segment``, ``segment-many`` and
``export-onnx`` on a real Sentinel-2 scene: agreement with fp32, precision and
calibration recorded in the GeoTIFF tags, the run's JSON and the ONNX metadata_props,
refusals keyed by field before anything is written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import rasterio

from core.cli.main import main
from core.segment import SegmentOptions, segment_raster
from core.segment.engine import check_segment
from tests.core.conftest import INT8_TILES

# int8 vs fp32 probabilities of the fixture model on the real 300 x 300 scene (out of
# its training distribution: few pixels reach 0.5): mask IoU at the model's threshold,
# and at fp32's top 1 % and top 5 % of the scene (thresholds near 0.06 and 0.03, where
# 8-bit noise is large relative to the probabilities). Measured 2026-12-01: 0.914 (67
# pixels), 0.773, 0.863; |prob diff| max 0.125, mean 0.00065.
MASK_IOU_TOLERANCE = 0.9
LOW_THRESHOLD_IOU_TOLERANCE = 0.7
MAX_PROB_DIFF_TOLERANCE = 0.35
S2_BANDS = "3,2,1,4"  # B02, B03, B04, B08 -> the model's R, G, B, NIR


@pytest.fixture(scope="module")
def s2_scene(scenes):
    return scenes / "sentinel2_b2b3b4b8_300px.tif"


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.tags()


def test_segment_int8_on_a_real_scene_agrees_with_fp32_and_says_so(
    solafune_model, solafune_int8, use_int8_cache, s2_scene, solafune, tmp_path, capsys
):
    code = main(["--jsonl", "segment", str(solafune_model), str(s2_scene), "--bands", S2_BANDS,
                 "--precision", "int8", "--calibration-tiles", str(INT8_TILES),
                 "--out", str(tmp_path / "int8")])  # fmt: skip
    events = _events(capsys.readouterr().out)
    assert code == 0, events
    result = next(e for e in events if e["event"] == "result")["data"]
    assert (result["backend"], result["precision"]) == ("onnx", "int8")
    assert result["calibration"] == {
        "source": str(solafune), "split": "train", "tiles": INT8_TILES,
        "requested": INT8_TILES, "available": 140, "seed": 0,
    }  # fmt: skip
    # The fixture's quantisation was found in the cache, not made again.
    assert list((use_int8_cache / "int8").glob("*.onnx")) == [solafune_int8]
    fp32 = segment_raster(solafune_model, s2_scene, tmp_path / "fp32",
                          SegmentOptions(bands=[3, 2, 1, 4], backend="onnx"))  # fmt: skip
    assert (fp32.backend, fp32.precision, fp32.calibration) == ("onnx", "fp32", None)
    p32, tags32 = _read(fp32.probability_path)
    p8, tags8 = _read(tmp_path / "int8" / "probability.tif")
    m8, mtags8 = _read(tmp_path / "int8" / "mask.tif")
    assert tags32["SOLARSEG_PRECISION"] == "fp32" and "SOLARSEG_CALIBRATION_TILES" not in tags32
    for tags in (tags8, mtags8):
        assert tags["SOLARSEG_PRECISION"] == "int8" and tags["SOLARSEG_BACKEND"] == "onnx"
        assert tags["SOLARSEG_CALIBRATION_TILES"] == str(INT8_TILES)
        assert tags["SOLARSEG_CALIBRATION_SOURCE"] == str(solafune)
        assert tags["SOLARSEG_CALIBRATION_SPLIT"] == "train"
    assert np.array_equal(m8 == 1, p8 >= np.float32(0.5))  # the model's threshold
    diff = np.abs(p32 - p8)
    ious = {}
    for q in (None, 99, 95):  # the model's 0.5, and fp32's top 1 % and 5 % of the scene
        t = np.float32(0.5 if q is None else np.percentile(p32, q))
        a, b = p32 >= t, p8 >= t
        ious[q] = (a & b).sum() / (a | b).sum()
        print(f"int8 vs fp32, real 300 x 300 scene, threshold {t:.4f}: mask IoU "
              f"{ious[q]:.4f} ({a.sum()} vs {b.sum()} pixels)")  # fmt: skip
    print(f"|prob diff| max {diff.max():.4f} mean {diff.mean():.5f}")
    assert ious[None] >= MASK_IOU_TOLERANCE
    assert min(ious[99], ious[95]) >= LOW_THRESHOLD_IOU_TOLERANCE
    assert diff.max() <= MAX_PROB_DIFF_TOLERANCE and diff.mean() <= 0.005


def test_export_onnx_int8_writes_an_int8_file_that_segment_recognises(
    solafune_model, s2_scene, solafune, tmp_path, capsys
):
    out = tmp_path / "model.int8.onnx"
    code = main(["export-onnx", str(solafune_model), str(out), "--precision", "int8",
                 "--calibration-tiles", "8"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert f"int8: calibrated on 8 tile(s) of {solafune} (train)" in text
    assert f"wrote {out}" in text and "int8)" in text
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    solarseg = json.loads(props["solarseg"])
    assert props["precision"] == solarseg["graph_precision"] == "int8"
    assert solarseg["calibration"]["tiles"] == 8 and solarseg["quantization"]["format"] == "QDQ"
    assert solarseg["bands"] == [4, 3, 2, 8] and props["model_type"] == "Segmentor"
    # Default precision, no calibration data needed: the file says it is int8.
    options = SegmentOptions(bands=[3, 2, 1, 4], backend="onnx", calibration="/nowhere")
    assert check_segment(out, s2_scene, tmp_path / "seg", options)[0] == []
    result = segment_raster(out, s2_scene, tmp_path / "seg", options)
    assert (result.precision, result.calibration["tiles"]) == ("int8", 8)
    assert _read(result.mask_path)[1]["SOLARSEG_PRECISION"] == "int8"
    # An fp32 export says fp32.
    assert main(["export-onnx", str(solafune_model), str(tmp_path / "fp32.onnx")]) == 0
    fp32 = {p.key: p.value for p in onnx.load(str(tmp_path / "fp32.onnx")).metadata_props}
    assert fp32["precision"] == json.loads(fp32["solarseg"])["graph_precision"] == "fp32"


def test_precision_refusals_are_keyed_by_field_before_anything_is_written(
    solafune_model, s2_scene, tmp_path, capsys
):
    out = tmp_path / "out"

    def fields(**kw):
        options = SegmentOptions(bands=[3, 2, 1, 4], **kw)
        problems = check_segment(solafune_model, s2_scene, out, options)[0]
        return {p.field: p.message for p in problems}

    assert "fp32, bf16, fp16, int8 or auto" in fields(precision="int4")["precision"]
    assert "fp16 runs on CUDA only" in fields(precision="fp16", device="cpu")["precision"]
    assert (
        "bf16 runs on the torch backend only"
        in fields(precision="bf16", backend="onnx")["precision"]
    )
    assert fields(precision="bf16") == {}  # torch autocast
    nowhere = str(tmp_path / "nowhere")
    assert (
        "calibration dataset not found"
        in fields(precision="int8", calibration=nowhere)["calibration"]
    )
    assert ">= 1" in fields(precision="int8", calibration_tiles=0)["calibration_tiles"]
    # The CLI: one line, exit 2, the field in the JSON error event, nothing written.
    code = main(["--jsonl", "segment", str(solafune_model), str(s2_scene), "--out", str(out),
                 "--bands", S2_BANDS, "--precision", "int8", "--calibration", nowhere])  # fmt: skip
    cap = capsys.readouterr()
    [error] = [e for e in _events(cap.out) if e["event"] == "error"]
    assert code == 2 and error["field"] == "calibration"
    assert len(cap.err.strip().splitlines()) == 1 and "calibration dataset not found" in cap.err
    assert not out.exists()
    for args, field, words in (
        (["--precision", "bf16"], "precision", "no bf16 convolution"),
        (["--precision", "int8", "--profile", "deepness"], "precision", "solarseg profile"),
        (["--precision", "int8", "--calibration", nowhere], "calibration", "not found"),
        (["--precision", "int8", "--calibration-tiles", "0"], "calibration_tiles", ">= 1"),
    ):
        onnx_out = tmp_path / "m.onnx"
        code = main(["--jsonl", "export-onnx", str(solafune_model), str(onnx_out), *args])
        cap = capsys.readouterr()
        [error] = [e for e in _events(cap.out) if e["event"] == "error"]
        assert code == 2 and error["field"] == field and words in error["message"], error
        assert not onnx_out.exists()
    code = main(["--jsonl", "segment-many", str(solafune_model), str(s2_scene), "--check",
                 "--out", str(out), "--precision", "int8", "--calibration", nowhere])  # fmt: skip
    [error] = [e for e in _events(capsys.readouterr().out) if e["event"] == "error"]
    assert code == 2 and error["field"] == "calibration"
    assert not out.exists()


def test_segment_many_int8_quantises_once_for_its_workers(solafune_model, s2_scene, tmp_path):
    import shutil

    from core.segment.many import INT8_CACHE_DIRNAME, ClusterOptions, read_marker, segment_many

    scenes = [tmp_path / "in" / f"{name}.tif" for name in ("a", "b")]
    for path in scenes:
        path.parent.mkdir(exist_ok=True)
        shutil.copy(s2_scene, path)
    out = tmp_path / "out"
    options = SegmentOptions(bands=[3, 2, 1, 4], precision="int8", calibration_tiles=8)
    cluster = ClusterOptions(workers=1, processes=False)
    assert segment_many(solafune_model, scenes, out, options, cluster).counts == {"done": 2}
    [int8] = (out / INT8_CACHE_DIRNAME).glob("*.int8.onnx")  # made once, by the client
    for name in ("a", "b"):
        result = read_marker(out / name)["result"]
        assert (result["backend"], result["precision"]) == ("onnx", "int8")
        assert result["calibration"]["tiles"] == 8
        assert _read(out / name / "mask.tif")[1]["SOLARSEG_PRECISION"] == "int8"
    # The workers ran that very file: segment with it gives the same probabilities.
    single = segment_raster(
        int8, scenes[0], tmp_path / "single", SegmentOptions(bands=[3, 2, 1, 4], backend="onnx")
    )
    np.testing.assert_array_equal(
        _read(single.probability_path)[0], _read(out / "a" / "probability.tif")[0]
    )
    mtime = int8.stat().st_mtime_ns
    again = segment_many(solafune_model, scenes, out, options, cluster)  # resume: same key
    assert again.counts == {"skipped": 2} and int8.stat().st_mtime_ns == mtime
