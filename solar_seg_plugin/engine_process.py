"""Run the engine in its own Python, in a subprocess, and read its JSON-lines events.

The plugin never imports the engine (torch, smp, onnxruntime, rasterio) into QGIS's
process: a task starts ``ENGINE_PYTHON -m solar_seg_plugin.core --jsonl COMMAND ...``
with only the plugins folder on ``PYTHONPATH``, reads progress and the result from
stdout (see ``core/cli/common.py:Session``), cancels with SIGTERM (the engine stops at
its next cancel check and keeps what it must, e.g. the best model) and, if it does not
stop within a grace period, kills it. A crash of the engine (segfault, out of memory)
becomes a message here, never a dead QGIS.

Pure Python (no ``qgis`` import), so it is tested without QGIS too.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
PACKAGE = PLUGIN_DIR.name  # "solar_seg_plugin"
ENGINE_PYTHON_VAR = "SOLARSEG_ENGINE_PYTHON"
# Seconds the engine gets to stop after SIGTERM (a training run writes its record).
CANCEL_GRACE_S = 60.0


@dataclass
class EngineOutcome:
    """How an engine process ended."""

    returncode: int | None
    result: dict | None = None
    error: str = ""  # one line for the user; empty when the command succeeded
    error_type: str = ""
    field: str | None = None
    # Every refused input of the engine's check: [{"field": ..., "message": ...}].
    problems: list[dict] = dataclasses.field(default_factory=list)
    cancelled: bool = False
    stderr_tail: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None and not self.error


def engine_command(python: str, args: list[str]) -> list[str]:
    return [python, "-m", f"{PACKAGE}.core", "--jsonl", *args]


def engine_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The subprocess environment: the plugins folder alone on PYTHONPATH, so the engine
    imports its own packages, not QGIS's (no sympy/numpy shadowing either way)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(PLUGIN_DIR.parent)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


def signal_text(returncode: int) -> str:
    """``-9`` -> "killed by SIGKILL (out of memory, or stopped from outside)"."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = {
        "SIGKILL": "out of memory, or stopped from outside",
        "SIGSEGV": "a crash inside a native library",
        "SIGABRT": "a crash inside a native library",
    }.get(name, "")
    return f"killed by {name}" + (f" ({why})" if why else "")


def run_engine(
    python: str,
    args: list[str],
    on_event: Callable[[dict], None] = lambda _: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    grace_s: float = CANCEL_GRACE_S,
    on_start: Callable[[subprocess.Popen], None] = lambda _: None,
) -> EngineOutcome:
    """Run one engine command to its end; ``on_event`` gets every progress event."""
    cmd = engine_command(python, args)
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=engine_environment(), cwd=str(PLUGIN_DIR.parent),
        )  # fmt: skip
    except OSError as exc:
        return EngineOutcome(None, error=f"cannot start the engine Python {python}: {exc}")
    on_start(proc)
    lines: queue.Queue[str | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def pump_stdout() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
    for t in readers:
        t.start()
    outcome = EngineOutcome(None)
    terminated_at: float | None = None
    while True:
        if terminated_at is None and is_cancelled():
            outcome.cancelled = True
            terminated_at = time.monotonic()
            proc.terminate()
        elif terminated_at is not None and time.monotonic() - terminated_at > grace_s:
            proc.kill()
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            tail.append(line.rstrip("\n"))  # not ours (a library printing): keep as log
            continue
        kind = event.get("event")
        if kind == "result":
            outcome.result = event.get("data") or {}
        elif kind == "error":
            message = str(event.get("message") or "the engine reported an error")
            outcome.error = message.splitlines()[0]
            outcome.error_type = str(event.get("type", ""))
            outcome.field = event.get("field")
            outcome.problems = [
                {"field": str(p.get("field") or ""), "message": str(p.get("message", ""))}
                for p in event.get("problems") or []
                if isinstance(p, dict)
            ]
        elif kind == "cancelled":
            outcome.cancelled = True
        on_event(event)
    outcome.returncode = proc.wait()
    for t in readers:
        t.join(timeout=5)
    close_pipes(proc, readers)
    outcome.stderr_tail = list(tail)
    if outcome.returncode and outcome.returncode < 0 and not outcome.cancelled:
        last = next((s for s in reversed(outcome.stderr_tail) if s.strip()), "")
        outcome.error = f"the engine process was {signal_text(outcome.returncode)}" + (
            f"; last output: {last}" if last else ""
        )
    elif outcome.returncode not in (0, 3) and not outcome.error and not outcome.cancelled:
        last = next((s for s in reversed(outcome.stderr_tail) if s.strip()), "")
        outcome.error = f"the engine stopped with status {outcome.returncode}: {last}"
    return outcome


def close_pipes(proc: subprocess.Popen, readers: list[threading.Thread]) -> None:
    """Close the pipes of a finished process once their readers are done (left open,
    each is a ResourceWarning with a traceback in QGIS's message log). A pipe a
    grandchild still holds is left to its reader thread."""
    if any(t.is_alive() for t in readers):
        return
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def default_engine_python(configured: str | None = None, fallback: str | None = None) -> str:
    """The engine's Python: the plugin setting, else ``$SOLARSEG_ENGINE_PYTHON`` (``make
    run`` points it at the project's .venv), else ``fallback`` (the environment the
    installer made in this profile, else QGIS's own Python: see ``engine_env``)."""
    return configured or os.environ.get(ENGINE_PYTHON_VAR) or fallback or sys.executable


__all__ = ["EngineOutcome", "run_engine", "engine_command", "default_engine_python", "close_pipes"]
