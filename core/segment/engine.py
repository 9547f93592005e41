"""Segment a whole raster: streaming tiled inference with seamless blending.

Pipeline (see :func:`segment_raster`):

1. The model (run folder, ``.pt`` model file or ``.onnx`` file) gives the band selection,
   normalisation, threshold, upscale factor, pad multiple and default tile size/overlap.
   ``precision`` int8 runs its int8 ONNX graph (quantised first, calibrated on training
   tiles prepared by :func:`.inputs.network_inputs`: :mod:`core.segment.int8`).
2. A reader thread reads the next batch of windows (rasterio windowed reads of the
   selected bands), computes validity (declared nodata, -9999, NaN), normalises and
   reflect-pads them while the current batch is being predicted.
3. Each batch is upscaled bicubically by the model's factor (if > 1), predicted
   (probabilities) and area-averaged back to the source resolution, so every output is
   on the source grid.
4. Window probabilities are blended with Hann weights into a band of ``tile`` rows; as
   soon as a grid row of windows is done, the rows no later window touches are written
   to the probability and mask GeoTIFFs and dropped. Peak memory is set by the tile size,
   batch size and raster *width*, never by its height.
5. Optionally, polygons of the mask go to a GeoPackage.
6. Optionally (``reference``), the mask is matched with reference polygons plant by
   plant: ``plants.csv`` and ``plants.gpkg`` (:mod:`core.segment.reference`).

The rasters' GDAL metadata and the result record the backend and precision the network
ran in (and int8's calibration).

Outputs live under temporary names until everything succeeded; a failure or a cancel
removes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.rasters import (
    raster_info,
)
from ..errors import Problem, UserError, raise_problems
from ..models.meta import ModelMeta
from ..progress import CancelFn, Progress, ProgressFn, check_cancel, never_cancel, no_progress
from .backends import Backend, load_backend, read_meta
from .blend import StripBlender
from .drift import drift_warning
from .inputs import RasterPlan, WindowReader, batched, network_input, plan_raster
from .int8 import int8_problems, model_for_precision
from .options import ReferenceOptions, SegmentOptions  # noqa: F401 (public here too)
from .polygons import polygonize_mask, raster_area_m2
from .reference import PLANTS_CSV, PLANTS_GPKG, open_reference, score_scene
from .resample import downscale_mean
from .windows import WindowGrid
from .writers import (
    MASK_FILENAME,
    POLYGONS_FILENAME,
    PROBABILITY_FILENAME,
    OutputRasters,
    atomic_outputs,
    check_outputs,
)

# Share of the progress bar given to polygonizing when polygons are asked for.
POLYGON_PROGRESS_SHARE = 0.05


@dataclass
class SegmentResult:
    """Output paths and a summary of one segmentation run."""

    probability_path: Path
    mask_path: Path
    polygons_path: Path | None
    width: int
    height: int
    pixels: int
    nodata_pixels: int
    windows: int
    seconds: float
    area_km2: float
    km2_per_minute: float
    panel_pixels: int
    # Polygons kept after the minimum-area filter (None without polygons).
    panels: int | None
    # Total polygon area when polygons were made, else panel pixels x mean pixel area.
    panel_area_ha: float
    threshold: float
    bands: list[int]
    tile_size: int
    overlap: int
    backend: str
    timings: dict[str, float] = field(default_factory=dict)
    # The network's arithmetic as it ran (fp32, bf16, int8) and, for int8, the
    # calibration record of the quantised graph (source, split, tiles, seed).
    precision: str = "fp32"
    calibration: dict[str, Any] | None = None
    # With reference polygons: the plant tables and the plant-level summary.
    plants_csv_path: Path | None = None
    plants_gpkg_path: Path | None = None
    plants: dict[str, Any] | None = None
    plants_text: str = ""
    # Lines the user should read: e.g. the raster's values are not on the model's scale.
    warnings: list[str] = field(default_factory=list)
    # How ``bands`` were chosen: as given, by band name or by the model's band numbers.
    band_source: str = "the model's band numbers"

    @property
    def outputs(self) -> list[Path]:
        paths = [self.probability_path, self.mask_path]
        paths += [self.polygons_path] if self.polygons_path else []
        return paths + [p for p in (self.plants_csv_path, self.plants_gpkg_path) if p]

    def summary(self) -> str:
        """One line: pixels, windows, time, speed, panels and their area."""
        panels = (
            f"{self.panels} panel polygon(s), {self.panel_area_ha:.2f} ha"
            if self.panels is not None
            else f"{self.panel_pixels:,} panel pixel(s), {self.panel_area_ha:.2f} ha"
        )
        return (
            f"{self.width} x {self.height} = {self.pixels:,} pixels ({self.area_km2:.2f} km²), "
            f"{self.windows} windows, {self.seconds:.1f} s, "
            f"{self.km2_per_minute:.2f} km²/min; {panels}"
        )


def make_predict(backend: Backend, upscale: int) -> Callable[[np.ndarray], np.ndarray]:
    """``backend.predict`` wrapped with the model's upscale: :func:`network_input`
    before, area averaging of the probabilities back to source pixels after (numpy,
    no torch needed)."""
    if upscale == 1:
        return backend.predict

    def predict(x: np.ndarray) -> np.ndarray:
        prob = backend.predict(network_input(x, upscale))
        return downscale_mean(prob, upscale)

    return predict


@dataclass
class _Counts:
    nodata_pixels: int = 0
    panel_pixels: int = 0


def _run_windows(
    plan: RasterPlan,
    predict: Callable[[np.ndarray], np.ndarray],
    outputs: OutputRasters,
    batch_size: int,
    progress: ProgressFn,
    cancel: CancelFn,
    fraction_scale: float,
) -> tuple[int, _Counts]:
    """Predict every window, blend and write finished rows. Returns (windows, counts)."""
    g = plan.grid
    wgrid = WindowGrid(g.height, g.width, plan.tile, plan.overlap)
    total = len(wgrid)
    blender = StripBlender(g.width, g.height, plan.tile)
    counts = _Counts()

    def write(y0: int, prob: np.ndarray, valid: np.ndarray) -> None:
        outputs.write_rows(y0, prob, valid)
        counts.nodata_pixels += int(valid.size - np.count_nonzero(valid))
        counts.panel_pixels += int(np.count_nonzero(valid & (prob >= np.float32(plan.threshold))))

    batches = batched(iter(wgrid), batch_size)
    reader = WindowReader(plan)
    start = time.perf_counter()
    done, row = 0, 0
    pending: Future | None = None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="solarseg-reader") as pool:
            pending = pool.submit(reader.read_batch, next(batches))
            while pending is not None:
                batch = pending.result()
                following = next(batches, None)
                pending = pool.submit(reader.read_batch, following) if following else None
                probs = predict(batch.x)
                for win, prob, valid in zip(batch.windows, probs, batch.valid, strict=True):
                    if win.row != row:
                        write(*blender.pop_rows(wgrid.rows_done_after(row)))
                        row = win.row
                    blender.add(prob[0], valid, win)
                done += len(batch.windows)
                elapsed = time.perf_counter() - start
                rate = done / elapsed if elapsed > 0 else 0.0
                eta = (total - done) / rate if rate > 0 else 0.0
                progress(
                    Progress(
                        stage="segment",
                        fraction=fraction_scale * done / total,
                        message=f"{done}/{total} windows, {rate:.1f} windows/s, ETA {eta:.0f} s",
                        info={
                            "done": done,
                            "total": total,
                            "windows_per_s": rate,
                            "eta_s": eta,
                            "elapsed_s": elapsed,
                        },
                    )
                )
                check_cancel(cancel)
            write(*blender.pop_rows(g.height))
    finally:
        if pending is not None:
            pending.cancel()  # the pool's exit waits for a read already running
        reader.close()
    return total, counts


def segment_raster(
    model_path: str | Path,
    raster_path: str | Path,
    out_dir: str | Path,
    options: SegmentOptions | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> SegmentResult:
    """Segment ``raster_path`` with the model at ``model_path`` (run folder, ``.pt``
    model file or ``.onnx`` file) and write ``probability.tif``, ``mask.tif`` and, with
    ``options.polygons``, ``panels.gpkg`` into ``out_dir``.

    Raises RasterError / ModelFileError / ValueError (all ValueError) with a message
    naming the file and the problem, OutputExistsError when an output exists and
    ``overwrite`` is False, and :class:`~core.progress.Cancelled` when ``cancel()``
    turns true (checked between batches); partial outputs are removed in every case.
    """
    options = options or SegmentOptions()
    out_dir = Path(out_dir)
    # Every refused input, before the model is loaded and before anything is written.
    raise_problems(check_segment(model_path, raster_path, out_dir, options)[0])
    t0 = time.perf_counter()
    model_path = model_for_precision(
        model_path, options.precision, options.calibration, options.calibration_tiles,
        progress=progress,
    )  # fmt: skip
    backend, meta = load_backend(
        model_path, options.backend, options.device, options.tta, options.precision
    )
    result = segment_with_backend(
        backend, meta, raster_path, out_dir, options, progress=progress, cancel=cancel
    )
    load_s = (time.perf_counter() - t0) - result.timings["total_s"]
    result.timings["load_s"] = load_s
    result.seconds += load_s
    result.timings["total_s"] = result.seconds
    result.km2_per_minute = result.area_km2 / (result.seconds / 60.0)
    return result


def check_segment(
    model_path: str | Path,
    raster_path: str | Path,
    out_dir: str | Path,
    options: SegmentOptions | None = None,
) -> tuple[list[Problem], ModelMeta | None]:
    """The one check of a segmentation's inputs (CLI, Segment dialog and Processing):
    every problem keyed by option (``model``, ``raster``, ``bands``, ``tile_size``,
    ``overlap``, ``out``...), and the model's metadata when the model could be read."""
    options = options or SegmentOptions()
    problems = options.problems()
    try:
        check_outputs(_final_paths(Path(out_dir), options), options.overwrite)
    except UserError as exc:
        problems.append(Problem.of("out", exc))
    if Path(model_path).suffix.lower() == ".onnx" and options.run_backend == "torch":
        problems.append(
            Problem("backend", f"{model_path}: an ONNX file runs on the 'onnx' backend")
        )
    if options.precision == "bf16" and options.run_backend == "onnx":
        from ..models.quantize import ONNX_BF16_MESSAGE

        problems.append(Problem("precision", ONNX_BF16_MESSAGE))
    problems += _device_problems(options)
    meta = None
    try:
        meta = read_meta(model_path)
    except UserError as exc:
        problems.append(Problem.of("model", exc))
    if meta is not None and meta.is_pixel_model and options.run_backend == "onnx":
        problems.append(Problem("backend", f"{model_path}: a LightGBM model runs on the "
                                "'torch' backend (it has no ONNX graph)"))  # fmt: skip
    elif meta is not None and options.precision == "int8":
        problems += int8_problems(model_path, meta, options.calibration, options.calibration_tiles)
    try:
        if meta is None or any(p.field in ("tile_size", "overlap", "bands") for p in problems):
            raster_info(raster_path)  # at least: is the raster readable?
        else:
            plan_raster(Path(raster_path), meta, options)
    except UserError as exc:
        problems.append(Problem.of("raster", exc))
    if options.reference is not None:
        try:
            open_reference(options.reference)  # file, layer, CRS, field and filter
        except UserError as exc:
            problems.append(Problem("reference", str(exc), exc))
    return problems, meta


def _device_problems(options: SegmentOptions) -> list[Problem]:
    """The device the backend would run on, and precision fp16 (torch on CUDA only).
    The torch backend's device is checked when torch is asked for CUDA or fp16; the ONNX
    backend's against ONNX Runtime's providers (without importing torch)."""
    device = (options.device or "auto").strip().lower()
    if options.run_backend == "onnx":
        import onnxruntime as ort

        from .backends import onnx_providers

        try:
            onnx_providers(device, ort.get_available_providers())
        except UserError as exc:
            return [Problem.of("device", exc)]
        return []
    if not (device.startswith("cuda") or options.precision == "fp16"):
        return []
    from ..models.build import resolve_device
    from ..models.precision import resolve_precision

    try:
        resolved = resolve_device(device)
    except UserError as exc:
        return [Problem.of("device", exc)]
    try:
        resolve_precision(options.precision, resolved.type, amp=False)
    except UserError as exc:
        return [Problem.of("precision", exc)]
    return []


def _final_paths(out_dir: Path, options: SegmentOptions) -> list[Path]:
    paths = [out_dir / PROBABILITY_FILENAME, out_dir / MASK_FILENAME]
    paths += [out_dir / POLYGONS_FILENAME] if options.polygons else []
    return paths + ([out_dir / PLANTS_CSV, out_dir / PLANTS_GPKG] if options.reference else [])


def output_tags(backend: str, precision: str, calibration: dict | None) -> dict[str, str]:
    """GDAL metadata of probability.tif and mask.tif: how the network ran."""
    tags = {"SOLARSEG_BACKEND": backend, "SOLARSEG_PRECISION": precision}
    if calibration:
        tags["SOLARSEG_CALIBRATION_SOURCE"] = str(calibration.get("source", ""))
        tags["SOLARSEG_CALIBRATION_SPLIT"] = str(calibration.get("split", ""))
        tags["SOLARSEG_CALIBRATION_TILES"] = str(calibration.get("tiles", ""))
    return tags


def segment_with_backend(
    backend: Backend,
    meta: ModelMeta,
    raster_path: str | Path,
    out_dir: str | Path,
    options: SegmentOptions | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> SegmentResult:
    """:func:`segment_raster` with an already loaded backend (segment several rasters
    with one model, or benchmark without the load time)."""
    options = options or SegmentOptions()
    options.validate()
    t0 = time.perf_counter()
    raster_path, out_dir = Path(raster_path), Path(out_dir)
    plan = plan_raster(raster_path, meta, options)
    finals = _final_paths(out_dir, options)
    predict = make_predict(backend, plan.upscale)
    drift = drift_warning(raster_path, plan.bands, plan.mean, plan.std, plan.nodata)
    warnings = [drift] if drift else []
    if drift:
        progress(Progress("warning", 0.0, drift))
    scale = 1.0 - POLYGON_PROGRESS_SHARE if options.polygons else 1.0
    panels = polygons_path = None
    polygon_area_m2 = 0.0
    timings: dict[str, float] = {}
    check_cancel(cancel)
    with atomic_outputs(finals, options.overwrite) as tmps:
        precision = str(getattr(backend, "precision", "fp32"))
        calibration = getattr(backend, "calibration", None)
        outputs = OutputRasters(
            tmps[0], tmps[1], plan.grid, options.probability_dtype, plan.threshold,
            tags=output_tags(backend.name, precision, calibration),
        )  # fmt: skip
        try:
            n_windows, counts = _run_windows(
                plan, predict, outputs, options.batch_size, progress, cancel, scale
            )
        finally:
            outputs.close()
        timings["windows_s"] = time.perf_counter() - t0
        if options.polygons:
            check_cancel(cancel)
            summary = polygonize_mask(
                tmps[1],
                tmps[2],
                options.min_area_m2,
                cancel=cancel,
                progress=lambda f: progress(
                    Progress("polygons", scale + (1 - scale) * f, "polygonizing the mask")
                ),
            )
            panels, polygon_area_m2, polygons_path = summary.count, summary.area_m2, finals[2]
            timings["polygons_s"] = time.perf_counter() - t0 - timings["windows_s"]
        plants = None
        if options.reference is not None:
            check_cancel(cancel)
            progress(Progress("plants", 1.0, "matching the reference plants"))
            plants = score_scene(tmps[1], options.reference, tmps[-2], tmps[-1], raster_path.name)
    seconds = time.perf_counter() - t0
    timings["total_s"] = seconds
    g = plan.grid
    pixels = g.width * g.height
    area_m2 = raster_area_m2(g.crs_wkt, g.geotransform, g.width, g.height)
    panel_area_m2 = polygon_area_m2 if options.polygons else counts.panel_pixels * area_m2 / pixels
    progress(Progress("done", 1.0, f"segmented {pixels:,} pixels in {seconds:.1f} s"))
    return SegmentResult(
        probability_path=finals[0],
        mask_path=finals[1],
        polygons_path=polygons_path,
        width=g.width,
        height=g.height,
        pixels=pixels,
        nodata_pixels=counts.nodata_pixels,
        windows=n_windows,
        seconds=seconds,
        area_km2=area_m2 / 1e6,
        km2_per_minute=area_m2 / 1e6 / (seconds / 60.0),
        panel_pixels=counts.panel_pixels,
        panels=panels,
        panel_area_ha=panel_area_m2 / 10_000.0,
        threshold=plan.threshold,
        bands=plan.bands,
        tile_size=plan.tile,
        overlap=plan.overlap,
        backend=backend.name,
        timings=timings,
        precision=precision,
        calibration=calibration,
        plants_csv_path=finals[-2] if plants is not None else None,
        plants_gpkg_path=finals[-1] if plants is not None else None,
        plants=plants.summary() if plants is not None else None,
        plants_text=plants.text() if plants is not None else "",
        warnings=warnings,
        band_source=plan.band_source,
    )
