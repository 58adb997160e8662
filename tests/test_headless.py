"""``scripts/reconstruct.py``: a .blend from the examples without the interface, clean failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reconstruct.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _env():
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _blend_contents(path: Path) -> dict:
    """Object names and types of a .blend, read by a separate Blender."""
    code = ("import bpy, json, sys\n"
            "bpy.ops.wm.open_mainfile(filepath=sys.argv[1])\n"
            "print(json.dumps({o.name: o.type for o in bpy.data.objects}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _one_line_error(proc, code, match):
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconstruct: error: "), proc.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_images_to_a_blend_with_exports(soh_images, fixture_dir, tmp_path):
    pytest.importorskip("bpy")
    out = tmp_path / "out" / "soh.blend"
    proc = _run("--", *soh_images, "--model", fixture_dir, "--output", out, "--process-res", 140,
                "--device", "cpu", "--no-planes", "--export-dir", tmp_path / "exports", "--export-format", "glb")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file() and f"saved {out}" in proc.stdout
    objects = _blend_contents(out)
    assert {name: kind for name, kind in objects.items() if kind == "CAMERA"} == {"000": "CAMERA", "010": "CAMERA"}
    assert sum(kind == "MESH" for kind in objects.values()) == 1  # the point cloud, no planes
    assert list((tmp_path / "exports").glob("*.glb"))
    assert not list(out.parent.glob("*.npz"))  # the result file is not kept


def test_video_to_a_blend(robot_video, fixture_dir, tmp_path):
    pytest.importorskip("bpy")
    out = tmp_path / "robot.blend"
    proc = _run(robot_video, "--model", fixture_dir, "--output", out, "--fps", 1, "--max-frames", 3,
                "--process-res", 140, "--device", "cpu", "--no-planes", "--no-points", "--keep-result")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [kind for kind in _blend_contents(out).values()] == ["CAMERA"]
    assert len(list(tmp_path.glob("*.npz"))) == 1  # --keep-result keeps it next to the .blend


@pytest.mark.parametrize("args, code, match", [
    ([], 2, "required"),
    (["missing.png", "--output", "x.blend"], 2, "input not found: missing.png"),
    (["{img}", "--output", "x.txt"], 2, "--output must be a .blend file"),
    (["{img}", "--output", "x.blend", "--process-res", "7"], 2, "--process-res must be >= 14"),
    (["{img}", "--output", "x.blend", "--python", "/no/such/python"], 2, "no interpreter at /no/such/python"),
    (["{img}", "--output", "x.blend", "--export-format", "glb"], 2, "--export-format needs --export-dir"),
])
def test_bad_arguments_fail_in_one_line(soh_images, tmp_path, args, code, match):
    args = [a.replace("{img}", str(soh_images[0])) for a in args]
    _one_line_error(_run(*args), code, match)


def test_a_failing_run_fails_in_one_line(soh_images, tmp_path):
    pytest.importorskip("bpy")
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    proc = _run(soh_images[0], "--model", not_a_model, "--output", tmp_path / "x.blend", "--device", "cpu")
    _one_line_error(proc, 1, "DA3 failed:")
    assert not (tmp_path / "x.blend").exists()


def test_a_video_with_images_is_refused(soh_images, robot_video, tmp_path):
    pytest.importorskip("bpy")
    proc = _run(robot_video, soh_images[0], "--output", tmp_path / "x.blend")
    _one_line_error(proc, 1, "give one video alone")


@pytest.mark.skipif(shutil.which("blender") is None, reason="no blender executable on PATH")
def test_under_blender_b_P(soh_images, fixture_dir, tmp_path):
    out = tmp_path / "soh.blend"
    proc = subprocess.run(["blender", "-b", "--factory-startup", "-P", str(SCRIPT), "--", *map(str, soh_images),
                           "--model", str(fixture_dir), "--output", str(out), "--process-res", "140",
                           "--python", sys.executable, "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file()


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_folders_given_with_other_inputs_are_read_in_natural_order(tmp_path):
    """frame2 before frame10, as the worker reads a folder (plain sorted() would put frame10 first);
    hidden files skipped as everywhere (the headless listing used to take ._frame1.png)."""
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("frame10.png", "frame2.png", "frame1.png", "notes.txt", "._frame1.png", ".hidden.png"):
        (shots / name).write_bytes(b"")
    extra = tmp_path / "extra.png"
    mode, paths = _script()._expand([str(shots), str(extra)])
    assert mode == "IMAGES"
    assert [Path(p).name for p in paths] == ["frame1.png", "frame2.png", "frame10.png", "extra.png"]


def test_a_failed_camera_solve_builds_the_scene_with_one_warning(fixture_dir, tmp_path):
    """Issue 25 #7: --refine on frames without features: the scene is built and saved, one warning line."""
    pytest.importorskip("bpy")
    pytest.importorskip("pycolmap")
    import numpy as np
    from PIL import Image

    frames = tmp_path / "flat"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.full((48, 64, 3), 100 + 20 * i, np.uint8)).save(frames / f"still_{i}.png")
    out = tmp_path / "flat.blend"
    proc = _run("--", frames, "--model", fixture_dir, "--output", out, "--process-res", 56, "--device", "cpu",
                "--no-planes", "--refine")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("reconstruct: warning: ")]
    assert len(warnings) == 1 and "the camera solve failed, the DA3 cameras are kept" in warnings[0], proc.stdout
    assert out.is_file() and sum(kind == "CAMERA" for kind in _blend_contents(out).values()) == 1  # a 3-frame shot
