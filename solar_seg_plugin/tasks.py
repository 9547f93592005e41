"""QgsTask wrappers around the engine: training, split prediction, segmentation and
dataset summaries run in the background while QGIS stays responsive. Training, split
prediction and segmentation run in the engine's own process (EngineProcessTask).

Each task passes the engine a ``progress`` callback (-> ``setProgress`` and the
``info`` signal carrying the engine's info dict) and ``isCanceled`` as the cancel
check. Exceptions are kept on the task (``error``, ``traceback``) and reported by the
owner through the ``done`` signal, emitted from :meth:`finished` in the main thread.
The engine writes every output under a temporary name, so a cancelled task leaves no
partial output behind.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .common import log
from .engine_process import EngineOutcome, default_engine_python, engine_command, run_engine

# Emit at most this many info signals per second (stage changes and epoch ends always).
INFO_RATE = 10.0


class EngineTask(QgsTask):
    """Runs :meth:`work` in a worker thread; subclasses set ``self.result``."""

    info = pyqtSignal(dict)  # the engine's Progress as a dict (stage, fraction, message, info)
    done = pyqtSignal(bool)  # True: finished without error and not cancelled

    def __init__(self, description: str) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback = ""
        self.cancelled = False
        self._last_emit = 0.0
        self._last_stage = ""

    # --- worker thread -----------------------------------------------------------
    def work(self) -> Any:
        raise NotImplementedError

    def run(self) -> bool:
        from .core.progress import Cancelled

        try:
            self.result = self.work()
        except Cancelled:
            self.cancelled = True
            return False
        except Exception as exc:  # kept and reported in finished(), never raised in Qt
            self.error = exc
            self.traceback = traceback.format_exc()
            return False
        if self.isCanceled():
            self.cancelled = True
            return False
        return True

    def progress(self, p: Any) -> None:
        """Engine progress callback (called from the worker thread)."""
        self.setProgress(100.0 * max(0.0, min(1.0, float(p.fraction))))
        now = time.monotonic()
        info = dict(p.info or {})
        urgent = p.stage != self._last_stage or "history_row" in info or p.fraction >= 1.0
        if urgent or now - self._last_emit >= 1.0 / INFO_RATE:
            self._last_emit, self._last_stage = now, p.stage
            self.info.emit({"stage": p.stage, "fraction": p.fraction, "message": p.message, **info})

    def cancel_check(self) -> bool:
        return self.isCanceled()

    # --- main thread -------------------------------------------------------------
    def finished(self, ok: bool) -> None:  # noqa: D401 (QgsTask API)
        if not ok and self.isCanceled():
            self.cancelled = True
        if self.error is not None:
            log(f"{self.description()} failed:\n{self.traceback}")
        self.done.emit(ok and self.error is None and not self.cancelled)

    def error_message(self) -> str:
        """The error as one line for the user (engine errors already name the file)."""
        if self.error is None:
            return ""
        return str(self.error) or type(self.error).__name__


def detach(task: EngineTask) -> None:
    """Cancel a task and disconnect its signals (its owner is going away)."""
    for signal in (task.info, task.done):
        try:
            signal.disconnect()
        except (TypeError, RuntimeError):  # nothing connected, or already deleted
            pass
    try:
        task.cancel()
    except RuntimeError:  # the task manager already deleted it
        pass


def start(task: EngineTask) -> EngineTask:
    """Hand the task to QGIS's task manager (visible in its task list)."""
    QgsApplication.taskManager().addTask(task)
    return task


def engine_python() -> str:
    """The Python the engine runs in (see :mod:`.engine_process`)."""
    from .common import Settings, profile_python_dir
    from .engine_env import fallback_python

    configured = Settings().get("engine_python", "", str)
    return default_engine_python(configured, fallback_python(profile_python_dir()))


class EngineProcessTask(EngineTask):
    """Runs ``python -m solar_seg_plugin.core --jsonl ARGS`` in the engine's own Python.

    Progress events drive the task's progress and ``info`` signal; Cancel sends SIGTERM;
    an engine error, or a crash of the engine process, becomes :attr:`error` (one line)
    while QGIS carries on.
    """

    def __init__(self, description: str, args: list[str], python: str | None = None) -> None:
        super().__init__(description)
        self.args = list(args)
        self.python = python or engine_python()
        self.outcome: EngineOutcome | None = None

    def _event(self, event: dict) -> None:
        if event.get("event") == "progress":
            self.progress(
                SimpleNamespace(
                    stage=event.get("stage", ""), fraction=event.get("fraction", 0.0),
                    message=event.get("message", ""), info=event.get("info") or {},
                )
            )  # fmt: skip

    def work(self) -> Any:
        log(f"engine: {' '.join(engine_command(self.python, self.args))}")
        self.outcome = run_engine(self.python, self.args, self._event, self.isCanceled)
        if self.outcome.stderr_tail:
            log("engine output (last lines):\n" + "\n".join(self.outcome.stderr_tail))
        if self.outcome.error:
            raise EngineError(self.outcome.error, self.outcome.problems)
        if self.outcome.cancelled and self.outcome.result is None:
            self.cancelled = True
            return None
        return self.convert(self.outcome.result or {})

    def convert(self, data: dict) -> Any:
        """The result event's data as the owner wants it (default: the dict)."""
        return data


class EngineError(Exception):
    """The engine reported an error, or its process died: the message is one line;
    ``problems`` are the refused inputs keyed by field (``{field: message}``)."""

    def __init__(self, message: str, problems: list[dict] | None = None) -> None:
        super().__init__(message)
        self.problems: dict[str, str] = {}
        for p in problems or []:
            self.problems.setdefault(p["field"], p["message"])


class TrainTask(EngineProcessTask):
    """``train`` in the engine process; Cancel stops it within one batch and the engine
    keeps the best model (run status "cancelled")."""

    def __init__(self, cfg: Any, python: str | None = None) -> None:
        from .core.config import to_dict

        self.config_file = Path(tempfile.mkstemp(prefix="solarseg-", suffix=".yaml")[1])
        self.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        super().__init__(f"SolarSeg: train {cfg.name}", ["train", "--config",
                         str(self.config_file)], python)  # fmt: skip
        self.cfg = cfg

    def convert(self, data: dict) -> Any:
        return SimpleNamespace(**{**data, "run_dir": Path(data["run_dir"])})

    def run(self) -> bool:
        try:
            ok = super().run()
        finally:
            self.config_file.unlink(missing_ok=True)
        if self.result is not None and getattr(self.result, "status", "") == "cancelled":
            self.cancelled = True
        return ok


@dataclass
class SplitPredictions:
    """A predicted split read back from ``predict-split``'s folder (numpy only): the
    probabilities are kept so the threshold can change without inference."""

    model_path: Path
    split: str
    folder: Path
    index: dict  # index.json: threshold, skip_blank, rgb_bands, metrics, tiles...
    tiles: list  # core.evaluation.split_files.SplitTile, in split order


def predict_split_args(
    model_path: Path, dataset_path: Any, split: str, out_dir: Path, tta: bool | None,
    device: str, rgb_bands: list[int] | None, reuse: bool,
) -> list[str]:  # fmt: skip
    """``python -m core predict-split`` arguments."""
    args = ["predict-split", str(model_path)] + ([str(dataset_path)] if dataset_path else [])
    args += ["--split", split, "--out", str(out_dir), "--device", device]
    if tta is not None:
        args.append("--tta" if tta else "--no-tta")
    if rgb_bands:
        args += ["--rgb", ",".join(str(b) for b in rgb_bands)]
    return args + (["--reuse"] if reuse else [])


class PredictSplitTask(EngineProcessTask):
    """``predict-split`` in the engine process: every tile of a split predicted into
    ``out_dir`` (index.json + one .npz per tile), then read back here with numpy."""

    def __init__(
        self,
        model_path: str | Path,
        dataset_path: str | Path | None = None,
        split: str = "test",
        tta: bool | None = None,
        device: str = "auto",
        out_dir: str | Path | None = None,
        rgb_bands: list[int] | None = None,
        reuse: bool = True,
        python: str | None = None,
    ) -> None:
        self.model_path, self.dataset_path = Path(model_path), dataset_path
        self.split, self.tta, self.device = split, tta, device
        if out_dir is None:
            base = self.model_path if self.model_path.is_dir() else self.model_path.parent
            out_dir = base / f"inspect_{split}" / PREDICTIONS_DIR
        self.out_dir = Path(out_dir)
        args = predict_split_args(self.model_path, dataset_path, split, self.out_dir, tta,
                                  device, rgb_bands, reuse)  # fmt: skip
        super().__init__(f"SolarSeg: predict the {split} split", args, python)

    def convert(self, data: dict) -> SplitPredictions:
        from .core.evaluation.split_files import load_tiles, read_index

        folder = Path(data["out"])
        index = read_index(folder)
        return SplitPredictions(self.model_path, self.split, folder, index,
                                load_tiles(folder, index))  # fmt: skip


# Sub-folder of the Inspect Errors folder that holds predict-split's files.
PREDICTIONS_DIR = "_predictions"


@dataclass
class SegmentOutcome:
    """A segmentation result plus, with ground truth, its error overlay and counts."""

    result: Any
    error_path: Path | None = None
    counts: Any = None
    metrics: dict | None = None


def segment_args(model_path: Path, raster_path: Path, out_dir: Path, o: Any) -> list[str]:
    """``python -m core segment`` arguments for :class:`core.segment.SegmentOptions`."""
    args = ["segment", str(model_path), str(raster_path), "--out", str(out_dir),
            "--backend", o.backend, "--device", o.device, "--batch-size", str(o.batch_size),
            "--probability-dtype", o.probability_dtype, "--min-area", str(o.min_area_m2),
            "--precision", o.precision]  # fmt: skip
    if o.precision == "int8":
        args += ["--calibration-tiles", str(o.calibration_tiles)]
        args += ["--calibration", str(o.calibration)] if o.calibration else []
    for flag, value in (("--tile", o.tile_size), ("--overlap", o.overlap),
                        ("--threshold", o.threshold)):  # fmt: skip
        if value is not None:
            args += [flag, str(value)]
    if o.bands:
        args += ["--bands", ",".join(str(b) for b in o.bands)]
    args += [flag for flag, on in (("--polygons", o.polygons), ("--tta", o.tta),
                                   ("--overwrite", o.overwrite)) if on]  # fmt: skip
    ref = getattr(o, "reference", None)
    if ref is not None:
        args += ["--reference", str(ref.path)]
        for flag, value in (("--reference-layer", ref.layer), ("--reference-where", ref.where),
                            ("--reference-field", ref.group_field)):  # fmt: skip
            if value:
                args += [flag, str(value)]
        if ref.all_touched:
            args.append("--all-touched")
    return args


def segment_many_args(
    model_path: Path,
    inputs: list[str | Path],
    out_dir: Path,
    o: Any,
    workers: int | None = None,
    scheduler: str | None = None,
) -> list[str]:
    """``python -m core segment-many`` arguments: the same options as :func:`segment_args`
    (polygons are always made), inputs = rasters, folders or list files, and where the
    scenes run (a LocalCluster of ``workers``, or an existing Dask ``scheduler``)."""
    args = segment_args(model_path, Path("-"), out_dir, o)
    args = [a for a in args if a != "--polygons"]
    args[0:3] = ["segment-many", str(model_path), *[str(p) for p in inputs]]
    if workers:
        args += ["--workers", str(int(workers))]
    if scheduler:
        args += ["--scheduler", scheduler]
    return args


class SegmentManyTask(EngineProcessTask):
    """``segment-many`` in the engine process (Dask distributed there): per-scene
    outputs, the merged panels.gpkg and summary.csv; result = the engine's result data."""

    def __init__(
        self,
        model_path: str | Path,
        inputs: list[str | Path],
        out_dir: str | Path,
        options: Any,
        workers: int | None = None,
        scheduler: str | None = None,
        python: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        args = segment_many_args(Path(model_path), inputs, self.out_dir, options, workers,
                                 scheduler)  # fmt: skip
        super().__init__(f"SolarSeg: segment {len(inputs)} input(s)", args, python)

    def convert(self, data: dict) -> Any:
        return SimpleNamespace(**data)


class SegmentTask(EngineProcessTask):
    """``segment`` in the engine process; with ground truth also the error overlay
    (computed here from the written probability raster)."""

    def __init__(
        self,
        model_path: str | Path,
        raster_path: str | Path,
        out_dir: str | Path,
        options: Any,
        ground_truth: str | Path | None = None,
        python: str | None = None,
    ) -> None:
        self.model_path, self.raster_path = Path(model_path), Path(raster_path)
        self.out_dir, self.options = Path(out_dir), options
        self.ground_truth = Path(ground_truth) if ground_truth else None
        args = segment_args(self.model_path, self.raster_path, self.out_dir, options)
        super().__init__(f"SolarSeg: segment {self.raster_path.name}", args, python)

    def convert(self, data: dict) -> SegmentOutcome:
        paths = {k: Path(v) if v else None for k, v in data.items() if k.endswith("_path")}
        result = SimpleNamespace(**{**data, **paths})
        outcome = SegmentOutcome(result)
        if self.ground_truth is not None:
            from .analysis.rasters import write_scene_errors

            outcome.error_path, outcome.counts = write_scene_errors(
                result.probability_path, self.ground_truth, result.threshold, self.out_dir
            )
            outcome.metrics = outcome.counts.metrics(json_safe=True)
        return outcome


class ModelInfoTask(EngineProcessTask):
    """What a model file says about itself (engine ``info``: bands, normalisation,
    threshold, tile, upscale...), read in the engine process."""

    def __init__(self, model_path: str | Path, python: str | None = None) -> None:
        self.model_path = str(model_path)
        super().__init__(f"SolarSeg: read {Path(model_path).name}", ["info", self.model_path],
                         python)  # fmt: skip

    def convert(self, data: dict) -> Any:
        return SimpleNamespace(**data)


@dataclass
class DatasetOverview:
    form: str
    pairs: int
    split_counts: dict[str, int]
    predefined: bool
    balance: dict[str, dict]


def stats_args(path: str | Path, limit: int | None, split_cfg: Any) -> list[str]:
    """``python -m core stats`` arguments for the split the training would use (band 1
    only: the dialog shows the class balance, and one band keeps the pass cheap)."""
    args = ["stats", str(path), "--bands", "1", "--seed", str(split_cfg.seed),
            "--val", str(split_cfg.val), "--test", str(split_cfg.test)]  # fmt: skip
    if limit:
        args += ["--limit", str(limit)]
    if split_cfg.group_regex:
        args += ["--group-regex", split_cfg.group_regex]
    return args


class DatasetSummaryTask(EngineProcessTask):
    """Dataset form, pairs per split and class balance per split (engine ``stats``)."""

    def __init__(
        self, path: str | Path, limit: int | None, split_cfg: Any, python: str | None = None
    ) -> None:
        super().__init__("SolarSeg: dataset summary", stats_args(path, limit, split_cfg), python)

    def convert(self, data: dict) -> DatasetOverview:
        return DatasetOverview(
            form=data["form"],
            pairs=int(data["pairs"]),
            split_counts=dict(data["pairs_per_split"]),
            predefined=str(data["split"]).startswith("predefined"),
            balance=dict(data["balance"]),
        )


@dataclass
class ChipsInputs:
    """What ``python -m core chips`` needs (the Create Training Data dialog and the
    Processing algorithm build it; ``labels`` is a file, ``layer`` its layer name)."""

    rasters: list[str]
    labels: str
    out: str
    layer: str | None = None
    where: str | None = None
    group_field: str | None = None
    tile: int = 64
    stride: int | None = None
    all_touched: bool = False
    min_valid: float = 0.5
    keep_background: int | None = None
    seed: int = 42
    overwrite: bool = False


def chips_args(c: ChipsInputs, check: bool = False) -> list[str]:
    """``python -m core chips`` arguments (``--check``: only the engine's check)."""
    args = ["chips", *[str(r) for r in c.rasters], "--labels", str(c.labels), "--out", str(c.out),
            "--tile", str(c.tile), "--min-valid", repr(float(c.min_valid)),
            "--seed", str(c.seed)]  # fmt: skip
    for flag, value in (("--layer", c.layer), ("--where", c.where),
                        ("--group-field", c.group_field), ("--stride", c.stride),
                        ("--keep-background", c.keep_background)):  # fmt: skip
        if value not in (None, ""):
            args += [flag, str(value)]
    args += [flag for flag, on in (("--all-touched", c.all_touched),
                                   ("--overwrite", c.overwrite), ("--check", check)) if on]  # fmt: skip
    return args


class ChipsTask(EngineProcessTask):
    """``chips`` in the engine process: image/mask tiles and manifest.csv from rasters and
    a polygon layer. The result is the engine's result data (tiles, positive_tiles,
    groups, plants, out_dir, manifest, summary...)."""

    def __init__(self, inputs: ChipsInputs, python: str | None = None,
                 cleanup: list[Path] | None = None) -> None:  # fmt: skip
        self.inputs = inputs
        self.cleanup = list(cleanup or [])  # temporary files (an exported selection)
        super().__init__(f"SolarSeg: training data in {Path(inputs.out).name}",
                         chips_args(inputs), python)  # fmt: skip

    def convert(self, data: dict) -> Any:
        return SimpleNamespace(**data)

    def run(self) -> bool:
        try:
            return super().run()
        finally:
            import shutil

            for path in self.cleanup:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
