"""Fixtures for the plugin tests: a tiny model trained once on real tiles, and a helper
that runs QgsTasks through QGIS's task manager while the Qt event loop spins."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop

# One tiny model for every plugin test: Unet resnet18, 4 bands, 1 epoch, 60 tiles.
TINY_TILES = 60
TINY_BANDS = [4, 3, 2, 8]


def tiny_overrides(dataset: Path, out_dir: Path, name: str = "tiny") -> list[str]:
    return [
        f"data.path={dataset}",
        f"data.limit={TINY_TILES}",
        f"data.bands={TINY_BANDS}",
        "model.arch=Unet",
        "model.encoder=resnet18",
        "train.epochs=1",
        "train.batch_size=8",
        "train.threads=2",
        f"out_dir={out_dir}",
        f"name={name}",
    ]


@pytest.fixture(scope="session")
def tiny_run(solafune: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained with the engine (as the plugin imports it)."""
    from solar_seg_plugin.core.config import load_config
    from solar_seg_plugin.core.training.loop import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, tiny_overrides(solafune, out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg)
    assert result.status == "completed"
    assert (result.run_dir / "model.pt").is_file()
    return Path(result.run_dir)


def process_events(seconds: float = 0.0) -> None:
    end = time.monotonic() + seconds
    while True:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def run_task(task, timeout: float = 180.0, start: bool = True) -> bool:
    """Add ``task`` to the task manager (unless already started) and spin the event
    loop until its ``done`` signal; returns the ok flag."""
    outcome: list[bool] = []
    task.done.connect(outcome.append)
    if start:
        QgsApplication.taskManager().addTask(task)
    return wait_until(lambda: bool(outcome), timeout, f"task {task.description()!r}") and outcome[0]


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        process_events(0.02)
    return True


@pytest.fixture(autouse=True)
def fresh_solarseg_settings(qgis_app):
    """Each test starts without remembered SolarSeg settings (pytest-qgis already keeps
    the whole session's QgsSettings in a throwaway profile)."""
    from qgis.core import QgsSettings

    QgsSettings().remove("solarseg")
    yield


def add_layer(path: Path) -> QgsRasterLayer:
    """A raster layer of ``path`` (named by its stem), added to the project."""
    layer = QgsRasterLayer(str(path), path.stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def visible_errors(dlg) -> dict[str, str]:
    """The error labels a dialog shows, by field."""
    return {k: v.text() for k, v in dlg.errors.items() if v.isVisibleTo(dlg)}


def wait_for_dialog(dlg, timeout: float = 180.0) -> None:
    """Until the dialog's segmentation task has ended."""
    wait_until(lambda: dlg.task is None, timeout, "the segmentation task")
