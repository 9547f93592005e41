"""Atomic file writing: write to a temporary name beside the target, then rename, so a
crash never leaves a truncated file under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    The temporary file is not created here: the writer creates it, so it gets the
    usual permissions (umask) rather than ``mkstemp``'s private 0600. The name is
    unique (pid + random), hidden, and ends in ``.part``. On any exception the
    temporary file is removed and the target is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.part"
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in blocks: model files, ONNX files."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


CACHE_ENV = "SOLARSEG_CACHE_DIR"


def cache_dir() -> Path:
    """The engine's cache (pretrained encoders in ``encoders/``, int8 models in
    ``int8/``): ``$SOLARSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/solarseg``, else
    ``~/.cache/solarseg``."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "solarseg"
