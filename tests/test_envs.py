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
    # the managed environment also gets the optional EXR writer, at the pin the `exr` extra names
    assert requirements.OPTIONAL_DEPENDENCIES == project["optional-dependencies"]["exr"]
    assert requirements.MANAGED_REQUIREMENTS == requirements.DEPENDENCIES + requirements.OPTIONAL_DEPENDENCIES


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
