"""A Blender without the Alembic or FBX exporter (Debian's Blender is built without Alembic; the FBX
add-on can be disabled): camera export refuses in one line, before any work, naming what is missing and
the other format, from Python, from the panel's operator and from the headless ``--export-camera``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for Blender tests")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "reconstruct.py"


@pytest.fixture
def exchange(extension):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return importlib.import_module(f"{extension.__name__}.scene.exchange")


@pytest.fixture
def fbx_disabled():
    """Blender's own FBX add-on really turned off (and back on afterwards)."""
    import addon_utils

    was_on = addon_utils.check("io_scene_fbx")[1]
    addon_utils.disable("io_scene_fbx", default_set=True)
    yield
    if was_on:
        addon_utils.enable("io_scene_fbx", default_set=True)


def _errors(extension):
    return importlib.import_module(f"{extension.__name__}.da3_blender.errors")


def test_this_blender_has_both_exporters(exchange):
    assert exchange.alembic_built() == bpy.app.build_options.alembic
    assert exchange.exporter_problem(".abc") is None and exchange.exporter_problem(".fbx") is None


def test_without_alembic_the_export_is_refused_naming_fbx(exchange, extension, tmp_path, monkeypatch):
    monkeypatch.setattr(exchange, "alembic_built", lambda: False)
    before = {k: len(getattr(bpy.data, k)) for k in ("objects", "cameras", "actions")}
    with pytest.raises(_errors(extension).BadInputError) as err:
        exchange.export_cameras(tmp_path / "shot.abc")  # refused before looking for cameras
    msg = str(err.value)
    assert "\n" not in msg and "built without Alembic" in msg and ".fbx file (FBX (.fbx))" in msg, msg
    assert not (tmp_path / "shot.abc").exists()
    assert before == {k: len(getattr(bpy.data, k)) for k in before}
    assert exchange.check_exporter(tmp_path / "shot.fbx") == ".fbx"  # the other format still works


def test_with_the_fbx_addon_disabled_the_export_is_refused_naming_alembic(exchange, extension, tmp_path, fbx_disabled):
    assert exchange.fbx_addon_state() == "disabled"
    with pytest.raises(_errors(extension).BadInputError) as err:
        exchange.export_cameras(tmp_path / "shot.fbx")
    msg = str(err.value)
    assert "\n" not in msg and "io_scene_fbx" in msg and "not enabled" in msg and ".abc file (Alembic (.abc))" in msg


def test_with_neither_exporter_the_message_says_so(exchange, extension, tmp_path, monkeypatch):
    monkeypatch.setattr(exchange, "alembic_built", lambda: False)
    monkeypatch.setattr(exchange, "fbx_addon_state", lambda: "missing")
    with pytest.raises(_errors(extension).BadInputError, match=r"add-on is missing.*\.usd file .*instead"):
        exchange.check_exporter("shot.fbx")  # Blender's USD exporter, then our Nuke files, are left
    real = exchange.exporter_problem
    monkeypatch.setattr(exchange, "exporter_problem", lambda ext: "missing" if ext == ".usd" else real(ext))
    with pytest.raises(_errors(extension).BadInputError, match=r"add-on is missing.*\.nk file .*instead"):
        exchange.check_exporter("shot.fbx")
    problems = {ext: "missing" for ext in exchange.FORMATS}
    monkeypatch.setattr(exchange, "exporter_problem", problems.get)
    with pytest.raises(_errors(extension).BadInputError, match="cannot export cameras"):
        exchange.check_exporter("shot.fbx")


def test_the_panel_operator_refuses_in_one_line(exchange, extension, tmp_path, monkeypatch):
    op = importlib.import_module(f"{extension.__name__}.operators.export_camera").DA3_OT_export_camera
    bpy.utils.register_class(op)
    try:
        monkeypatch.setattr(exchange, "alembic_built", lambda: False)
        with pytest.raises(RuntimeError, match="built without Alembic.*instead"):  # background: reports raise
            bpy.ops.da3.export_camera(filepath=str(tmp_path / "cam.abc"), file_format="ABC")
        assert not (tmp_path / "cam.abc").exists()
        # with neither exporter, the button refuses before the file browser opens (background Blender never
        # calls invoke, so it is called as the window manager would)
        monkeypatch.setattr(exchange, "exporter_problem", lambda ext: "missing")  # no exporter at all
        reports = []
        fake = SimpleNamespace(file_format="ABC", report=lambda kind, text: reports.append((kind, text)))
        assert op.invoke(fake, bpy.context, None) == {"CANCELLED"}
        assert len(reports) == 1 and reports[0][0] == {"ERROR"} and "cannot export cameras" in reports[0][1]
    finally:
        bpy.utils.unregister_class(op)


def test_headless_export_camera_is_refused_before_the_run(soh_images, fixture_dir, tmp_path):
    """``scripts/reconstruct.py --export-camera x.abc`` in a Blender without Alembic (simulated: the
    extension's check answers False, as it does on Debian's build) ends in one line, before any work."""
    runner = tmp_path / "no_alembic.py"
    runner.write_text(textwrap.dedent(f"""
        import runpy, sys, tempfile, pathlib
        root = pathlib.Path(tempfile.mkdtemp())
        (root / "da3_for_blender").symlink_to({str(REPO)!r}, target_is_directory=True)
        sys.path.insert(0, str(root))
        import da3_for_blender.scene.exchange as exchange
        exchange.alembic_built = lambda: False
        sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """))
    out = tmp_path / "shot.blend"
    proc = subprocess.run([sys.executable, str(runner), *map(str, soh_images), "--model", str(fixture_dir),
                           "--output", str(out), "--device", "cpu", "--export-camera", str(tmp_path / "cams.abc")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconstruct: error: camera export: cannot write cams.abc"), proc.stderr
    assert "built without Alembic" in lines[0] and ".fbx" in lines[0]
    assert not out.exists() and "Forward" not in proc.stdout and "saved" not in proc.stdout
