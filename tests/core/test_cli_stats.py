import json
import subprocess
import sys

from tests.conftest import REPO


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_stats_json_on_real_data(solafune):
    out = run_cli("stats", str(solafune), "--bands", "4,3,2,8", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["form"] == "folders"
    assert data["pairs"] == 1650
    assert data["positive_ratio"] == 0.0923
    assert data["blank_tiles"] == 116
    assert data["pairs_per_split"] == {"train": 1155, "val": 165, "test": 330}
    assert data["balance"]["test"]["blank_tiles"] == 26
    # statistics from the training split only
    assert [b["count"] for b in data["bands"]] == [data["balance"]["train"]["valid_pixels"]] * 4
    assert [b["band"] for b in data["bands"]] == [4, 3, 2, 8]
    nir = data["bands"][3]
    assert 2000 < nir["mean"] < 2400 and nir["min"] < nir["mean"] < nir["max"]


def test_stats_text_and_bad_input(tmp_path):
    out = run_cli("stats", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert "missing: dataset path not found" in out.stderr
    assert "Traceback" not in out.stderr
