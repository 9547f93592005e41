"""Numerics of training and inference: autocast precision and memory format.

Settings (``train.precision``, ``train.channels_last`` in :mod:`core.config`) are
resolved here, once per process, into a :class:`Numerics` that the training loop, the
evaluation and the segment backend use the same way:

- ``precision: auto`` -> ``bf16`` autocast on a CPU that runs bf16 natively
  (AVX-512 BF16 or AMX, with PyTorch's AVX-512 kernels enabled); on CUDA the historical
  behaviour: ``fp16`` autocast with a gradient scaler when ``train.amp`` is true, else
  ``fp32``; anywhere else ``fp32``. ``fp32`` and ``bf16`` force it (bf16 on a CPU
  without native support is emulated: correct, but slower than fp32).
- ``channels_last: auto`` -> channels-last on the CPU (oneDNN's convolutions run much
  faster in that layout), the default NCHW layout on CUDA.

Only the network runs under autocast. Losses, sigmoids and metrics are computed on
``logits.float()``, so they see float32 whatever the network ran in, and every
probability handed out is float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import CHANNELS_LAST, PRECISIONS
from ..errors import InputError

#: /proc/cpuinfo flags of native bf16 arithmetic on x86 (AVX-512 BF16, AMX tiles).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo`` (empty when
    the file is missing, e.g. on macOS or Windows)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_support(capability: str | None = None, flags: frozenset[str] | set[str] | None = None) -> bool:  # fmt: skip
    """Whether this CPU runs bf16 natively: PyTorch dispatches its AVX-512 kernels
    (``torch.backends.cpu.get_cpu_capability()`` is ``AVX512``; ``ATEN_CPU_CAPABILITY``
    can lower it) and the CPU has AVX-512 BF16 or AMX BF16. Both can be given (tests)."""
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    if flags is None:
        flags = cpu_flags()
    return capability.strip().upper().startswith("AVX512") and bool(BF16_FLAGS & set(flags))


def resolve_precision(
    setting: str,
    device_type: str,
    amp: bool = True,
    capability: str | None = None,
    flags: frozenset[str] | set[str] | None = None,
) -> str:
    """``auto | fp32 | bf16`` on a device -> ``fp32``, ``bf16`` or ``fp16`` (CUDA amp).

    ``fp16`` itself is accepted for inference on CUDA (``segment --precision fp16``: fp16
    autocast, what GPUs without fast bf16 run fastest) and refused elsewhere."""
    if setting not in (*PRECISIONS, "fp16"):
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting == "fp16" and device_type != "cuda":
        raise InputError(
            f"precision fp16 runs on CUDA only, not on {device_type!r}; use bf16 or fp32",
            "precision",
        )
    if setting != "auto":
        return setting
    if device_type == "cuda":
        return "fp16" if amp else "fp32"
    if device_type == "cpu" and cpu_bf16_support(capability, flags):
        return "bf16"
    return "fp32"


def resolve_channels_last(setting: str | bool, device_type: str) -> bool:
    """``auto | true | false`` (or a bool) -> channels-last on or off (auto: CPU only)."""
    if isinstance(setting, bool):
        return setting
    value = str(setting).strip().lower()
    if value not in CHANNELS_LAST:
        raise ValueError(f"channels_last must be auto, true or false, got {setting!r}")
    return device_type == "cpu" if value == "auto" else value == "true"


@dataclass(frozen=True)
class Numerics:
    """A resolved precision (``fp32 | bf16 | fp16``) and memory format."""

    precision: str = "fp32"
    channels_last: bool = False

    @classmethod
    def resolve(
        cls,
        precision: str,
        channels_last: str | bool,
        device: torch.device | str,
        amp: bool = True,
    ) -> Numerics:
        dev = torch.device(device).type
        return cls(
            resolve_precision(precision, dev, amp), resolve_channels_last(channels_last, dev)
        )

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @property
    def memory_format(self) -> str:
        """As recorded in run records and model files."""
        return "channels_last" if self.channels_last else "contiguous"

    def autocast(self, device_type: str):
        """The autocast context of the network's forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in this memory format (in place for parameters; returns it)."""
        if self.channels_last:
            return model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def as_dict(self) -> dict[str, str]:
        return {"precision": self.precision, "memory_format": self.memory_format}


FP32 = Numerics()
