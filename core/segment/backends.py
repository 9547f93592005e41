"""Inference backends: a batch of normalised tiles in, per-pixel probabilities out.

Both backends apply the sigmoid exactly once:

- :class:`TorchBackend` runs the model file's network, which outputs logits, and applies
  ``torch.sigmoid``.
- :class:`OnnxBackend` runs a graph written by :func:`core.models.onnx_export.export_onnx`,
  which already ends in a sigmoid (its metadata says ``"output": "probability"``), so it
  applies nothing. A graph whose metadata says ``"output": "logits"`` gets the sigmoid
  here instead.

Optional flip test-time augmentation (identity, horizontal, vertical and both flips,
averaged as probabilities) is available in both, off by default (4x the compute).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

# Torch-free imports only: segmenting with an .onnx file must not need torch.
from ..errors import InputError
from ..models.meta import (
    ONNX_META_KEY,
    ModelFileError,
    ModelMeta,
    meta_from_dict,
    resolve_model_path,
)


class Backend(Protocol):
    """What the engine needs from an inference backend."""

    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 normalised tiles -> (N, 1, H, W) float32 probabilities."""
        ...


def flip_tta(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """Average ``run`` over the identity, horizontal, vertical and double flips."""
    total = run(batch).astype(np.float32, copy=True)
    for axes in ((3,), (2,), (2, 3)):
        flipped = np.ascontiguousarray(np.flip(batch, axis=axes))
        total += np.flip(run(flipped), axis=axes)
    return total / np.float32(4)


class TorchBackend:
    """A PyTorch network that outputs logits; sigmoid applied here, on float32 logits.

    ``precision``: ``fp32`` (default), ``bf16`` (CPU or CUDA autocast), or ``auto`` (bf16
    on a CPU with native bf16, else fp32; see :mod:`core.models.precision`). bf16 moves
    probabilities by up to about 1e-2, beyond the 1e-3 agreement with the ONNX backend,
    hence not the default here. ``channels_last`` None: on for the CPU, whose oneDNN
    convolutions run faster in that layout (same results to float rounding).
    Probabilities are float32 in every case.
    """

    name = "torch"
    calibration = None  # int8 only (ONNX Runtime)

    def __init__(
        self,
        model,
        device="cpu",
        tta: bool = False,
        precision: str = "fp32",
        channels_last: bool | None = None,
    ):
        import torch

        from ..models.precision import Numerics

        self._torch = torch
        self.device = torch.device(device)
        self.numerics = Numerics.resolve(
            precision, "auto" if channels_last is None else channels_last, self.device, amp=False
        )
        self.precision = self.numerics.precision
        self.channels_last = self.numerics.channels_last
        self.model = self.numerics.prepare_model(model).eval()
        self.tta = tta

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        num = self.numerics
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            with num.autocast(self.device.type):
                logits = self.model(num.prepare_input(x))
            prob = torch.sigmoid(logits.float()).cpu()
            return np.ascontiguousarray(prob.numpy())

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return flip_tta(self._run, batch) if self.tta else self._run(batch)


CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def onnx_providers(device: str, available: list[str]) -> list:
    """The ONNX Runtime execution providers for ``device``, given the ``available`` ones
    (``onnxruntime.get_available_providers()``), in ORT's order of preference:

    - ``cpu``: the CPU provider only;
    - ``auto``: CUDA first when ONNX Runtime has it (onnxruntime-gpu), then the CPU;
    - ``cuda`` / ``cuda:N``: CUDA (on GPU ``N``) then the CPU for the few operators CUDA
      lacks; refused when ONNX Runtime has no CUDA provider (the CPU package).

    Anything else is refused (the torch backend knows more device names, ORT does not)."""
    name = (device or "auto").strip().lower()
    if name == "cpu":
        return [CPU_EP]
    if name == "auto":
        return [CUDA_EP, CPU_EP] if CUDA_EP in available else [CPU_EP]
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise InputError(f"device {device!r}: use cuda or cuda:N (N = 0, 1, ...)", "device")
        if CUDA_EP not in available:
            raise InputError(
                f"device {device!r} was asked for but ONNX Runtime has no CUDA execution "
                f"provider (it has {', '.join(available) or 'none'}; install onnxruntime-gpu)",
                "device",
            )
        cuda = (CUDA_EP, {"device_id": int(index)}) if index else CUDA_EP
        return [cuda, CPU_EP]
    raise InputError(f"device {device!r}: the ONNX backend runs on auto, cpu or cuda[:N]", "device")


def _provider_names(providers: list) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]


def _preload_cuda_libraries(ort) -> None:
    """Best effort: ``onnxruntime.preload_dlls()`` loads CUDA and cuDNN from the nvidia-*
    wheels (those torch installs) when the system has none. It prints its failures; they
    go to stderr, since stdout may be the ``--jsonl`` channel. Whether CUDA really
    started is checked on the session."""
    if not hasattr(ort, "preload_dlls"):
        return
    with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(Exception):
        ort.preload_dlls()


class OnnxBackend:
    """An ONNX graph run by ONNX Runtime (CUDA execution provider when available and
    ``device`` allows it, else CPU; see :func:`onnx_providers`). ``providers`` is what
    the session really runs on: asked for ``cuda``, a session that fell back to the CPU
    (ORT does when it cannot load the CUDA or cuDNN libraries) is refused."""

    name = "onnx"

    def __init__(self, path: str | Path, device: str = "auto", tta: bool = False):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise ModelFileError(f"{self.path}: ONNX file not found")
        providers = onnx_providers(device, ort.get_available_providers())
        if CUDA_EP in _provider_names(providers):
            _preload_cuda_libraries(ort)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ModelFileError(f"{self.path}: not a loadable ONNX model ({exc})") from None
        self.providers = self.session.get_providers()
        if device.strip().lower().startswith("cuda") and CUDA_EP not in self.providers:
            raise InputError(
                f"device {device!r}: ONNX Runtime could not start its CUDA execution provider "
                f"(session runs on {', '.join(self.providers)}); check that the CUDA and cuDNN "
                "libraries of this onnxruntime-gpu build are installed",
                "device",
            )
        self.input_name = self.session.get_inputs()[0].name
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta, self.outputs_logits = _meta_from_props(props, self.path)
        # "int8" for a file quantised by core.models.quantize (its metadata says so),
        # with the calibration it was made with; "fp32" for any other graph.
        raw = json.loads(props[ONNX_META_KEY])
        self.precision = str(raw.get("graph_precision", "fp32"))
        self.calibration = raw.get("calibration")
        self.tta = tta

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = self.session.run(None, {self.input_name: x})[0].astype(np.float32, copy=False)
        if self.outputs_logits:
            out = 1.0 / (1.0 + np.exp(-out))
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return flip_tta(self._run, batch) if self.tta else self._run(batch)


class PixelBackend:
    """A per-pixel LightGBM model (:class:`~core.models.pixel_gbm.PixelModel`): the
    normalised batch is de-normalised with the model's mean/std and every pixel is
    classified on its own (no torch). Flip TTA would change nothing and is ignored."""

    name = "lightgbm"

    def __init__(self, model) -> None:
        self.model = model
        self.meta = model.meta

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict_normalised(batch)


def _meta_from_props(props: dict[str, str], path: Path) -> tuple[ModelMeta, bool]:
    """ModelMeta and 'graph outputs logits?' from an ONNX file's metadata_props."""
    if ONNX_META_KEY not in props:
        raise ModelFileError(
            f"{path}: ONNX file has no '{ONNX_META_KEY}' metadata (band selection, "
            "normalisation, threshold); export it with `python -m core export-onnx`"
        )
    try:
        raw = json.loads(props[ONNX_META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: '{ONNX_META_KEY}' metadata is not JSON ({exc})") from None
    meta = meta_from_dict(raw.get("meta", raw))
    return meta, raw.get("output", "probability") == "logits"


def read_meta(model_path: str | Path) -> ModelMeta:
    """The metadata of a run folder, a ``.pt`` model file or an ``.onnx`` file, without
    building the network (the ONNX file is opened by ONNX Runtime on the CPU)."""
    path = Path(model_path)
    if path.suffix.lower() == ".onnx":
        return OnnxBackend(path, device="cpu").meta
    from ..models.build import read_model_file

    return read_model_file(resolve_model_path(path))[0]


def load_backend(
    model_path: str | Path,
    backend: str = "torch",
    device: str = "auto",
    tta: bool = False,
    precision: str = "fp32",
) -> tuple[Backend, ModelMeta]:
    """A backend and the model's metadata from a run folder, a ``.pt`` model file or an
    ``.onnx`` file.

    ``precision``: ``fp32``, ``bf16`` / ``auto`` (the torch backend's autocast; ONNX
    Runtime refuses bf16 and runs auto as fp32), or ``int8``: an int8 ONNX file on ONNX
    Runtime whatever ``backend`` says. A ``.pt`` or fp32 ``.onnx`` model is quantised
    before, by :func:`core.segment.int8.model_for_precision` (it needs calibration
    tiles). An int8 ``.onnx`` file runs as int8 whatever ``precision`` says (but bf16).

    ``backend="onnx"`` with a PyTorch model file exports it to a temporary ONNX file
    first (a few seconds); a LightGBM model file runs on :class:`PixelBackend` (asked
    for as ``torch``, the default, and refused for ``onnx``); ``backend="torch"`` with an ONNX file is refused, since an ONNX
    graph cannot be turned back into a PyTorch network.
    """
    if backend not in ("torch", "onnx"):
        raise InputError(f"unknown backend {backend!r}; choose 'torch' or 'onnx'", "backend")
    if precision == "int8":
        from ..models.onnx_metadata import is_int8_file

        if not is_int8_file(model_path):
            raise InputError(
                f"{model_path}: not an int8 ONNX file; quantise it first "
                "(core.segment.int8.int8_model, or export-onnx --precision int8)",
                "precision",
            )
        onnx_backend = OnnxBackend(Path(model_path), device=device, tta=tta)
        return onnx_backend, onnx_backend.meta
    path = Path(model_path)
    if backend == "onnx" and precision == "bf16":
        from ..models.quantize import ONNX_BF16_MESSAGE

        raise InputError(ONNX_BF16_MESSAGE, "precision")
    if path.suffix.lower() == ".onnx":
        if backend != "onnx":
            raise InputError(
                f"{path}: an ONNX file runs on the 'onnx' backend, not {backend!r}", "backend"
            )
        onnx_backend = OnnxBackend(path, device=device, tta=tta)
        return onnx_backend, onnx_backend.meta
    from ..models.meta import read_model_meta

    path = resolve_model_path(path)
    if read_model_meta(path).is_pixel_model:
        if backend == "onnx":
            raise InputError(f"{path}: a LightGBM model runs on the 'torch' backend", "backend")
        from ..models.pixel_gbm import PixelModel

        pixel = PixelBackend(PixelModel.load(path))
        return pixel, pixel.meta
    from ..models.build import load_model, resolve_device
    from ..models.onnx_export import export_onnx

    if backend == "torch":
        dev = resolve_device(device)
        model, meta = load_model(path, dev)
        return TorchBackend(model, dev, tta=tta, precision=precision), meta
    with tempfile.TemporaryDirectory(prefix="solarseg-onnx-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(path, onnx_path)
        onnx_backend = OnnxBackend(onnx_path, device=device, tta=tta)  # session holds it
    return onnx_backend, onnx_backend.meta
