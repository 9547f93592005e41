"""Atomic writes: nothing under the final name until complete, normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from core.io import atomic_path, atomic_write_text


def test_written_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o644  # not mkstemp's private 0600: other users read run folders
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_failure_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("best so far")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("trunc")
            raise RuntimeError("disk full")
    assert target.read_text() == "best so far"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_temporary_is_hidden_beside_target_and_unique(tmp_path):
    with atomic_path(tmp_path / "sub" / "x.tif") as a, atomic_path(tmp_path / "sub" / "x.tif") as b:
        assert a != b
        assert a.parent == tmp_path / "sub"
        assert a.name.startswith(".x.tif.") and a.name.endswith(".part")
        assert not a.exists()  # the writer creates it
        a.write_text("1")
        b.write_text("2")
    # the inner block (b) finishes first, the outer one (a) last: last rename wins
    assert (tmp_path / "sub" / "x.tif").read_text() == "1"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.tif"]
