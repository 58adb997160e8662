"""Headless known poses (issue 17): ``scripts/reconstruct.py --known-cameras TRACK.blend`` conditions the
model on a tracking file's cameras and builds the scene in their world; its EXR options reach the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reconstruct.py"
FAST = ["--process-res", "140", "--device", "cpu", "--no-planes"]

WRITE_TRACK = """
import bpy, json, sys
spec = json.loads(sys.argv[1])
bpy.ops.wm.read_homefile(use_empty=True)
sc = bpy.context.scene
sc.render.resolution_x, sc.render.resolution_y = spec["size"]
sc.render.resolution_percentage = 100
sc.collection.objects.link(bpy.data.objects.new("Ground", None))  # not a camera: ignored
for cam in spec["cameras"]:
    ob = bpy.data.objects.new(cam["name"], bpy.data.cameras.new(cam["name"]))
    sc.collection.objects.link(ob)
    for frame, loc, rot, lens in cam["keys"]:
        ob.location, ob.rotation_euler, ob.data.lens = loc, rot, lens
        if frame is not None:
            ob.keyframe_insert("location", frame=frame)
            ob.keyframe_insert("rotation_euler", frame=frame)
            ob.data.keyframe_insert("lens", frame=frame)
sc.frame_set(spec["frame"])
bpy.ops.wm.save_as_mainfile(filepath=spec["path"])
"""

READ_CAMERAS = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
sc = bpy.context.scene
out = {}
for frame in json.loads(sys.argv[2]):
    sc.frame_set(frame)
    out[frame] = {ob.name: [list(r) for r in ob.matrix_world] for ob in sc.objects if ob.type == "CAMERA"}
print(json.dumps(out))
"""


def _python(code, *args):
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _track(path, size, cameras, frame=1):
    _python(WRITE_TRACK, json.dumps({"path": str(path), "size": list(size), "cameras": cameras, "frame": frame}))
    return path


def _cameras(blend, frames):
    out = json.loads(_python(READ_CAMERAS, blend, json.dumps(list(frames))).strip().splitlines()[-1])
    return {int(f): {name: np.array(m) for name, m in cams.items()} for f, cams in out.items()}


@pytest.fixture
def small_images(soh_images, tmp_path):
    """The SOH photos at 160 px (fast), as plate.1001.png, plate.1002.png."""
    from PIL import Image

    folder = tmp_path / "plates"
    folder.mkdir()
    for i, p in enumerate(soh_images):
        im = Image.open(p).convert("RGB")
        im.resize((160, round(160 * im.height / im.width)), Image.LANCZOS).save(folder / f"plate.{1001 + i}.png")
    return sorted(folder.iterdir()), 160, round(160 * im.height / im.width)


def test_known_cameras_condition_the_run_and_stay_in_their_world(small_images, fixture_dir, tmp_path):
    """Two tracked cameras away from the origin: the DA3 cameras come back on them (1e-4), the track stays in
    the saved scene; EXR at plate size in half floats, as exports.exr writes them for the kept result."""
    pytest.importorskip("bpy")
    OpenEXR = pytest.importorskip("OpenEXR")
    from da3_blender.exports.exr import export_exr
    from da3_blender.prediction import load_result

    images, w, h = small_images
    track = _track(tmp_path / "track.blend", (w, h), [
        {"name": "Track.2", "keys": [[None, [2.0, -5.0, 1.6], [1.35, 0.05, 0.4], 32.0]]},
        {"name": "Track.10", "keys": [[None, [2.5, -4.6, 1.7], [1.3, -0.04, 0.55], 35.0]]}])
    out = tmp_path / "out" / "shot.blend"
    proc = _run(*images, "--model", fixture_dir, "--output", out, *FAST, "--known-cameras", track, "--keep-result",
                "--export-dir", tmp_path / "exports", "--export-format", "exr", "--exr-resolution", "plate",
                "--exr-half", "--exr-filter", "bilinear")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cams = _cameras(out, [1])[1]
    assert set(cams) >= {"Track.2", "Track.10"} and len(cams) == 4  # the track and the DA3 cameras
    da3 = sorted(name for name in cams if not name.startswith("Track"))  # in natural order: Track.2, Track.10
    for name, tracked in zip(da3, ("Track.2", "Track.10")):
        assert np.abs(cams[name] - cams[tracked]).max() < 1e-4, (name, tracked)
    pred = load_result(*out.parent.glob("*.npz"))  # --keep-result: beside the .blend
    expected = export_exr(pred, str(tmp_path / "expected"), half=True, resolution="plate", plate_filter="bilinear")
    written = sorted((tmp_path / "exports" / "exr_plate").iterdir())
    assert [p.name for p in written] == [os.path.basename(p) for p in expected] == ["depth.1001.exr", "depth.1002.exr"]
    for got, want in zip(written, expected):
        with OpenEXR.File(str(got), separate_channels=True) as a, OpenEXR.File(str(want), separate_channels=True) as b:
            za, zb = a.channels()["Z"].pixels, b.channels()["Z"].pixels
            assert za.shape == (h, w) and za.dtype == np.float16 and np.array_equal(za, zb)


def test_an_animated_known_camera_gives_each_frame_its_pose(small_images, fixture_dir, tmp_path, extension):
    """One animated camera (a solve keyed on 1001..1002): each view takes the pose of its frame number."""
    pytest.importorskip("bpy")
    from da3_blender.prediction import load_result
    from da3_for_blender.scene.conventions import camera_matrices, up_matrix

    images, w, h = small_images
    track = _track(tmp_path / "track.blend", (w, h), [{"name": "Solve", "keys": [
        [1001, [2.0, -5.0, 1.6], [1.35, 0.05, 0.4], 32.0], [1002, [2.6, -4.5, 1.7], [1.3, -0.04, 0.6], 34.0]]}], frame=1)
    out = tmp_path / "shot.blend"
    proc = _run(*images, "--model", fixture_dir, "--output", out, *FAST, "--no-points", "--known-cameras", track,
                "--keep-result")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pred = load_result(*out.parent.glob("*.npz"))  # --keep-result: beside the .blend
    given = _cameras(track, [1001, 1002])
    got = camera_matrices(np.asarray(pred.extrinsics, np.float64), up_matrix("Z_UP"), 1.0)  # the poses it ran with
    for i, frame in enumerate((1001, 1002)):
        assert np.abs(got[i] - given[frame]["Solve"]).max() < 1e-4, frame


def test_known_cameras_that_do_not_fit_fail_in_one_line(small_images, tmp_path):
    pytest.importorskip("bpy")
    images, w, h = small_images
    cams = [{"name": f"Cam{i}", "keys": [[None, [float(i), -5.0, 1.6], [1.3, 0.0, 0.0], 35.0]]} for i in range(3)]
    track = _track(tmp_path / "track.blend", (w, h), cams)
    for args, code, match in (
            ([track], 1, "3 camera(s) selected for 2 image(s): select exactly one camera per image"),
            ([tmp_path / "missing.blend"], 2, "--known-cameras "),
            ([images[0]], 2, "no such .blend file")):
        proc = _run(*images, "--output", tmp_path / "x.blend", "--device", "cpu", "--known-cameras", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == code and len(lines) == 1 and match in lines[0], proc.stdout + proc.stderr
        assert not (tmp_path / "x.blend").exists()
    before = track.read_bytes()
    proc = _run(*images, "--output", track, "--known-cameras", track)
    assert proc.returncode == 2 and "--output is the --known-cameras file" in proc.stderr and track.read_bytes() == before


def test_headless_exr_options_are_checked_before_any_work(soh_images, tmp_path):
    for args, match in ((["--exr-half"], "exr_half given without the exr export"),
                        (["--export-dir", tmp_path, "--export-format", "exr", "--exr-filter", "cubic"], "invalid choice")):
        proc = _run(soh_images[0], "--output", tmp_path / "x.blend", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and match in lines[0], proc.stderr
