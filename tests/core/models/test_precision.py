"""``train.precision`` / ``train.channels_last``: what ``auto`` resolves to on a CPU with
and without native bf16 (fake capability strings and cpuinfo flags), the refusal of
bad values keyed by setting, and the resolved Numerics' autocast and layout."""

from __future__ import annotations

import pytest
import torch

from core.config import ConfigError, config_problems, load_config
from core.models.precision import (
    Numerics,
    cpu_bf16_support,
    cpu_flags,
    resolve_channels_last,
    resolve_precision,
)

ZEN4 = {"avx2", "avx512f", "avx512bw", "avx512_bf16"}  # AVX-512 BF16 (e.g. EPYC Genoa)
SPR = {"avx2", "avx512f", "amx_tile", "amx_bf16"}  # AMX BF16 (Sapphire Rapids)
ZEN3 = {"avx2", "fma", "f16c"}  # no AVX-512 at all (e.g. EPYC Milan)
SKX = {"avx2", "avx512f", "avx512bw"}  # AVX-512 without bf16 (Skylake-SP)


@pytest.mark.parametrize(
    ("capability", "flags", "native"),
    [
        ("AVX512", ZEN4, True),
        ("AVX512", SPR, True),
        ("avx512", ZEN4, True),
        ("AVX512", SKX, False),
        ("AVX2", ZEN3, False),
        # The CPU has bf16 but PyTorch was told to stay on AVX2 kernels
        # (ATEN_CPU_CAPABILITY=avx2): its bf16 elementwise kernels would be emulated.
        ("AVX2", ZEN4, False),
        ("DEFAULT", set(), False),
        ("NO AVX", set(), False),
        ("SVE256", {"bf16"}, False),  # aarch64: not detected, stays fp32
    ],
)
def test_native_bf16_needs_avx512_kernels_and_a_bf16_flag(capability, flags, native):
    assert cpu_bf16_support(capability, flags) is native
    want = "bf16" if native else "fp32"
    assert resolve_precision("auto", "cpu", capability=capability, flags=flags) == want


def test_explicit_precision_and_cuda_amp():
    for dev in ("cpu", "cuda"):
        assert resolve_precision("fp32", dev, capability="AVX512", flags=ZEN4) == "fp32"
        assert resolve_precision("bf16", dev, capability="AVX2", flags=ZEN3) == "bf16"
    # On CUDA, auto is the historical train.amp behaviour (fp16 autocast + scaler).
    assert resolve_precision("auto", "cuda", amp=True) == "fp16"
    assert resolve_precision("auto", "cuda", amp=False) == "fp32"
    # train.amp never applies to the CPU.
    assert resolve_precision("auto", "cpu", amp=True, capability="AVX2", flags=ZEN3) == "fp32"
    assert resolve_precision("auto", "mps", capability="AVX512", flags=ZEN4) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")


def test_channels_last_auto_is_the_cpu():
    assert resolve_channels_last("auto", "cpu") is True
    assert resolve_channels_last("auto", "cuda") is False
    assert resolve_channels_last("false", "cpu") is False
    assert resolve_channels_last("true", "cuda") is True
    assert resolve_channels_last(False, "cpu") is False
    with pytest.raises(ValueError, match="channels_last"):
        resolve_channels_last("maybe", "cpu")


def test_cpu_flags_from_a_cpuinfo_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9B14\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16 vaes\n\nprocessor\t: 1\n"
    )
    flags = cpu_flags(info)
    assert {"avx2", "avx512_bf16"} <= flags and "avx512_vnni" not in flags
    assert cpu_flags(tmp_path / "missing") == frozenset()
    # This machine: whatever it has, auto agrees with the detection.
    native = cpu_bf16_support()
    assert Numerics.resolve("auto", "auto", "cpu").precision == ("bf16" if native else "fp32")


def test_config_defaults_normalise_and_refuse_bad_values_by_field():
    cfg = load_config(None)
    assert (cfg.train.precision, cfg.train.channels_last, cfg.train.amp) == ("auto", "auto", True)
    # YAML's booleans and capitals are accepted and stored lower-case.
    cfg = load_config(None, ["train.channels_last=false", "train.precision=BF16"])
    assert (cfg.train.channels_last, cfg.train.precision) == ("false", "bf16")
    assert load_config(None, ["train.channels_last=yes"]).train.channels_last == "true"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.precision=fp16"])
    assert err.value.field == "train.precision" and "auto, fp32 or bf16" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.channels_last=sometimes"])
    assert err.value.field == "train.channels_last"
    cfg = load_config(None, ["train.precision=half", "train.channels_last=nhwc"], check=False)
    assert [p.field for p in config_problems(cfg)] == ["train.precision", "train.channels_last"]


def test_an_old_stored_config_without_the_settings_loads_as_auto():
    from core.config import load_stored_config

    cfg = load_stored_config({"config_version": 2, "train": {"amp": False, "epochs": 3}})
    assert (cfg.train.precision, cfg.train.channels_last, cfg.train.amp) == ("auto", "auto", False)


def test_numerics_autocast_and_layout():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU())
    x = torch.randn(2, 4, 16, 16)
    fp32 = Numerics("fp32", False)
    with fp32.autocast("cpu"):
        assert net(fp32.prepare_input(x)).dtype == torch.float32
    bf16 = Numerics("bf16", True)
    net = bf16.prepare_model(net)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    xi = bf16.prepare_input(x)
    assert xi.is_contiguous(memory_format=torch.channels_last)
    with bf16.autocast("cpu"):
        assert net(xi).dtype == torch.bfloat16
    assert bf16.as_dict() == {"precision": "bf16", "memory_format": "channels_last"}
    assert fp32.as_dict() == {"precision": "fp32", "memory_format": "contiguous"}
