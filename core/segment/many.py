"""Segment many scenes on a Dask distributed cluster (``python -m core segment-many``).

One task per scene. Each task runs :func:`~core.segment.engine.segment_with_backend` on
a Dask worker with the model that worker loaded once (:func:`_worker_backend` caches it
per worker process), and writes ``segment``'s outputs (``probability.tif``,
``mask.tif``, ``panels.gpkg``) into ``OUT/<scene>/``, atomically as ``segment`` does.
The last file written in a scene folder is ``scene.json``, the *done marker*: the
scene's result, its grid, the sizes of its outputs and a key made of the model file's
SHA-256, the options that change outputs and the raster's size and mtime. A scene is
**complete** when its marker parses, its key equals this run's key and every output it
lists exists with the recorded size; complete scenes are skipped (resume), anything
else in a scene folder without such a marker is the leftover of an interrupted run and
is replaced. A marker made with other options or another model is refused unless
``overwrite``.

Scene names are the rasters' file stems (``a.tif`` -> ``OUT/a/``); a stem seen again
gets ``-2``, ``-3``... in input order (:mod:`core.segment.scenes`, pure Python, which the
QGIS plugin uses too).

``--precision int8`` with a ``.pt`` or fp32 ``.onnx`` model: the client quantises it
once (:func:`core.segment.int8.int8_model`) into ``OUT/.int8/``, which every worker
must see anyway, and the workers load that file.

A bad scene (unreadable, wrong bands, damaged blocks) becomes a ``failed`` row of the
summary and the others go on. A worker that dies mid-scene is replaced by Dask (its
nanny) and the scene runs again on a live worker (Dask's own rescheduling, up to
``distributed.scheduler.allowed-failures`` deaths); an exception other than an input
error is retried ``retries`` times. Partial files only ever exist under hidden ``.part``
/ scratch names, which the next attempt at that scene removes.

At the end: ``OUT/panels.gpkg`` with every scene's polygons, each plant once where scenes
overlap (rule in :mod:`core.segment.merge`), and ``OUT/summary.csv`` (one row per scene).

Cancel (the ``cancel`` callable, SIGTERM/Ctrl+C on the CLI): nothing more is submitted,
running scenes stop at their next batch (a distributed ``Event`` they poll) and remove
their partial files, the cluster is closed, complete scenes stay, ``summary.csv`` is
written, and :class:`~core.progress.Cancelled` is raised.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem, UserError, raise_problems
from ..io import atomic_write_text, file_sha256
from ..progress import CancelFn, Cancelled, Progress, ProgressFn, never_cancel, no_progress
from .options import SegmentOptions
from .scenes import LIST_SUFFIXES, RASTER_SUFFIXES, Scene, collect_scenes  # noqa: F401

try:  # Dask distributed: needed to run, not to check inputs or read outputs
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - an engine without dask
    WorkerPlugin = object  # type: ignore[misc,assignment]

MARKER_FILENAME = "scene.json"
SUMMARY_FILENAME = "summary.csv"
MERGED_FILENAME = "panels.gpkg"
MARKER_VERSION = 1
INT8_CACHE_DIRNAME = ".int8"  # OUT/.int8/: the int8 model of a --precision int8 run
SUMMARY_COLUMNS = ("scene", "raster", "pixels", "km2", "seconds", "panels", "panels_merged",
                   "hectares", "status", "error", "warning", "bands")  # fmt: skip
# Options that do not change a scene's outputs (not part of the done-marker key).
NOT_IN_KEY = ("batch_size", "device", "overwrite")
# Seconds between two polls of the cancel event by a running scene.
CANCEL_POLL_S = 1.0
# Seconds that running scenes get to stop cleanly after a cancel.
CANCEL_GRACE_S = 20.0

# Statuses of a scene in the summary.
DONE, SKIPPED, FAILED, CANCELLED = "done", "skipped", "failed", "cancelled"


@dataclass
class ClusterOptions:
    """Where the scenes run: an existing scheduler, or a LocalCluster on this machine."""

    scheduler: str | None = None  # tcp://HOST:8786; None = a LocalCluster here
    workers: int | None = None  # LocalCluster workers (default: the cores)
    threads_per_worker: int = 1  # scenes at once per worker (they share its model)
    retries: int = 1  # extra attempts after an unexpected exception in a scene
    processes: bool = True  # LocalCluster: worker processes (False: threads, for tests)

    def problems(self) -> list[Problem]:
        out = []
        if self.workers is not None and self.workers < 1:
            out.append(Problem("workers", f"workers must be >= 1, got {self.workers}"))
        if self.threads_per_worker < 1:
            out.append(
                Problem("threads_per_worker",
                        f"threads per worker must be >= 1, got {self.threads_per_worker}")
            )  # fmt: skip
        if self.retries < 0:
            out.append(Problem("retries", f"retries must be >= 0, got {self.retries}"))
        if self.scheduler is not None and "://" not in self.scheduler:
            out.append(
                Problem("scheduler",
                        f"scheduler must look like tcp://HOST:8786, got {self.scheduler!r}")
            )  # fmt: skip
        return out


@dataclass
class SceneRow:
    """One scene's line of the summary."""

    scene: str
    raster: str
    pixels: int | None = None
    km2: float | None = None
    seconds: float | None = None
    panels: int | None = None
    panels_merged: int | None = None
    hectares: float | None = None
    status: str = CANCELLED
    error: str = ""
    warning: str = ""  # e.g. values not on the model's scale (core.segment.drift)
    # The raster bands read and how they were chosen, e.g. "2,3,4,8,10,11 (by band name
    # (B2, ...))": scenes of different products may be read differently.
    bands: str = ""


def bands_text(bands: list[int] | None, how: str | None) -> str:
    """``"3,2,1,4 (by band name ...)"``: a scene's bands and how they were chosen."""
    if not bands:
        return ""
    return ",".join(map(str, bands)) + (f" ({how})" if how else "")


@dataclass
class ManyResult:
    out_dir: Path
    summary_path: Path
    polygons_path: Path | None
    rows: list[SceneRow]
    seconds: float
    workers: int
    panels: int  # after merging overlaps
    panel_area_ha: float
    counts: dict[str, int] = field(default_factory=dict)  # status -> scenes

    def summary(self) -> str:
        c = self.counts
        km2 = sum(r.km2 or 0.0 for r in self.rows if r.status == DONE)
        return (
            f"{len(self.rows)} scene(s): {c.get(DONE, 0)} done, {c.get(SKIPPED, 0)} skipped "
            f"(complete), {c.get(FAILED, 0)} failed, {c.get(CANCELLED, 0)} cancelled; "
            f"{km2:.2f} km² segmented in {self.seconds:.1f} s on {self.workers} worker(s); "
            f"{self.panels} panel polygon(s), {self.panel_area_ha:.2f} ha after merging overlaps"
        )


# --------------------------------------------------------------------------- done markers


def options_key(model_file: Path, options: SegmentOptions) -> str:
    """The part of a scene's done-marker key shared by all scenes: the model file's
    content and the options that change outputs."""
    opts = {f.name: getattr(options, f.name) for f in fields(options) if f.name not in NOT_IN_KEY}
    for name in ("threshold", "min_area_m2"):  # 50 and 50.0 are the same option
        if opts[name] is not None:
            opts[name] = float(opts[name])
    text = json.dumps({"v": MARKER_VERSION, "model": file_sha256(model_file), **opts},
                      sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _raster_id(path: Path) -> dict[str, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_marker(scene_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((scene_dir / MARKER_FILENAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scene_state(scene_dir: Path, raster: Path, key: str) -> str:
    """``complete``, ``other`` (complete for other options/model/raster), ``partial``
    (files without a valid marker) or ``absent``."""
    marker = read_marker(scene_dir)
    if marker is None:
        if scene_dir.is_dir() and any(scene_dir.iterdir()):
            return "partial"
        return "absent"
    outputs = marker.get("outputs") or {}
    for name, size in outputs.items():
        p = scene_dir / name
        if not p.is_file() or p.stat().st_size != size:
            return "partial"
    if marker.get("key") != key or marker.get("raster_id") != _raster_id(raster):
        return "other"
    return "complete"


def _row_from_marker(scene: Scene, marker: dict[str, Any], status: str) -> SceneRow:
    r = marker.get("result", {})
    return SceneRow(
        scene=scene.name,
        raster=str(scene.raster),
        pixels=r.get("pixels"),
        km2=r.get("area_km2"),
        seconds=r.get("seconds"),
        panels=r.get("panels"),
        hectares=r.get("panel_area_ha"),
        status=status,
        warning="; ".join(r.get("warnings") or []),
        bands=bands_text(r.get("bands"), r.get("band_source")),
    )


# --------------------------------------------------------------------------- worker side

_BACKENDS: dict[tuple, tuple[Any, Any]] = {}
_BACKENDS_LOCK = threading.Lock()


def _worker_backend(model: str, backend: str, device: str, tta: bool, precision: str = "fp32"):
    """This worker process's backend for the model, loaded once (threads share it). An
    int8 run hands the workers the int8 file the client made (nothing to quantise)."""
    from .backends import load_backend

    st = os.stat(model) if os.path.isfile(model) else None
    key = (model, backend, device, tta, precision, st.st_mtime_ns if st else None)
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            _BACKENDS.clear()  # one model per worker
            _BACKENDS[key] = load_backend(model, backend, device, tta, precision)
        return _BACKENDS[key]


def _event_cancel(event_name: str | None) -> CancelFn:
    """A cancel check polling the run's distributed Event at most every CANCEL_POLL_S."""
    if event_name is None:
        return never_cancel
    state = {"t": 0.0, "set": False, "event": None}

    def cancel() -> bool:
        now = time.monotonic()
        if not state["set"] and now - state["t"] >= CANCEL_POLL_S:
            state["t"] = now
            try:
                if state["event"] is None:
                    from distributed import Event

                    state["event"] = Event(event_name)
                state["set"] = bool(state["event"].is_set())
            except Exception:  # no client (scheduler gone): the cluster is closing anyway
                return False
        return state["set"]

    return cancel


def _remove_leftovers(scene_dir: Path) -> None:
    """Hidden partial files of an earlier attempt that died (no cleanup ran)."""
    for p in scene_dir.iterdir():
        if p.name.startswith(".") and (".part" in p.name or ".scratch.gpkg" in p.name):
            p.unlink(missing_ok=True)


def run_scene(
    model: str,
    raster: str,
    scene_dir: str,
    options: dict[str, Any],
    key: str,
    cancel_event: str | None = None,
) -> dict[str, Any]:
    """One scene on a worker: ``segment``'s outputs in ``scene_dir``, then the marker.

    Returns the summary row as a dict. Input errors (and cancel) become the row's
    status; any other exception is raised, for Dask to retry."""
    from .engine import segment_with_backend
    from .writers import MASK_FILENAME, POLYGONS_FILENAME, PROBABILITY_FILENAME

    opts = SegmentOptions(**{**options, "overwrite": True})  # the scene folder is ours
    out = Path(scene_dir)
    row = SceneRow(scene=out.name, raster=raster)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER_FILENAME).unlink(missing_ok=True)  # not complete until rewritten
        _remove_leftovers(out)
        backend, meta = _worker_backend(model, opts.backend, opts.device, opts.tta, opts.precision)
        result = segment_with_backend(
            backend, meta, raster, out, opts, cancel=_event_cancel(cancel_event)
        )
    except Cancelled:
        row.status = CANCELLED
        return asdict(row)
    except (UserError, OSError) as exc:  # this scene's input or files: not retried
        row.status = FAILED
        row.error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            out.rmdir()  # only when empty
        return asdict(row)
    names = [PROBABILITY_FILENAME, MASK_FILENAME] + ([POLYGONS_FILENAME] if opts.polygons else [])
    marker = {
        "version": MARKER_VERSION,
        "key": key,
        "raster": raster,
        "raster_id": _raster_id(Path(raster)),
        "outputs": {n: (out / n).stat().st_size for n in names},
        "grid": _grid_of(result.mask_path),
        "result": {
            k: v for k, v in asdict(result).items()
            if k not in ("probability_path", "mask_path", "polygons_path")
        },
    }  # fmt: skip
    atomic_write_text(out / MARKER_FILENAME, json.dumps(marker, indent=1, default=str))
    row.pixels, row.km2, row.seconds = result.pixels, result.area_km2, result.seconds
    row.panels, row.hectares, row.status = result.panels, result.panel_area_ha, DONE
    row.warning = "; ".join(result.warnings)
    row.bands = bands_text(result.bands, result.band_source)
    return asdict(row)


def _grid_of(path: Path) -> dict[str, Any]:
    """A raster's grid (size, CRS, geotransform) as a JSON-able dict."""
    from ..data.rasters import open_raster
    from .writers import RasterGrid

    with open_raster(path) as src:
        return asdict(RasterGrid.from_rasterio(src))


class TorchThreads(WorkerPlugin):
    """Worker plugin: torch's intra-op threads so the workers of a host share its cores
    instead of each using all of them (Dask's nanny sets OMP_NUM_THREADS=1, which would
    leave a lone worker on one core)."""

    name = "solarseg-torch-threads"

    def __init__(self, per_host_threads: dict[str, int], default_threads: int | None = None):
        self.per_host_threads = per_host_threads  # host -> Dask threads on that host
        self.default_threads = default_threads

    def setup(self, worker) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
        host = worker.address.split("://")[-1].rsplit(":", 1)[0]
        dask_threads = self.per_host_threads.get(host)
        n = self.default_threads or max(1, cores // max(1, dask_threads or worker.state.nthreads))
        try:
            import torch
        except ImportError:  # an ONNX-only engine
            return
        torch.set_num_threads(n)

    def teardown(self, worker) -> None:
        return None


def cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- checks


def check_segment_many(
    model_path: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: SegmentOptions | None = None,
    cluster: ClusterOptions | None = None,
) -> tuple[list[Problem], list[Scene]]:
    """Every refused input of a segment-many run, keyed by option (``model``,
    ``inputs``, ``out``, option names), and the scenes found. Per-scene raster problems
    are not refused here: they become failed rows of the summary."""
    from .backends import read_meta

    options = options or SegmentOptions(polygons=True)
    problems = options.problems() + (cluster or ClusterOptions()).problems()
    scenes: list[Scene] = []
    try:
        scenes = collect_scenes(inputs)
    except UserError as exc:
        problems.append(Problem.of("inputs", exc))
    try:
        meta = read_meta(model_path)
    except UserError as exc:
        meta = None
        problems.append(Problem.of("model", exc))
    if options.precision == "bf16" and options.run_backend == "onnx":
        from ..models.quantize import ONNX_BF16_MESSAGE

        problems.append(Problem("precision", ONNX_BF16_MESSAGE))
    if meta is not None and options.precision == "int8":
        from .int8 import int8_problems

        problems += int8_problems(model_path, meta, options.calibration, options.calibration_tiles)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        problems.append(Problem("out", f"{out}: not a folder"))
    elif scenes and not any(p.field == "model" for p in problems) and not options.overwrite:
        from ..models.meta import resolve_model_path

        key = _scene_key_base(model_path, options, resolve_model_path)
        other = [s.name for s in scenes if scene_state(out / s.name, s.raster, key) == "other"]
        if other:
            problems.append(
                Problem(
                    "out",
                    f"{out}: scene folder(s) {', '.join(other[:5])}"
                    f"{' ...' if len(other) > 5 else ''} hold outputs made with other "
                    "options, another model or an older raster; choose another folder "
                    "or allow overwriting (--overwrite)",
                )
            )
    return problems, scenes


def _scene_key_base(model_path, options: SegmentOptions, resolve=None) -> str:
    path = Path(model_path)
    if path.suffix.lower() != ".onnx":
        if resolve is None:
            from ..models.meta import resolve_model_path as resolve
        path = resolve(path)
    return options_key(path, options)


# --------------------------------------------------------------------------- the run


def _start_client(cluster: ClusterOptions):
    """(client, closers, workers) for an existing scheduler or a new LocalCluster."""
    import logging

    from distributed import Client, LocalCluster

    if cluster.scheduler:
        try:
            client = Client(cluster.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {cluster.scheduler} ({exc}); start one "
                "with `dask scheduler` and workers with `dask worker tcp://HOST:8786`",
                "scheduler",
            ) from None
        info = client.scheduler_info(n_workers=-1)["workers"]
        per_host: dict[str, int] = {}
        for w in info.values():
            host = w.get("host") or w["id"]
            per_host[host] = per_host.get(host, 0) + int(w.get("nthreads", 1))
        client.register_plugin(TorchThreads(per_host), name=TorchThreads.name)
        return client, [client], max(1, len(info))
    n = cluster.workers or cores()
    local = LocalCluster(
        n_workers=n,
        threads_per_worker=cluster.threads_per_worker,
        processes=cluster.processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(local)
    torch_threads = max(1, cores() // (n * cluster.threads_per_worker))
    if cluster.processes:
        client.register_plugin(TorchThreads({}, torch_threads), name=TorchThreads.name)
    return client, [client, local], n


def _scene_grid_info(raster: Path) -> tuple[int | None, float | None, str]:
    """(pixels, km², error) read from the raster's header on this machine."""
    from ..data.rasters import open_raster
    from .polygons import raster_area_m2
    from .writers import RasterGrid

    try:
        with open_raster(raster) as src:
            g = RasterGrid.from_rasterio(src)
    except UserError as exc:
        return None, None, str(exc)
    except OSError as exc:
        return None, None, f"{raster}: {exc}"
    return (
        g.width * g.height,
        raster_area_m2(g.crs_wkt, g.geotransform, g.width, g.height) / 1e6,
        "",
    )


def segment_many(
    model_path: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: SegmentOptions | None = None,
    cluster: ClusterOptions | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFn = never_cancel,
) -> ManyResult:
    """Segment every scene of ``inputs`` into ``out_dir/<scene>/``, then merge the
    polygons and write the summary (see the module docstring). Polygons are always
    made (``options.polygons`` is forced on: the merged GeoPackage needs them)."""
    from distributed import Event, wait

    t0 = time.perf_counter()
    options = SegmentOptions(**{**asdict(options or SegmentOptions()), "polygons": True})
    cluster = cluster or ClusterOptions()
    out = Path(out_dir)
    problems, scenes = check_segment_many(model_path, inputs, out, options, cluster)
    raise_problems(problems)
    out.mkdir(parents=True, exist_ok=True)
    key = _scene_key_base(model_path, options)
    rows: dict[str, SceneRow] = {}
    todo: list[Scene] = []
    km2_of: dict[str, float] = {}
    for scene in scenes:
        scene_dir = out / scene.name
        if not options.overwrite and scene_state(scene_dir, scene.raster, key) == "complete":
            rows[scene.name] = _row_from_marker(scene, read_marker(scene_dir) or {}, SKIPPED)
            continue
        pixels, km2, error = _scene_grid_info(scene.raster)
        row = SceneRow(scene.name, str(scene.raster), pixels=pixels, km2=km2)
        if error:
            row.status, row.error = FAILED, error
        else:
            todo.append(scene)
            km2_of[scene.name] = km2 or 0.0
        rows[scene.name] = row
    state = {"km2": 0.0, "done": 0, "km2_total": sum(km2_of.values())}
    n_total = len(scenes)
    already = sum(1 for r in rows.values() if r.status in (SKIPPED, FAILED))

    def report(message: str = "") -> None:
        km2_total = state["km2_total"]
        elapsed = time.perf_counter() - t0
        rate = state["km2"] / (elapsed / 60.0) if elapsed > 0 and state["km2"] else 0.0
        eta = (km2_total - state["km2"]) / rate * 60.0 if rate > 0 else None
        done = already + state["done"]
        failed = sum(1 for r in rows.values() if r.status == FAILED)
        frac = state["km2"] / km2_total if km2_total else (1.0 if not todo else 0.0)
        eta_text = f", ETA {eta:.0f} s" if eta is not None else ""
        progress(
            Progress(
                "segment-many",
                0.95 * frac,
                message or f"{done}/{n_total} scenes, {state['km2']:.2f}/{km2_total:.2f} km², "
                f"{rate:.2f} km²/min{eta_text}",
                info={"scenes_done": done, "scenes_total": n_total, "scenes_failed": failed,
                      "scenes_skipped": sum(1 for r in rows.values() if r.status == SKIPPED),
                      "km2_done": state["km2"], "km2_total": km2_total,
                      "km2_per_min": rate, "eta_s": eta, "elapsed_s": elapsed},
            )
        )  # fmt: skip

    workers = 0
    cancelled = False
    model = str(Path(model_path).resolve())
    if todo and options.precision == "int8":
        # Quantised once, here, into OUT/.int8/ (every worker sees OUT); workers load it.
        from .int8 import int8_model

        model = str(
            int8_model(model_path, options.calibration, options.calibration_tiles,
                       cache=out / INT8_CACHE_DIRNAME, progress=progress).resolve()
        )  # fmt: skip
    if todo:
        check_cancel_now(cancel)
        client, closers, workers = _start_client(cluster)
        event_name = f"solarseg-cancel-{uuid.uuid4().hex[:12]}"
        try:
            event = Event(event_name, client=client)
            report(f"{len(todo)} scene(s) to segment on {workers} worker(s)")
            opts = asdict(options)
            window = max(2, 2 * workers * cluster.threads_per_worker)
            queue = list(todo)
            pending: dict[Any, Scene] = {}
            while queue or pending:
                while queue and len(pending) < window and not cancelled:
                    scene = queue.pop(0)
                    fut = client.submit(
                        run_scene, model, str(scene.raster.resolve()),
                        str((out / scene.name).resolve()), opts, key, event_name,
                        key=f"solarseg-scene-{scene.name}-{event_name}",
                        retries=cluster.retries, pure=False,
                    )  # fmt: skip
                    pending[fut] = scene
                if cancelled:
                    break
                try:
                    finished, _ = wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    finished = set()
                for fut in finished:
                    scene = pending.pop(fut)
                    _collect(fut, rows[scene.name])
                    state["done"] += 1
                    if rows[scene.name].status == DONE:
                        state["km2"] += km2_of[scene.name]
                    else:  # a failed scene's area is not to be done any more
                        state["km2_total"] -= km2_of[scene.name]
                    report()
                if cancel():
                    cancelled = True
            if cancelled:
                event.set()
                deadline = time.monotonic() + CANCEL_GRACE_S
                while pending and time.monotonic() < deadline:
                    try:
                        finished, _ = wait(list(pending), timeout=0.5)
                    except TimeoutError:
                        finished = {f for f in pending if f.done()}
                    for fut in finished:
                        _collect(fut, rows[pending.pop(fut).name])
                client.cancel(list(pending), force=True)
        finally:
            for closer in closers:
                try:
                    closer.close()
                except Exception:  # closing a cluster that is going away anyway
                    pass
    # Rows of complete scenes: polygons merged, summary written.
    merged = None
    if not cancelled:
        progress(Progress("merge", 0.95, "merging the scenes' polygons"))
        merged = _merge(out, scenes, rows)
    summary_path = out / SUMMARY_FILENAME
    write_summary(summary_path, [rows[s.name] for s in scenes])
    counts: dict[str, int] = {}
    for r in rows.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    if cancelled:
        raise Cancelled(
            f"cancelled: {counts.get(DONE, 0)} scene(s) done and kept; "
            f"summary in {summary_path}"
        )
    seconds = time.perf_counter() - t0
    progress(Progress("done", 1.0, f"{len(scenes)} scene(s) in {seconds:.1f} s"))
    return ManyResult(
        out_dir=out,
        summary_path=summary_path,
        polygons_path=merged.path if merged else None,
        rows=[rows[s.name] for s in scenes],
        seconds=seconds,
        workers=workers,
        panels=merged.count if merged else 0,
        panel_area_ha=merged.area_m2 / 10_000.0 if merged else 0.0,
        counts=counts,
    )


def scene_outputs(out_dir: str | Path, row: SceneRow) -> dict[str, str | None]:
    """The output files of a scene in ``out_dir`` (``probability_path``, ``mask_path``,
    ``polygons_path``): paths for a complete (done or skipped) scene, else None."""
    from .writers import MASK_FILENAME, POLYGONS_FILENAME, PROBABILITY_FILENAME

    folder = Path(out_dir) / row.scene
    complete = row.status in (DONE, SKIPPED)
    return {
        key: str(folder / name) if complete else None
        for key, name in (("probability_path", PROBABILITY_FILENAME),
                          ("mask_path", MASK_FILENAME), ("polygons_path", POLYGONS_FILENAME))
    }  # fmt: skip


def check_cancel_now(cancel: CancelFn) -> None:
    if cancel():
        raise Cancelled("cancelled by user")


def _collect(fut, row: SceneRow) -> None:
    """A finished future's outcome into its row (an exception after retries fails the
    scene, not the run)."""
    if fut.status == "finished":
        data = fut.result()
        for k, v in data.items():
            if k not in ("scene", "raster") and v is not None:
                setattr(row, k, v)
        return
    if fut.status == "cancelled":
        row.status = CANCELLED
        return
    exc = fut.exception()
    row.status = FAILED
    row.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]


def _merge(out: Path, scenes: list[Scene], rows: dict[str, SceneRow]):
    from .merge import SceneFootprint, merge_scene_polygons
    from .writers import POLYGONS_FILENAME

    footprints = []
    for scene in scenes:
        if rows[scene.name].status not in (DONE, SKIPPED):
            continue
        marker = read_marker(out / scene.name) or {}
        grid = marker.get("grid") or {}
        gt = grid.get("geotransform")
        footprints.append(
            SceneFootprint(
                name=scene.name,
                polygons=out / scene.name / POLYGONS_FILENAME,
                width=int(grid.get("width", 0)),
                height=int(grid.get("height", 0)),
                crs_wkt=grid.get("crs_wkt"),
                geotransform=tuple(gt) if gt else None,
            )
        )
    summary = merge_scene_polygons(footprints, out / MERGED_FILENAME)
    for name, kept in summary.kept.items():
        rows[name].panels_merged = kept
    return summary


def write_summary(path: Path, rows: list[SceneRow]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = asdict(r)
        for k in ("km2", "seconds", "hectares"):
            if d[k] is not None:
                d[k] = f"{d[k]:.4f}" if k != "seconds" else f"{d[k]:.2f}"
        writer.writerow({k: "" if d[k] is None else d[k] for k in SUMMARY_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def read_summary(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
