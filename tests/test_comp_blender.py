"""The scene's camera as Nuke files and USD (``--export-camera`` / the panel's Export DA3 Camera): the .nk
and .chan follow the Blender camera per frame and equal the result's ``nuke`` export; Blender's own USD
importer reads the .usd back onto the same camera."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from comp_helpers import FIRST, rot, shot
from da3_blender.exports import export
from da3_blender.prediction import save_result
from nk_reader import read_nk, value_at

bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for Blender tests")
Z_TO_Y = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
N = 5


def import_in_da3_world(extension, path) -> None:
    """The result's cameras into the scene in DA3's world (Z_UP), the world the exports it is compared with use
    (Blender's default is FLOOR, issue 27)."""
    importer = importlib.import_module(f"{extension.__name__}.scene.importer")
    importer.import_result_file(path, importer.ImportOptions(points=False, planes=False, conf_percentile=0.0,
                                                             max_points=0, up_axis="Z_UP"))


def camera_node(path):
    return [k for c, k in read_nk(path.read_text()) if c == "Camera2"][0]


@pytest.fixture(scope="module")
def scene_shot(extension, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comp_blender")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    pred = shot(n=N)
    save_result(tmp / "shot.npz", pred)
    import_in_da3_world(extension, str(tmp / "shot.npz"))
    exchange = importlib.import_module(f"{extension.__name__}.scene.exchange")
    scene = bpy.context.scene
    (cam,) = exchange.imported_cameras(scene)
    frames = {}
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        frames[f] = (np.array(cam.matrix_world), cam.data.lens, cam.data.shift_x, cam.data.shift_y)
    return pred, tmp, exchange, scene, frames


def test_nk_and_chan_from_the_scene_follow_the_blender_camera(scene_shot):
    pred, tmp, exchange, scene, frames = scene_shot
    assert sorted(frames) == list(range(FIRST, FIRST + N))
    scene.frame_set(FIRST + 2)
    assert exchange.export_cameras(tmp / "scene.nk") == str(tmp / "scene.nk")
    cam = camera_node(tmp / "scene.nk")
    for f, (m, lens, _, _) in frames.items():
        t = np.array([value_at(c, f) for c in cam["translate"]])
        rx, ry, rz = (value_at(c, f) for c in cam["rotate"])
        r = rot("y", ry) @ rot("x", rx) @ rot("z", rz)
        assert np.max(np.abs(t - Z_TO_Y @ m[:3, 3])) < 1e-5
        assert np.degrees(np.max(np.abs(r - Z_TO_Y @ m[:3, :3]))) < 1e-4
        assert value_at(cam["focal"], f) == pytest.approx(lens * 36.0 / 36.0, rel=1e-6)  # sensor 36 mm
    # the result's own nuke export is the same camera
    export(pred, "nuke", tmp / "direct")
    direct = camera_node(tmp / "direct" / "nuke" / "shot.nk")
    for f in frames:
        for knob in ("translate", "rotate", "win_translate"):
            a = [value_at(c, f) for c in cam[knob]]
            b = [value_at(c, f) for c in direct[knob]]
            assert np.allclose(a, b, atol=1e-5), (knob, f, a, b)
        assert value_at(cam["focal"], f) == pytest.approx(value_at(direct["focal"], f), rel=1e-6)
    assert exchange.export_cameras(tmp / "scene.chan") == str(tmp / "scene.chan")
    rows = np.loadtxt(tmp / "scene.chan")
    assert list(rows[:, 0]) == list(frames)
    assert scene.frame_current == FIRST + 2  # restored


def test_usd_from_blenders_exporter_reads_back_onto_the_camera(scene_shot):
    pred, tmp, exchange, scene, frames = scene_shot
    path = exchange.export_cameras(tmp / "shot.usd")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.usd_import(filepath=path, set_frame_range=True, import_cameras=True)
    cams = [o for o in bpy.context.scene.objects if o.type == "CAMERA"]
    assert len(cams) == 1
    back, scene = cams[0], bpy.context.scene
    for f, (m, lens, sx, sy) in frames.items():
        scene.frame_set(f)
        assert np.max(np.abs(np.array(back.matrix_world) - m)) < 1e-4, f
        assert back.data.lens == pytest.approx(lens, abs=1e-4)
        assert (back.data.shift_x, back.data.shift_y) == pytest.approx((sx, sy), abs=1e-4)


def test_the_panel_operator_writes_a_nuke_script(scene_shot, extension, tmp_path):
    pred, tmp, exchange, scene, frames = scene_shot
    bpy.ops.wm.read_factory_settings(use_empty=True)
    import_in_da3_world(extension, str(tmp / "shot.npz"))
    op = importlib.import_module(f"{extension.__name__}.operators.export_camera").DA3_OT_export_camera
    bpy.utils.register_class(op)
    try:
        assert bpy.ops.da3.export_camera(filepath=str(tmp_path / "cam"), file_format="NK") == {"FINISHED"}
    finally:
        bpy.utils.unregister_class(op)
    cam = camera_node(tmp_path / "cam.nk")
    assert sorted(cam["translate"][0]) == [float(f) for f in frames]


def test_still_cameras_become_one_camera_per_frame_like_the_nuke_export(extension, tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    pred = shot(n=3, distortion=None)
    pred.frame_numbers = np.full(3, -1, np.int64)
    pred.meta = {}
    pred.source_paths = [f"/photos/view_{i}.jpg" for i in range(3)]
    save_result(tmp_path / "stills.npz", pred)
    import_in_da3_world(extension, str(tmp_path / "stills.npz"))
    exchange = importlib.import_module(f"{extension.__name__}.scene.exchange")
    assert len(exchange.imported_cameras(bpy.context.scene)) == 3
    exchange.export_cameras(tmp_path / "stills.chan")
    export(pred, "nuke", tmp_path / "direct")
    scene_rows, direct_rows = np.loadtxt(tmp_path / "stills.chan"), np.loadtxt(tmp_path / "direct" / "nuke" / "camera.chan")
    assert list(scene_rows[:, 0]) == [1, 2, 3] and np.allclose(scene_rows, direct_rows, atol=1e-4)


def test_blenders_usd_importer_reads_the_usd_export_onto_the_scene_camera(scene_shot):
    """The ``usd`` export (pxr), read by a second reader: Blender's importer puts the camera where the
    scene's importer put it, with the same lens in mm and shifts."""
    pytest.importorskip("pxr", reason="usd-core (pip install '.[usd]') is needed for USD tests")
    pred, tmp, exchange, scene, frames = scene_shot
    (path,) = export(pred, "usd", tmp / "core_usd", num_max_points=100)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.usd_import(filepath=path, set_frame_range=True, import_cameras=True, import_points=True)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (FIRST, FIRST + N - 1)
    (back,) = [o for o in scene.objects if o.type == "CAMERA"]
    for f, (m, lens, sx, sy) in frames.items():
        scene.frame_set(f)
        assert np.max(np.abs(np.array(back.matrix_world) - m)) < 1e-4, f
        assert back.data.lens == pytest.approx(lens, abs=1e-4)
        assert (back.data.shift_x, back.data.shift_y) == pytest.approx((sx, sy), abs=1e-4)


def test_the_scene_nk_reads_the_footage_clip(extension, robot_video, tmp_path):
    """A video's camera carries its footage as a background clip: the script's Read plays that movie
    from the clip's first scene frame."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    pred = shot(n=3, distortion=None)
    pred.source_paths = [str(robot_video)] * 3
    pred.frame_numbers = np.array([1, 2, 3], np.int64)
    pred.meta["video"] = {"path": str(robot_video), "kind": "video", "rate": [50, 1], "fps": 50.0,
                          "frame_range": [1, 10], "frame_count": 10, "width": 240, "height": 136}
    pred.meta["input_kind"] = "video"
    save_result(tmp_path / "video.npz", pred)
    import_in_da3_world(extension, str(tmp_path / "video.npz"))
    exchange = importlib.import_module(f"{extension.__name__}.scene.exchange")
    exchange.export_cameras(tmp_path / "video.nk")
    nodes = {k.get("name"): k for _, k in read_nk((tmp_path / "video.nk").read_text())}
    assert nodes["Plate"]["file"] == str(robot_video) and nodes["Plate"]["frame_mode"] == "start at"
    assert nodes["Plate"]["frame"] == 1
    root = [k for c, k in read_nk((tmp_path / "video.nk").read_text()) if c == "Root"][0]
    assert root["fps"] == 50.0
