"""Create Training Data on the real Austria layers: the dialog runs ``chips`` in the engine
process (same counts as the command line), shows the engine's refusals beside the fields,
honours "selected features only", opens Train on the result; the Processing algorithm."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

from tests.conftest import REPO

from .conftest import visible_errors, wait_until


@pytest.fixture()
def austria_layers(austria, qgis_new_project):
    """The 25 rasters and the OSM layer in the project (as `make run` opens them)."""
    project = QgsProject.instance()
    rasters = []
    for path in sorted((austria / "images").glob("*.tif")):
        layer = QgsRasterLayer(str(path), path.stem)
        assert layer.isValid()
        rasters.append(layer)
    project.addMapLayers(rasters)
    osm = QgsVectorLayer(
        f"{austria / 'photovoltaic_osm.gpkg'}|layername=photovoltaic", "OSM", "ogr"
    )
    assert osm.isValid()
    project.addMapLayer(osm)
    yield rasters, osm
    project.removeAllMapLayers()


@pytest.fixture()
def dialog(qgis_iface, austria_layers):
    from solar_seg_plugin.dialogs.chips_dialog import ChipsDialog

    opened: list[str] = []
    dlg = ChipsDialog(qgis_iface, opened.append)
    dlg.opened = opened
    dlg.show()
    yield dlg
    dlg.shutdown()
    dlg.close()
    dlg.deleteLater()


def cli_chips(args: list[str]) -> dict:
    """The engine's command line (its own process), the result event's data."""
    proc = subprocess.run([sys.executable, "-m", "core", "--jsonl", "chips", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    result = [e for e in events if e["event"] == "result"]
    assert proc.returncode == 0 and result, proc.stderr[-2000:]
    return result[0]["data"]


def run_dialog(dlg, timeout: float = 120.0) -> None:
    assert dlg.start(), visible_errors(dlg)
    wait_until(lambda: dlg.task is None, timeout, "the chips task")


def test_dialog_makes_the_same_chips_as_the_cli(dialog, austria_layers, austria, tmp_path):
    rasters, osm = austria_layers
    assert dialog.raster_list.count() == 25 and len(dialog.checked_files()) == 25
    dialog.labels_combo.setLayer(osm)
    assert dialog.group_combo.currentField() == "id"  # pre-selected plant field
    out = tmp_path / "chips"
    dialog.out_edit.setText(str(out))
    run_dialog(dialog)
    r = dialog.result
    assert r is not None, dialog.status.text()
    cli = cli_chips([str(austria / "images"), "--labels", str(austria / "photovoltaic_osm.gpkg"),
                     "--group-field", "id", "--tile", "64", "--out", str(tmp_path / "cli")])  # fmt: skip
    for key in ("tiles", "positive_tiles", "background_tiles", "plants", "groups",
                "positive_pixels"):  # fmt: skip
        assert getattr(r, key) == cli[key], key
    assert (r.tiles, r.groups) == (26, 25)
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == r.tiles and all((out / row["image"]).is_file() for row in rows)
    text = dialog.status.text()
    assert "26 tiles" in text and "25 groups" in text
    assert dialog.train_button.isVisibleTo(dialog)
    dialog.train_button.click()
    assert dialog.opened == [str(out)]

    # The same folder again: the engine refuses it, beside the output field.
    run_dialog(dialog)
    errors = visible_errors(dialog)
    assert "already holds a dataset" in errors.get("out", ""), (errors, dialog.status.text())
    assert "refused" in dialog.status.text()


def test_no_overlap_and_bad_filter_beside_their_fields(dialog, austria_layers, tmp_path):
    far = QgsVectorLayer("Polygon?crs=EPSG:4326&field=id:string", "far away", "memory")
    from qgis.core import QgsFeature, QgsGeometry

    f = QgsFeature(far.fields())
    f.setGeometry(QgsGeometry.fromWkt("POLYGON((0 0, 0.01 0, 0.01 0.01, 0 0.01, 0 0))"))
    f.setAttributes(["x"])
    far.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(far)
    dialog.labels_combo.setLayer(far)  # not a file: exported to a GeoPackage first
    dialog.out_edit.setText(str(tmp_path / "none"))
    run_dialog(dialog)
    errors = visible_errors(dialog)
    assert "covers a pixel of any raster" in errors.get("labels", ""), errors
    assert not (tmp_path / "none").exists()

    dialog.labels_combo.setLayer(austria_layers[1])
    dialog.where_edit.setText("id ==== 3")
    dialog.tile_spin.setValue(64)
    run_dialog(dialog)
    assert "is not valid" in visible_errors(dialog).get("where", "")


def test_selected_features_only_gives_fewer_plants(dialog, austria_layers, tmp_path):
    rasters, osm = austria_layers
    ids = [p.stem.split("_")[-1] for p in map(lambda r: Path(r.source()), rasters[:3])]
    osm.selectByExpression(" OR ".join(f"\"id\" = '{i}'" for i in ids))
    assert osm.selectedFeatureCount() == 3
    dialog.labels_combo.setLayer(osm)
    dialog.out_edit.setText(str(tmp_path / "all"))
    run_dialog(dialog)
    everything = dialog.result
    dialog.selected_check.setChecked(True)
    dialog.out_edit.setText(str(tmp_path / "selected"))
    run_dialog(dialog)
    selected = dialog.result
    assert selected is not None, dialog.status.text()
    assert selected.positive_tiles < everything.positive_tiles
    assert selected.positive_pixels < everything.positive_pixels
    assert 3 <= selected.plants < everything.plants


@pytest.fixture()
def provider(qgis_processing):
    from solar_seg_plugin.processing.provider import SolarSegProvider

    registry = QgsApplication.processingRegistry()
    prov = SolarSegProvider()
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


def test_processing_create_training_data(provider, austria_layers, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    rasters, osm = austria_layers
    out = processing.run("solarseg:createtrainingdata", {
        "INPUT": [r.source() for r in rasters], "POLYGONS": osm.source(), "GROUP_FIELD": "id",
        "TILE": 64, "OUTPUT_FOLDER": str(tmp_path / "p"),
    })  # fmt: skip
    assert (out["TILES"], out["POSITIVE_TILES"], out["GROUPS"]) == (26, 26, 25)
    assert Path(out["MANIFEST"]).is_file() and Path(out["OUTPUT_FOLDER"]) == tmp_path / "p"
    with pytest.raises(QgsProcessingException, match="already holds a dataset"):
        processing.run("solarseg:createtrainingdata", {
            "INPUT": [rasters[0].source()], "POLYGONS": osm.source(),
            "OUTPUT_FOLDER": str(tmp_path / "p"),
        })  # fmt: skip
