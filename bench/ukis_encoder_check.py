"""Check the ukis-csmask encoder conversion against ONNX Runtime on real Sentinel-2 tiles.

    .venv/bin/python bench/ukis_encoder_check.py [--name ukis-csmask-4b-l2a] [--tiles 4]

Feeds real Solafune tiles (bands B2, B3, B4, B8 [, B11, B12], upscaled bicubic to
the ONNX file's fixed 256 x 256, normalised as ukis-csmask does: reflectance, then the
package's mean and std) to

- the original ONNX file in ONNX Runtime (float16 weights and arithmetic, as shipped),
- the same graph with every float16 tensor and cast made float32 (isolates the weight
  mapping from float16 rounding),
- the engine's ``efficientnet-b4`` encoder loaded with ``model.encoder_weights`` (via
  :mod:`core.models.pretrained`), inside an smp Unet whose decoder and 3-class head also
  get the file's remaining tensors by name, so the whole network can be compared too,

and prints, for each of the five encoder feature maps the U-Net's decoder reads and for
the logits, the max absolute difference and that difference relative to the ONNX
tensor's max absolute value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared/data/solafune-s2-pv"


def encoder_feature_names(graph) -> list[str]:
    """The ONNX tensors of the encoder's feature maps the decoder reads, shallow first:
    the skip inputs of the decoder's concatenations and the deepest map (input of the
    first upsampling)."""
    produced_by = {o: n for n in graph.node for o in n.output}
    skips = {}
    for n in graph.node:
        if (
            n.op_type == "Concat"
            and n.name.startswith("/model/decoder/blocks.")
            and len(n.input) == 2
        ):
            if n.input[1].startswith("/model/encoder/"):
                skips[int(n.name.split("blocks.")[1].split("/")[0])] = n.input[1]
    resize = next(n for n in graph.node if n.name == "/model/decoder/blocks.0/Resize")
    deepest = resize.input[0]
    while not deepest.startswith("/model/encoder/"):  # through the fp32 casts of Resize
        deepest = produced_by[deepest].input[0]
    return [skips[i] for i in sorted(skips, reverse=True)] + [deepest]


def float32_graph(model):
    """The graph with float16 initializers, constants and casts made float32."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for n in m.graph.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                arr = numpy_helper.to_array(a.t).astype(np.float32)
                a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
    del m.graph.value_info[:]
    return m


def run_onnx(model, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for name in outputs:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(o, dtype=np.float32) for o in sess.run(outputs, {"input": x})]


def real_input(bands: list[int], mean, std, n: int, side: int = 256) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from core.data.rasters import read_image

    tiles = []
    for i in range(n):
        img, _ = read_image(DATA / "s2_image" / f"train_s2_image_{i * 97}.tif", bands)
        t = torch.from_numpy(img)[None] / 10000.0
        tiles.append(F.interpolate(t, size=(side, side), mode="bicubic", align_corners=False)[0])
    x = torch.stack(tiles).numpy()
    m = np.asarray(mean, np.float32)[None, :, None, None]
    s = np.asarray(std, np.float32)[None, :, None, None]
    return ((x - m) / s).astype(np.float32)


def main(argv=None) -> int:
    import onnx
    import segmentation_models_pytorch as smp
    import torch

    from core.models import pretrained as P

    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="ukis-csmask-4b-l2a", choices=sorted(P.SOURCES))
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    src = P.SOURCES[a.name]
    loc = P.locate(src)
    stats = loc.stats()
    bands = P.solafune_bands(src)  # Solafune's 12-band order
    x = real_input(bands, stats["mean"], stats["std"], a.tiles)

    t0 = time.perf_counter()
    net = smp.Unet(P.ENCODER, encoder_weights=None, in_channels=len(bands), classes=3)
    record = P.load_encoder(net, src)  # the engine's path (cache or conversion)
    t_load = time.perf_counter() - t0
    model = onnx.load(str(loc.onnx))
    rest = {t.name[len("model.") :]: torch.from_numpy(onnx.numpy_helper.to_array(t).astype(np.float32))
            for t in model.graph.initializer if not t.name.startswith(P.ONNX_PREFIX)}  # fmt: skip
    net.load_state_dict({**net.state_dict(), **rest}, strict=True)  # decoder and 3-class head
    net.eval()
    with torch.no_grad():
        feats = net.encoder(torch.from_numpy(x))[1:]
        logits = net(torch.from_numpy(x))
    ours = [f.numpy() for f in feats] + [logits.numpy()]

    names = encoder_feature_names(model.graph) + ["output"]
    result = {"name": a.name, "onnx_sha256": record["sha256"], "tiles": a.tiles,
              "input": list(x.shape), "load_seconds": round(t_load, 2), "compare": {}}  # fmt: skip
    for label, graph in (("onnx_fp16", model), ("onnx_fp32", float32_graph(model))):
        theirs = run_onnx(graph, x, names)
        rows = []
        for name, o, t in zip(names, ours, theirs, strict=True):
            assert o.shape == t.shape, (name, o.shape, t.shape)
            diff = float(np.abs(o - t).max())
            scale = float(np.abs(t).max())
            rows.append({"tensor": name, "shape": list(t.shape), "max_abs_diff": diff,
                         "max_abs": scale, "relative": diff / scale})  # fmt: skip
        agree = float((ours[-1].argmax(1) == theirs[-1].argmax(1)).mean())
        result["compare"][label] = {"rows": rows, "argmax_agreement": agree}
    if a.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{a.name}: ONNX sha256 {record['sha256'][:16]}..., {a.tiles} real tiles "
          f"{list(x.shape)}, load {t_load:.2f} s")  # fmt: skip
    for label, res in result["compare"].items():
        print(f"vs {label} (class argmax agreement {res['argmax_agreement']:.6f})")
        for r in res["rows"]:
            print(f"  {r['tensor']:<44} {str(r['shape']):<20} max|diff| {r['max_abs_diff']:.3g}"
                  f"  max|x| {r['max_abs']:.3g}  rel {r['relative']:.2e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
