"""The ``deepness`` ONNX export profile, read the way the Deepness QGIS plugin reads it.

Deepness (https://github.com/PUTvision/qgis-plugin-deepness) is not installable here (it
needs QGIS widgets and OpenCV), so the parts of it that touch the model file are ported
below, line for line, from commit f450c6342d82a200af32022b2d977231d4f71d3c:

- src/deepness/processing/models/model_base.py: ``ModelBase.__init__`` (session options,
  providers, one input), the ``get_metadata_*`` readers, ``get_outputs_channel_names``,
  ``get_model_batch_size``, ``preprocessing``;
- src/deepness/processing/models/segmentor.py: ``check_loaded_model_outputs``,
  ``get_number_of_output_channels``, the background name added to a sigmoid output;
- src/deepness/processing/models/preprocessing_utils.py: ``limit_channels_number``,
  ``normalize_values_to_01``, ``standardize_values``, ``transpose_nhwc_to_nchw``;
- src/deepness/common/processing_parameters/standardization_parameters.py;
- src/deepness/processing/map_processor/map_processor_segmentation.py:
  ``_process_tile`` (threshold, +1 "MADD1" labels) and the median blur size;
- src/deepness/deepness_dockwidget.py: ``_load_model_and_display_info`` (tile size from
  the input shape) and ``_load_default_model_parameters`` (metadata -> UI fields; the
  threshold box has 2 decimals, the overlap box is a percentage);
- src/deepness/processing/processing_utils.py ``get_tile_image``, branch "all inputs
  standalone bands": each mapped band read as its own raw data type, stacked H x W x C.

The tile runs through that port with ONNX Runtime and through SolarSeg's own engine
(``segment_raster``, PyTorch backend, one window = the tile); the masks must agree.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from core.cli.main import main
from core.errors import InputError
from core.models.build import ModelMeta, read_model_file, save_model_file
from core.models.meta import ModelFileError
from core.models.onnx_export import export_onnx
from core.segment import SegmentOptions, segment_raster
from core.segment.backends import OnnxBackend
from tests.core.segment.helpers import band_stats, calibrated_unet

DEEPNESS_COMMIT = "f450c6342d82a200af32022b2d977231d4f71d3c"
# |Deepness probability - SolarSeg probability| allowed: float32 rounding of the two
# standardisations ((raw/255 - m/255)/(s/255) vs (raw - m)/s) and of ORT vs PyTorch.
PROB_TOLERANCE = 1e-4


# --- port of Deepness (commit above) ---------------------------------------------------


class StandardizationParameters:  # common/processing_parameters/standardization_parameters.py
    def __init__(self, channels_number: int):
        self.mean = np.array([0.0 for _ in range(channels_number)], dtype=np.float32)
        self.std = np.array([1.0 for _ in range(channels_number)], dtype=np.float32)

    def set_mean_std(self, mean, std):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)


def limit_channels_number(tiles_batched, limit):  # models/preprocessing_utils.py
    return tiles_batched[:, :, :, :limit]


def normalize_values_to_01(tiles_batched):
    return np.float32(tiles_batched * 1.0 / 255.0)


def standardize_values(tiles_batched, params):
    return (tiles_batched - params.mean) / params.std


def transpose_nhwc_to_nchw(tiles_batched):
    return np.transpose(tiles_batched, (0, 3, 1, 2))


class DeepnessSegmentor:
    """models/model_base.py ModelBase + models/segmentor.py Segmentor."""

    MODEL_TYPES = ("Segmentor", "Regressor", "Detector", "Superresolution", "Recognition")

    def __init__(self, model_file_path: str):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # Deepness passes both; ORT only warns about the missing CUDA one. Filtered here
        # to keep the test log quiet (same CPU provider either way).
        providers = [p for p in providers if p in ort.get_available_providers()]
        self.sess = ort.InferenceSession(model_file_path, options, providers=providers)
        inputs = self.sess.get_inputs()
        if len(inputs) > 1:
            raise Exception("ONNX model: unsupported number of inputs")
        self.input_shape = inputs[0].shape
        self.input_name = inputs[0].name
        self.outputs_layers = self.sess.get_outputs()
        self.standardization_parameters = self.get_metadata_standarization_parameters()
        self.outputs_names = self.get_outputs_channel_names()
        # Segmentor.__init__
        self.outputs_are_sigmoid = self.check_loaded_model_outputs()
        for idx in range(len(self.outputs_layers)):
            if self.outputs_names is None:
                continue
            if len(self.outputs_names[idx]) == 1 and self.outputs_are_sigmoid[idx]:
                self.outputs_names[idx] = ["background", self.outputs_names[idx][0]]

    def _meta(self):
        return self.sess.get_modelmeta().custom_metadata_map

    def _json(self, name, cast):
        meta = self._meta()
        return cast(json.loads(meta[name])) if name in meta else None

    def get_model_batch_size(self):
        bs = self.input_shape[0]
        return None if isinstance(bs, str) else bs

    def get_outputs_channel_names(self):
        meta = self._meta()
        for name in ["class_names", "names"]:
            if name not in meta:
                continue
            txt = meta[name]
            try:
                class_names = json.loads(txt)
            except json.decoder.JSONDecodeError:
                class_names = ast.literal_eval(txt)
            if isinstance(class_names, dict):
                class_names = [class_names]
            sorted_by_key = [sorted(cn.items(), key=lambda kv: int(kv[0])) for cn in class_names]
            all_names = []
            for output_index in range(len(sorted_by_key)):
                output_names = []
                class_counter = 0
                for key, value in sorted_by_key[output_index]:
                    if int(key) != class_counter:
                        raise Exception("Class names in the model metadata are not consecutive")
                    class_counter += 1
                    output_names.append(value)
                all_names.append(output_names)
            return all_names
        return None

    def get_metadata_model_type(self):
        value = self._json("model_type", str)
        return None if value is None else value.capitalize()

    def get_metadata_standarization_parameters(self):
        meta = self._meta()
        param = StandardizationParameters(channels_number=self.input_shape[-3])
        if "standardization_mean" in meta and "standardization_std" in meta:
            mean = [float(x) for x in json.loads(meta["standardization_mean"])]
            std = [float(x) for x in json.loads(meta["standardization_std"])]
            param.set_mean_std(mean=mean, std=std)
        return param

    def get_metadata_resolution(self):
        return self._json("resolution", float)

    def get_metadata_tile_size(self):
        return self._json("tile_size", int)

    def get_metadata_tiles_overlap(self):
        return self._json("tiles_overlap", int)

    def get_metadata_segmentation_threshold(self):
        return self._json("seg_thresh", float)

    def get_metadata_segmentation_small_segment(self):
        return self._json("seg_small_segment", int)

    def check_loaded_model_outputs(self):
        return [len(o.shape) == 3 or o.shape[-3] == 1 for o in self.outputs_layers]

    def get_number_of_output_channels(self):
        channels = []
        for layer in self.outputs_layers:
            ls = layer.shape
            if len(ls) == 3:
                channels.append(2)
            elif len(ls) == 4:
                channels.append(2 if ls[-3] == 1 else ls[-3])
        return channels

    def preprocessing(self, tiles_batched):
        tiles_batched = limit_channels_number(tiles_batched, limit=self.input_shape[-3])
        tiles_batched = normalize_values_to_01(tiles_batched)
        tiles_batched = standardize_values(tiles_batched, params=self.standardization_parameters)
        return transpose_nhwc_to_nchw(tiles_batched)

    def process(self, tiles_batched):
        batch = self.preprocessing(tiles_batched)
        return self.sess.run(output_names=None, input_feed={self.input_name: batch})


def deepness_ui_defaults(model: DeepnessSegmentor) -> dict:
    """deepness_dockwidget.py: what loading the model and "Load default parameters" put
    in the UI fields a segmentation run reads."""
    ui = {"tile_size_px": model.input_shape[-1]}  # _load_model_and_display_info
    assert isinstance(ui["tile_size_px"], int), "QSpinBox.setValue needs an int tile size"
    ui["batch_size_fixed"] = model.get_model_batch_size()
    ui["resolution_cm_per_px"] = model.get_metadata_resolution()
    ui["overlap_percentage"] = model.get_metadata_tiles_overlap()
    model_type = model.get_metadata_model_type()
    assert model_type in DeepnessSegmentor.MODEL_TYPES  # ModelType(value) must not raise
    ui["model_type"] = model_type
    thresh = model.get_metadata_segmentation_threshold()
    ui["threshold_enabled"] = bool(thresh != 0)
    ui["threshold"] = round(thresh, 2)  # doubleSpinBox_probabilityThreshold: 2 decimals
    small = model.get_metadata_segmentation_small_segment()
    ui["dilate_erode_size"] = small if bool(small != 0) else 0  # checkbox off -> 0
    return ui


def deepness_process_tile(model, tiles_nhwc, threshold, dilate_erode_size):
    """map_processor_segmentation.py _process_tile, then the median blur of _run."""
    many_outputs = []
    for result in model.process(tiles_nhwc):
        result[result < threshold] = 0.0
        if len(result.shape) == 3:
            result = np.expand_dims(result, axis=1)
        if result.shape[1] == 1:
            result = (result != 0).astype(int) + 1
        else:
            shape = result.shape
            result = np.argmax(result, axis=1).reshape(shape[0], 1, shape[2], shape[3]) + 1
        many_outputs.append(result[:, 0])
    out = np.array(many_outputs).transpose((1, 0, 2, 3))
    blur_size = int(dilate_erode_size // 2) * 2 + 1
    # cv2.medianBlur(img, 1) copies img (OpenCV: ksize <= 1 -> copy), so no cv2 needed.
    assert blur_size == 1, "SolarSeg has no median filter; the profile must turn it off"
    return out.astype(np.uint8)  # MapProcessor._get_array_or_mmapped_array is uint8


def deepness_read_tile(path: Path, band_numbers: list[int]) -> np.ndarray:
    """processing_utils.get_tile_image, standalone bands at the layer's own resolution:
    each band's raw block in its own data type, (H, W, 1) each, concatenated."""
    with rasterio.open(path) as src:
        data = [src.read(b)[:, :, None] for b in band_numbers]
    return np.concatenate(data, axis=2)


# --- fixtures: real Sentinel-2 reflectance, small real-architecture models -------------

S2_RESOLUTION_CM = 1000.0  # 10 m pixels


@pytest.fixture(scope="module")
def s2_scenes(scenes: Path, tmp_path_factory) -> dict[str, Path]:
    """The real Sentinel-2 scene (B2, B3, B4, B8; uint16 reflectance x 10,000) as it is and
    as float32 surface reflectance (0..1), both with 10 m pixels."""
    src_path = scenes / "sentinel2_b2b3b4b8_300px.tif"
    assert src_path.is_file(), f"real scene missing: {src_path}"
    with rasterio.open(src_path) as src:
        raw = src.read()
    folder = tmp_path_factory.mktemp("s2")
    out = {}
    for name, data in (("uint16", raw), ("float32", (raw / 10000.0).astype(np.float32))):
        path = folder / f"s2_{name}.tif"
        _write(path, data, from_origin(500000, 4000000, 10, 10))
        out[name] = path
    return out


def _write(path: Path, data: np.ndarray, transform) -> None:
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32633",
        transform=transform,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _model_file(folder: Path, scene: Path, upscale: int, tile: int, threshold: float) -> Path:
    mean, std = band_stats(scene)
    meta = ModelMeta(
        arch="Unet",
        encoder="resnet18",
        in_channels=4,
        bands=[3, 2, 1, 4],  # R, G, B, NIR of a B2, B3, B4, B8 raster: a real mapping
        mean=[mean[b - 1] for b in (3, 2, 1, 4)],
        std=[std[b - 1] for b in (3, 2, 1, 4)],
        threshold=threshold,
        upscale=upscale,
        tile_size=tile,
        overlap=tile // 4,
    )
    model = calibrated_unet(_reordered(scene, folder, meta.bands), meta.mean, meta.std)
    path = folder / "model.pt"
    save_model_file(path, model, meta)
    return path


def _reordered(scene: Path, folder: Path, bands: list[int]) -> Path:
    """The scene with its bands in model order (calibrated_unet reads bands 1..4)."""
    path = folder / "model_order.tif"
    with rasterio.open(scene) as src:
        _write(path, src.read(bands), src.transform)
    return path


# (raster dtype, upscale, tile side in source px, threshold)
CASES = [("float32", 2, 64, 0.5), ("uint16", 1, 128, 0.5)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-x{c[1]}")
def case(request, s2_scenes, tmp_path_factory):
    dtype, upscale, tile, threshold = request.param
    folder = tmp_path_factory.mktemp(f"deepness_{dtype}")
    scene = s2_scenes[dtype]
    model = _model_file(folder, scene, upscale, tile, threshold)
    onnx_path = folder / "deepness.onnx"
    if dtype == "uint16":  # one case goes through the command line
        argv = ["export-onnx", str(model), str(onnx_path), "--profile", "deepness"]
        assert main(argv + ["--resolution-cm", str(S2_RESOLUTION_CM)]) == 0
    else:
        export_onnx(model, onnx_path, resolution_cm=S2_RESOLUTION_CM, profile="deepness")
    # A real tile of the scene, as its own raster: Deepness processes it as one tile;
    # SolarSeg segments it as one window (tile = the raster, no overlap, no padding).
    tile_path = folder / "tile.tif"
    with rasterio.open(scene) as src:
        win = Window(150, 90, tile, tile)
        _write(tile_path, src.read(window=win), src.window_transform(win))
    return {"model": model, "onnx": onnx_path, "tile": tile_path, "tile_size": tile}


# --- tests ------------------------------------------------------------------------------


def test_deepness_reads_the_metadata_as_intended(case):
    meta, _ = read_model_file(case["model"])
    model = DeepnessSegmentor(str(case["onnx"]))
    ui = deepness_ui_defaults(model)
    t = case["tile_size"]
    assert ui["model_type"] == "Segmentor"
    assert model.input_shape[1:] == [4, t, t]  # fixed tile, channels first
    assert ui["tile_size_px"] == t == model.get_metadata_tile_size()
    assert ui["batch_size_fixed"] is None  # dynamic batch: the user's batch size is used
    assert ui["resolution_cm_per_px"] == S2_RESOLUTION_CM  # source pixels, upscale inside
    assert ui["overlap_percentage"] == 25  # tile // 4
    assert ui["threshold_enabled"] and ui["threshold"] == meta.threshold
    assert ui["dilate_erode_size"] == 0
    assert [o.shape[1:] for o in model.outputs_layers] == [[1, t, t]]
    assert model.outputs_are_sigmoid == [True]
    assert model.get_number_of_output_channels() == [2]
    assert model.outputs_names == [["background", "solar_panel"]]
    params = model.standardization_parameters
    assert params.mean.dtype == params.std.dtype == np.float32
    np.testing.assert_allclose(params.mean * 255, meta.mean, rtol=1e-6)
    np.testing.assert_allclose(params.std * 255, meta.std, rtol=1e-6)
    props = model.sess.get_modelmeta().custom_metadata_map
    assert json.loads(props["bands"]) == meta.bands  # for the user's channel mapping
    assert "solarseg" not in props  # not a solarseg-profile file


def test_deepness_mask_equals_solarseg_engine_on_a_real_tile(case, tmp_path):
    meta, _ = read_model_file(case["model"])
    model = DeepnessSegmentor(str(case["onnx"]))
    ui = deepness_ui_defaults(model)
    tiles = deepness_read_tile(case["tile"], meta.bands)[None]  # (1, H, W, C) raw values
    with rasterio.open(case["tile"]) as src:
        assert tiles.dtype == np.dtype(src.dtypes[0])  # the raw type, no conversion
    deep_prob = model.process(tiles.copy())[0][0, 0]
    deep_label = deepness_process_tile(
        model, tiles.copy(), ui["threshold"], ui["dilate_erode_size"]
    )[0, 0]

    t = case["tile_size"]
    options = SegmentOptions(tile_size=t, overlap=0, backend="torch", device="cpu")
    result = segment_raster(case["model"], case["tile"], tmp_path, options)
    with rasterio.open(result.probability_path) as p, rasterio.open(result.mask_path) as m:
        ours_prob, ours_mask = p.read(1), m.read(1)
    assert not np.isnan(ours_prob).any()  # a real tile without nodata

    assert ours_prob.std() > 0.05  # a real spread of probabilities, not a constant
    assert np.abs(deep_prob - ours_prob).max() < PROB_TOLERANCE
    # Deepness labels: 1 = background, 2 = solar_panel (its "+1" convention).
    assert set(np.unique(deep_label)) == {1, 2}
    panel = deep_label == 2
    assert 0.02 < panel.mean() < 0.98  # both classes present: the threshold matters
    differ = panel != (ours_mask == 1)
    at_threshold = np.abs(ours_prob - meta.threshold) < PROB_TOLERANCE
    assert not (differ & ~at_threshold).any()  # identical except exactly at the threshold
    iou = (panel & (ours_mask == 1)).sum() / (panel | (ours_mask == 1)).sum()
    assert iou >= 0.999


def test_solarseg_refuses_a_deepness_profile_file(case):
    with pytest.raises(ModelFileError, match="no 'solarseg' metadata"):
        OnnxBackend(case["onnx"], device="cpu")


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(InputError, match="profile"):
        export_onnx(tmp_path / "none.pt", tmp_path / "x.onnx", profile="deepnes")
