"""The Python that runs the DA3 worker: check one, or create a managed virtual environment.

:func:`check_interpreter` asks a Python's worker for ``hello`` and says, in one line, what is wrong
and what to do. :func:`create_environment` makes a venv with the pinned dependencies (torch from
the PyTorch index for CUDA variants) and marks it ready only when the install *and* the check pass.
Standard library only (subprocess lists, never a shell).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BadInputError, MissingDependencyError
from .client import WorkerClient, WorkerError
from .requirements import DEPENDENCIES, MANAGED_REQUIREMENTS, PLATFORMS, PYPI_INDEX, current_platform, requirement_name, torch_index
from .ssh import remote_setup_command, sh_path

MIN_PYTHON = (3, 10)
READY_MARKER = "da3-ready.json"
_VARIANT_RE = re.compile(r"^(cpu|cu\d{3}|rocm\d+(\.\d+)*)$")


def python_in(directory: str | os.PathLike) -> str:
    """The interpreter of the venv in ``directory``."""
    if os.name == "nt":
        return os.path.join(os.fspath(directory), "Scripts", "python.exe")
    return os.path.join(os.fspath(directory), "bin", "python")


def is_ready(directory: str | os.PathLike, requirements: list[str] | None = None) -> bool:
    """True when ``directory`` holds an environment that installed and checked out for ``requirements``
    (default: the current pins, so a DA3 update with new pins asks for a new environment)."""
    marker = os.path.join(os.fspath(directory), READY_MARKER)
    try:
        with open(marker, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return False
    wanted = list(MANAGED_REQUIREMENTS if requirements is None else requirements)
    return os.path.isfile(python_in(directory)) and info.get("requirements") == wanted


@dataclass
class InterpreterReport:
    """What a Python can do for DA3. ``ok`` False -> ``message`` says what is wrong and what to do."""

    python: str
    ok: bool
    message: str
    kind: str | None = None  # an errors.ERROR_KINDS kind when not ok
    python_version: str | None = None
    torch: str | None = None
    cuda_build: str | None = None
    cuda_available: bool = False
    devices: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hello: dict[str, Any] | None = None


def check_interpreter(python: str, timeout: float = 60.0, remote=None) -> InterpreterReport:
    """Start the worker with ``python``, ask ``hello``, and judge the answer. ``remote``: a
    :class:`remote.RemoteSpec` whose Python is checked over SSH instead (``python`` is ignored)."""

    if remote is not None:
        return _check_remote(remote, timeout)
    python = os.path.abspath(os.path.expanduser(os.fspath(python)))
    if not os.path.exists(python):
        return InterpreterReport(python, False, f"no Python at {python}: choose an existing Python executable or "
                                 "let DA3 create its environment", "missing_dependency")
    if os.path.isdir(python) or not os.access(python, os.X_OK):
        return InterpreterReport(python, False, f"{python} is not an executable Python: choose the python "
                                 "executable itself (bin/python or Scripts\\python.exe)", "missing_dependency")
    client = WorkerClient(python=python)
    try:
        hello = client.hello(timeout=timeout)
    except WorkerError as exc:
        return InterpreterReport(python, False, f"{exc}: choose a Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ or let DA3 "
                                 "create its environment", exc.kind)
    finally:
        client.shutdown(timeout=10)
    return _judge(python, hello)


def _check_remote(remote, timeout: float) -> InterpreterReport:
    """check_interpreter for a remote worker: reach it over SSH, judge its hello, advise for that machine."""
    from ..errors import DA3Error

    where = f"{remote.python} on {remote.label}"
    client = WorkerClient(remote=remote)
    try:
        hello = client.hello(timeout=timeout)
    except DA3Error as exc:
        return InterpreterReport(where, False, str(exc), exc.kind)
    finally:
        client.shutdown(timeout=10)
    report = _judge(where, hello)
    missing = sorted(name for name, v in (hello.get("dependencies") or {}).items() if v is None)
    if not report.ok and missing and not (hello.get("torch_error") or "").count("does not import"):
        report.message = (f"{where} lacks {', '.join(missing)}: on {remote.host} run '{remote_setup_command()}' "
                          "and set the remote Python to ~/da3-env/bin/python")
    return report


def _judge(python: str, hello: dict[str, Any]) -> InterpreterReport:
    """An InterpreterReport from a worker's ``hello``."""
    cuda = hello.get("cuda") or {}
    report = InterpreterReport(python, True, "", None, hello.get("python"), hello.get("torch"), cuda.get("build"),
                               bool(cuda.get("available")), hello.get("devices") or [], [], hello)
    version = tuple(int(p) for p in (report.python_version or "0.0").split(".")[:2])
    missing = sorted(name for name, v in (hello.get("dependencies") or {}).items() if v is None)
    if version < MIN_PYTHON:
        report.ok, report.kind = False, "missing_dependency"
        report.message = (f"{python} is Python {report.python_version}; DA3 needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or "
                          "newer: choose a newer Python or let DA3 create its environment")
    elif report.torch is None and "does not import" in (hello.get("torch_error") or ""):
        report.ok, report.kind = False, "missing_dependency"
        report.message = f"{python}: {hello['torch_error']}"
    elif report.torch is None:
        report.ok, report.kind = False, "missing_dependency"
        report.message = (f"torch is not installed in {python}: let DA3 create its environment, or run "
                          f"{python} -m pip install {' '.join(DEPENDENCIES)}")
    elif missing:
        report.ok, report.kind = False, "missing_dependency"
        report.message = (f"{', '.join(missing)} missing in {python}: let DA3 create its environment, or pip install "
                          + " ".join(r for r in DEPENDENCIES if requirement_name(r) in missing))
    else:
        device = "CUDA" if report.cuda_available else ("MPS" if hello.get("mps") else "CPU only")
        report.message = f"Python {report.python_version}, torch {report.torch}, {device}"
    if report.cuda_build and not report.cuda_available:
        report.warnings.append(
            f"torch {report.torch} is built for CUDA {report.cuda_build} but no CUDA GPU is usable (NVIDIA driver "
            "missing or too old?): DA3 will run on the CPU; install or update the driver to use the GPU")
    return report


def pip_install_args(torch_variant: str | None, requirements: list[str], platform: str | None = None) -> list[list[str]]:
    """The ``pip install`` argument lists: torch from its index for a variant, then the rest. The pins keep
    their environment markers: pip, run by the environment's own Python, picks the ones for that Python.
    ``platform`` (a ``requirements.PLATFORMS`` key; default this machine's): macOS takes PyPI's torch."""
    if torch_variant is None:
        return [list(requirements)]
    if not _VARIANT_RE.match(torch_variant):
        raise BadInputError(f"unknown torch variant {torch_variant!r}: use cpu, cu118, cu121, cu124, cu126, ... or rocm6.2")
    platform = platform or current_platform()
    index = torch_index(platform, torch_variant) if platform in PLATFORMS else torch_index("linux-x86_64", torch_variant)
    if index is None:  # macOS: PyPI's torch (MPS), with the rest
        return [list(requirements)]
    torch_reqs = [r for r in requirements if requirement_name(r) == "torch"]
    rest = [r for r in requirements if requirement_name(r) != "torch"]
    steps = []
    if torch_reqs:
        steps.append(torch_reqs + ["--index-url", index, "--extra-index-url", PYPI_INDEX])
    if rest:
        steps.append(rest)
    return steps


def create_environment(directory: str | os.PathLike, torch_variant: str | None = "cpu", python: str | None = None,
                       progress: Callable[[str], None] | None = None, requirements: list[str] | None = None,
                       pip_args: list[str] | None = None, system_site_packages: bool = False,
                       check_timeout: float = 120.0) -> str:
    """Create (or repair) the venv in ``directory`` and return its Python.

    ``torch_variant``: "cpu", "cu124", ... (torch from the PyTorch index) or None (torch from pip's
    configured indexes, like the other packages). ``pip_args`` are added to every pip call
    (e.g. ``["--no-index", "--find-links", wheels]``). Raises :class:`MissingDependencyError` with
    pip's last error line when the install fails; the ready marker is written only on success.
    """
    directory = os.path.abspath(os.fspath(directory))
    requirements = list(MANAGED_REQUIREMENTS if requirements is None else requirements)
    steps = pip_install_args(torch_variant, requirements)
    say = progress or (lambda line: None)
    marker = os.path.join(directory, READY_MARKER)
    if os.path.exists(marker):
        os.unlink(marker)
    os.makedirs(directory, exist_ok=True)
    base = python or sys.executable
    venv_cmd = [base, "-m", "venv"] + (["--system-site-packages"] if system_site_packages else []) + [directory]
    say(f"creating the environment in {directory}")
    _run_streaming(venv_cmd, say, "creating the virtual environment")
    py = python_in(directory)
    for step in steps:
        say(f"installing {' '.join(a for a in step if not a.startswith('-') and '://' not in a)}")
        cmd = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               "--no-input"] + step + list(pip_args or [])
        _run_streaming(cmd, say, "installing the DA3 dependencies")
    say("checking the environment")
    report = check_interpreter(py, timeout=check_timeout)
    if not report.ok:
        raise MissingDependencyError(f"the new environment does not work: {report.message}")
    for line in report.warnings:
        say(f"warning: {line}")
    info = {"requirements": requirements, "torch_variant": torch_variant,
            "python": report.python_version, "torch": report.torch, "cuda_build": report.cuda_build,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = marker + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    os.replace(tmp, marker)
    say(f"ready: {report.message}")
    return py


def create_remote_environment(remote, torch_variant: str | None = "cu128", directory: str | None = None,
                              progress: Callable[[str], None] | None = None, requirements: list[str] | None = None,
                              pip_args: list[str] | None = None, check_timeout: float = 120.0) -> str:
    """:func:`create_environment` on a remote worker's machine, over SSH: a venv made by ``remote.python`` in
    ``directory`` (default ``<remote cache>/env``) with the pinned dependencies; returns its Python (a
    remote path) once its worker answers with everything present. One remote command line, built from
    shell-quoted pieces; pip's output streams to ``progress``."""
    import shlex
    from dataclasses import replace


    requirements = list(DEPENDENCIES if requirements is None else requirements)
    directory = directory or remote.cache_dir.rstrip("/") + "/env"
    say = progress or (lambda line: None)
    py = directory.rstrip("/") + "/bin/python"
    parts = [f"{sh_path(remote.python)} -m venv {sh_path(directory)}"]
    for step in pip_install_args(torch_variant, requirements, platform="linux-x86_64"):  # a Linux GPU box
        parts.append(f"{sh_path(py)} -m pip install --disable-pip-version-check --progress-bar off --no-input "
                     + " ".join(shlex.quote(a) for a in step + list(pip_args or [])))
    say(f"creating the environment in {directory} on {remote.label}")
    _run_streaming(remote.ssh_argv(" && ".join(parts)), say, f"setting up the environment on {remote.label}")
    say("checking the environment")
    report = check_interpreter(py, timeout=check_timeout, remote=replace(remote, python=py))
    if not report.ok:
        raise MissingDependencyError(f"the new environment on {remote.label} does not work: {report.message}")
    say(f"ready: {report.message}")
    return py


def _run_streaming(cmd: list[str], say: Callable[[str], None], doing: str) -> None:
    """Run ``cmd``, passing each output line to ``say``; MissingDependencyError on failure."""
    tail: deque[str] = deque(maxlen=40)
    env = os.environ.copy()
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    kwargs: dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, text=True, encoding="utf-8", errors="replace", **kwargs)
    except OSError as exc:
        raise MissingDependencyError(f"{doing} failed: cannot run {cmd[0]} ({exc.strerror or exc})") from None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                say(line)
        code = proc.wait()
    if code != 0:
        errors = [l for l in tail if l.lstrip().upper().startswith("ERROR")] or list(tail) or ["no output"]
        raise MissingDependencyError(f"{doing} failed (exit status {code}): {errors[-1].strip()}; check the network "
                                     "connection and the log above, then try again")


def remove_environment(directory: str | os.PathLike) -> None:
    """Delete a managed environment folder (only one that looks like a venv)."""
    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, "pyvenv.cfg")):
        shutil.rmtree(directory)
