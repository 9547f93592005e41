"""Device selection without a GPU: torch devices (``resolve_device``), fp16 inference on
CUDA only, ONNX Runtime's execution providers for a device (``onnx_providers`` and the
ONNX backend with ORT's provider list and session mocked), the segment check, and
torchrun asking for more GPUs than the machine has. All mocked: no GPU is needed, and
nothing here starts a GPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import onnxruntime as ort
import pytest
import torch

from core.errors import InputError
from core.models.build import resolve_device
from core.models.meta import ONNX_META_KEY
from core.models.precision import Numerics, resolve_precision
from core.segment import backends
from core.segment.backends import CPU_EP, CUDA_EP, OnnxBackend, onnx_providers

CPU_ONLY = ["AzureExecutionProvider", CPU_EP]  # the onnxruntime package
WITH_CUDA = ["TensorrtExecutionProvider", CUDA_EP, CPU_EP]  # onnxruntime-gpu


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees ``n`` CUDA GPUs."""

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


def test_resolve_device(gpus):
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    gpus(2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match="2 CUDA GPU"):
        resolve_device("cuda:2")


def test_fp16_is_for_cuda_only():
    assert resolve_precision("fp16", "cuda") == "fp16"
    assert Numerics.resolve("fp16", "auto", "cuda", amp=False).dtype == torch.float16
    with pytest.raises(InputError, match="CUDA only") as err:
        resolve_precision("fp16", "cpu")
    assert err.value.field == "precision"


@pytest.mark.parametrize(
    ("device", "available", "want"),
    [
        ("auto", WITH_CUDA, [CUDA_EP, CPU_EP]),
        ("auto", CPU_ONLY, [CPU_EP]),
        ("cpu", WITH_CUDA, [CPU_EP]),
        ("cuda", WITH_CUDA, [CUDA_EP, CPU_EP]),
        ("CUDA:1", WITH_CUDA, [(CUDA_EP, {"device_id": 1}), CPU_EP]),
    ],
)
def test_onnx_providers(device, available, want):
    assert onnx_providers(device, available) == want


@pytest.mark.parametrize(
    ("device", "message"),
    [("cuda", "no CUDA execution provider"), ("cuda:x", "cuda:N"), ("mps", "auto, cpu or cuda")],
)
def test_onnx_providers_refused(device, message):
    with pytest.raises(InputError, match=message) as err:
        onnx_providers(device, CPU_ONLY)
    assert err.value.field == "device"


class FakeSession:
    """An ORT session that runs on ``runs_on`` (the providers it was given, or fewer
    when CUDA 'failed to load'), with SolarSeg's metadata."""

    made: list = []
    cuda_loads = True

    def __init__(self, path, providers):
        FakeSession.made.append(providers)
        names = [p if isinstance(p, str) else p[0] for p in providers]
        self.runs_on = names if self.cuda_loads else [n for n in names if n != CUDA_EP]

    def get_providers(self):
        return self.runs_on

    def get_inputs(self):
        return [SimpleNamespace(name="input")]

    def get_modelmeta(self):
        meta = {"arch": "Unet", "encoder": "resnet18", "in_channels": 4, "bands": [1, 2, 3, 4],
                "mean": [0.0] * 4, "std": [1.0] * 4}  # fmt: skip
        return SimpleNamespace(custom_metadata_map={ONNX_META_KEY: json.dumps({"meta": meta})})


@pytest.fixture
def fake_ort(monkeypatch, tmp_path):
    preloads: list = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: WITH_CUDA)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: preloads.append(1), raising=False)
    FakeSession.made, FakeSession.cuda_loads = [], True
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not read by the fake session")
    return SimpleNamespace(path=path, preloads=preloads)


def test_onnx_backend_asks_for_cuda_when_ort_has_it(fake_ort):
    backend = OnnxBackend(fake_ort.path, device="cuda")
    assert FakeSession.made == [[CUDA_EP, CPU_EP]] and backend.providers == [CUDA_EP, CPU_EP]
    assert fake_ort.preloads == [1]  # CUDA/cuDNN from the nvidia wheels, best effort
    OnnxBackend(fake_ort.path, device="cpu")
    assert FakeSession.made[-1] == [CPU_EP] and fake_ort.preloads == [1]


def test_onnx_backend_refuses_a_silent_fallback_to_the_cpu(fake_ort):
    FakeSession.cuda_loads = False  # ORT could not load the CUDA or cuDNN libraries
    with pytest.raises(InputError, match="could not start its CUDA execution provider"):
        OnnxBackend(fake_ort.path, device="cuda")
    assert OnnxBackend(fake_ort.path, device="auto").providers == [CPU_EP]  # auto may


def test_preload_failures_stay_off_stdout(monkeypatch, capsys):
    def noisy(*args, **kwargs):
        print("Failed to load libcudnn.so.9")
        raise OSError("no cuDNN")

    monkeypatch.setattr(ort, "preload_dlls", noisy, raising=False)
    backends._preload_cuda_libraries(ort)  # no exception either
    out = capsys.readouterr()
    assert out.out == "" and "libcudnn" in out.err  # stdout may be the --jsonl channel


def test_segment_check_reports_device_and_precision(gpus):
    from core.segment.engine import _device_problems
    from core.segment.options import SegmentOptions

    gpus(0)
    (p,) = _device_problems(SegmentOptions(backend="torch", precision="fp16"))
    assert p.field == "precision" and "CUDA only" in p.message
    (p,) = _device_problems(SegmentOptions(backend="torch", device="cuda"))
    assert p.field == "device"
    assert _device_problems(SegmentOptions(backend="onnx", device="cpu")) == []
    if CUDA_EP not in ort.get_available_providers():  # the onnxruntime CPU package
        (p,) = _device_problems(SegmentOptions(backend="onnx", device="cuda"))
        assert p.field == "device" and "onnxruntime-gpu" in p.message
    gpus(1)
    assert _device_problems(SegmentOptions(backend="torch", device="cuda", precision="fp16")) == []
    assert SegmentOptions(precision="fp16").problems() == []


def test_torchrun_with_more_processes_than_gpus(gpus, monkeypatch):
    from core.training import distributed

    gpus(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(InputError, match="--nproc_per_node 1"):
        distributed.setup("cuda", None)  # refused before joining any process group
