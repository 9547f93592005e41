"""check_train: every refused setting keyed by field, before a run folder exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ValidationError
from core.training.checks import check_train
from core.training.loop import train
from tests.conftest import REPO


def _cfg(solafune: Path, out: Path, *overrides: str):
    base = [f"data.path={solafune}", f"out_dir={out}", "data.limit=30", "data.bands=[4,3,2,8]"]
    return load_config(None, base + list(overrides))


def test_good_settings_have_no_problems(solafune: Path, tmp_path: Path) -> None:
    assert check_train(_cfg(solafune, tmp_path / "runs")) == []
    assert not (tmp_path / "runs").exists()  # checking creates nothing


def test_every_problem_is_keyed_by_its_field(solafune: Path, tmp_path: Path) -> None:
    cfg = _cfg(solafune, tmp_path / "runs", "model.arch=Foo", "train.device=cuda",
               "loss.terms=[{name: nope}]", "data.bands=[4,3,2,99]")  # fmt: skip
    fields = {p.field: p.message for p in check_train(cfg)}
    assert set(fields) == {"model.arch", "train.device", "loss.terms", "data.bands"}
    assert "'Foo'" in fields["model.arch"]
    assert "'nope'" in fields["loss.terms"]
    assert "99" in fields["data.bands"]


def test_missing_dataset_and_unwritable_out_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    cfg = load_config(
        None, [f"data.path={tmp_path / 'none'}", f"out_dir={tmp_path / 'file' / 'runs'}"]
    )
    fields = {p.field: p.message for p in check_train(cfg)}
    assert str(tmp_path / "none") in fields["data.path"]
    assert fields["out_dir"] == f"{tmp_path / 'file'}: not a folder"


def test_too_few_tiles_for_the_split(solafune: Path, tmp_path: Path) -> None:
    problems = check_train(_cfg(solafune, tmp_path, "data.limit=2"))
    assert [p.field for p in problems] == ["data.limit"]
    assert "no train" in problems[0].message or "no val" in problems[0].message


def test_train_refuses_before_creating_the_run_folder(solafune: Path, tmp_path: Path) -> None:
    cfg = _cfg(solafune, tmp_path / "runs", "model.arch=Foo", "loss.terms=[{name: nope}]")
    with pytest.raises(ValidationError) as info:
        train(cfg)
    assert [p.field for p in info.value.problems] == ["loss.terms", "model.arch"]
    assert str(info.value).endswith("(and 1 more problem(s))")
    assert not (tmp_path / "runs").exists()


def test_cli_check_reports_all_problems_as_json(solafune: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "core", "--jsonl", "train", "--check", f"data.path={solafune}",
         f"out_dir={out}", "model.arch=Foo", "train.epochs=0"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    event = json.loads(proc.stdout.strip().splitlines()[-1])
    assert event["event"] == "error"
    assert event["field"] == "train.epochs"
    assert [p["field"] for p in event["problems"]] == ["train.epochs", "model.arch"]
    assert proc.stderr.count("error: ") == 2
    assert not out.exists()


def test_resume_needs_a_run_folder_with_a_checkpoint(tmp_path: Path) -> None:
    """``train --resume``: what is missing is said in one line, before any process
    group reads anything (rank 0 checks; see test_distributed for the DDP resume)."""
    from core.config import save_config
    from core.errors import MissingInputError
    from core.training.runs import RESUME_FILES, check_resume, resume_digest, resume_settings

    run = tmp_path / "run"
    (p,) = check_resume(run)
    assert p.field == "resume" and "not a run folder" in p.message
    assert resume_settings(run).device == "auto"  # defaults: join first, refuse after
    run.mkdir()
    save_config(load_config(None, ["train.device=cpu"]), run / "config.yaml")
    (run / "split.csv").write_text("id,image,mask,group,split\n")
    (run / "stats.json").write_text("{}")
    (p,) = check_resume(run)
    assert isinstance(p.error, MissingInputError)
    assert "no checkpoint.pt" in p.message and "before its first epoch ended" in p.message
    assert resume_settings(run).device == "cpu"
    with pytest.raises(MissingInputError, match="no checkpoint.pt"):
        train(None, resume=run)  # type: ignore[arg-type]
    (run / "checkpoint.pt").write_bytes(b"epoch 1")
    assert check_resume(run) == [] and RESUME_FILES[-1] == "checkpoint.pt"
    digest = resume_digest(run)
    assert digest == resume_digest(run)
    (run / "checkpoint.pt").write_bytes(b"epoch 2")
    assert resume_digest(run) != digest  # a rank reading another checkpoint is caught
