"""Shared test fixtures: where the reference material (../shared) lives, and skips when it is absent.

The reference data (DA3 fixtures, example media) sits beside the checkout in ``../shared``. A user's
clone may not have it: tests that need it are *skipped* with a reason that says so, never passed.
Set ``DA3_SHARED`` to point elsewhere.

``DA3_REQUIRE_ALL=1`` (set by ``.ci/run``) turns those skips -- missing reference data, or a missing
bpy / torch module -- into failures, so CI cannot pass by skipping. Skips for the machine (no
``blender`` executable on PATH, POSIX-only behaviour) stay skips.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# the camera-solve shots are rendered once per session for every module that uses them (a fixture
# imported into each test module would be a separate fixture per module, rendered again)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_helpers import nodal_shot, shot  # noqa: E402,F401


def _shared_root() -> Path:
    env = os.environ.get("DA3_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


SHARED = _shared_root()
REQUIRE_ALL_ENV = "DA3_REQUIRE_ALL"
# skip reasons that mean "the set-up is incomplete", not "this machine cannot do it"
REQUIRED_SKIP_MARKERS = ("reference data not found", "bpy", "'torch'", "blender_ext.py", "OpenSSH server",
                         "node executable",  # issue 20: the Flamenco job type is compiled in Node
                         "web browser tools missing", "the app extra")  # issue 21: chromium, playwright, gradio


def _require_all() -> bool:
    return os.environ.get(REQUIRE_ALL_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_required_skip(report) -> None:
    if _require_all() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if any(marker in reason for marker in REQUIRED_SKIP_MARKERS):
            report.outcome = "failed"
            report.longrepr = f"{REQUIRE_ALL_ENV}=1 (CI) does not allow this skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_required_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_required_skip(outcome.get_result())


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (clone the project beside its shared/ folder or set DA3_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def da3_ref(shared_dir) -> Path:
    """../shared/da3: ARCHITECTURE.md, keys/, fixtures/, examples/."""
    return _need(shared_dir / "da3")


@pytest.fixture(scope="session")
def keys_dir(da3_ref) -> Path:
    return _need(da3_ref / "keys")


@pytest.fixture(scope="session")
def fixture_dir(da3_ref) -> Path:
    """The DA3-SMALL random-weight checkpoint (HF layout) and the official outputs."""
    return _need(da3_ref / "fixtures" / "da3-small-random")


@pytest.fixture(scope="session")
def examples_dir(da3_ref) -> Path:
    return _need(da3_ref / "examples")


@pytest.fixture(scope="session")
def soh_images(examples_dir) -> list[Path]:
    return [_need(examples_dir / "SOH" / "000.png"), _need(examples_dir / "SOH" / "010.png")]


@pytest.fixture(scope="session")
def robot_frames(examples_dir) -> list[Path]:
    return [_need(examples_dir / "robot_frames" / f"robot_unitree_f{i:03d}.png") for i in (30, 90, 150)]


@pytest.fixture(scope="session")
def robot_video(examples_dir) -> Path:
    return _need(examples_dir / "robot_unitree.mp4")


EXTENSION_PACKAGE = "da3_for_blender"  # the manifest id; Blender imports it as bl_ext.<repo>.da3_for_blender


def import_extension():
    """Import the repository root as the extension package (as Blender does), needs the bpy module.

    The repo root is linked into a temporary folder under the package name, so the extension's
    relative imports (``from .da3_blender import ...``, ``from .scene import ...``) work as in Blender.
    """
    import importlib
    import sys
    import tempfile

    pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for Blender tests")
    if EXTENSION_PACKAGE in sys.modules:
        return sys.modules[EXTENSION_PACKAGE]
    root = Path(tempfile.mkdtemp(prefix="da3-ext-"))
    (root / EXTENSION_PACKAGE).symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(root))
    return importlib.import_module(EXTENSION_PACKAGE)


@pytest.fixture(scope="session")
def extension():
    """The extension package (not yet registered)."""
    return import_extension()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throwaway OpenSSH server on 127.0.0.1 (scripts/loopback_sshd.py); ``sshd.spec(...)`` reaches it."""
    import sys

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from loopback_sshd import LoopbackSSHD, find_sshd

    if find_sshd() is None:
        pytest.skip("OpenSSH server and client are needed (Debian: apt-get install openssh-server; .ci/run does)")
    with LoopbackSSHD(tmp_path_factory.mktemp("sshd")) as server:
        yield server
