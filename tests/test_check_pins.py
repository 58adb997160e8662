"""``scripts/check_pins.py``: pip's resolver asked, without installing, for a wheel of every pin per
(Python, platform); a missing one is named; the PyTorch index is "not reachable", never a pass, when it
does not answer. Needs the package index (CI reaches PyPI)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from da3_blender.runtime import requirements

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_pins.py"


@pytest.fixture(scope="module")
def check_pins():
    spec = importlib.util.spec_from_file_location("check_pins", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_pair_resolves_and_the_torch_index_is_not_a_pass_when_unreachable(check_pins):
    result = check_pins.check_pair("3.13", "windows-x86_64", torch_index_up=False)
    assert result["missing"] == [], result
    assert set(result["pins"]) == set(requirements.requirements_for("3.13", "windows-x86_64"))
    assert "numpy==2.4.6" in result["pins"] and all(c == "ok" for c in result["pins"].values())
    assert result["torch"] == {v: "not reachable" for v in requirements.TORCH_VARIANTS}


def test_a_pin_without_a_wheel_is_named(check_pins, monkeypatch, capsys):
    monkeypatch.setattr(requirements, "MANAGED_REQUIREMENTS",
                        ["numpy==1.26.4", 'numpy==1.26.4; python_version >= "3.13"'])  # 1.26.4 has no cp313 wheel
    monkeypatch.setattr(check_pins, "reachable", lambda url, timeout=10.0: False)
    code = check_pins.main(["--python", "3.13", "--platform", "linux-aarch64", "--platform", "macos-arm64"])
    out = capsys.readouterr()
    assert code == 1
    missing = [line for line in out.err.splitlines() if line.startswith("check_pins: missing:")]
    assert missing == ["check_pins: missing: Python 3.13 / linux-aarch64: numpy==1.26.4",
                       "check_pins: missing: Python 3.13 / macos-arm64: numpy==1.26.4"], out.err
    assert "not reachable" in out.out  # the Linux row's PyTorch index cells
