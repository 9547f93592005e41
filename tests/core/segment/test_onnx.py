import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
import torch

from core.models.build import ModelFileError, ModelMeta, read_model_file, save_model_file
from core.models.onnx_export import export_onnx
from core.segment import SegmentOptions, segment_raster
from core.segment.backends import OnnxBackend, TorchBackend, load_backend
from tests.conftest import REPO


def test_export_writes_metadata_for_solarseg_and_other_tools(onnx_file, model_file):
    meta, _ = read_model_file(model_file)
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    solarseg = json.loads(props["solarseg"])
    assert solarseg["output"] == "probability"
    known = ModelMeta.__dataclass_fields__
    assert ModelMeta(**{k: v for k, v in solarseg.items() if k in known}) == meta
    assert props["model_type"] == "Segmentor"
    assert json.loads(props["class_names"]) == {"0": "background", "1": "solar_panel"}
    assert props["tiles_size"] == "128" and props["tiles_overlap"] == "25"  # 32 of 128 px
    assert json.loads(props["standardization_mean"]) == pytest.approx(meta.mean)
    assert json.loads(props["standardization_std"]) == pytest.approx(meta.std)
    assert float(props["threshold"]) == float(props["seg_thresh"]) == 0.6
    assert json.loads(props["bands"]) == [1, 2, 3, 4]
    assert float(props["resolution"]) == 500.0  # cm/px, upscale 1


def test_export_has_dynamic_batch_and_spatial_axes_and_outputs_probabilities(onnx_file, unet):
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 4, 96, 160)).astype(np.float32)
    got = session.run(None, {"input": x})[0]
    assert got.shape == (3, 1, 96, 160)
    with torch.inference_mode():
        want = torch.sigmoid(unet(torch.from_numpy(x))).numpy()
    assert np.abs(got - want).max() < 1e-4  # probabilities, sigmoid applied once


def test_torch_and_onnx_backends_agree_on_the_real_scene(haiti, model_file, onnx_file, tmp_path):
    results = {
        name: segment_raster(model, haiti, tmp_path / name, SegmentOptions(backend=name))
        for name, model in (("torch", model_file), ("onnx", onnx_file))
    }
    probs = {}
    for name, result in results.items():
        assert result.backend == name
        with rasterio.open(result.probability_path) as src:
            probs[name] = src.read(1)
    assert probs["torch"].std() > 0.05  # a real spread of probabilities
    assert np.abs(probs["torch"] - probs["onnx"]).max() < 1e-3
    with (
        rasterio.open(results["torch"].mask_path) as a,
        rasterio.open(results["onnx"].mask_path) as b,
    ):
        differ = a.read(1) != b.read(1)
    near_threshold = np.abs(probs["torch"] - 0.6) < 1e-3
    assert not (differ & ~near_threshold).any()


def test_load_backend_accepts_run_folder_model_file_and_onnx(model_file, onnx_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_file, run / "model.pt")
    b1, m1 = load_backend(run, "torch", "cpu")
    b2, m2 = load_backend(model_file, "torch", "cpu")
    b3, m3 = load_backend(onnx_file, "onnx", "cpu")
    b4, m4 = load_backend(model_file, "onnx", "cpu")  # exported on the fly
    assert isinstance(b1, TorchBackend) and isinstance(b2, TorchBackend)
    assert isinstance(b3, OnnxBackend) and isinstance(b4, OnnxBackend)
    assert b3.providers == ["CPUExecutionProvider"]
    assert m1 == m2 == m3 == m4
    x = np.random.default_rng(2).standard_normal((2, 4, 64, 64)).astype(np.float32)
    p1, p3, p4 = b1.predict(x), b3.predict(x), b4.predict(x)
    assert p1.shape == (2, 1, 64, 64) and 0 <= p1.min() and p1.max() <= 1
    assert np.abs(p1 - p3).max() < 1e-4 and np.abs(p1 - p4).max() < 1e-4

    with pytest.raises(ValueError, match="runs on the 'onnx' backend"):
        load_backend(onnx_file, "torch")
    with pytest.raises(ModelFileError, match="run folder has no model.pt"):
        load_backend(tmp_path, "torch")


def test_onnx_file_without_solarseg_metadata_is_refused(onnx_file, tmp_path):
    graph = onnx.load(str(onnx_file))
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, str(bare))
    with pytest.raises(ModelFileError, match="bare.onnx: ONNX file has no 'solarseg' metadata"):
        OnnxBackend(bare)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_flip_tta_is_flip_equivariant(backend, model_file, onnx_file):
    b, _ = load_backend(onnx_file if backend == "onnx" else model_file, backend, "cpu", tta=True)
    x = np.random.default_rng(3).standard_normal((1, 4, 64, 96)).astype(np.float32)
    p = b.predict(x)
    # Averaging over the flip group makes the prediction commute with every flip.
    for axes in ((3,), (2,), (2, 3)):
        flipped = b.predict(np.ascontiguousarray(np.flip(x, axes)))
        np.testing.assert_allclose(np.flip(flipped, axes), p, atol=1e-5)
    b.tta = False
    assert np.abs(p - b.predict(x)).max() > 1e-3  # and it really averaged something
    assert 0 <= p.min() and p.max() <= 1


def test_export_refuses_a_tile_the_model_cannot_take(model_file, tmp_path):
    with pytest.raises(ValueError, match="pad multiple 32"):
        export_onnx(model_file, tmp_path / "x.onnx", tile_size=100)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("upscale", [1, 2])
def test_segmenting_with_an_onnx_file_never_imports_torch(
    haiti, model_file, unet, tmp_path, upscale
):
    """A user with only onnxruntime (no torch: 760 MB, 3.5 s to import) can segment,
    upscaled models included (numpy resampling); the result is the torch backend's."""
    meta, _ = read_model_file(model_file)
    meta.upscale = upscale
    pt = tmp_path / "model.pt"
    save_model_file(pt, unet, meta)
    onnx_path = export_onnx(pt, tmp_path / "model.onnx")
    opts = dict(tile_size=128, overlap=32, polygons=True)
    code = f"""
import sys
from core.segment import SegmentOptions, segment_raster
r = segment_raster({str(onnx_path)!r}, {str(haiti)!r}, {str(tmp_path / "onnx")!r},
                   SegmentOptions(backend="onnx", device="cpu", **{opts!r}))
print(r.windows, r.panel_pixels, "torch" in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    windows, panel_pixels, torch_loaded = proc.stdout.split()
    assert int(windows) == 24 and torch_loaded == "False"  # 6 x 4 windows of 128, step 96
    ref = segment_raster(pt, haiti, tmp_path / "torch", SegmentOptions(backend="torch", **opts))
    with rasterio.open(tmp_path / "onnx" / "probability.tif") as a:
        with rasterio.open(ref.probability_path) as b:
            assert np.abs(a.read(1) - b.read(1)).max() < 1e-3
    with rasterio.open(tmp_path / "onnx" / "mask.tif") as src:
        assert int((src.read(1) == 1).sum()) == int(panel_pixels) > 0
