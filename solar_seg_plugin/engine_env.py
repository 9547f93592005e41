"""The engine's own Python environment: find QGIS's Python, choose the torch build,
and create an isolated venv with the engine's pinned packages.

Why an isolated environment: packages installed into a folder appended to QGIS's
``sys.path`` are shadowed by the system's older ones (a Debian sympy broke
segmentation-models-pytorch), and torch loaded into QGIS's process can take QGIS down
with it. The venv is made from QGIS's own Python *without* ``--system-site-packages``,
so nothing of the system's can shadow the engine's packages, and the plugin runs the
engine there as a subprocess (:mod:`.engine_process`).

The work is split so that it can be tested without a network or a GPU:

* :func:`build_plan` is pure: from what was detected (GPU, is the torch wheel index
  reachable, ``uv`` on PATH, ensurepip) and what the user set (folder, index URL,
  proxy) it returns an :class:`InstallPlan` (argv lists, the reason in one sentence).
* :func:`detect` gathers those facts (``nvidia-smi``, a 5 s probe of the index).
* :func:`run_plan` runs a plan's commands, streaming every output line to a callback,
  and stops on cancel.

No ``qgis`` import here; the dialog (:mod:`.dialogs.engine_dialog`) drives it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engine_process import close_pipes

PLUGIN_DIR = Path(__file__).resolve().parent
REQUIREMENTS = PLUGIN_DIR / "engine-requirements.txt"
ENV_FOLDER = "solarseg-engine"  # under the QGIS profile's python folder
DEFAULT_INDEX = "https://pypi.org/simple"
TORCH_INDEX = "https://download.pytorch.org/whl"
CPU_TAG = "cpu"
# pip: short timeouts and one retry, so an unreachable index fails in seconds, not the
# 411 s of silent retries a user met with pip's defaults (15 s x 5 retries per file).
PIP_TIMEOUT_S = 15
PIP_RETRIES = 1
PROBE_TIMEOUT_S = 5.0
NVIDIA_SMI_TIMEOUT_S = 5.0
# pip >= 24.1 prints download progress as "Progress <bytes> of <total>" lines
# (--progress-bar raw), which the dialog turns into a progress bar.
PIP_MIN = "pip>=24.1"
# Packages taken from the torch wheel index (the rest come from the default index).
TORCH_PACKAGES = ("torch", "torchvision", "numpy")

# CUDA builds of torch's wheel index, newest first, with the NVIDIA driver each needs
# (CUDA toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions", GA
# release): (tag, CUDA version, minimum Linux driver, minimum Windows driver).
CUDA_BUILDS: tuple[tuple[str, str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("cu130", "13.0", (580, 65, 6), (580, 88)),
    ("cu128", "12.8", (570, 26), (570, 65)),
    ("cu126", "12.6", (560, 28, 3), (560, 76)),
)
# Older drivers still run CUDA 12 builds through CUDA's minor-version compatibility
# (any driver >= 525.60.13 on Linux, >= 528.33 on Windows): the oldest build is used.
CUDA12_COMPAT_DRIVER = {"linux": (525, 60, 13), "win32": (528, 33)}


class EnvError(Exception):
    """Something the user must fix before the environment can be made (one line)."""


@dataclass(frozen=True)
class GpuInfo:
    """The first NVIDIA GPU ``nvidia-smi`` lists."""

    name: str
    driver: str

    @property
    def driver_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.driver)


@dataclass(frozen=True)
class Detected:
    """What the machine offers; the impure half of :func:`build_plan`'s input."""

    python: str | None  # QGIS's own interpreter, or None when not found
    gpu: GpuInfo | None = None
    torch_index_reachable: bool = True
    probe_message: str = ""
    uv: str | None = None
    has_ensurepip: bool = True
    osgeo_dir: str | None = None  # QGIS's GDAL bindings, copied into the environment


@dataclass
class InstallOptions:
    """What the user chose in the dialog (all optional)."""

    env_dir: Path
    index_url: str = ""  # replaces PyPI as the default index
    proxy: str = ""  # e.g. http://user:pass@proxy:3128


@dataclass(frozen=True)
class Step:
    """One command of a plan, with the title the progress bar shows."""

    title: str
    argv: list[str]


@dataclass
class InstallPlan:
    """Everything the installer will run, and why, before it runs anything."""

    env_dir: Path
    python: Path  # the environment's interpreter (becomes ``solarseg/engine_python``)
    steps: list[Step]
    reason: str  # one sentence: which torch build, from which index, and why
    torch_variant: str  # "cpu", a CUDA tag such as "cu128", or "default" (the index decides)
    torch_index: str  # where torch comes from
    tool: str  # "uv" or "venv + pip"
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables
    notes: list[str] = field(default_factory=list)
    blocked: str = ""  # set when the plan cannot run: what to fix, one line

    @property
    def commands(self) -> list[list[str]]:
        return [s.argv for s in self.steps]

    def describe(self) -> str:
        """The plan as text for the dialog and the log (commands as shell lines)."""
        lines = [self.blocked] if self.blocked else [self.reason, *self.notes]
        lines += [f"{i}. {s.title}: {command_text(s.argv)}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)


@dataclass
class RunResult:
    """How :func:`run_plan` ended."""

    ok: bool
    returncode: int | None = None
    failed_step: str = ""
    error: str = ""  # one line for the user when not ok
    cancelled: bool = False
    seconds: float = 0.0
    lines: int = 0


# --- small pure helpers ---------------------------------------------------------------
def version_tuple(text: str) -> tuple[int, ...]:
    """``"570.86.15"`` -> (570, 86, 15); non-numeric parts end the tuple."""
    out = []
    for part in text.strip().split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def command_text(argv: Sequence[str]) -> str:
    """An argv list as one line to paste into a terminal."""
    if os.name == "nt":
        return subprocess.list2cmdline(list(argv))
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def env_python(env_dir: Path, windows: bool = os.name == "nt") -> Path:
    """The interpreter of a venv folder."""
    return Path(env_dir) / ("Scripts/python.exe" if windows else "bin/python")


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """Requirement lines of a requirements file (comments and blanks dropped)."""
    reqs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(line)
    return reqs


def requirement_name(req: str) -> str:
    """``"numpy>=1.24,<2"`` -> ``"numpy"`` (normalised to lower case, ``_`` -> ``-``)."""
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def parse_nvidia_smi(text: str) -> GpuInfo | None:
    """First GPU of ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader``."""
    for line in text.splitlines():
        name, sep, driver = line.rpartition(",")
        if sep and name.strip() and version_tuple(driver):
            return GpuInfo(name.strip(), driver.strip())
    return None


def cuda_tag_for_driver(driver: str, platform: str = sys.platform) -> tuple[str | None, str]:
    """The newest CUDA build the driver can run, and why, or (None, why not)."""
    have = version_tuple(driver)
    windows = platform == "win32"
    for tag, cuda, linux_min, win_min in CUDA_BUILDS:
        need = win_min if windows else linux_min
        if have >= need:
            return tag, f"driver {driver} runs CUDA {cuda} (needs >= {_dotted(need)})"
    compat = CUDA12_COMPAT_DRIVER["win32" if windows else "linux"]
    oldest_tag, oldest_cuda = CUDA_BUILDS[-1][0], CUDA_BUILDS[-1][1]
    if have >= compat:
        return oldest_tag, (
            f"driver {driver} runs CUDA {oldest_cuda} through CUDA 12 minor-version "
            f"compatibility (>= {_dotted(compat)}); a newer driver is better"
        )
    return None, (
        f"driver {driver} is older than {_dotted(compat)}, the oldest that runs torch's "
        "CUDA builds: update the NVIDIA driver to train on the GPU"
    )


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(f"{x:02d}" if i == 2 else str(x) for i, x in enumerate(v))


def choose_torch_build(
    gpu: GpuInfo | None, platform: str = sys.platform
) -> tuple[str, str | None, str]:
    """(variant, wheel index or None for the default index, why) for this machine."""
    if platform == "darwin":
        return "default", None, "macOS: PyPI's torch is the CPU/Apple-GPU (MPS) build"
    if gpu is None:
        return CPU_TAG, f"{TORCH_INDEX}/{CPU_TAG}", "no NVIDIA GPU found (nvidia-smi)"
    tag, why = cuda_tag_for_driver(gpu.driver, platform)
    if tag is None:
        return CPU_TAG, f"{TORCH_INDEX}/{CPU_TAG}", f"NVIDIA {gpu.name} found, but its {why}"
    return tag, f"{TORCH_INDEX}/{tag}", f"NVIDIA {gpu.name} found: {why}"


# --- the plan -----------------------------------------------------------------------
def build_plan(
    detected: Detected,
    options: InstallOptions,
    requirements: Path = REQUIREMENTS,
    platform: str = sys.platform,
) -> InstallPlan:
    """The commands that make ``options.env_dir`` an engine environment (pure)."""
    windows = platform == "win32"
    env_dir = Path(options.env_dir)
    python = env_python(env_dir, windows)
    index = options.index_url.strip()
    default_index = index or DEFAULT_INDEX
    default_name = f"your index {index}" if index else "PyPI"
    variant, torch_index, why = choose_torch_build(detected.gpu, platform)
    notes: list[str] = []
    label = {CPU_TAG: "CPU"}.get(variant, f"CUDA ({variant})" if variant != "default" else "")
    if torch_index and not detected.torch_index_reachable:
        reason = (
            f"torch: from {default_name}, because {torch_index} cannot be reached "
            f"({detected.probe_message or 'no answer'}); wanted: the {label} build, as {why}."
        )
        if platform.startswith("linux"):
            notes.append(
                f"{default_name}'s Linux torch is the CUDA build: about 5 GB with the NVIDIA "
                "libraries instead of about 1 GB for the CPU build; it runs on the CPU too."
            )
        elif windows and variant != CPU_TAG:
            notes.append(f"{default_name}'s Windows torch is the CPU build: the GPU stays unused.")
        else:
            notes.append(f"{default_name}'s torch is a CPU build here.")
        variant, torch_index, label = "default", None, "default"
    elif torch_index:
        reason = f"torch: {label} build from {torch_index}, because {why}."
    else:
        reason, label = f"torch: from {default_name}, because {why}.", "default"
    reqs = read_requirements(requirements)
    torch_reqs = [r for r in reqs if requirement_name(r) in TORCH_PACKAGES]
    tool = "uv" if detected.uv else "venv + pip"
    plan = InstallPlan(env_dir, python, [], reason, variant, torch_index or default_index, tool,
                       notes=notes)  # fmt: skip

    if not detected.python:
        plan.blocked = (
            "QGIS's own Python interpreter was not found: choose 'Use an existing Python…' "
            "or install Python " + ".".join(map(str, sys.version_info[:2]))
        )
        return plan
    if env_dir.exists() and any(env_dir.iterdir()) and not (env_dir / "pyvenv.cfg").exists():
        plan.blocked = f"{env_dir} is not empty and not a Python environment: choose another folder"
        return plan
    if not detected.uv and not detected.has_ensurepip:
        plan.blocked = (
            f"{detected.python} -m venv cannot install pip (no ensurepip): install the "
            "package python3-venv (Debian/Ubuntu: sudo apt install python3-venv), or uv"
        )
        return plan

    proxy = options.proxy.strip()
    index_args = ["--index-url", index] if index else []
    torch_index_args = ["--extra-index-url", torch_index] if torch_index else []
    if detected.uv:
        uv = detected.uv
        plan.env = {"UV_HTTP_TIMEOUT": str(PIP_TIMEOUT_S), "UV_HTTP_RETRIES": str(PIP_RETRIES)}
        if proxy:
            plan.env.update(HTTPS_PROXY=proxy, HTTP_PROXY=proxy)
        # uv prefers --extra-index-url over --index-url: torch comes from torch's index.
        install = [uv, "pip", "install", "--python", str(python), *index_args]
        plan.steps = [
            Step("Create the environment",
                 [uv, "venv", "--allow-existing", "--python", detected.python, str(env_dir)]),
            Step(f"Install PyTorch ({label} build)", [*install, *torch_index_args, *torch_reqs]),
            Step("Install the engine packages", [*install, "-r", str(requirements)]),
        ]  # fmt: skip
    else:
        net = ["--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES)]
        net += ["--proxy", proxy] if proxy else []
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *net]
        progress = ["--progress-bar", "raw", *index_args]
        plan.steps = [
            Step("Create the environment", [detected.python, "-m", "venv", str(env_dir)]),
            Step("Update pip", [*pip, "--progress-bar", "off", *index_args, "--upgrade", PIP_MIN]),
            Step(f"Install PyTorch ({label} build)",
                 [*pip, *progress, *torch_index_args, *torch_reqs]),
            Step("Install the engine packages", [*pip, *progress, "-r", str(requirements)]),
        ]  # fmt: skip
    if detected.osgeo_dir:
        # The engine writes GeoTIFFs and GeoPackages with GDAL's bindings (osgeo), which
        # have no pip wheel: QGIS's own are copied in (same Python version, nothing else
        # of QGIS's site-packages becomes visible).
        plan.steps.append(Step("Copy QGIS's GDAL bindings (osgeo)",
                               [str(python), "-c", COPY_OSGEO, detected.osgeo_dir]))  # fmt: skip
    return plan


COPY_OSGEO = (
    "import shutil, sys, sysconfig, pathlib; "
    "dst = pathlib.Path(sysconfig.get_paths()['purelib']) / 'osgeo'; "
    "shutil.rmtree(dst, ignore_errors=True); "
    "shutil.copytree(sys.argv[1], dst, ignore=shutil.ignore_patterns('__pycache__')); "
    "print('copied', sys.argv[1], '->', dst)"
)


# --- detection (impure) ---------------------------------------------------------------
def python_candidates(
    executable: str = sys.executable,
    prefix: str = sys.exec_prefix,
    base_prefix: str = sys.base_prefix,
    version: tuple[int, int] = (sys.version_info[0], sys.version_info[1]),
    platform: str = sys.platform,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """Where QGIS's own interpreter may be, best first (nothing is checked here).

    Inside QGIS ``sys.executable`` is often QGIS itself, so the interpreter is looked for
    in the Python prefix: ``python.exe`` (OSGeo4W), ``bin/python3`` beside the binary
    (macOS bundle) or ``bin/python3.X`` / ``python3.X`` on PATH (Linux).
    """
    major, minor = version
    exe = Path(executable) if executable else None
    out: list[Path | str] = []
    if exe is not None and exe.name.lower().startswith("python"):
        out.append(exe)
    if platform == "win32":
        for p in (prefix, base_prefix):
            out += [Path(p) / "python.exe", Path(p) / "python3.exe"]
    else:
        for p in (prefix, base_prefix):
            out += [Path(p) / "bin" / f"python{major}.{minor}", Path(p) / "bin" / "python3"]
        if platform == "darwin" and exe is not None:
            out += [exe.parent / "bin" / "python3", exe.parent / "bin" / f"python{major}.{minor}"]
        found = which(f"python{major}.{minor}")
        if found:
            out.append(found)
        out.append(f"/usr/bin/python{major}.{minor}")
    seen: list[str] = []
    for c in map(str, out):
        if c not in seen:
            seen.append(c)
    return seen


def python_version(python: str, timeout: float = 30.0) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        major, minor = map(int, out.stdout.split())
        return major, minor
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def find_qgis_python(candidates: list[str] | None = None) -> str | None:
    """The first candidate that exists and has QGIS's Python version."""
    want = (sys.version_info[0], sys.version_info[1])
    for c in python_candidates() if candidates is None else candidates:
        if Path(c).is_file() and python_version(c) == want:
            return c
    return None


def detect_gpu(
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    timeout: float = NVIDIA_SMI_TIMEOUT_S,
) -> GpuInfo | None:
    """The NVIDIA GPU per ``nvidia-smi``, or None (no tool, no GPU, no answer in time)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else None


def probe_index(url: str, proxy: str = "", timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Can the wheel index be reached (within ``timeout``)? (ok, one-line why not).

    The system's proxy settings (``https_proxy`` ...) apply unless ``proxy`` is given.
    """
    handlers = []
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    opener = urllib.request.build_opener(*handlers)
    target = url.rstrip("/") + "/torch/"
    try:
        with opener.open(urllib.request.Request(target, method="HEAD"), timeout=timeout) as r:
            return 200 <= r.status < 400, "" if r.status < 400 else f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        return False, str(why) or type(exc).__name__


def has_ensurepip(python: str) -> bool:
    """Can ``python -m venv`` install pip? (Debian's Python cannot without python3-venv.)"""
    code = "import ensurepip, sys; sys.exit(0 if ensurepip.version() else 1)"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, timeout=30,
                             stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def qgis_osgeo_dir() -> str | None:
    """Folder of the GDAL bindings this Python imports (QGIS's), or None."""
    try:
        import osgeo
    except ImportError:
        return None
    return str(Path(osgeo.__file__).resolve().parent)


def detect(options: InstallOptions, python: str | None = None) -> Detected:
    """Look at the machine: QGIS's Python, GPU, uv, and the chosen torch index."""
    python = python or find_qgis_python()
    gpu = detect_gpu()
    _, torch_index, _ = choose_torch_build(gpu)
    reachable, why = (True, "")
    if torch_index:
        reachable, why = probe_index(torch_index, options.proxy.strip())
    uv = shutil.which("uv")
    ensurepip = bool(uv) or (python is not None and has_ensurepip(python))
    return Detected(python, gpu, reachable, why, uv, ensurepip, qgis_osgeo_dir())


# --- the runner -----------------------------------------------------------------------
LineFn = Callable[[int, str], None]  # (step index, output line)


def run_plan(
    plan: InstallPlan,
    on_line: LineFn = lambda _i, _s: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    on_step: Callable[[int, Step], None] = lambda _i, _s: None,
    grace_s: float = 5.0,
) -> RunResult:
    """Run the plan's steps in order, streaming stdout and stderr line by line.

    Stops at the first failing step; ``is_cancelled`` (polled ~5 times a second)
    terminates the running command, and kills it after ``grace_s``.
    """
    start = time.monotonic()
    if plan.blocked:
        return RunResult(False, error=plan.blocked)
    env = {**_clean_env(), **plan.env, "PYTHONUNBUFFERED": "1"}
    count = 0
    for i, step in enumerate(plan.steps):
        on_step(i, step)
        on_line(i, "$ " + command_text(step.argv))
        try:
            proc = subprocess.Popen(
                step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, text=True, errors="replace", bufsize=1,
            )  # fmt: skip
        except OSError as exc:
            return RunResult(False, None, step.title, f"{step.title}: cannot start "
                             f"{step.argv[0]}: {exc}", seconds=time.monotonic() - start)  # fmt: skip
        last: list[str] = []
        seen = [0]

        def pump(
            p: subprocess.Popen = proc, index: int = i, tail: list[str] = last, n: list = seen
        ) -> None:
            for raw in p.stdout:  # type: ignore[union-attr]
                line = raw.rstrip("\r\n")
                tail[:] = [*tail[-19:], line]
                n[0] += 1
                on_line(index, line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        cancelled_at: float | None = None
        while proc.poll() is None:
            if cancelled_at is None and is_cancelled():
                cancelled_at = time.monotonic()
                proc.terminate()
            elif cancelled_at is not None and time.monotonic() - cancelled_at > grace_s:
                proc.kill()
            reader.join(timeout=0.2)
        reader.join(timeout=5)
        close_pipes(proc, [reader])
        count += seen[0]
        seconds = time.monotonic() - start
        if cancelled_at is not None:
            return RunResult(False, proc.returncode, step.title, "cancelled", True, seconds, count)
        if proc.returncode != 0:
            return RunResult(False, proc.returncode, step.title,
                             failure_line(step.title, proc.returncode, last), seconds=seconds,
                             lines=count)  # fmt: skip
    return RunResult(True, 0, seconds=time.monotonic() - start, lines=count)


def failure_line(title: str, code: int, tail: list[str]) -> str:
    """One line saying why a step failed, naming the fix where it is known."""
    text = "\n".join(tail)
    if "ensurepip is not available" in text or "No module named ensurepip" in text:
        return f"{title}: Python's venv has no pip here; install the package python3-venv"
    errors = [s.strip() for s in tail if s.strip().lower().startswith(("error", "×", "x "))]
    last = errors[-1] if errors else next((s.strip() for s in reversed(tail) if s.strip()), "")
    return f"{title} failed (exit status {code})" + (f": {last}" if last else "")


_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")
_PACKAGE = re.compile(r"^\s*(Collecting|Downloading|Installing collected packages:|Using cached)"
                      r"\s*(\S+)")  # fmt: skip


def parse_progress(line: str) -> tuple[float | None, str]:
    """pip/uv output line -> (fraction of the current download or None, short status).

    ``Progress 5 of 10`` -> (0.5, ""); ``Collecting torch==2.14.1`` -> (None, "Collecting
    torch==2.14.1"); other lines -> (None, "").
    """
    m = _PROGRESS.match(line.strip())
    if m:
        done, total = int(m.group(1)), int(m.group(2))
        return (done / total if total else None), ""
    m = _PACKAGE.match(line)
    if m:
        return None, f"{m.group(1).rstrip(':')} {m.group(2)}"
    return None, ""


# What every engine command imports; :func:`engine_problem` looks for them.
ENGINE_MODULES = ("numpy", "yaml", "torch", "segmentation_models_pytorch", "rasterio")


def engine_problem(
    python: str, modules: Sequence[str] = ENGINE_MODULES, timeout: float = 30.0
) -> str:
    """ "" when ``python`` runs and has the engine's packages, else one line saying why.

    Only ``importlib.util.find_spec`` is used (a fraction of a second, nothing imported),
    so the plugin can ask before opening a tool; ``python -m ...core doctor`` is the full
    check (it imports everything).
    """
    if not python or not Path(python).is_file():
        return f"the engine's Python {python or '(none)'} does not exist"
    code = (
        "import importlib.util as u, sys; "
        "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    )
    try:
        out = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL, env=_clean_env())  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the engine's Python {python} does not run: {exc}"
    if out.returncode != 0:
        last = next((s for s in reversed(out.stderr.splitlines()) if s.strip()), "")
        return f"the engine's Python {python} does not run: {last or out.returncode}"
    missing = out.stdout.split()
    return f"the engine's Python {python} lacks {', '.join(missing)}" if missing else ""


def _clean_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    for key in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    return env


def fallback_python(profile_python_dir: Path) -> str:
    """The engine's Python when none is configured: the environment the installer makes
    in this profile if it exists, else QGIS's own interpreter (first candidate found)."""
    made = env_python(default_env_dir(profile_python_dir))
    if made.is_file():
        return str(made)
    return next((c for c in python_candidates() if Path(c).is_file()), sys.executable)


def default_env_dir(profile_python_dir: Path) -> Path:
    """``<profile>/python/solarseg-engine``: one environment per QGIS profile."""
    return Path(profile_python_dir) / ENV_FOLDER


__all__ = [
    "GpuInfo", "Detected", "InstallOptions", "Step", "InstallPlan", "RunResult",
    "build_plan", "detect", "run_plan", "find_qgis_python", "parse_nvidia_smi",
    "cuda_tag_for_driver", "probe_index", "parse_progress", "default_env_dir",
    "engine_problem", "fallback_python",
]  # fmt: skip
