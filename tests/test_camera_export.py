"""``scripts/reconstruct.py --export-camera``: the headless run also writes the cameras, which Blender's
own Alembic importer reads back where the saved scene has them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reconstruct.py"


def _run(*args):
    import os

    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_headless_export_camera_round_trips(soh_images, fixture_dir, tmp_path):
    bpy = pytest.importorskip("bpy")
    bad = _run(*soh_images, "--output", tmp_path / "x.blend", "--export-camera", tmp_path / "cams.obj")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"reconstruct: error: --export-camera must be one of Alembic (.abc), FBX (.fbx), USD (.usd), "
        f"Nuke script (.nk), Nuke .chan (.chan), got {tmp_path / 'cams.obj'}"]
    out, cams = tmp_path / "soh.blend", tmp_path / "out" / "cams.abc"
    proc = _run(*soh_images, "--model", fixture_dir, "--output", out, "--process-res", 56, "--device", "cpu",
                "--no-points", "--no-planes", "--export-camera", cams)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"cameras written to {cams}" in proc.stdout
    bpy.ops.wm.open_mainfile(filepath=str(out))
    saved = {o.name: (np.array(o.matrix_world), o.data.lens) for o in bpy.data.objects if o.type == "CAMERA"}
    assert sorted(saved) == ["000", "010"]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.alembic_import(filepath=str(cams), as_background_job=False)
    back = {o.name: o for o in bpy.context.scene.objects if o.type == "CAMERA"}
    assert sorted(back) == sorted(saved)
    for name, (matrix, lens) in saved.items():
        assert np.abs(np.array(back[name].matrix_world) - matrix).max() < 1e-5
        assert back[name].data.lens == pytest.approx(lens, rel=1e-5)
