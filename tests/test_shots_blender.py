"""A VFX shot end to end against ground truth rendered here with bpy (issue 17).

Blender renders a textured set through a known moving camera, 160x90, frames 1001-1012 at 24000/1001
fps, written as ``plate.####.png`` (display-referred) and ``plate.####.exr`` (scene-linear, half); frame
1006 is left out (a gap). A ground-truth stand-in for the network returns the rendered cameras, so the
whole path (sequence reading, inference, exports, result file, import, Alembic/FBX) is checked against
the camera that made the plates: frame numbers, rates and poses on every frame.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch


def _load_e2e():
    """tests/test_reconstruct_e2e.py, for its panel fixtures (pytest runs with --import-mode=importlib)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("shots_e2e_helpers", Path(__file__).with_name("test_reconstruct_e2e.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_e2e = _load_e2e()
bpy_ext, scene, _root, _child = _e2e.bpy_ext, _e2e.scene, _e2e._root, _e2e._child  # the panel's fixtures

pytestmark = pytest.mark.slow

FRAMES = [f for f in range(1001, 1013) if f != 1006]  # 1006: a gap in the plate
WIDTH, HEIGHT, LENS = 160, 90, 30.0
FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # Blender camera axes <-> OpenCV camera axes


def _camera_matrix(frame: int) -> np.ndarray:
    """The known camera path: a dolly and pan with a slight rise (Blender camera-to-world)."""
    from mathutils import Euler, Matrix

    k = frame - 1001
    rot = Euler((math.radians(75 + 0.8 * k), 0.0, math.radians(-10 + 2.5 * k)), "XYZ").to_matrix().to_4x4()
    return np.array(Matrix.Translation((-1.2 + 0.2 * k, -6.0 + 0.05 * k, 1.6 + 0.03 * k)) @ rot)


def _mod(name: str):
    """A module of the extension package (imported as Blender imports it)."""
    import importlib

    return importlib.import_module(f"da3_for_blender.{name}")


def _emission_material(bpy, name, scale, colours):
    mat = bpy.data.materials.new(name)
    if not mat.node_tree:  # Blender 5 materials have nodes from the start
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexChecker")
    tex.inputs["Scale"].default_value = scale
    tex.inputs["Color1"].default_value, tex.inputs["Color2"].default_value = colours
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.4  # highlights above 1: the EXR plate keeps them, sRGB clips
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return mat


def _box(bpy, scene, name, centre, size, mat):
    x, y, z = centre
    sx, sy, sz = size
    verts = [(x + a * sx, y + b * sy, z + c * sz) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.materials.append(mat)
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    """The rendered shot: {"png": pattern, "exr": pattern, "cameras": {frame: 4x4}} (see the module doc)."""
    bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for Blender tests")
    folder = tmp_path_factory.mktemp("plate")
    scene = bpy.data.scenes.new("plate render")
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 4, False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    scene.render.dither_intensity = 0.0
    scene.render.fps, scene.render.fps_base = 24, 1.001
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    world = bpy.data.worlds.new("plate world")
    world.color = (0.05, 0.06, 0.08)
    scene.world = world
    floor = _emission_material(bpy, "floor", 12.0, ((0.9, 0.8, 0.2, 1), (0.1, 0.2, 0.6, 1)))
    wall = _emission_material(bpy, "wall", 6.0, ((0.8, 0.1, 0.1, 1), (0.1, 0.7, 0.2, 1)))
    _box(bpy, scene, "floor", (0, 4, -0.05), (8, 8, 0.05), floor)
    _box(bpy, scene, "block", (0.5, 3, 1), (1, 1, 1), wall)
    _box(bpy, scene, "tower", (-2.5, 6, 2), (0.6, 0.6, 2), wall)
    cam = bpy.data.objects.new("plate camera", bpy.data.cameras.new("plate camera"))
    cam.data.lens, cam.data.sensor_width, cam.data.sensor_fit = LENS, 36.0, "HORIZONTAL"
    scene.collection.objects.link(cam)
    scene.camera = cam
    settings = scene.render.image_settings
    cameras = {}
    for frame in FRAMES:
        scene.frame_set(frame)
        cam.matrix_world = _camera_matrix(frame).T.tolist()  # mathutils takes rows
        cameras[frame] = np.array(cam.matrix_world)
        bpy.ops.render.render(scene=scene.name)
        result = bpy.data.images["Render Result"]
        settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGB", "8"
        result.save_render(str(folder / f"plate.{frame}.png"), scene=scene)
        settings.file_format, settings.color_mode, settings.color_depth = "OPEN_EXR", "RGB", "16"
        result.save_render(str(folder / f"plate.{frame}.exr"), scene=scene)
        if frame == FRAMES[0]:  # a 10-bit DPX, and Blender's multilayer EXR (channels ViewLayer.Combined.R ...)
            settings.file_format, settings.color_depth = "DPX", "10"
            result.save_render(str(folder / "dpx" / f"plate.{frame}.dpx"), scene=scene)
            if hasattr(settings, "media_type"):  # Blender 5: multilayer images are a media type
                settings.media_type = "MULTI_LAYER_IMAGE"
            settings.file_format = "OPEN_EXR_MULTILAYER"
            result.save_render(str(folder / "multilayer" / f"render.{frame}.exr"), scene=scene)
            if hasattr(settings, "media_type"):
                settings.media_type = "IMAGE"
    bpy.data.scenes.remove(scene)
    return {"png": str(folder / "plate.####.png"), "exr": str(folder / "plate.####.exr"), "cameras": cameras,
            "folder": folder}


class PlateModel:
    """Ground-truth stand-in: the rendered cameras (OpenCV world-to-camera) and K at the processed size."""

    model_name = "da3-small"
    capabilities = {"pose": True, "conf": True, "sky": False, "metric": False, "pose_conditioning": True}
    device = torch.device("cpu")

    def __init__(self, c2w_blender: list[np.ndarray]):
        self.w2c = np.stack([np.linalg.inv(m @ FLIP)[:3] for m in c2w_blender])

    def forward(self, image, extrinsics=None, intrinsics=None, progress=None, **kwargs):
        n, h, w = image.shape[1], image.shape[3], image.shape[4]
        assert n == len(self.w2c), "one pass over the whole shot"
        f = LENS / 36.0 * WIDTH
        k = np.array([[f * w / WIDTH, 0, w / 2], [0, f * h / HEIGHT, h / 2], [0, 0, 1]])
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
        return {"depth": t(np.full((n, h, w), 6.0)), "depth_conf": t(np.ones((n, h, w))), "extrinsics": t(self.w2c),
                "intrinsics": t(np.tile(k, (n, 1, 1)))}


def test_exr_plate_becomes_what_blender_shows(plate):
    """Scene-linear EXR through OpenImageIO (clamp + sRGB transfer) gives the PNG Blender wrote with its
    Standard view, within a code value (half floats), with the gap and the rate kept."""
    pytest.importorskip("OpenImageIO")
    from da3_blender.inputs.collect import collect_inputs

    exr = collect_inputs([plate["exr"]], frame_rate=23.976)
    png = collect_inputs([plate["png"]], frame_rate=23.976)
    assert exr.kind == png.kind == "sequence" and exr.frame_numbers.tolist() == png.frame_numbers.tolist() == FRAMES
    assert exr.video["rate"] == [24000, 1001] and exr.video["missing"] == [1006]
    for a, b in zip(exr.images, png.images):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.mean() < 0.6 and diff.max() <= 2
    assert (np.asarray(png.images[0]) == 255).any()  # the highlights clip, as in Blender's view
    from da3_blender.inputs.plates import read_plate

    layered = read_plate(str(plate["folder"] / "multilayer" / f"render.{FRAMES[0]}.exr"))
    assert np.abs(layered.astype(int) - png.images[0].astype(int)).max() <= 2  # the Combined pass, found by name
    dpx = read_plate(str(plate["folder"] / "dpx" / f"plate.{FRAMES[0]}.dpx"))  # 10-bit, declared linear
    assert np.abs(dpx.astype(int) - png.images[0].astype(int)).max() <= 2


def test_shot_end_to_end_frame_numbers_rates_and_poses(plate, tmp_path, extension):
    """Reading, inference, exports, result file, import and Alembic/FBX: every number is the plate's."""
    import bpy

    from da3_blender.inference import run_inference
    from da3_blender.inputs.collect import collect_inputs
    from da3_blender.prediction import save_result

    shot = collect_inputs([plate["png"]], frame_rate=23.976)
    model = PlateModel([plate["cameras"][f] for f in FRAMES])
    pred = run_inference(model, shot, process_res=160, export_dir=str(tmp_path / "out"), export_format="exr-depth_vis")
    assert pred.frame_numbers.tolist() == FRAMES and pred.meta["frame_numbers"] == "scene"
    names = sorted(os.path.relpath(p, tmp_path / "out") for p in pred.meta["exported_files"])
    assert names == sorted([f"exr/depth.{f}.exr" for f in FRAMES] + [f"depth_vis/{f}.png" for f in FRAMES])
    result = save_result(tmp_path / "shot.npz", pred)

    importer = _mod("scene.importer")
    scene = bpy.data.scenes.new("shot import")
    old_scene = bpy.context.window.scene
    bpy.context.window.scene = scene
    try:
        root = importer.import_result_file(result, importer.ImportOptions(points=False, planes=True))
        assert root.name == "DA3 plate" and root["da3_kind"] == "sequence"
        assert (scene.frame_start, scene.frame_end) == (1001, 1012)
        # 24000/1001 as Blender's own 23.98 preset holds it: 24 / 1.001 (fps_base is a float32)
        assert scene.render.fps == 24 and np.float32(scene.render.fps_base) == np.float32(1.001)
        cam = next(o for o in root.all_objects if o.type == "CAMERA")
        curves = [c for c in _mod("scene.compat").action_fcurves(cam.animation_data.action, cam)]
        for curve in curves:
            assert [int(k.co[0]) for k in curve.keyframe_points] == FRAMES  # a key on every frame, none in the gap
        planes = sorted(o.name for o in root.all_objects if o.type == "MESH")
        assert planes == [f"frame_{f} plane" for f in FRAMES]
        bg = cam.data.background_images[0]
        assert bg.clip.source == "SEQUENCE" and bg.clip.frame_start == 1001  # plate.1001.png on frame 1001
        assert cam.data.lens == pytest.approx(LENS, rel=1e-4)

        # the imported camera is the rendered one on every frame, up to the import's choice of world
        def matrix(obj, frame):
            scene.frame_set(frame)
            return np.array(obj.matrix_world)

        ours = {f: matrix(cam, f) for f in range(1001, 1013)}
        world = ours[1001] @ np.linalg.inv(plate["cameras"][1001])
        for f in FRAMES:
            np.testing.assert_allclose(ours[f], world @ plate["cameras"][f], atol=1e-4)
        _exchange_lands_on_frames(bpy, scene, cam, ours, tmp_path)
    finally:
        bpy.context.window.scene = old_scene
        bpy.data.scenes.remove(scene)


def _exchange_lands_on_frames(bpy, scene, cam, ours, tmp_path):
    """Alembic and FBX written at 24000/1001 hold a sample exactly on every frame 1001..1012.

    Alembic is read back with Blender's importer at the file's scene rate. Blender's FBX importer (5.0)
    turns FBX times into frames with the integer ``scene.render.fps`` (24) and not ``fps / fps_base``
    (it sets the scene to 24 / 1.001 from the file's NTSC time mode, then ignores fps_base), so its keys
    sit at frame * 1.001; the file's times are checked by undoing that: key * 1000 / 1001 must be a
    whole frame, and the camera there ours on that frame."""
    for ext, tol in ((".abc", 1e-4), (".fbx", 2e-3)):
        path = _mod("scene.exchange").export_cameras(str(tmp_path / f"camera{ext}"), [cam], scene=scene)
        back = bpy.data.scenes.new(f"read {ext}")
        back.render.fps, back.render.fps_base = 24, 1.001
        bpy.context.window.scene = back
        try:
            if ext == ".abc":
                bpy.ops.wm.alembic_import(filepath=path, as_background_job=False)
                (read,) = [o for o in back.objects if o.type == "CAMERA"]
                at = {f: (f, 0.0) for f in range(1001, 1013)}
            else:
                bpy.ops.import_scene.fbx(filepath=path, anim_offset=0.0)
                (read,) = [o for o in back.objects if o.type == "CAMERA"]
                curve = next(c for c in _mod("scene.compat").action_fcurves(read.animation_data.action, read)
                             if c.data_path == "location")
                keys = np.array([k.co[0] for k in curve.keyframe_points])
                frames = keys * 1000 / 1001  # the importer's 24 undone: the file's time x 24000/1001
                # on the frame to Blender's float32 key times (1e-4 frame; 24 fps instead of 24000/1001: 1 frame)
                assert np.abs(frames - np.round(frames)).max() < 2e-4 and list(np.round(frames)) == list(range(1001, 1013))
                at = {int(round(f)): (int(k), float(k - int(k))) for f, k in zip(frames, keys)}
            for f, (frame, sub) in at.items():
                back.frame_set(frame, subframe=sub)
                m = np.array(read.matrix_world)
                assert np.abs(m[:3, 3] - ours[f][:3, 3]).max() < tol, (ext, f)
                assert np.abs(m[:3, :3] @ ours[f][:3, :3].T - np.eye(3)).max() < 10 * tol, (ext, f)
        finally:
            bpy.context.window.scene = scene
            for obj in list(back.objects):
                bpy.data.objects.remove(obj)
            bpy.data.scenes.remove(back)


def test_robot_video_scene_rate_is_blenders_clip_rate(robot_video, extension):
    """The scene rate of robot_unitree.mp4 is what Blender's own movie clip of it shows (50), not 49.44."""
    import bpy

    from da3_blender.inputs.collect import collect_inputs

    clip = bpy.data.movieclips.load(str(robot_video), check_existing=False)
    try:
        blender_fps = clip.fps
    finally:
        bpy.data.movieclips.remove(clip)
    video = collect_inputs([robot_video], fps=0, max_frames=1).video
    fps, base = _mod("da3_blender.inputs.rates").to_blender(video["rate"])
    assert fps / base == blender_fps == 50


def test_panel_sequence_keys_every_frame_of_the_plate(plate, scene, bpy_ext):
    """The panel's Sequence input (one file of the plate), defaults untouched: every frame keyed on its own
    number, the sequence's rate exactly, the gap named in the summary (worker, fixture model)."""
    bpy = bpy_ext
    s = scene.da3_settings
    assert s.video_fps == 0 and s.frame_start == 1  # shots: every frame by default
    s.input_mode, s.sequence, s.frame_rate = "SEQUENCE", plate["png"].replace("####", "1001"), 23.976
    s.build_planes = False
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    summary = bpy.context.window_manager.da3_runtime.summary
    assert summary.startswith(f"{len(FRAMES)} view(s)") and "missing 1006" in summary and "every frame" in summary
    cam = next(o for o in _child(_root(bpy, scene), "cameras").objects)
    for curve in _mod("scene.compat").action_fcurves(cam.animation_data.action, cam):
        assert [int(k.co[0]) for k in curve.keyframe_points] == FRAMES
    assert (scene.frame_start, scene.frame_end, scene.render.fps) == (1001, 1012, 24)
    assert np.float32(scene.render.fps_base) == np.float32(1.001)
