"""Train dialog: refused settings are named beside their fields; a real training on a few
dozen Solafune tiles runs as a QgsTask, fills progress, chart and summary, and its
"Inspect errors" button opens the error analysis of the run; Cancel stops cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import TINY_TILES, wait_until


@pytest.fixture()
def opened(qgis_iface, qgis_new_project):
    from solar_seg_plugin.dialogs.train_dialog import TrainDialog

    opened_runs: list = []
    dlg = TrainDialog(qgis_iface, lambda path, start: opened_runs.append((path, start)))
    dlg.show()
    yield dlg, opened_runs
    dlg.shutdown()
    wait_until(lambda: dlg.task is None and dlg.summary_task is None, 120, "tasks to end")
    dlg.close()
    dlg.deleteLater()


def fill(dlg, **values) -> None:
    for key, value in values.items():
        dlg.form.fields[key].set(value)


def test_every_setting_has_a_field_with_the_engine_default(opened):
    import dataclasses

    from solar_seg_plugin.core.config import RunConfig

    dlg, _ = opened

    def keys(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from keys(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", value

    defaults = dict(keys(RunConfig()))
    assert set(dlg.form.fields) == set(defaults)
    dlg.reset_defaults()
    values = dlg.form.values()
    assert values["train"]["epochs"] == defaults["train.epochs"]
    assert values["optim"]["scheduler"] == defaults["optim.scheduler"]
    assert float(values["optim"]["lr"]) == defaults["optim.lr"]
    assert [t["name"] for t in values["loss"]["terms"]] == ["bce", "dice"]
    assert "CPU" in dlg.device_label.text() or "GPU" in dlg.device_label.text()
    assert "data.train_crop" in dlg.form.fields


def test_encoder_weights_field_offers_the_named_sentinel2_encoders(opened):
    """Typing "ukis" in Encoder weights lists the four named encoders; the hover text
    holds the whole hint, which the narrow field cuts short."""
    dlg, _ = opened
    weights = dlg.form.fields["model.encoder_weights"].widget
    completer = weights.edit.completer()
    completer.setCompletionPrefix("UKIS-csmask-6")
    found = []
    for i in range(completer.completionCount()):
        completer.setCurrentRow(i)
        found.append(completer.currentCompletion())
    assert found == ["ukis-csmask-6b-l2a", "ukis-csmask-6b-l1c"]
    assert "-6b-l2a (+B11,B12)" in weights.toolTip()
    assert weights.toolTip().startswith("model.encoder_weights: empty = random init")
    dlg.form.fields["model.encoder_weights"].set("ukis-csmask-6b-l2a")
    assert dlg.form.values()["model"]["encoder_weights"] == "ukis-csmask-6b-l2a"


def test_loss_choices_are_the_engine_losses():
    from solar_seg_plugin.core.training.losses import LOSSES
    from solar_seg_plugin.dialogs.config_form import LOSS_NAMES

    assert sorted(LOSS_NAMES) == sorted(LOSSES)


def refused_by_engine(dlg) -> dict[str, str]:
    """Start: the engine's check_train refuses; its problems land beside the fields."""
    assert dlg.start()
    wait_until(lambda: dlg.task is None, 180, "the engine's check")
    assert "refused" in dlg.status.text() and dlg.result is None
    return dlg.form.errors()


def test_refuses_invalid_settings_beside_the_fields(opened, solafune, tmp_path):
    dlg, _ = opened
    runs = tmp_path / "runs"
    # Values: refused at once, in QGIS's process (pure-Python config check).
    fill(dlg, **{"data.path": str(solafune), "data.bands": "4,3,x", "out_dir": str(runs)})
    assert not dlg.start()
    assert "data.bands" in dlg.form.errors()
    assert "refused" in dlg.status.text()

    fill(dlg, **{"data.bands": "4,3,2,8", "data.split.val": "0.7", "data.split.test": "0.5"})
    assert not dlg.start()
    errors = dlg.form.errors()
    assert "data.split.val" in errors and dlg.task is None

    # Dataset, bands, model and loss: refused by the engine process, all at once.
    fill(dlg, **{"data.split.val": "0.1", "data.split.test": "0.2", "data.limit": "40",
                 "data.bands": "4,3,2,13", "model.encoder": "no-such-encoder"})  # fmt: skip
    dlg.form.fields["loss.terms"].widget.add_term(
        {"name": "focal", "weight": 1, "params": {"beta": 2}}
    )
    errors = refused_by_engine(dlg)
    assert "13" in errors["data.bands"]
    assert "no-such-encoder" in errors["model.encoder"]
    assert "beta" in errors["loss.terms"]

    dlg.reset_defaults()
    fill(dlg, **{"data.path": str(solafune), "data.limit": "3", "out_dir": str(runs)})
    assert "no val" in refused_by_engine(dlg)["data.limit"]

    fill(dlg, **{"data.path": "", "data.limit": ""})
    assert "data.path" in refused_by_engine(dlg)
    assert not runs.exists()  # nothing refused left a run folder


def test_dataset_form_and_class_balance(opened, solafune):
    dlg, _ = opened
    fill(dlg, **{"data.limit": "100"})
    dlg.form.fields["data.path"].widget.setText(str(solafune))
    assert "folders" in dlg.dataset_label.text()
    wait_until(lambda: dlg.summary_task is None and dlg.balance_table.rowCount() > 0, 120)
    rows = {
        dlg.balance_table.verticalHeaderItem(r).text(): [
            dlg.balance_table.item(r, c).text() for c in range(dlg.balance_table.columnCount())
        ]
        for r in range(dlg.balance_table.rowCount())
    }
    assert set(rows) == {"all", "train", "val", "test"}
    assert rows["all"][0] == "100"
    assert rows["train"][0] == "70" and rows["val"][0] == "10" and rows["test"][0] == "20"
    assert rows["all"][1].endswith("%")


def test_train_task_then_inspect_errors(opened, qgis_iface, solafune, tmp_path):
    from solar_seg_plugin.analysis.errors import FN, FP, TN, TP
    from solar_seg_plugin.core.evaluation.metrics import confusion
    from solar_seg_plugin.dialogs.inspect_dialog import InspectDialog

    dlg, opened_runs = opened
    fill(dlg, **{
        "data.path": str(solafune), "data.limit": str(TINY_TILES), "data.bands": "4,3,2,8",
        "model.arch": "Unet", "model.encoder": "resnet18", "data.upscale": 1,
        "train.epochs": 1, "train.batch_size": 8, "train.threads": "2",
        "out_dir": str(tmp_path / "runs"), "name": "dialog",
    })  # fmt: skip
    assert dlg.start(), dlg.form.errors()
    assert not dlg.form.isEnabled() and dlg.cancel_button.isEnabled()
    wait_until(lambda: dlg.task is None, 240, "training")
    result = dlg.result
    assert result is not None and result.status == "completed", dlg.status.text()
    run_dir = Path(result.run_dir)
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "model.pt").is_file()
    assert dlg.labels["epoch"].text() == "1/1"
    assert len(dlg.chart.rows) == 1 and dlg.chart.series("val_iou")
    assert dlg.summary_table.rowCount() == 3
    assert f"{result.threshold:.3f}" in dlg.summary_label.text()
    assert dlg.inspect_button.isEnabled()
    dlg.inspect_button.click()
    assert opened_runs == [(str(run_dir), True)]

    # what the plugin does with that request: the Inspect Errors dialog runs at once
    analyses: list = []
    inspect = InspectDialog(qgis_iface, analyses.append)
    inspect.set_model(str(run_dir))
    assert inspect.split_combo.currentText() == "test"
    assert inspect.rgb_edit.text() == "4,3,2"
    inspect.tiles_spin.setValue(2)
    assert inspect.start()
    wait_until(lambda: inspect.task is None, 120, "split prediction")
    assert len(analyses) == 1, inspect.status.text()
    analysis = analyses[0]
    assert analysis.threshold == pytest.approx(result.threshold)
    assert analysis.result.metrics["iou"] == pytest.approx(result.metrics["test"]["iou"], abs=1e-9)
    tile_id, view = next(iter(analysis.views.items()))
    pred = analysis.predictions[view.index]
    counts = confusion(pred.prob, pred.mask, pred.valid, analysis.threshold)
    import rasterio

    with rasterio.open(view.errors.source()) as src:
        codes = src.read(1)
    assert [int((codes == c).sum()) for c in (TP, FP, FN, TN)] == [
        counts.tp, counts.fp, counts.fn, counts.tn
    ]  # fmt: skip
    assert np.array_equal(
        np.where(pred.valid, pred.mask, 255), rasterio.open(view.truth.source()).read(1)
    )
    analysis.close()
    inspect.deleteLater()


def test_cancel_stops_training_and_keeps_qgis_usable(opened, solafune, tmp_path):
    dlg, _ = opened
    fill(dlg, **{
        "data.path": str(solafune), "data.limit": "80", "data.bands": "4,3,2,8",
        "train.epochs": 20, "train.batch_size": 4, "train.threads": "2",
        "out_dir": str(tmp_path / "runs"), "name": "cancelled",
    })  # fmt: skip
    assert dlg.start()
    wait_until(lambda: dlg.labels["batch"].text() != "–", 120, "the first batch")
    dlg.cancel_button.click()
    wait_until(lambda: dlg.task is None, 60, "cancellation")
    assert dlg.result is not None and dlg.result.status == "cancelled"
    run_dir = Path(dlg.result.run_dir)
    assert (run_dir / "model.pt").is_file()  # the best model so far is kept
    assert not list(run_dir.rglob("*.part"))  # no half-written file
    assert not (run_dir / "metrics.json").exists()
    assert "cancelled" in dlg.status.text()
    assert dlg.form.isEnabled() and dlg.start_button.isEnabled()
    # QGIS and the dialog stay usable: the dataset summary task runs afterwards
    dlg.refresh_dataset()
    wait_until(lambda: dlg.summary_task is None and dlg.balance_table.rowCount() > 0, 120)
