"""The packages the worker's Python needs: one table, read by the managed environment, the
interpreter check, the worker's ``hello``, the remote set-up command and ``scripts/check_pins.py``.

Every supported (Python, platform) pair gets its pins from this table. The pins that differ by Python
carry a PEP 508 environment marker (``numpy==1.26.4; python_version < "3.13"``), so *pip run by the
interpreter that creates the environment* picks them: Blender's own Python (3.11 in Blender 4.2-5.0,
3.13 in 5.1+), a custom interpreter, or the remote one over SSH. :func:`requirements_for` evaluates the
same markers here for any pair (what ``check_pins.py`` asks the package index about).

Standard library only: the worker, the SSH client and the environment code all import it.
"""

from __future__ import annotations

import platform as _platform
import re
import sys
from dataclasses import dataclass

# numpy 1.26.4 has wheels up to CPython 3.12; the first numpy with cp313 wheels is 2.1.0. The worker and
# the core run with both (CI runs the worker-side tests under each: README "Supported Blender").
_NUMPY_1 = 'numpy==1.26.4; python_version < "3.13"'
_NUMPY_2 = 'numpy==2.4.6; python_version >= "3.13"'

# Must equal pyproject.toml [project].dependencies (tests/test_envs.py checks it).
DEPENDENCIES = [
    "torch==2.13.0",
    _NUMPY_1,
    _NUMPY_2,
    "pillow==11.3.0",
    "safetensors==0.8.0",
    "huggingface_hub==2.4.0",
    "imageio-ffmpeg==0.8.1",
]
# Installed in the managed environment too, but not required of a custom interpreter: OpenEXR writes the
# `exr` export (its absence is a one-line error when that format is asked for), OpenImageIO reads plates
# Pillow cannot (3.0.x needs no numpy 2; 3.1+ requires numpy >= 2, so the numpy-2 Pythons get 3.1),
# pycolmap solves cameras, usd-core writes the `usd` export (issue 28; wheels for 3.11 and 3.13 on all four
# platforms, checked with scripts/check_pins.py). Each must equal its pyproject extra (tests/test_envs.py).
OPTIONAL_DEPENDENCIES = ["OpenEXR==3.5.3"]
PLATES_DEPENDENCIES = ['OpenImageIO==3.0.21.0; python_version < "3.13"',
                       'OpenImageIO==3.1.19.0; python_version >= "3.13"']
SOLVE_DEPENDENCIES = ['pycolmap==4.2.1; platform_machine != "aarch64"']  # no Linux aarch64 wheels
USD_DEPENDENCIES = ["usd-core==26.11"]
MESH_DEPENDENCIES = ["scikit-image==0.26.0"]  # issue 27: marching cubes of the fused proxy mesh
MANAGED_REQUIREMENTS = (DEPENDENCIES + OPTIONAL_DEPENDENCIES + PLATES_DEPENDENCIES + SOLVE_DEPENDENCIES + USD_DEPENDENCIES
                        + MESH_DEPENDENCIES)
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
PYPI_INDEX = "https://pypi.org/simple"
TORCH_VARIANTS = ("cpu", "cu126", "cu128")  # the PyTorch index builds the preferences offer


@dataclass(frozen=True)
class Platform:
    """A platform the managed environment supports: how Python names it, the wheel tags pip may use
    for it (``--platform``), and where torch comes from (the PyTorch index's CPU/CUDA builds, or PyPI)."""

    sys_platform: str
    machine: str
    wheel_tags: tuple[str, ...]
    torch_from_pytorch_index: bool


def _manylinux(arch: str) -> tuple[str, ...]:
    """glibc 2.28 (Blender 4.2+'s Linux baseline) and every older manylinux tag."""
    return tuple(f"manylinux_2_{minor}_{arch}" for minor in range(28, 16, -1)) + (f"manylinux2014_{arch}",)


PYTHONS = ("3.11", "3.13")  # Blender 4.2-5.0 embed 3.11, Blender 5.1+ embed 3.13
PLATFORMS = {
    "linux-x86_64": Platform("linux", "x86_64", _manylinux("x86_64"), True),
    "linux-aarch64": Platform("linux", "aarch64", _manylinux("aarch64"), True),
    "windows-x86_64": Platform("win32", "AMD64", ("win_amd64",), True),
    # macOS 14+: torch 2.13.0's (and pycolmap 4.2.1's) macOS wheels need it; pip adds the older macosx tags
    "macos-arm64": Platform("darwin", "arm64", ("macosx_14_0_arm64",), False),
}


def requirement_name(requirement: str) -> str:
    """``"torch==2.13.0"`` -> ``"torch"``."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def current_platform() -> str | None:
    """The :data:`PLATFORMS` key of this machine, or None for one the table does not list."""
    machine = _platform.machine()
    for key, p in PLATFORMS.items():
        if sys.platform == p.sys_platform and machine.lower() == p.machine.lower():
            return key
    return None


_MARKER = re.compile(r'^\s*(python_version|sys_platform|platform_machine)\s*(==|!=|<=|>=|<|>)\s*"([^"]*)"\s*$')


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def marker_applies(requirement: str, python: str, platform: str) -> bool:
    """Whether ``requirement``'s environment marker (the ``and`` of simple comparisons, the only form this
    table uses) holds for ``python`` ("3.13") on ``platform`` (a :data:`PLATFORMS` key)."""
    if ";" not in requirement:
        return True
    p = PLATFORMS[platform]
    values = {"python_version": python, "sys_platform": p.sys_platform, "platform_machine": p.machine}
    for clause in requirement.split(";", 1)[1].split(" and "):
        match = _MARKER.match(clause)
        if match is None:
            raise ValueError(f"unsupported marker in {requirement!r}: keep to python_version/sys_platform/"
                             "platform_machine comparisons joined by 'and'")
        name, op, want = match.groups()
        have = values[name]
        a, b = (_version(have), _version(want)) if name == "python_version" else (have, want)
        if not {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]:
            return False
    return True


def requirements_for(python: str, platform: str, managed: bool = True) -> list[str]:
    """The pins (markers dropped) for ``python`` ("3.11") on ``platform`` (a :data:`PLATFORMS` key):
    the managed environment's (``managed``) or only those a custom interpreter must have."""
    wanted = MANAGED_REQUIREMENTS if managed else DEPENDENCIES
    return [r.split(";", 1)[0].strip() for r in wanted if marker_applies(r, python, platform)]


def torch_index(platform: str, variant: str | None) -> str | None:
    """The index torch comes from on ``platform`` for ``variant`` ("cpu", "cu128"; None: pip's own
    indexes): the PyTorch index on Linux and Windows, PyPI on macOS (its wheel has MPS; there is no CUDA)."""
    if variant is None or not PLATFORMS[platform].torch_from_pytorch_index:
        return None
    return TORCH_INDEX.format(variant=variant)
