"""Interpreter checks and the managed virtual environment (da3_blender.envs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from da3_blender.runtime import envs, requirements
from da3_blender.devices import resolve_device
from da3_blender.errors import BadInputError, MissingDependencyError

REPO = Path(__file__).resolve().parents[1]


def test_pins_equal_pyproject():
    with open(REPO / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    assert requirements.DEPENDENCIES == project["dependencies"]
    # the managed environment also gets the optional EXR writer, plate reader and camera solve, at the pins
    # the `exr`, `plates` and `solve` extras name
    extras = project["optional-dependencies"]
    assert requirements.OPTIONAL_DEPENDENCIES == extras["exr"]
    assert requirements.PLATES_DEPENDENCIES == extras["plates"] and requirements.SOLVE_DEPENDENCIES == extras["solve"]
    assert requirements.USD_DEPENDENCIES == extras["usd"] and requirements.MESH_DEPENDENCIES == extras["mesh"]
    assert requirements.MANAGED_REQUIREMENTS == (requirements.DEPENDENCIES + extras["exr"] + extras["plates"]
                                                 + extras["solve"] + extras["usd"] + extras["mesh"])
    # the test environment (Python 3.11, Linux x86_64) installs what the 3.11 rows of the table name
    here = requirements.requirements_for("3.11", "linux-x86_64")
    assert all(pin in here for pin in extras["test"] if requirements.requirement_name(pin) in
               {requirements.requirement_name(r) for r in requirements.MANAGED_REQUIREMENTS})


def test_the_table_picks_numpy_by_python_and_leaves_out_missing_wheels():
    """numpy 1.26.4 has no cp313 wheel (the first is 2.1.0), OpenImageIO >= 3.1 needs numpy 2, pycolmap has
    no Linux aarch64 wheel: the rows say so, and the worker only checks names (either numpy passes)."""
    rows = {(py, pf): requirements.requirements_for(py, pf) for py in requirements.PYTHONS
            for pf in requirements.PLATFORMS}
    assert len(rows) == 8
    for (py, pf), pins in rows.items():
        names = [requirements.requirement_name(p) for p in pins]
        assert len(names) == len(set(names)), (py, pf, pins)  # one pin per package and pair
        assert "torch==2.13.0" in pins and all(";" not in p for p in pins)
        numpy = next(p for p in pins if p.startswith("numpy=="))
        assert numpy == ("numpy==1.26.4" if py == "3.11" else "numpy==2.4.6"), (py, numpy)
        oiio = next(p for p in pins if p.startswith("OpenImageIO=="))
        assert oiio.startswith("OpenImageIO==3.0.") == (py == "3.11")
        assert ("pycolmap==4.2.1" in pins) == (pf != "linux-aarch64")
    custom = requirements.requirements_for("3.13", "windows-x86_64", managed=False)
    assert {requirements.requirement_name(p) for p in custom} == {
        requirements.requirement_name(p) for p in requirements.DEPENDENCIES}
    assert requirements.torch_index("macos-arm64", "cpu") is None  # PyPI's torch (MPS) on macOS
    assert requirements.torch_index("windows-x86_64", "cu128") == "https://download.pytorch.org/whl/cu128"
    assert envs.pip_install_args("cpu", requirements.DEPENDENCIES, platform="macos-arm64") == [
        requirements.DEPENDENCIES]
    with pytest.raises(ValueError, match="unsupported marker"):
        requirements.marker_applies('x==1; os_name == "nt"', "3.11", "linux-x86_64")


def _find_python(version: str) -> str | None:
    """A working ``python<version>`` with pip: on PATH, or a pyenv-installed one."""
    import glob

    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    for python in filter(None, candidates):
        if subprocess.run([python, "-m", "pip", "--version"], capture_output=True, timeout=60).returncode == 0:
            return python
    return None


def test_pip_picks_the_pins_for_the_interpreter_that_installs():
    """The markers, evaluated by pip for a Python 3.11 and a 3.13 target (no install: pip's resolver
    over the wheels it can see), give the table's rows."""
    import json

    with_pins = [r for r in requirements.DEPENDENCIES if requirements.requirement_name(r) == "numpy"]
    for py, want in (("3.11", "1.26.4"), ("3.13", "2.4.6")):
        python = _find_python(py)
        if python is None:
            pytest.skip(f"no Python {py} with pip here (pip evaluates markers for the Python that runs it)")
        report = Path(os.environ.get("TMPDIR", "/tmp")) / f"da3-pins-{os.getpid()}-{py}.json"
        proc = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                               "--only-binary=:all:", "--quiet", "--report", str(report), *with_pins],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads(report.read_text())["install"]
        report.unlink()
        assert [(i["metadata"]["name"], i["metadata"]["version"]) for i in got] == [("numpy", want)]


def test_check_current_interpreter():
    import torch

    report = envs.check_interpreter(sys.executable, timeout=60)
    assert report.ok, report.message
    assert report.torch == torch.__version__ and report.torch in report.message
    assert report.python_version == ".".join(map(str, sys.version_info[:3]))
    assert report.devices and report.devices[0]["id"] == "cpu"


def test_check_missing_interpreter(tmp_path):
    report = envs.check_interpreter(str(tmp_path / "no" / "python"))
    assert not report.ok and report.kind == "missing_dependency"
    assert "no Python at" in report.message and "\n" not in report.message


def test_check_non_python_executable():
    true = shutil.which("true")
    if true is None:
        pytest.skip("no 'true' executable here")
    report = envs.check_interpreter(true, timeout=30)
    assert not report.ok and report.kind == "missing_dependency"
    assert "could not start" in report.message and "exit status 0" in report.message


def test_check_python_without_torch(tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    report = envs.check_interpreter(envs.python_in(venv), timeout=60)
    assert not report.ok and report.kind == "missing_dependency"
    assert "torch is not installed" in report.message and "create its environment" in report.message
    assert report.hello is not None and report.hello["dependencies"]["numpy"] is None

    # a torch that is there but cannot import (a CUDA build missing its libraries)
    py = envs.python_in(venv)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (Path(site) / "torch").mkdir()
    (Path(site) / "torch" / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open shared object file')")
    report = envs.check_interpreter(py, timeout=60)
    assert not report.ok and "does not import" in report.message and "libcudart" in report.message


def test_failed_install_leaves_no_ready_marker(tmp_path):
    target = tmp_path / "env"
    target.mkdir()
    (target / envs.READY_MARKER).write_text("{}")  # a stale marker from an older install
    lines = []
    with pytest.raises(MissingDependencyError) as err:
        envs.create_environment(target, torch_variant=None, requirements=["definitely-not-a-real-package-xyz==0"],
                                pip_args=["--no-index", "--find-links", str(tmp_path)], progress=lines.append)
    assert "definitely-not-a-real-package-xyz" in str(err.value) and "\n" not in str(err.value)
    assert not (target / envs.READY_MARKER).exists() and not envs.is_ready(target)
    assert any("definitely-not-a-real-package-xyz" in line for line in lines)  # pip output was streamed


@pytest.mark.slow
def test_create_environment_with_the_real_pins(tmp_path):
    """The full install (torch from pip's configured indexes/wheels): about 30 s here."""
    target = tmp_path / "env"
    lines = []
    py = envs.create_environment(target, torch_variant=None, progress=lines.append)
    assert py == envs.python_in(target) and envs.is_ready(target)
    assert lines[-1].startswith("ready:") and "torch 2.13.0" in lines[-1]
    assert any("Successfully installed" in line for line in lines)
    assert not envs.is_ready(target, requirements=["torch==9.9"])  # new pins ask for a new environment


def test_torch_variant_index():
    steps = envs.pip_install_args("cu124", envs.DEPENDENCIES)
    assert steps[0][0].startswith("torch==") and "https://download.pytorch.org/whl/cu124" in steps[0]
    assert "--extra-index-url" in steps[0] and all(not r.startswith("torch") for r in steps[1])
    with pytest.raises(BadInputError):
        envs.pip_install_args("cuda-latest", envs.DEPENDENCIES)


def test_python_in_layout(tmp_path):
    expected = ("Scripts", "python.exe") if os.name == "nt" else ("bin", "python")
    assert Path(envs.python_in(tmp_path)).parts[-2:] == expected


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(BadInputError, match="unknown device"):
        resolve_device("tpu")
    if torch.version.cuda is None:
        with pytest.raises(BadInputError, match="CPU build"):
            resolve_device("cuda:1")
