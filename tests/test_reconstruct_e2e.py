"""``bpy.ops.da3.reconstruct`` end to end in background mode, through a real worker subprocess
(this Python, the random-weight DA3-SMALL fixture, small processing resolution): images, video,
cancel, a worker killed mid-run, save and reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
EXTENSION_PACKAGE = "da3_for_blender"
KINDS = ("objects", "meshes", "cameras", "collections", "materials", "images", "node_groups", "actions",
         "movieclips", "scenes")


@pytest.fixture(scope="module")
def bpy_ext(extension, tmp_path_factory):
    """The extension enabled, its worker = this Python (it has torch), offline, results in a temp folder."""
    import addon_utils
    import bpy

    addon_utils.enable(EXTENSION_PACKAGE, default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences
    prefs.python_mode, prefs.custom_python = "CUSTOM", sys.executable
    prefs.results_dir = str(tmp_path_factory.mktemp("results"))
    prefs.offline = True
    yield bpy
    addon_utils.disable(EXTENSION_PACKAGE, default_set=True, handle_error=None)  # also stops the worker


@pytest.fixture
def scene(bpy_ext, fixture_dir):
    """A fresh scene whose DA3 settings use the fixture model at 140 px on the CPU."""
    bpy = bpy_ext
    scene = bpy.data.scenes.new("da3 e2e")
    old = bpy.context.window.scene
    bpy.context.window.scene = scene
    s = scene.da3_settings
    s.model, s.custom_model = "CUSTOM", str(fixture_dir)
    s.process_res, s.device = 140, "cpu"
    yield scene
    from da3_for_blender.scene import importer

    for col in [c for c in scene.collection.children if c.get("da3_role") == "root"]:
        importer.remove_import(col["da3_key"])
    bpy.context.window.scene = old
    bpy.data.scenes.remove(scene)


def _results(bpy):
    folder = bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences.results_dir
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _counts(bpy):
    return {k: len(getattr(bpy.data, k)) for k in KINDS}


def _root(bpy, scene):
    roots = [c for c in scene.collection.children if c.get("da3_role") == "root"]
    assert len(roots) == 1, [c.name for c in scene.collection.children]
    return roots[0]


def _child(root, role):
    found = [c for c in root.children if c.get("da3_role") == role]
    assert len(found) == 1, f"no {role} collection in {root.name}"
    return found[0]


def _use_images(scene, paths):
    s = scene.da3_settings
    s.input_mode = "IMAGES"
    s.images.clear()
    for p in paths:
        s.images.add().filepath = str(p)


def test_images_become_cameras_points_and_planes(scene, bpy_ext, soh_images, tmp_path):
    bpy = bpy_ext
    _use_images(scene, soh_images)
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    rt = bpy.context.window_manager.da3_runtime
    assert not rt.running and rt.error == "" and rt.summary.startswith("2 view(s)")

    root = _root(bpy, scene)
    assert root.name == "DA3 SOH"
    cams = _child(root, "cameras").objects
    assert sorted(ob.name for ob in cams) == ["000", "010"] and all(ob.type == "CAMERA" for ob in cams)
    assert scene.camera in set(cams)
    pts = list(_child(root, "points").objects)
    assert len(pts) == 1 and len(pts[0].data.vertices) > 1000
    planes = list(_child(root, "planes").objects)
    assert len(planes) == 2 and all(ob.type == "MESH" and len(ob.data.polygons) > 100 for ob in planes)
    assert _results(bpy) == []  # the result file is deleted once imported

    # the .blend saves and another Blender reads it back intact
    path = tmp_path / "soh.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, check_existing=False)
    code = (
        "import bpy, json, sys\n"
        "bpy.ops.wm.open_mainfile(filepath=sys.argv[1])\n"
        "sc = bpy.data.scenes['da3 e2e']\n"
        "root = bpy.data.collections['DA3 SOH']\n"
        "objs = {o.name: [o.type, len(o.data.vertices) if o.type == 'MESH' else 0] for o in root.all_objects}\n"
        "print(json.dumps({'objects': objs, 'camera': sc.camera.name}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert reloaded["objects"] == {ob.name: [ob.type, len(ob.data.vertices) if ob.type == "MESH" else 0]
                                   for ob in root.all_objects}
    assert reloaded["camera"] == scene.camera.name


def test_video_becomes_one_camera_keyed_on_the_sampled_frames(scene, bpy_ext, robot_video):
    bpy = bpy_ext
    s = scene.da3_settings
    s.input_mode, s.video, s.video_fps = "VIDEO", str(robot_video), 2.0
    s.build_planes = False
    s.keep_results = True
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    kept = _results(bpy)
    assert len(kept) == 1
    folder = bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences.results_dir
    from da3_blender.prediction import load_result

    frames = list(load_result(os.path.join(folder, kept.pop())).frame_numbers)

    # what the footage says, read by Blender's own decoder
    clip = bpy.data.movieclips.load(str(robot_video), check_existing=False)
    src_fps, n_frames = clip.fps, clip.frame_duration
    bpy.data.movieclips.remove(clip)
    step = frames[1] - frames[0]
    assert abs(step - src_fps / 2) <= 1  # about 2 frames per second of footage...
    assert frames == list(range(1, frames[-1] + 1, step)) and frames[-1] + step >= n_frames  # ...all along it, from 1

    root = _root(bpy, scene)
    cams = list(_child(root, "cameras").objects)
    assert len(cams) == 1 and cams[0].type == "CAMERA"
    cam = cams[0]
    from da3_for_blender.scene.compat import action_fcurves

    curves = [fc for fc in action_fcurves(cam.animation_data.action, cam) if fc.data_path == "location"]
    assert len(curves) == 3
    for fc in curves:  # keys on the result's frame numbers: they are the scene frames
        keyed = [k.co[0] for k in fc.keyframe_points]
        assert keyed == frames and scene.frame_start == frames[0] == 1
    assert scene.frame_end >= frames[-1]
    assert (scene.render.fps, scene.render.fps_base) == (50, 1.0) and src_fps == 50  # the clip's rate, not 49.44
    import imageio_ffmpeg  # the scene ends on the footage's last real frame, inside Blender's clip

    coded = imageio_ffmpeg.count_frames_and_secs(str(robot_video))[0]
    assert scene.frame_end == scene.frame_start + coded - 1 < scene.frame_start + n_frames
    pts = list(_child(root, "points").objects)
    assert len(pts) == 1 and len(pts[0].data.vertices) > 1000
    assert not [c for c in root.children if c.get("da3_role") == "planes"]
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))


def _run_with(bpy, listener):
    from da3_for_blender.operators import session

    session.listeners.append(listener)
    try:
        return bpy.ops.da3.reconstruct()
    finally:
        session.listeners.remove(listener)


def test_cancel_mid_run_leaves_the_scene_as_it_was(scene, bpy_ext, soh_images):
    bpy = bpy_ext
    _use_images(scene, soh_images)
    before, objects = _counts(bpy), set(bpy.data.objects.keys())
    seen = []

    def cancel_on_first_progress(run, event):
        seen.append(event.get("event"))
        if event.get("event") == "progress":
            bpy.ops.da3.cancel()  # what the panel's Cancel button runs

    assert _run_with(bpy, cancel_on_first_progress) == {"CANCELLED"}
    assert "progress" in seen and "result" not in seen
    rt = bpy.context.window_manager.da3_runtime
    assert rt.error == "Cancelled: the scene was not changed" and not rt.running
    assert _counts(bpy) == before and set(bpy.data.objects.keys()) == objects
    assert _results(bpy) == []
    # the next run works
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    assert _child(_root(bpy, scene), "cameras").objects


def test_worker_killed_mid_run_is_reported_and_the_next_run_works(scene, bpy_ext, soh_images):
    bpy = bpy_ext
    _use_images(scene, soh_images)
    before = _counts(bpy)
    killed = []

    def kill_worker(run, event):
        if event.get("event") == "progress" and not killed:
            killed.append(run.client.pid)
            os.kill(run.client.pid, getattr(signal, "SIGKILL", signal.SIGTERM))

    with pytest.raises(RuntimeError, match="DA3 failed: the DA3 worker stopped unexpectedly .*run the job again"):
        _run_with(bpy, kill_worker)
    assert killed
    rt = bpy.context.window_manager.da3_runtime
    assert rt.error.startswith("DA3 failed") and not rt.running
    assert _counts(bpy) == before and _results(bpy) == []
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}  # a fresh worker
    from da3_for_blender.operators import session

    assert session.current().pid != killed[0]


def test_import_result_button_reads_a_kept_result(scene, bpy_ext, soh_images):
    bpy = bpy_ext
    _use_images(scene, soh_images[:1])
    scene.da3_settings.keep_results = True
    scene.da3_settings.build_planes = False
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    kept = _results(bpy)
    assert len(kept) == 1 and kept[0].endswith(".npz")
    folder = bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences.results_dir
    from da3_for_blender.scene import importer

    importer.remove_import(_root(bpy, scene)["da3_key"])
    assert "000" not in bpy.data.objects
    assert bpy.ops.da3.import_result(filepath=os.path.join(folder, kept[0])) == {"FINISHED"}
    assert [ob.name for ob in _child(_root(bpy, scene), "cameras").objects] == ["000"]
    os.remove(os.path.join(folder, kept[0]))


def test_selected_cameras_are_used_as_known_poses(scene, bpy_ext, soh_images):
    bpy = bpy_ext
    from mathutils import Euler, Vector

    _use_images(scene, soh_images)
    s = scene.da3_settings
    s.build_planes = False
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    cams = sorted(_child(_root(bpy, scene), "cameras").objects, key=lambda ob: ob.name)
    # the user moves and zooms the second camera: the model must take these poses, not its own
    cams[1].location += Vector((0.3, -0.2, 0.1))
    cams[1].rotation_euler.rotate(Euler((0.05, -0.1, 0.02)))
    cams[1].data.lens *= 1.2
    bpy.context.view_layer.update()
    given = {ob.name: (ob.matrix_world.copy(), ob.data.lens, ob.data.shift_x, ob.data.shift_y) for ob in cams}
    for ob in cams:
        ob.select_set(True)
    s.use_selected_cameras = True
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}

    new = {ob.name: ob for ob in _child(_root(bpy, scene), "cameras").objects}
    assert sorted(new) == sorted(given)
    for name, (matrix, lens, shift_x, shift_y) in given.items():
        ob = new[name]
        assert max(abs(a - b) for ra, rb in zip(ob.matrix_world, matrix) for a, b in zip(ra, rb)) < 1e-4, name
        assert abs(ob.data.lens - lens) < 1e-3 * lens and abs(ob.data.shift_x - shift_x) < 1e-4, name
        assert abs(ob.data.shift_y - shift_y) < 1e-4, name


# -- issue 17: known poses stay in the tracker's world; the panel's EXR options -----------------------
def _tracked_cameras(bpy, scene, size, poses):
    """Cameras as a tracking solve leaves them (away from the origin, rotated), selected alone; the render
    at the images' size."""
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    for ob in scene.objects:
        ob.select_set(False)
    cams = []
    for name, loc, rot, lens in poses:
        cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        cam.location, cam.rotation_euler, cam.data.lens = loc, rot, lens
        scene.collection.objects.link(cam)
        cam.select_set(True)
        cams.append(cam)
    bpy.context.view_layer.update()
    return cams


@pytest.mark.parametrize("up_axis, scale", [("Z_UP", None), ("KEEP", 2.5)])
def test_known_poses_stay_in_the_trackers_world(scene, bpy_ext, soh_images, up_axis, scale):
    """A tracked camera at (2, -5, 1.6) comes back at (2, -5, 1.6): the result is built in the given cameras'
    world, points included, not re-based onto view 0 (any up axis, any scale)."""
    import numpy as np
    from PIL import Image

    bpy = bpy_ext
    size = Image.open(soh_images[0]).size
    cams = _tracked_cameras(bpy, scene, size, [("Track.002", (2.0, -5.0, 1.6), (1.35, 0.05, 0.4), 32.0),
                                              ("Track.010", (2.5, -4.6, 1.7), (1.3, -0.04, 0.55), 35.0)])
    try:
        given = [(np.array(ob.matrix_world), ob.data.lens) for ob in cams]
        _use_images(scene, soh_images)
        s = scene.da3_settings
        s.build_planes, s.use_selected_cameras, s.up_axis = False, True, up_axis
        if scale:
            s.scale_mode, s.scale_factor = "FACTOR", scale
        assert bpy.ops.da3.reconstruct() == {"FINISHED"}, bpy.context.window_manager.da3_runtime.error
        root = _root(bpy, scene)
        new = sorted(_child(root, "cameras").objects, key=lambda ob: ob.name)  # 000, 010: Track.002, Track.010
        for ob, (matrix, lens) in zip(new, given):
            assert np.abs(np.array(ob.matrix_world) - matrix).max() < 1e-4, ob.name
            assert abs(ob.data.lens - lens) < 1e-3 * lens, ob.name
        assert root["da3_world"] == "known poses"
        # the points share that world: each view's points lie in front of its own tracked camera
        mesh = _child(root, "points").objects[0].data
        pts = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", pts)
        view = np.empty(len(mesh.vertices), np.int32)
        mesh.attributes["view"].data.foreach_get("value", view)
        for i, (matrix, lens) in enumerate(given):
            local = (np.linalg.inv(matrix) @ np.c_[pts.reshape(-1, 3)[view == i], np.ones((view == i).sum())].T)[:3]
            assert (local[2] < 0).all()  # Blender cameras look down -Z
            half_width = 18.0 / lens  # sensor 36 mm: tan of half the horizontal field of view
            assert (np.abs(local[0] / local[2]) <= half_width * 1.01).mean() > 0.99
    finally:
        for cam in cams:
            bpy.data.objects.remove(cam)


def test_panel_exr_options_reach_the_files(scene, bpy_ext, soh_images, tmp_path):
    """Export sub-panel: EXR at plate resolution, half floats, bilinear: the files are those
    exports.exr writes for the result with these options."""
    import numpy as np

    OpenEXR = pytest.importorskip("OpenEXR")
    from da3_blender.exports.exr import export_exr
    from da3_blender.prediction import load_result
    from PIL import Image

    bpy = bpy_ext
    _use_images(scene, soh_images[:1])
    s = scene.da3_settings
    s.build_planes, s.build_points, s.keep_results = False, False, True
    s.export_format, s.export_dir = {"exr"}, str(tmp_path / "exports")
    s.exr_resolution, s.exr_half, s.exr_plate_filter = "plate", True, "bilinear"
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}, bpy.context.window_manager.da3_runtime.error
    folder = bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences.results_dir
    kept = _results(bpy)
    assert len(kept) == 1
    try:
        pred = load_result(os.path.join(folder, kept[0]))
        expected = export_exr(pred, str(tmp_path / "expected"), half=True, resolution="plate", plate_filter="bilinear")
    finally:
        os.remove(os.path.join(folder, kept[0]))
    written = sorted((tmp_path / "exports" / "exr_plate").iterdir())
    assert [p.name for p in written] == [os.path.basename(p) for p in expected] and written
    w, h = Image.open(soh_images[0]).size
    for got, want in zip(written, expected):
        with OpenEXR.File(str(got), separate_channels=True) as a, OpenEXR.File(str(want), separate_channels=True) as b:
            za, zb = a.channels()["Z"].pixels, b.channels()["Z"].pixels
            assert za.shape == (h, w) and za.dtype == np.float16 and np.array_equal(za, zb)
