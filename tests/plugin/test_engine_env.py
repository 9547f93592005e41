"""The engine environment installer: which commands it chooses (CPU, CUDA, custom index,
proxy, unreachable index, uv), the runner on real commands (streamed lines, exit status,
cancel), and the dialog checking the project's real venv with the doctor."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from solar_seg_plugin import engine_env as ee
from solar_seg_plugin.engine_env import Detected, GpuInfo, InstallOptions, Step

from .conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
# The project's venv (it has every engine package); the tests themselves run in it.
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
if not PROJECT_PYTHON.is_file():  # a git worktree: the venv of the interpreter running us
    PROJECT_PYTHON = Path(sys.executable)
QGIS_PY = "/usr/bin/python3.11"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1", "numpy>=1.24,<2"]


def plan_for(tmp_path: Path, platform: str = "linux", **kw) -> ee.InstallPlan:
    opts = {k: kw.pop(k) for k in ("index_url", "proxy") if k in kw}
    detected = Detected(python=kw.pop("python", QGIS_PY), **kw)
    return ee.build_plan(detected, InstallOptions(tmp_path / "env", **opts), platform=platform)


def pip_steps(plan: ee.InstallPlan) -> list[list[str]]:
    return [c for c in plan.commands if c[1:4] == ["-m", "pip", "install"]]


# --- command selection ----------------------------------------------------------------
def test_cpu_plan_without_gpu(tmp_path):
    plan = plan_for(tmp_path, gpu=None, torch_index_reachable=True)
    env_py = str(tmp_path / "env" / "bin" / "python")
    assert (
        plan.torch_variant == "cpu" and plan.torch_index == CPU_INDEX and plan.tool == "venv + pip"
    )
    assert (
        plan.reason
        == f"torch: CPU build from {CPU_INDEX}, because no NVIDIA GPU found (nvidia-smi)."
    )
    assert plan.python == Path(env_py) and not plan.blocked and plan.notes == []
    create, update, torch, rest = plan.commands
    assert create == [QGIS_PY, "-m", "venv", str(tmp_path / "env")]  # isolated: no system site
    assert "--system-site-packages" not in create
    net = ["--timeout", "15", "--retries", "1"]
    assert update == [env_py, "-m", "pip", "install", "--disable-pip-version-check", *net,
                      "--progress-bar", "off", "--upgrade", "pip>=24.1"]  # fmt: skip
    assert torch == [env_py, "-m", "pip", "install", "--disable-pip-version-check", *net,
                     "--progress-bar", "raw", "--extra-index-url", CPU_INDEX, *TORCH_PINS]  # fmt: skip
    assert rest[-2:] == ["-r", str(ee.REQUIREMENTS)] and "--extra-index-url" not in rest
    assert "--proxy" not in " ".join(map(" ".join, plan.commands))
    assert "--index-url" not in torch and "--index-url" not in rest


def test_requirements_file_pins_the_engine_stack():
    reqs = ee.read_requirements()
    names = [ee.requirement_name(r) for r in reqs]
    assert "torch==2.14.1" in reqs and "segmentation-models-pytorch==0.5.0" in reqs
    assert "numpy>=1.24,<2" in reqs
    for needed in ("torchvision", "rasterio", "onnxruntime", "pyyaml", "matplotlib",
                   "scikit-learn", "onnx", "ukis-csmask"):  # fmt: skip
        assert needed in names, needed
    assert not {"pytest", "pytest-qgis", "ruff"} & set(names)  # no test/lint tools


@pytest.mark.parametrize(
    ("smi", "platform", "tag"),
    [
        ("NVIDIA GeForce RTX 4090, 580.95.05\n", "linux", "cu130"),
        ("NVIDIA RTX A2000, 570.86.15\n", "linux", "cu128"),
        ("Tesla T4, 560.35.03\n", "linux", "cu126"),
        ("Tesla T4, 535.183.01\n", "linux", "cu126"),  # CUDA 12 minor-version compatibility
        ("NVIDIA GeForce RTX 3060, 572.16\n", "win32", "cu128"),
        ("NVIDIA GeForce RTX 3060, 566.36\n", "win32", "cu126"),
    ],
)
def test_cuda_plan_matches_the_driver(tmp_path, smi, platform, tag):
    gpu = ee.parse_nvidia_smi(smi)
    name, driver = smi.strip().rsplit(", ", 1)
    assert gpu == GpuInfo(name, driver)
    plan = plan_for(tmp_path, platform=platform, gpu=gpu, torch_index_reachable=True)
    index = f"https://download.pytorch.org/whl/{tag}"
    assert plan.torch_variant == tag and plan.torch_index == index
    assert plan.reason.startswith(f"torch: CUDA ({tag}) build from {index}, because NVIDIA {name}")
    (torch,) = [c for c in plan.commands if "torch==2.14.1" in c]
    assert torch[torch.index("--extra-index-url") + 1] == index
    if platform == "win32":
        assert plan.python == tmp_path / "env" / "Scripts" / "python.exe"


def test_old_driver_or_no_answer_means_cpu(tmp_path, monkeypatch):
    plan = plan_for(tmp_path, gpu=GpuInfo("Tesla K80", "470.256.02"), torch_index_reachable=True)
    assert plan.torch_variant == "cpu" and plan.torch_index == CPU_INDEX
    assert "driver 470.256.02 is older than 525.60.13" in plan.reason
    assert ee.parse_nvidia_smi("") is None
    assert ee.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate\n") is None
    # nvidia-smi present but hanging: the short timeout gives "no GPU"
    monkeypatch.setattr(ee.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def hang(*_a, **kw):
        raise subprocess.TimeoutExpired("nvidia-smi", kw["timeout"])

    assert ee.detect_gpu(run=hang) is None
    ok = subprocess.CompletedProcess([], 0, stdout="NVIDIA L4, 570.124.06\n")
    assert ee.detect_gpu(run=lambda *_a, **_k: ok) == GpuInfo("NVIDIA L4", "570.124.06")


def test_custom_index_and_proxy_on_every_pip_command(tmp_path):
    mirror = "https://mirror.example.org/pypi/simple"
    proxy = "http://user:pw@proxy.example.org:3128"
    plan = plan_for(tmp_path, gpu=None, index_url=mirror, proxy=proxy)
    steps = pip_steps(plan)
    assert len(steps) == 3
    for cmd in steps:
        assert cmd[cmd.index("--index-url") + 1] == mirror
        assert cmd[cmd.index("--proxy") + 1] == proxy
    (torch,) = [c for c in steps if "torch==2.14.1" in c]
    assert torch[torch.index("--extra-index-url") + 1] == CPU_INDEX  # torch's index still first


def test_unreachable_index_falls_back_to_the_default_index(tmp_path):
    plan = plan_for(tmp_path, gpu=None, torch_index_reachable=False,
                    probe_message="Name or service not known")  # fmt: skip
    assert plan.torch_variant == "default" and plan.torch_index == "https://pypi.org/simple"
    assert plan.reason == (
        f"torch: from PyPI, because {CPU_INDEX} cannot be reached (Name or service not known); "
        "wanted: the CPU build, as no NVIDIA GPU found (nvidia-smi)."
    )
    # Linux: PyPI's torch is the big one, and the plan says so
    assert plan.notes == ["PyPI's Linux torch is the CUDA build: about 5 GB with the NVIDIA "
                          "libraries instead of about 1 GB for the CPU build; it runs on the CPU too."]  # fmt: skip
    assert plan.steps[2].title == "Install PyTorch (default build)"
    assert not [c for c in plan.commands if "--extra-index-url" in c]
    # on Windows PyPI's torch is the CPU build; with the user's index the fallback names it
    win = plan_for(
        tmp_path, "win32", gpu=None, torch_index_reachable=False, index_url="https://m/simple"
    )
    assert win.reason.startswith("torch: from your index https://m/simple, because")
    assert win.notes == ["your index https://m/simple's torch is a CPU build here."]
    cuda = plan_for(tmp_path, "win32", gpu=GpuInfo("RTX", "572.16"), torch_index_reachable=False)
    assert cuda.torch_variant == "default" and "wanted: the CUDA (cu128) build" in cuda.reason
    assert cuda.notes == ["PyPI's Windows torch is the CPU build: the GPU stays unused."]
    mac = plan_for(tmp_path, "darwin", gpu=None)
    assert mac.reason == (
        "torch: from PyPI, because macOS: PyPI's torch is the CPU/Apple-GPU (MPS) build."
    )


def test_uv_plan(tmp_path):
    plan = plan_for(tmp_path, gpu=None, uv="/opt/bin/uv", proxy="http://proxy:3128",
                    has_ensurepip=False)  # fmt: skip
    env_py = str(tmp_path / "env" / "bin" / "python")
    assert plan.tool == "uv" and not plan.blocked  # uv needs no ensurepip
    create, torch, rest = plan.commands
    assert create == ["/opt/bin/uv", "venv", "--allow-existing", "--python", QGIS_PY,
                      str(tmp_path / "env")]  # fmt: skip
    assert torch == ["/opt/bin/uv", "pip", "install", "--python", env_py,
                     "--extra-index-url", CPU_INDEX, *TORCH_PINS]  # fmt: skip
    assert rest == ["/opt/bin/uv", "pip", "install", "--python", env_py, "-r", str(ee.REQUIREMENTS)]
    assert plan.env == {"UV_HTTP_TIMEOUT": "15", "UV_HTTP_RETRIES": "1",
                        "HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128"}  # fmt: skip


def test_blocked_plans_say_what_to_fix(tmp_path):
    no_venv = plan_for(tmp_path, has_ensurepip=False)
    assert no_venv.blocked == (
        f"{QGIS_PY} -m venv cannot install pip (no ensurepip): install the package "
        "python3-venv (Debian/Ubuntu: sudo apt install python3-venv), or uv"
    )
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "notes.txt").write_text("mine")
    busy = plan_for(tmp_path)
    assert (
        busy.blocked
        == f"{tmp_path / 'env'} is not empty and not a Python environment: choose another folder"
    )
    assert busy.steps == [] and ee.run_plan(busy).error == busy.blocked
    assert "not found" in plan_for(tmp_path, python=None).blocked
    assert "python3-venv" in ee.failure_line(
        "Create the environment", 1,
        ["The virtual environment was not created successfully because ensurepip is not",
         "available.  On Debian/Ubuntu systems, you need to install the python3-venv"],
    )  # fmt: skip


def test_osgeo_step_only_when_qgis_has_it(tmp_path):
    plan = plan_for(tmp_path, osgeo_dir="/usr/lib/python3/dist-packages/osgeo")
    last = plan.steps[-1]
    assert last.title == "Copy QGIS's GDAL bindings (osgeo)"
    assert (
        last.argv[0] == str(plan.python) and last.argv[-1] == "/usr/lib/python3/dist-packages/osgeo"
    )
    assert "osgeo" not in plan_for(tmp_path).steps[-1].title


def test_qgis_python_candidates():
    linux = ee.python_candidates("/usr/bin/qgis", "/usr", "/usr", (3, 11), "linux", lambda n: None)
    assert linux[:2] == ["/usr/bin/python3.11", "/usr/bin/python3"]
    win = ee.python_candidates(r"C:\OSGeo4W\bin\qgis-bin.exe", r"C:\OSGeo4W\apps\Python312",
                               r"C:\OSGeo4W\apps\Python312", (3, 12), "win32", lambda n: None)  # fmt: skip
    assert win[0] == str(Path(r"C:\OSGeo4W\apps\Python312") / "python.exe")
    mac = ee.python_candidates("/Applications/QGIS.app/Contents/MacOS/QGIS", "/x", "/x", (3, 12),
                               "darwin", lambda n: None)  # fmt: skip
    assert "/Applications/QGIS.app/Contents/MacOS/bin/python3" in mac
    # a python found on PATH with the same version is a candidate; the real check runs it
    assert ee.find_qgis_python(["/no/such/python", sys.executable]) == sys.executable
    assert ee.python_version(sys.executable) == tuple(sys.version_info[:2])


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_HEAD(self):  # noqa: N802 (http.server API)
        self.seen.append(self.path)
        self.send_response(200 if "/torch/" in self.path else 404)
        self.end_headers()

    def log_message(self, *_a):
        pass


def test_probe_index_answers_within_the_timeout():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert ee.probe_index(f"http://127.0.0.1:{port}/whl/cpu") == (True, "")
        # through a proxy: the request for a host that does not exist reaches the proxy
        ok, _ = ee.probe_index("http://index.invalid/whl/cpu", proxy=f"http://127.0.0.1:{port}")
        assert ok and _Handler.seen[-1] == "http://index.invalid/whl/cpu/torch/"
    finally:
        server.shutdown()
        server.server_close()
    start = time.monotonic()
    ok, why = ee.probe_index(f"http://127.0.0.1:{port}/whl/cpu", timeout=2)  # nobody listens
    assert not ok and "refused" in why.lower() and time.monotonic() - start < 3


def test_parse_progress():
    assert ee.parse_progress("Progress 262144 of 876263") == (262144 / 876263, "")
    assert ee.parse_progress("Collecting torch==2.14.1") == (None, "Collecting torch==2.14.1")
    assert ee.parse_progress("  Downloading rasterio-1.4.4-cp311.whl (22.9 MB)")[1] == (
        "Downloading rasterio-1.4.4-cp311.whl"
    )
    assert ee.parse_progress("Requirement already satisfied: numpy") == (None, "")


# --- the runner on real commands ------------------------------------------------------
def make_wheel(folder: Path, name: str = "solarseg_demo_pkg", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (installable offline, no build step)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            z.writestr(path, text)
    return wheel


def test_runner_makes_a_real_isolated_environment(tmp_path):
    """venv (no pip: cheap), pip from outside installs a local wheel into it, QGIS's
    osgeo is copied in: every line streamed, and the environment sees none of ours."""
    env = tmp_path / "env"
    py = ee.env_python(env)
    wheel = make_wheel(tmp_path)
    base = sys.executable
    plan = ee.build_plan(Detected(base, osgeo_dir=ee.qgis_osgeo_dir()), InstallOptions(env))
    plan.steps = [
        Step("Create the environment", [base, "-m", "venv", "--without-pip", str(env)]),
        Step("Install the engine packages", [base, "-m", "pip", "--python", str(py), "install",
             "--no-index", "--no-deps", "--progress-bar", "off", str(wheel)]),
        plan.steps[-1],  # copy osgeo
        Step("Check", [str(py), "-c", "import sys, solarseg_demo_pkg as d, osgeo.gdal as g; "
             "print('prefix', sys.prefix, d.VALUE, g.__version__); import numpy"]),
    ]  # fmt: skip
    lines: list[tuple[int, str]] = []
    steps: list[str] = []
    result = ee.run_plan(
        plan, lambda i, s: lines.append((i, s)), on_step=lambda i, s: steps.append(s.title)
    )
    assert steps == [s.title for s in plan.steps]
    assert lines[0] == (0, "$ " + ee.command_text(plan.steps[0].argv))
    text = [s for _, s in lines]
    assert "Successfully installed solarseg-demo-pkg-0.1" in text
    from osgeo import gdal

    assert f"prefix {env} 42 {gdal.__version__}" in text
    # the last step fails: numpy (of the system and of our venv) is not visible there
    assert not result.ok and result.returncode == 1 and result.failed_step == "Check"
    assert (
        result.error == "Check failed (exit status 1): ModuleNotFoundError: No module named 'numpy'"
    )
    assert result.lines == len([1 for i, s in lines if not s.startswith("$ ")])
    assert (env / "pyvenv.cfg").read_text().count("include-system-site-packages = false") == 1


def test_runner_stops_at_the_first_failure_and_on_cancel(tmp_path):
    py = sys.executable
    plan = ee.InstallPlan(tmp_path, Path(py), [
        Step("Fail", [py, "-c", "import sys; print('ERROR: No matching distribution found for "
                                 "torch==9'); print('bye'); sys.exit(3)"]),
        Step("Never", [py, "-c", "print('should not run')"]),
    ], "why", "cpu", CPU_INDEX, "venv + pip")  # fmt: skip
    lines: list[str] = []
    result = ee.run_plan(plan, lambda _i, s: lines.append(s))
    assert (result.ok, result.returncode, result.failed_step) == (False, 3, "Fail")
    assert (
        result.error
        == "Fail failed (exit status 3): ERROR: No matching distribution found for torch==9"
    )
    assert "should not run" not in lines

    plan.steps = [
        Step("Sleep", [py, "-c", "import time; print('started', flush=True); time.sleep(120)"])
    ]
    lines.clear()
    start = time.monotonic()
    result = ee.run_plan(
        plan, lambda _i, s: lines.append(s), is_cancelled=lambda: "started" in lines
    )
    assert result.cancelled and not result.ok and result.error == "cancelled"
    assert result.returncode is not None and result.returncode < 0  # terminated
    assert time.monotonic() - start < 20
    missing = ee.run_plan(ee.InstallPlan(tmp_path, Path(py), [Step("Run", ["/no/such/uv", "venv"])],
                                         "", "cpu", "", "uv"))  # fmt: skip
    assert missing.error.startswith("Run: cannot start /no/such/uv: ")


def test_runner_closes_the_pipes_of_its_steps(tmp_path):
    import gc
    import warnings

    py = sys.executable
    steps = [Step("One", [py, "-c", "print('a')"]), Step("Two", [py, "-c", "print('b')"])]
    plan = ee.InstallPlan(tmp_path, Path(py), steps, "", "cpu", "", "pip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = ee.run_plan(plan)
        gc.collect()
    assert result.ok and result.lines == 2
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_engine_problem_of_a_python(tmp_path):
    assert ee.engine_problem(str(PROJECT_PYTHON)) == ""
    assert (
        ee.engine_problem(str(tmp_path / "nope"))
        == f"the engine's Python {tmp_path / 'nope'} does not exist"
    )
    bare = tmp_path / "bare"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120
    )
    py = ee.env_python(bare)
    assert ee.engine_problem(str(py)) == (
        f"the engine's Python {py} lacks numpy, yaml, torch, segmentation_models_pytorch, rasterio"
    )


# --- the dialog -----------------------------------------------------------------------
def test_dialog_checks_the_real_venv_and_copies_the_report(qgis_app, tmp_path):
    import segmentation_models_pytorch as smp
    import torch
    from qgis.PyQt.QtGui import QGuiApplication

    from solar_seg_plugin.common import Settings
    from solar_seg_plugin.dialogs.engine_dialog import EngineDialog

    dlg = EngineDialog(str(tmp_path / "missing" / "python"), env_dir=tmp_path / "env")
    try:
        dlg.check()  # a Python that does not exist: one line, not a crash
        wait_until(lambda: dlg.doctor is None, 60, "doctor")
        assert dlg.report is None and "NOT ready" in dlg.report_edit.toPlainText()
        assert "missing/python" in dlg.status_label.text()
        assert dlg.install_group.isVisibleTo(dlg)  # not ready: the installer is offered
        assert not dlg.show_install_button.isVisibleTo(dlg)

        dlg.use_python(str(PROJECT_PYTHON))  # "Use an existing Python…", then Check again
        assert Settings().get("engine_python", "", str) == str(PROJECT_PYTHON)
        # while the doctor runs, the seconds it has taken (torch's first import is slow)
        assert f"Checking {PROJECT_PYTHON} … 0 s" in dlg.status_label.text()
        assert dlg.check_timer.isActive()
        wait_until(lambda: dlg.doctor is None, 240, "doctor")
        report = dlg.report_edit.toPlainText()
        assert dlg.report is not None and dlg.report["ok"], report
        assert report.splitlines()[0].split() == ["engine", "ready"]
        assert f"torch                        {torch.__version__}" in report
        assert f"segmentation-models-pytorch  {smp.__version__}" in report
        assert f"Ready: torch {torch.__version__}" in dlg.status_label.text()
        assert not dlg.check_timer.isActive()
        # ready: the installer is folded away, one button brings it back
        assert not dlg.install_group.isVisibleTo(dlg) and not dlg.install_button.isVisibleTo(dlg)
        dlg.show_install_button.click()
        assert dlg.install_group.isVisibleTo(dlg) and dlg.install_button.isVisibleTo(dlg)
        assert not dlg.show_install_button.isVisibleTo(dlg)

        dlg.show_plan(plan_for(tmp_path, gpu=None, torch_index_reachable=False))
        assert "cannot be reached" in dlg.plan_label.text() and dlg.install_button.isEnabled()
        dlg.copy_report()
        copied = QGuiApplication.clipboard().text()
        assert copied.startswith(dlg.report_text) and "installer plan:" in copied
    finally:
        dlg.shutdown()
        dlg.deleteLater()


def test_dialog_install_runs_the_plan_and_switches_the_engine(qgis_app, tmp_path):
    from solar_seg_plugin.common import Settings
    from solar_seg_plugin.dialogs.engine_dialog import EngineDialog

    env = tmp_path / "env"
    py = ee.env_python(env)
    dlg = EngineDialog(str(PROJECT_PYTHON), env_dir=env)
    base = sys.executable
    plan = ee.build_plan(Detected(base), InstallOptions(env))
    plan.steps = [
        Step("Create the environment", [base, "-m", "venv", "--without-pip", str(env)]),
        Step("Install", [base, "-c", "print('Collecting torch==2.14.1'); print('Progress 5 of 10')"]),
    ]  # fmt: skip
    try:
        dlg.show_plan(plan)
        dlg.install_button.click()
        assert dlg.cancel_button.isEnabled() and not dlg.install_button.isEnabled()
        wait_until(lambda: dlg.result is not None, 120, "install")
        assert dlg.result.ok, dlg.result.error
        log = dlg.log_edit.toPlainText()
        assert "Collecting torch==2.14.1" in log and log.rstrip().endswith(str(py))
        assert dlg.progress_bar.value() == 1000
        # the new environment becomes the engine's Python, and is checked at once
        assert Settings().get("engine_python", "", str) == str(py) == dlg.python
        wait_until(lambda: dlg.doctor is None, 60, "doctor")
        assert dlg.report is not None and not dlg.report["ok"]  # doctor ran: no packages
        assert dlg.report["packages"]["torch"] == "missing" and "NOT ready" in dlg.report_text

        # cancel: the running step is terminated, the dialog says so
        plan.steps = [
            Step("Sleep", [base, "-c", "import time; print('go', flush=True); time.sleep(120)"])
        ]
        dlg.result = None
        dlg.show_plan(plan)
        dlg.install()
        wait_until(lambda: "go" in dlg.log_edit.toPlainText(), 60, "the step to start")
        dlg.cancel_button.click()
        wait_until(lambda: dlg.result is not None, 30, "cancel")
        assert dlg.result.cancelled and "Cancelled." in dlg.step_label.text()
    finally:
        dlg.shutdown()
        dlg.deleteLater()


def test_dialog_switching_python_during_a_check_reports_the_new_one(qgis_app, tmp_path):
    """ "Use an existing Python…" while the first check still runs: the report, the status
    and ``engine_ready`` are those of the new Python, never the old check's."""
    from solar_seg_plugin.dialogs.engine_dialog import EngineDialog

    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    dlg = EngineDialog(str(slow), env_dir=tmp_path / "env")
    ready: list[str] = []
    dlg.engine_ready.connect(ready.append)
    try:
        dlg.check()
        old = dlg.doctor
        assert old is not None
        dlg.use_python(str(PROJECT_PYTHON))
        assert dlg.doctor is not None and dlg.doctor is not old
        wait_until(lambda: dlg.doctor is None, 240, "doctor")
        assert dlg.report is not None and dlg.report["ok"], dlg.report_text
        assert str(PROJECT_PYTHON) in dlg.report_text and "Ready" in dlg.status_label.text()
        assert ready == [str(PROJECT_PYTHON)] and dlg.check_button.isEnabled()
    finally:
        dlg.shutdown()
        dlg.deleteLater()
