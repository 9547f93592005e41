"""int8 ONNX graphs: ONNX Runtime static quantisation of an fp32 SolarSeg ONNX file.

:func:`quantize_onnx` quantises an fp32 file (written by
:func:`core.models.onnx_export.export_onnx`) with
:func:`onnxruntime.quantization.quantize_static` (QDQ format, uint8 activations, int8
weights per output channel; see ``QUANT_FORMAT`` and ``bench/quantize.py``) after ORT's
own pre-processing (shape inference, graph optimisation). The end of the graph stays
float32: the sigmoid, the segmentation head and the decoder's last, full-resolution
stage (``FLOAT_TAIL_CONVS``), where 8-bit activations moved probabilities the most.

Activation ranges come from the calibration batches the caller gives: network inputs
prepared exactly as inference prepares them. Choosing and preparing those tiles, the
cache and ``--precision int8`` live with segmentation (:mod:`core.segment.int8`), so
this module depends on nothing above the model layer.

The int8 file keeps the fp32 file's metadata and adds a ``precision: int8`` entry and,
in the ``solarseg`` JSON, ``graph_precision: int8`` (:mod:`.onnx_metadata`), the
quantisation settings, the caller's calibration record and a check made right after
quantising: max and mean |int8 - fp32| probability and the mask IoU on the calibration
inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_path
from ..progress import Progress, ProgressFn, no_progress
from .meta import ONNX_META_KEY
from .onnx_metadata import (
    GRAPH_PRECISION_KEY,
    INT8,
    file_props,
    onnx_precision,
    solarseg_props,
    write_metadata,
)

# Measured on a Zen 4 EPYC (AVX-512 VNNI), trained Unet resnet18, 2 threads, load 4-6,
# x the fp32 graph on ONNX Runtime: bare sessions 1024² / 4 x 512²: QDQ per-channel
# 2.21 / 2.31, QOperator per-channel 2.27 / 2.27, QDQ per-tensor 2.16 / 2.17; end to
# end (bench/quantize.py, 512² mosaic, tile 128): 2.24, 2.32, 2.23. QDQ and QOperator
# are level (without the float tail below, QOperator per-channel was 1.85x against
# QDQ's 2.69x); QDQ is kept: ONNX Runtime's recommended format, which its other
# execution providers (CUDA, TensorRT) also run. Per-channel weights: as fast, finer.
QUANT_FORMAT = "qdq"
QUANT_FORMATS = ("qdq", "qoperator")
PER_CHANNEL = True
CALIBRATION_METHOD = "minmax"
# Convolutions kept float32 at the end of the graph (with everything after them): the
# head and the decoder's last, full-resolution stage of a Unet. Measured on a trained
# Unet resnet18 (96 test tiles): mask IoU vs fp32 0.945 -> 0.979, mean |prob diff|
# 0.0047 -> 0.0029, for about 4 % of the int8 speed (those convolutions are ~8 % of
# the arithmetic). Only the last stage mattered; any other block kept float: <= 0.001.
FLOAT_TAIL_CONVS = 3
# ORT's histogram calibrators (percentile, entropy) need inputs of one shape; the
# tiles' windows differ (22-26 px tiles); percentile gained less than the float tail
# below in an early measurement (mask IoU 0.757 vs 0.733 for minmax).
CALIBRATION_METHODS = ("minmax",)
QUANT_VERSION = 1  # bump when the recipe changes: invalidates cached files

#: Why ``--precision bf16`` is refused for ONNX Runtime (measured with onnxruntime 1.32
#: on this CPU: a bf16 Conv has no CPU kernel, fp16 runs at the fp32 speed).
ONNX_BF16_REASON = (
    "bf16 runs on the torch backend only: ONNX Runtime's CPU provider has no bf16 convolution"
)
ONNX_BF16_MESSAGE = f"{ONNX_BF16_REASON} (use --backend torch --precision bf16, or int8)"


@dataclass(frozen=True)
class QuantSettings:
    """The quantisation recipe (defaults: the measured fastest, see the module doc)."""

    quant_format: str = QUANT_FORMAT
    per_channel: bool = PER_CHANNEL
    method: str = CALIBRATION_METHOD
    float_tail_convs: int = FLOAT_TAIL_CONVS
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def record(self) -> dict[str, Any]:
        import onnxruntime

        return {
            "format": self.quant_format.upper() if self.quant_format == "qdq" else "QOperator",
            "per_channel": self.per_channel,
            "activations": "uint8",
            "weights": "int8",
            "method": self.method,
            "float_tail_convs": self.float_tail_convs,
            "onnxruntime": onnxruntime.__version__,
            "version": QUANT_VERSION,
        }


# -------------------------------------------------------------------- quantisation


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantiser logs a warning per integer tensor and prints its calibration
    progress on stdout (which carries ``--jsonl`` events): silence both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _float_output_nodes(model, convs: int) -> list[str]:
    """The nodes kept float32: walking back from the graph output along each node's
    first input (the sigmoid, the segmentation head, the decoder's last stage...) until
    ``convs`` convolutions are collected or a node that merges branches (Concat, Add)
    is reached."""
    producers = {out: node for node in model.graph.node for out in node.output}
    keep: list[str] = []
    seen = 0
    name = model.graph.output[0].name
    while name in producers and seen < convs:
        node = producers[name]
        if node.op_type in ("Concat", "Add", "Sum"):
            break
        keep.append(node.name)
        seen += node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
        name = node.input[0]
    return keep


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over prepared inputs."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self.batches, self.input_name, self.i = batches, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def _agreement(fp32_path: Path, int8_path: Path, batches: list[np.ndarray], threshold: float):
    """Max / mean |int8 - fp32| probability and mask IoU on ``batches``."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (fp32_path, int8_path)
    ]
    name = sessions[0].get_inputs()[0].name
    max_diff, total, count, inter, union = 0.0, 0.0, 0, 0, 0
    for x in batches:
        a, b = (s.run(None, {name: x})[0] for s in sessions)
        d = np.abs(a - b)
        max_diff = max(max_diff, float(d.max()))
        total, count = total + float(d.sum()), count + d.size
        ma, mb = a >= np.float32(threshold), b >= np.float32(threshold)
        inter, union = inter + int((ma & mb).sum()), union + int((ma | mb).sum())
    return {
        "max_prob_diff": max_diff,
        "mean_prob_diff": total / max(count, 1),
        "mask_iou_vs_fp32": inter / union if union else 1.0,
    }


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    batches: list[np.ndarray],
    threshold: float,
    calibration: dict[str, Any],
    settings: QuantSettings | None = None,
    progress: ProgressFn = no_progress,
) -> Path:
    """Quantise the fp32 solarseg-profile ONNX file ``fp32_path`` into ``out_path``
    (written atomically), calibrated on ``batches`` (the network's inputs, float32
    NCHW); ``calibration`` (where the batches came from) and the agreement with fp32 at
    ``threshold`` go into the file's metadata. Returns ``out_path``."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = settings or QuantSettings()
    if settings.quant_format not in QUANT_FORMATS:
        raise InputError(f"quantisation format must be one of {QUANT_FORMATS}")
    if settings.method not in CALIBRATION_METHODS:
        raise InputError(f"calibration method must be one of {CALIBRATION_METHODS}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    props = file_props(fp32_path)
    if onnx_precision(props) != "fp32" or ONNX_META_KEY not in props:
        raise InputError(
            f"{fp32_path}: not an fp32 SolarSeg ONNX file (export-onnx, solarseg profile)"
        )
    if not batches:
        raise InputError("int8: no calibration inputs", "calibration")
    n = sum(len(b) for b in batches)
    input_name = (
        ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
        .get_inputs()[0]
        .name
    )
    method = CalibrationMethod.MinMax
    with tempfile.TemporaryDirectory(prefix="solarseg-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        progress(Progress("quantize", 0.2, "int8: pre-processing the graph"))
        with _quiet():
            try:
                quant_pre_process(str(fp32_path), str(pre))
            except Exception:  # noqa: BLE001 - symbolic shape inference can fail: skip it
                pre = fp32_path
            keep = _float_output_nodes(onnx.load(str(pre)), settings.float_tail_convs)
            progress(Progress("quantize", 0.3, f"int8: calibrating on {n} input(s)"))
            with atomic_path(out_path) as part:
                quantize_static(
                    str(pre),
                    str(part),
                    _Reader(batches, input_name),
                    quant_format=QuantFormat.QDQ
                    if settings.quant_format == "qdq"
                    else QuantFormat.QOperator,
                    per_channel=settings.per_channel,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=keep,
                    calibrate_method=method,
                    extra_options=dict(settings.extra),
                )
                progress(Progress("quantize", 0.9, "int8: checking against fp32"))
                check = _agreement(fp32_path, part, batches, threshold)
                solarseg = solarseg_props(props)
                solarseg.update(
                    **{GRAPH_PRECISION_KEY: INT8},
                    quantization={**settings.record(), "float_nodes": keep},
                    calibration=calibration,
                    calibration_check=check,
                )
                new_props = {**props, ONNX_META_KEY: json.dumps(solarseg), "precision": INT8,
                             "calibration": json.dumps(calibration)}  # fmt: skip
                doc = (
                    "SolarSeg solar-panel segmentation, int8 (ONNX Runtime static "
                    f"quantisation, {settings.record()['format']}). input: float32 NCHW "
                    "(band - mean) / std; output: float32 N1HW probabilities (sigmoid "
                    "included)."
                )
                write_metadata(part, new_props, doc)
    progress(Progress("quantize", 1.0, f"int8: wrote {out_path.name}"))
    return out_path
