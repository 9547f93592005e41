import json
import subprocess
import sys

import onnx
import rasterio

from core.cli.main import main
from tests.conftest import REPO


def test_python_m_core_segment_end_to_end(haiti, model_file, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "core", "segment", str(model_file), str(haiti), "--out", str(out),
        "--tile", "256", "--overlap", "64", "--polygons", "--min-area", "50",
        "--probability-dtype", "uint8", "--threshold", "0.55", "--backend", "torch",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[:3] == [
        f"wrote {out / name}" for name in ("probability.tif", "mask.tif", "panels.gpkg")
    ]
    summary = lines[3]
    assert "515 x 403 = 207,545 pixels (5.19 km²)" in summary and "6 windows" in summary
    assert "km²/min" in summary and "panel polygon(s)" in summary and " ha" in summary
    # The Haiti scene names no bands: the model's band numbers
    assert lines[4] == "bands 1,2,3,4 (the model's band numbers)"
    with rasterio.open(out / "probability.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.crs.to_epsg() == 32618
    assert "[segment]" in proc.stderr  # progress goes to stderr


def test_cli_refuses_the_three_band_scene_with_exit_2(landsat, model_file, tmp_path, capsys):
    code = main(["segment", str(model_file), str(landsat), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert (
        err.startswith("error: ") and "needs bands [1, 2, 3, 4]" in err and "has 3 band(s)" in err
    )
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_export_onnx(model_file, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(model_file), str(out), "--opset", "17", "--tile", "256"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["solarseg"])["tile_size"] == 256 and props["tiles_size"] == "256"
    assert "resolution" not in props  # unknown unless given


def test_cli_refuses_existing_outputs(haiti, model_file, tmp_path, capsys):
    (tmp_path / "mask.tif").write_bytes(b"keep me")
    code = main(["segment", str(model_file), str(haiti), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "mask.tif" in err and "already exist" in err and "--overwrite" in err
    assert (tmp_path / "mask.tif").read_bytes() == b"keep me"
