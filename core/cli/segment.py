"""Command-line commands of the segmentation side: ``segment``, ``segment-many``,
``info`` and ``export-onnx``.

Registered on ``python -m core`` by :func:`add_segment_commands`. Input errors are raised
(RasterError, ModelFileError, OutputExistsError are ValueErrors); the top-level CLI
prints them as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ..progress import Progress
from ..segment.options import PRECISIONS
from .common import add_calibration_options, report_checked

# Progress lines on stderr: at most one per this many seconds (plus stage changes).
PROGRESS_EVERY_S = 5.0
# --precision of segment and segment-many (export-onnx: fp32, bf16 refused, int8;
# fp16: torch on CUDA only).
PRECISION_CHOICES = PRECISIONS


def parse_band_list(text: str) -> list[int]:
    """``"3,2,1,1"`` -> [3, 2, 1, 1] (1-based raster bands, in model-input order)."""
    try:
        bands = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must look like 4,3,2,8, got {text!r}") from None
    if not bands or any(b < 1 for b in bands):
        raise argparse.ArgumentTypeError(f"bands are 1-based numbers like 4,3,2,8, got {text!r}")
    return bands


def _progress_printer():
    last = {"stage": None, "t": 0.0}

    def show(p: Progress) -> None:
        now = time.monotonic()
        if p.stage != last["stage"] or p.fraction >= 1.0 or now - last["t"] >= PROGRESS_EVERY_S:
            print(f"[{p.stage}] {p.fraction:6.1%} {p.message}", file=sys.stderr, flush=True)
            last["stage"], last["t"] = p.stage, now

    return show


def add_precision_options(p: argparse.ArgumentParser, choices=PRECISION_CHOICES) -> None:
    """``--precision`` and int8's calibration options (segment, segment-many, export-onnx)."""
    p.add_argument(
        "--precision", choices=choices, default="fp32",
        help="network arithmetic: fp32; bf16 (torch autocast); int8 (ONNX Runtime static "
        "quantisation; a .pt or fp32 .onnx model is quantised first, calibrated on "
        "training tiles; an int8 .onnx file runs as it is)"
        + ("; auto (torch: bf16 where the CPU has it natively)" if "auto" in choices else ""),
    )  # fmt: skip
    add_calibration_options(p)


def add_segment_options(p: argparse.ArgumentParser, polygons_flag: bool = True) -> None:
    """The options of ``segment``, shared by ``segment-many`` (one definition)."""
    p.add_argument(
        "--bands",
        type=parse_band_list,
        default=None,
        help="raster bands (1-based) mapped onto the model's inputs in order, e.g. 3,2,1,1; "
        "default: the model's bands, found by Sentinel-2 band name (B04...) where the model "
        "and the raster name their bands, else by number",
    )
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--tile", type=int, default=None, help="window side in source pixels")
    p.add_argument("--overlap", type=int, default=None, help="pixels shared by neighbours")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threshold", type=float, default=None, help="default: the model's")
    if polygons_flag:
        p.add_argument("--polygons", action="store_true", help="also write panels.gpkg")
    p.add_argument(
        "--min-area", type=float, default=0.0, metavar="M2", help="drop smaller polygons (m²)"
    )
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x time)")
    add_precision_options(p)
    p.add_argument(
        "--probability-dtype",
        choices=("float32", "uint8"),
        default="float32",
        help="float32 0..1 (nodata NaN) or uint8 0..254 (scale 1/254, nodata 255)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def segment_options(args: argparse.Namespace, polygons: bool | None = None):
    """SegmentOptions from the arguments :func:`add_segment_options` defined."""
    from ..segment.options import SegmentOptions

    return SegmentOptions(
        tile_size=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
        bands=args.bands,
        backend=args.backend,
        device=args.device,
        probability_dtype=args.probability_dtype,
        polygons=args.polygons if polygons is None else polygons,
        min_area_m2=args.min_area,
        tta=args.tta,
        overwrite=args.overwrite,
        precision=args.precision,
        calibration=args.calibration,
        calibration_tiles=args.calibration_tiles,
    )


def cmd_segment(args: argparse.Namespace) -> int:
    from ..segment.engine import check_segment, segment_raster
    from ..segment.options import ReferenceOptions

    options = segment_options(args)
    if args.reference:
        options.reference = ReferenceOptions(
            args.reference, args.reference_layer, args.reference_where,
            args.reference_field, args.all_touched,
        )  # fmt: skip
    session = args.session
    if args.check:
        return report_checked(session, check_segment(args.model, args.raster, args.out, options)[0])
    result = segment_raster(
        args.model, args.raster, args.out, options,
        session.progress(_progress_printer()), session.cancel,
    )  # fmt: skip
    data = dataclasses.asdict(result)
    session.result(
        {**data, "outputs": [str(p) for p in result.outputs], "summary": result.summary()}
    )
    for path in result.outputs:
        print(f"wrote {path}")
    print(result.summary())
    print(f"bands {','.join(map(str, result.bands))} ({result.band_source})")
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _scenes_bar():
    """The terminal progress of segment-many: a tqdm bar in km² (scenes done, failed,
    km²/min and ETA), other stages as lines. Returns (show, close)."""
    from tqdm import tqdm

    state: dict = {"bar": None}
    lines = _progress_printer()

    def show(p: Progress) -> None:
        info = p.info or {}
        if p.stage != "segment-many" or "km2_total" not in info:
            if state["bar"] is None:
                lines(p)
            return
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(
                total=round(info["km2_total"], 2), unit="km²", file=sys.stderr,
                dynamic_ncols=True, desc="scenes", bar_format="{desc}: {percentage:3.0f}%|"
                "{bar}| {n:.2f}/{total:.2f} km² [{elapsed}<{remaining}, {rate_fmt}]{postfix}",
            )  # fmt: skip
        bar.update(max(0.0, round(info["km2_done"], 2) - bar.n))
        bar.set_postfix_str(
            f"{info['scenes_done']}/{info['scenes_total']} scenes, "
            f"{info['scenes_failed']} failed, {info['scenes_skipped']} skipped"
        )

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return show, close


def cmd_segment_many(args: argparse.Namespace) -> int:
    from ..segment.many import ClusterOptions, check_segment_many, scene_outputs, segment_many

    options = segment_options(args, polygons=True)
    cluster = ClusterOptions(
        scheduler=args.scheduler,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        retries=args.retries,
    )
    session = args.session
    if args.check:
        problems, _ = check_segment_many(args.model, args.inputs, args.out, options, cluster)
        return report_checked(session, problems)
    show, close = _scenes_bar()
    try:
        result = segment_many(
            args.model, args.inputs, args.out, options, cluster,
            session.progress(show), session.cancel,
        )  # fmt: skip
    finally:
        close()
    session.result(
        {
            "out": str(result.out_dir),
            "summary_csv": str(result.summary_path),
            "polygons": str(result.polygons_path) if result.polygons_path else None,
            "scenes": [
                {**dataclasses.asdict(r), **scene_outputs(result.out_dir, r)} for r in result.rows
            ],
            "counts": result.counts,
            "panels": result.panels,
            "panel_area_ha": result.panel_area_ha,
            "seconds": result.seconds,
            "workers": result.workers,
            "summary": result.summary(),
        }
    )
    for row in result.rows:
        if row.status == "failed":
            print(f"failed: {row.scene}: {row.error}")
    for path in (result.polygons_path, result.summary_path):
        if path:
            print(f"wrote {path}")
    print(result.summary())
    for row in result.rows:  # e.g. values not on the model's scale (core.segment.drift)
        if row.warning:
            print(f"warning: {row.warning}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """What a model file says about itself, read without building the network."""
    from ..segment.backends import read_meta

    meta = read_meta(args.model)
    data = {"model": str(args.model), **dataclasses.asdict(meta)}
    args.session.result(data)
    shown = ("arch", "encoder", "in_channels", "bands", "band_names", "indices", "threshold",
             "upscale", "tile_size", "overlap", "metrics")  # fmt: skip
    for key in shown:
        if key == "indices":
            from ..models.indices import describe

            print(f"{key:<12}{describe(meta.indices)}")
        elif key in data:
            print(f"{key:<12}{data[key]}")
    if meta.averaging:
        a = meta.averaging
        print(f"{'averaging':<12}{a.get('kind')} decay {a.get('decay')} after "
              f"{a.get('updates')} updates (epoch {a.get('epoch', '?')})")  # fmt: skip
    if meta.ensemble:
        members = meta.ensemble.get("members", [])
        print(f"{'ensemble':<12}{len(members)} members, {meta.ensemble.get('combine')}, "
              f"threshold from {meta.ensemble.get('threshold_from', '?')}")  # fmt: skip
        for i, m in enumerate(members):
            val = (m.get("metrics") or {}).get("val", {})
            iou = f"{val['iou']:.4f}" if "iou" in val else "n/a"
            print(f"  [{i}] {m['arch']} {m['encoder']} val IoU {iou} sha256 "
                  f"{m['sha256'][:12]} {m['source']}")  # fmt: skip
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from ..errors import raise_problems

    common = dict(opset=args.opset, tile_size=args.tile, overlap=args.overlap,
                  resolution_cm=args.resolution_cm)  # fmt: skip
    if args.precision == "int8":
        from ..segment.int8 import export_int8

        out = export_int8(
            args.model, args.out, args.calibration, args.calibration_tiles, **common,
            profile=args.profile, progress=args.session.progress(_progress_printer()),
        )  # fmt: skip
    else:
        from ..models.onnx_export import check_export_onnx, export_onnx

        raise_problems(check_export_onnx(args.model, args.profile, args.precision))
        out = export_onnx(args.model, args.out, profile=args.profile, **common)
    data: dict = {"onnx": str(out), "precision": args.precision}
    if args.precision == "int8":
        from ..models.onnx_metadata import file_props, solarseg_props

        meta = solarseg_props(file_props(out))
        data.update(calibration=meta["calibration"], calibration_check=meta["calibration_check"])
        c, k = meta["calibration"], meta["calibration_check"]
        print(
            f"int8: calibrated on {c['tiles']} tile(s) of {c['source']} ({c['split']}); on "
            f"them |int8 - fp32| probability max {k['max_prob_diff']:.4f}, mean "
            f"{k['mean_prob_diff']:.4f}, mask IoU vs fp32 {k['mask_iou_vs_fp32']:.4f}"
        )
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"{args.precision})")  # fmt: skip
    args.session.result(data)
    return 0


def add_segment_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``segment`` and ``export-onnx`` on ``python -m core``'s subparsers."""
    p = subparsers.add_parser(
        "segment",
        help="segment a whole raster: probability.tif, mask.tif [, panels.gpkg]",
        description="Segment a raster of any size with a model (run folder, .pt model "
        "file or .onnx file) and write probability.tif, mask.tif and, with --polygons, "
        "panels.gpkg into the output folder, on the raster's own grid.",
    )
    p.add_argument("model", help="run folder, model file (.pt) or ONNX file (.onnx)")
    p.add_argument("raster", help="raster to segment (any format GDAL reads)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_segment_options(p)
    p.add_argument(
        "--check", action="store_true",
        help="only check model, raster, bands and options (every problem, nothing written)",
    )  # fmt: skip
    p.add_argument(
        "--reference", default=None, metavar="POLYGONS",
        help="reference plant polygons: also write plants.csv and plants.gpkg (found/missed "
        "plants, false detections)",
    )  # fmt: skip
    p.add_argument("--reference-layer", default=None, help="layer of --reference")
    p.add_argument("--reference-where", default=None, help="attribute filter of --reference")
    p.add_argument(
        "--reference-field", default=None,
        help="field naming the plant (default: touching polygons form one plant)",
    )  # fmt: skip
    p.add_argument(
        "--all-touched", action="store_true", help="reference plants: burn every touched pixel"
    )
    p.set_defaults(func=cmd_segment)

    m = subparsers.add_parser(
        "segment-many",
        help="segment many rasters on a Dask cluster: OUT/<scene>/, panels.gpkg, summary.csv",
        description="Segment several rasters (files, folders, or text files listing paths) "
        "with one model on Dask distributed: a LocalCluster on this machine, or an existing "
        "scheduler (--scheduler). Each scene gets segment's outputs in OUT/<scene>/ (polygons "
        "always); OUT/panels.gpkg has every scene's polygons, each plant once where scenes "
        "overlap, and OUT/summary.csv one row per scene. A second run skips complete scenes.",
    )
    m.add_argument("model", help="run folder, model file (.pt) or ONNX file (.onnx)")
    m.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="raster, folder of rasters, or .txt file listing raster paths")  # fmt: skip
    m.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_segment_options(m, polygons_flag=False)
    m.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="an existing Dask scheduler (default: a LocalCluster here)")  # fmt: skip
    m.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster worker processes (default: the cores)")  # fmt: skip
    m.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                   help="scenes at once per worker (sharing its model; default 1)")  # fmt: skip
    m.add_argument("--retries", type=int, default=1,
                   help="extra attempts of a scene after an unexpected error (default 1)")  # fmt: skip
    m.add_argument(
        "--check", action="store_true",
        help="only check model, inputs, output folder and options (nothing written)",
    )  # fmt: skip
    m.set_defaults(func=cmd_segment_many)

    i = subparsers.add_parser(
        "info", help="a model's metadata (bands, normalisation, threshold, tile, metrics...)"
    )
    i.add_argument("model", help="run folder, model file (.pt) or ONNX file (.onnx)")
    i.set_defaults(func=cmd_info)

    e = subparsers.add_parser(
        "export-onnx",
        help="write a model as ONNX with its metadata (band selection, normalisation, ...)",
    )
    e.add_argument("model", help="run folder or model file (.pt)")
    e.add_argument("out", help="ONNX file to write")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--tile", type=int, default=None, help="tile size to store (source px)")
    e.add_argument("--overlap", type=int, default=None, help="overlap to store (source px)")
    e.add_argument(
        "--resolution-cm", type=float, default=None, help="source pixel size in cm, if known"
    )
    e.add_argument(
        "--profile",
        choices=("solarseg", "deepness"),
        default="solarseg",
        help="solarseg: for `segment --backend onnx` (dynamic tile size); deepness: for the "
        "Deepness QGIS plugin (fixed tile, JSON metadata, its /255 standardisation)",
    )
    add_precision_options(e, choices=("fp32", "bf16", "int8"))
    e.set_defaults(func=cmd_export_onnx)
