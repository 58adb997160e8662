"""Scene builders in real Blender (bpy): cameras line up with the footage, points and planes land on
their pixels, files survive save/reload, imports replace and fail cleanly."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for scene tests")
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Vector  # noqa: E402

KINDS = ("objects", "meshes", "materials", "images", "cameras", "node_groups", "actions", "collections", "movieclips")


_PACKAGE = []


def mod(name):
    """A module of the extension package (imported as Blender does, by the ``extension`` fixture)."""
    return importlib.import_module(f"{_PACKAGE[0]}.{name}")


@pytest.fixture(autouse=True)
def empty_file(extension):
    _PACKAGE[:] = [extension.__name__]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield


def counts():
    return {k: len(getattr(bpy.data, k)) for k in KINDS}


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def synthetic(rng, n, proc_hw, orig_wh, k_orig, *, frames=None, fps=30.0, video_path="/nonexistent/clip.mp4",
              depth=None, focal_scale=None, paths=None):
    """A Prediction with known cameras; conf = 1 + flat pixel index (identifies every point's pixel)."""
    Prediction = mod("da3_blender.prediction").Prediction
    h, w = proc_hw
    big_w, big_h = orig_wh
    p2o = np.diag([big_w / w, big_h / h, 1.0])
    k_all = np.tile(np.asarray(k_orig, dtype=np.float64), (n, 1, 1))
    if focal_scale is not None:  # zooming video: fx, fy scaled together
        k_all[:, 0, 0] *= focal_scale
        k_all[:, 1, 1] *= focal_scale
    k_proc = np.linalg.inv(p2o) @ k_all
    ext = np.zeros((n, 3, 4))
    for i in range(n):
        ext[i, :, :3] = random_rotation(rng)
        ext[i, :, 3] = rng.normal(size=3)
    if depth is None:
        depth = rng.uniform(2.0, 5.0, (n, h, w))
    meta = {}
    if frames is not None:
        meta["video"] = {"path": video_path, "fps": fps, "frame_count": int(max(frames)) + 1, "width": big_w, "height": big_h}
    return Prediction(
        depth=depth.astype(np.float32),
        processed_images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        conf=(1.0 + np.arange(n * h * w, dtype=np.float64)).reshape(n, h, w).astype(np.float32),
        extrinsics=ext.astype(np.float32),
        intrinsics=k_proc.astype(np.float32),
        orig_size=np.tile([[big_w, big_h]], (n, 1)),
        proc_to_orig=np.tile(p2o, (n, 1, 1)),
        frame_numbers=None if frames is None else np.asarray(frames, dtype=np.int64),
        source_paths=paths,
        meta=meta,
    )


def options(**kw):
    base = dict(conf_percentile=0.0, max_points=0, planes=False)
    base.update(kw)
    return mod("scene.importer").ImportOptions(**base)


def role(root, name):
    return next(c for c in root.children if c.get("da3_role") == name)


def read(mesh, attr, kind="value", dtype=np.float32, width=1):
    out = np.empty(len(mesh.attributes[attr].data) * width, dtype=dtype)
    mesh.attributes[attr].data.foreach_get(kind, out)
    return out.reshape(-1, width) if width > 1 else out


def check_points(pred, points_obj, cam_for_view, rng, scale=1.0, sample=60):
    """Project sampled points through their Blender camera: original-image pixel within 0.25 px."""
    cameras = mod("scene.cameras")
    scene = bpy.context.scene
    mesh = points_obj.data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    ids = read(mesh, "conf").astype(np.int64) - 1
    view = read(mesh, "view", dtype=np.int32)
    n, h, w = pred.depth.shape
    worst = 0.0
    for i in range(n):
        cam = cam_for_view(i)
        cameras.apply_camera_render_settings(cam, scene)
        width, height = cam["da3_width"], cam["da3_height"]
        sel = np.flatnonzero(view == i)
        assert sel.size > 0
        for k in rng.choice(sel, min(sample, sel.size), replace=False):
            flat = ids[k]
            assert flat // (h * w) == i
            r, c = divmod(flat % (h * w), w)
            expect = pred.proc_to_orig[i] @ np.array([c + 0.5, r + 0.5, 1.0])
            x = world_to_camera_view(scene, cam, Vector(co[k].tolist()))
            err = np.hypot(x.x * width - expect[0], (1.0 - x.y) * height - expect[1])
            worst = max(worst, err)
            assert x.z == pytest.approx(pred.depth[i, r, c] * scale, rel=1e-4)
    assert worst <= 0.25, worst
    return worst


CASES = {
    # name: (processed (h, w), original (W, H), K original (fx, fy, cx, cy), views)
    "landscape": ((28, 49), (1960, 1120), (1500.0, 1500.0, 980.0, 560.0), 1),
    "portrait": ((49, 28), (1080, 1920), (1400.0, 1400.0, 540.0, 960.0), 2),
    "offcentre": ((28, 49), (1920, 1080), (1700.0, 1700.0, 1010.0, 501.0), 2),
    "nonsquare": ((40, 40), (800, 800), (900.0, 700.0, 380.0, 430.0), 2),
    "nonuniform_1080p_to_504x280": ((280, 504), (1920, 1080), (1600.0, 1600.0, 960.0, 540.0), 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("up_axis,scale", [("Z_UP", "predicted"), ("KEEP", 2.5)])
def test_points_land_on_their_pixels_through_still_cameras(case, up_axis, scale):
    rng = np.random.default_rng(1)
    proc, orig, (fx, fy, cx, cy), n = CASES[case]
    k = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    pred = synthetic(rng, n, proc, orig, k, paths=[f"/photos/set/img_{i}.jpg" for i in range(n)])
    root = mod("scene.importer").import_prediction(pred, options=options(up_axis=up_axis, scale=scale))
    assert root.name == "DA3 set"
    cams = {o.name: o for o in role(root, "cameras").objects}
    assert sorted(cams) == [f"img_{i}" for i in range(n)]
    assert all(tuple(o.scale) == pytest.approx((1, 1, 1)) for o in cams.values())
    (points_obj,) = role(root, "points").objects
    s = 1.0 if scale == "predicted" else scale
    check_points(pred, points_obj, lambda i: cams[f"img_{i}"], rng, scale=s)
    scene = bpy.context.scene  # the scene was set to the first camera's plate
    assert (scene.render.resolution_x, scene.render.resolution_y) == orig
    if up_axis == "Z_UP":  # the first camera sits at the origin, looking along +Y with Z up
        first = np.array(cams["img_0"].matrix_world)
        assert np.allclose(first[:3, 3], 0, atol=1e-5)
        assert np.allclose(-first[:3, 2], [0, 1, 0], atol=1e-5) and np.allclose(first[:3, 1], [0, 0, 1], atol=1e-5)


def test_video_one_animated_camera_matches_every_keyed_frame():
    rng = np.random.default_rng(2)
    frames = np.arange(30) * 15
    zoom = np.linspace(1.0, 1.3, 30)
    pred = synthetic(rng, 30, (280, 504), (1920, 1080), [[1600, 0, 950], [0, 1500, 545], [0, 0, 1]],
                     frames=frames, fps=30.0, focal_scale=zoom)
    opts = options(max_points=30 * 400, interpolation="CONSTANT")
    root = mod("scene.importer").import_prediction(pred, options=opts)
    assert root.name == "DA3 clip"
    (cam,) = role(root, "cameras").objects
    scene = bpy.context.scene
    assert (scene.render.fps, scene.render.fps_base) == (30, 1.0)
    assert scene.frame_start == 1 and scene.frame_end == 1 + frames[-1]  # the last decoded frame
    compat = mod("scene.compat")
    curves = compat.action_fcurves(cam.animation_data.action, cam)
    assert sorted({c.data_path for c in curves}) == ["location", "rotation_quaternion"]
    for curve in curves:
        keys = np.empty(60, np.float32)
        curve.keyframe_points.foreach_get("co", keys)
        assert np.array_equal(keys[0::2], 1 + frames)
        assert all(p.interpolation == "CONSTANT" for p in curve.keyframe_points)
    lens_curves = compat.action_fcurves(cam.data.animation_data.action, cam.data)
    assert "lens" in {c.data_path for c in lens_curves}  # the zoom is keyed

    def at_frame(i):
        scene.frame_set(int(1 + frames[i]))
        return cam

    check_points(pred, role(root, "points").objects[0], at_frame, rng, sample=12)


def test_video_fixed_intrinsics_and_ntsc_rate():
    rng = np.random.default_rng(3)
    frames = np.arange(5) * 2
    pred = synthetic(rng, 5, (28, 49), (1920, 1080), [[1600, 0, 960], [0, 1600, 540], [0, 0, 1]],
                     frames=frames, fps=24000 / 1001, focal_scale=np.linspace(1, 1.1, 5))
    root = mod("scene.importer").import_prediction(pred, options=options(fixed_intrinsics=True, points=False))
    (cam,) = role(root, "cameras").objects
    scene = bpy.context.scene
    assert scene.render.fps == 24 and scene.render.fps_base == pytest.approx(1.001)
    assert cam.data.animation_data is None  # lens set once (median), not keyed
    assert cam.data.lens == pytest.approx(np.median(1600 * np.linspace(1, 1.1, 5)) * 36 / 1920, rel=1e-5)


def test_footage_is_the_camera_background(robot_video):
    rng = np.random.default_rng(4)
    pred = synthetic(rng, 3, (28, 49), (1024, 576), [[800, 0, 512], [0, 800, 288], [0, 0, 1]],
                     frames=[0, 10, 20], video_path=str(robot_video), fps=50.0)
    root = mod("scene.importer").import_prediction(pred, options=options(points=False))
    (cam,) = role(root, "cameras").objects
    assert root.name == "DA3 robot_unitree"
    assert cam.data.show_background_images
    bg = cam.data.background_images[0]
    assert bg.source == "MOVIE_CLIP" and bg.clip.frame_start == bpy.context.scene.frame_start
    assert bpy.context.scene.render.fps == 50


def test_depth_planes_vertices_uvs_and_edges():
    rng = np.random.default_rng(5)
    h, w = 40, 60
    depth = rng.uniform(3.0, 3.1, (2, h, w))
    depth[:, :, w // 2:] *= 2.0  # a depth step between columns 29 and 30
    pred = synthetic(rng, 2, (h, w), (1200, 800), [[1000, 0, 600], [0, 900, 400], [0, 0, 1]], depth=depth)
    thr = 0.2
    root = mod("scene.importer").import_prediction(
        pred, options=options(points=False, planes=True, plane_stride=3, plane_edge_threshold=thr))
    cams = {o.name: o for o in role(root, "cameras").objects}
    planes = sorted(role(root, "planes").objects, key=lambda o: o["da3_view"])
    scene = bpy.context.scene
    cameras = mod("scene.cameras")
    for i, obj in enumerate(planes):
        cam = cams[f"view_{i:03d}"]
        cameras.apply_camera_render_settings(cam, scene)
        mesh = obj.data
        nv = len(mesh.vertices)
        co = np.empty(nv * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        loops = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("vertex_index", loops)
        uv_loop = np.empty(len(mesh.loops) * 2, np.float32)
        mesh.uv_layers["UVMap"].data.foreach_get("uv", uv_loop)
        uv = np.zeros((nv, 2))
        uv[loops] = uv_loop.reshape(-1, 2)
        cols = np.floor(uv[:, 0] * w).astype(int)
        rows = np.floor((1 - uv[:, 1]) * h).astype(int)
        assert np.allclose(uv[:, 0] * w, cols + 0.5, atol=1e-3) and np.allclose((1 - uv[:, 1]) * h, rows + 0.5, atol=1e-3)
        image = mesh.materials[0].node_tree.nodes["Image Texture"].image
        px = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(px)
        px = px.reshape(h, w, 4)[::-1]
        assert np.allclose(px[rows, cols, :3] * 255, pred.processed_images[i][rows, cols], atol=0.51)
        worst = 0.0
        for v in rng.choice(nv, 80, replace=False):
            x = world_to_camera_view(scene, cam, Vector(co[v].tolist()))
            expect = pred.proc_to_orig[i] @ np.array([cols[v] + 0.5, rows[v] + 0.5, 1.0])
            worst = max(worst, np.hypot(x.x * 1200 - expect[0], (1 - x.y) * 800 - expect[1]))
            assert x.z == pytest.approx(depth[i, rows[v], cols[v]], rel=1e-4)
        assert worst <= 0.25
        d = depth[i][rows, cols]
        face_d = d[loops.reshape(-1, 4)]
        for a, b in ((0, 1), (1, 2), (2, 3), (3, 0)):
            ratio = np.maximum(face_d[:, a], face_d[:, b]) / np.minimum(face_d[:, a], face_d[:, b])
            assert ratio.max() <= 1 + thr
        assert 0 < len(mesh.polygons) < (h // 3 + 1) * (w // 3 + 1)  # the step's faces were removed
        # the edges written in bulk: each face corner's edge joins it to the next corner; valid mesh
        edge_verts = np.empty(len(mesh.edges) * 2, np.int32)
        mesh.edges.foreach_get("vertices", edge_verts)
        corner_edge = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("edge_index", corner_edge)
        ends = np.sort(edge_verts.reshape(-1, 2)[corner_edge], axis=1)
        quads = loops.reshape(-1, 4)
        assert np.array_equal(ends, np.sort(np.stack([quads, np.roll(quads, -1, axis=1)], -1).reshape(-1, 2), axis=1))
        assert len(np.unique(np.sort(edge_verts.reshape(-1, 2), axis=1), axis=0)) == len(mesh.edges)
        assert not mesh.validate()  # True would mean Blender had to repair something
        assert image.packed_file is not None


def test_blender_camera_to_opencv_round_trips():
    rng = np.random.default_rng(6)
    pred = synthetic(rng, 3, (40, 40), (800, 600), [[900, 0, 380], [0, 700, 330], [0, 0, 1]])
    conventions = mod("scene.conventions")
    geometry = mod("da3_blender.geometry")
    cameras = mod("scene.cameras")
    for up_axis, scale in (("Z_UP", 1.0), ("KEEP", 0.4)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        root = mod("scene.importer").import_prediction(pred, options=options(points=False, up_axis=up_axis, scale=scale))
        rel = conventions.relative_extrinsics(pred.extrinsics, geometry.to_4x4(pred.extrinsics[0]))
        for i, cam in enumerate(sorted(role(root, "cameras").objects, key=lambda o: o.name)):
            cameras.apply_camera_render_settings(cam, bpy.context.scene)
            w2c, k, size = cameras.blender_camera_to_opencv(cam, bpy.context.scene, conventions.up_matrix(up_axis), scale)
            assert size == (800, 600)
            assert np.allclose(w2c, rel[i], atol=1e-5)
            assert np.allclose(k, pred.original_intrinsics()[i], rtol=1e-5, atol=1e-4)


def test_intrinsics_mapping_inverts_for_every_fit():
    c = mod("scene.conventions")
    rng = np.random.default_rng(7)
    for width, height in ((1920, 1080), (1080, 1920), (504, 280)):
        k = np.array([[rng.uniform(300, 2000), 0, rng.uniform(0.3, 0.7) * width],
                      [0, 0, rng.uniform(0.3, 0.7) * height], [0, 0, 1]])
        k[1, 1] = k[0, 0] / rng.uniform(0.8, 1.25)
        p = c.intrinsics_to_blender(k[None], width, height)
        back = c.blender_to_intrinsics(p["lens"][0], 36.0, 24.0, "HORIZONTAL", p["shift_x"][0], p["shift_y"][0],
                                       width, height, p["pixel_aspect_x"][0], p["pixel_aspect_y"][0])
        assert np.allclose(back, k, rtol=1e-9)


def test_save_reload_keeps_everything(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(8)
    src = tmp_path / "my photos – é 写真"  # spaces and non-ASCII survive save and reload
    src.mkdir()
    paths = []
    for i in range(2):
        paths.append(str(src / f"shot_{i}.png"))
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(paths[-1])
    pred = synthetic(rng, 2, (30, 40), (80, 60), [[70, 0, 40], [0, 70, 30], [0, 0, 1]], paths=paths)
    mod("scene.importer").import_prediction(pred, options=options(planes=True, plane_texture="original", pack_images=False))
    vid = synthetic(rng, 4, (28, 49), (1920, 1080), [[1600, 0, 960], [0, 1600, 540], [0, 0, 1]], frames=[0, 3, 6, 9])
    mod("scene.importer").import_prediction(vid, options=options(planes=True))
    before = counts()
    out = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(out))
    assert counts() == before
    pts = bpy.data.objects["my photos – é 写真 points"]
    assert {"Col", "conf", "view"} <= set(pts.data.attributes.keys())
    assert pts.data.attributes["Col"].data_type == "FLOAT_COLOR" and pts.data.attributes["view"].data_type == "INT"
    modifier = pts.modifiers["DA3 Points"]
    assert modifier.type == "NODES" and modifier.node_group is not None
    assert {"Confidence Threshold", "Radius"} <= {i.name for i in modifier.node_group.interface.items_tree}
    assert pts.data.materials[0].node_tree.nodes["Attribute"].attribute_name == "Col"
    shot = bpy.data.objects["shot_0 plane"].data.materials[0].node_tree.nodes["Image Texture"].image
    assert shot.packed_file is None and bpy.path.abspath(shot.filepath) == paths[0]
    assert shot.size[:] == (80, 60)
    processed = bpy.data.objects["frame_0001 plane"].data.materials[0].node_tree.nodes["Image Texture"].image
    assert processed.packed_file is not None and processed.size[:] == (49, 28)
    cam = bpy.data.objects["clip"]
    curves = mod("scene.compat").action_fcurves(cam.animation_data.action, cam)
    assert len(curves) == 7 and all(len(c.keyframe_points) == 4 for c in curves)


def test_reimport_replaces_and_other_sources_coexist():
    rng = np.random.default_rng(9)
    importer = mod("scene.importer")
    a = synthetic(rng, 2, (20, 30), (300, 200), [[300, 0, 150], [0, 300, 100], [0, 0, 1]], paths=["/x/a/1.png", "/x/a/2.png"])
    b = synthetic(rng, 2, (20, 30), (300, 200), [[300, 0, 150], [0, 300, 100], [0, 0, 1]], paths=["/x/b/1.png", "/x/b/2.png"])
    importer.import_prediction(a, options=options(planes=True))
    once = counts()
    importer.import_prediction(a, options=options(planes=True))
    assert counts() == once
    assert "DA3 a" in bpy.data.collections and "1" in bpy.data.objects and "1.001" not in bpy.data.objects
    importer.import_prediction(b, options=options(planes=True))
    assert {"DA3 a", "DA3 b"} <= set(bpy.data.collections.keys())
    assert counts()["objects"] == 2 * once["objects"]


def test_bad_result_files_and_failed_builds_change_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    importer = mod("scene.importer")
    prediction = mod("da3_blender.prediction")
    errors = mod("da3_blender.errors")
    good = synthetic(rng, 2, (20, 30), (300, 200), [[300, 0, 150], [0, 300, 100], [0, 0, 1]], paths=["/x/a/1.png", "/x/a/2.png"])
    importer.import_prediction(good, options=options(planes=True))
    names = sorted(bpy.data.objects.keys())
    before = counts()
    path = tmp_path / "r.npz"
    prediction.save_result(path, good)
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all" * 10)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta_json"]))
    meta["version"] = 99
    data["meta_json"] = np.asarray(json.dumps(meta))
    np.savez(tmp_path / "future.npz", **data)
    for bad in ("trunc.npz", "junk.npz", "future.npz"):
        with pytest.raises(errors.ResultFormatError):
            importer.import_result_file(tmp_path / bad)
        assert counts() == before
    broken = synthetic(rng, 2, (20, 30), (300, 200), [[300, 0, 150], [0, 300, 100], [0, 0, 1]], paths=["/x/a/1.png", "/x/a/2.png"])
    broken.extrinsics[1, 0, 0] = np.nan
    with pytest.raises(errors.ResultFormatError, match="extrinsics"):
        importer.import_prediction(broken)
    no_pose = synthetic(rng, 2, (20, 30), (300, 200), [[300, 0, 150], [0, 300, 100], [0, 0, 1]])
    no_pose.extrinsics = None
    with pytest.raises(errors.BadInputError, match="no camera poses"):
        importer.import_prediction(no_pose)
    with pytest.raises(errors.BadInputError, match="not metric"):
        importer.import_prediction(good, options=options(scale="metric"))
    planes = mod("scene.planes")

    def explode(*args, **kwargs):
        raise RuntimeError("simulated failure half-way through the build")

    monkeypatch.setattr(planes, "plane_mesh", explode)  # re-import of the same source fails after the points
    with pytest.raises(RuntimeError, match="simulated"):
        importer.import_prediction(good, options=options(planes=True))
    assert counts() == before and sorted(bpy.data.objects.keys()) == names
    monkeypatch.undo()
    assert importer.import_result_file(path).name == "DA3 a"  # a good file still imports


def test_point_filters_percentile_stride_max_points_and_per_view_objects():
    rng = np.random.default_rng(11)
    pred = synthetic(rng, 3, (30, 40), (400, 300), [[350, 0, 200], [0, 350, 150], [0, 0, 1]])
    importer = mod("scene.importer")
    root = importer.import_prediction(pred, options=options(conf_percentile=50.0, cameras=False))
    conf = read(role(root, "points").objects[0].data, "conf")
    assert len(conf) == pytest.approx(3 * 30 * 40 / 2, abs=2) and conf.min() >= np.percentile(pred.conf, 50)
    root = importer.import_prediction(pred, options=options(point_stride=4, max_points=100, fuse_points=False, seed=3))
    objs = role(root, "points").objects
    assert len(objs) == 3
    ids = np.concatenate([read(o.data, "conf") for o in objs]).astype(np.int64) - 1
    assert len(ids) == 100 and np.all((ids % 40) % 4 == 0) and np.all(((ids // 40) % 30) % 4 == 0)


def test_points_and_planes_render_their_colours_in_cycles(tmp_path):
    rng = np.random.default_rng(12)
    pred = synthetic(rng, 1, (18, 32), (32, 18), [[30, 0, 16], [0, 30, 9], [0, 0, 1]])
    pred.depth[:] = 3.0
    pred.extrinsics[0] = np.eye(4)[:3]
    pred.processed_images[:] = (255, 0, 0)
    for parts in (dict(points=True, planes=False, point_radius=0.2), dict(points=False, planes=True)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        mod("scene.importer").import_prediction(pred, options=options(**parts))
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        scene.cycles.samples = 1
        scene.cycles.device = "CPU"
        scene.view_settings.view_transform = "Standard"  # colours out as they went in
        scene.render.filepath = str(tmp_path / "r.png")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(str(tmp_path / "r.png"))
        px = np.array(image.pixels[:]).reshape(18, 32, 4)
        centre = px[6:12, 10:22, :3].reshape(-1, 3)
        assert np.median(centre[:, 0]) > 0.8 and np.median(centre[:, 1:]) < 0.1, parts


@pytest.mark.parametrize("ext_rows", [3, 4])
def test_official_da3_npz_export_imports(tmp_path, ext_rows):
    """The official DA3 ``npz`` export (keys image, depth, conf, extrinsics, intrinsics, nothing else;
    extrinsics (N,3,4) or, from its align-without-scale path, (N,4,4)) imports and lines up."""
    rng = np.random.default_rng(13)
    pred = synthetic(rng, 3, (28, 49), (49, 28), [[40.0, 0, 24.5], [0, 40.0, 14.0], [0, 0, 1]])
    ext = np.zeros((3, ext_rows, 4), np.float32)
    ext[:, :3] = pred.extrinsics
    if ext_rows == 4:
        ext[:, 3, 3] = 1.0
    path = tmp_path / "official export.npz"
    np.savez_compressed(path, image=pred.processed_images, depth=pred.depth, conf=pred.conf,
                        extrinsics=ext, intrinsics=pred.intrinsics)
    root = mod("scene.importer").import_result_file(path, options(planes=True))
    assert root.name == "DA3 official export"
    cams = {o.name: o for o in role(root, "cameras").objects}
    assert sorted(cams) == ["view_000", "view_001", "view_002"]
    assert len(role(root, "planes").objects) == 3
    (points_obj,) = role(root, "points").objects
    check_points(pred, points_obj, lambda i: cams[f"view_{i:03d}"], rng)


def test_confidence_threshold_and_radius_are_live_modifier_inputs():
    rng = np.random.default_rng(14)
    pred = synthetic(rng, 1, (10, 10), (10, 10), [[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])  # conf = 1..100
    root = mod("scene.importer").import_prediction(pred, options=options(cameras=False))
    (obj,) = role(root, "points").objects
    modifier = obj.modifiers["DA3 Points"]
    assert modifier.node_group.is_modifier
    points = mod("scene.points")

    def evaluated():
        obj.update_tag()
        graph = bpy.context.evaluated_depsgraph_get()
        graph.update()
        (cloud,) = [i.object.data for i in graph.object_instances if i.object.original == obj and i.object.type == "POINTCLOUD"]
        radius = np.empty(len(cloud.points), np.float32)
        cloud.attributes["radius"].data.foreach_get("value", radius)
        return len(cloud.points), radius

    assert evaluated()[0] == 100
    points.set_group_input(modifier, "Confidence Threshold", 60.5)
    points.set_group_input(modifier, "Radius", 0.25)
    count, radius = evaluated()
    assert count == 40 and np.allclose(radius, 0.25)


def _frames_of(cam, scene):
    out = {}
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        out[f] = (np.array(cam.matrix_world), cam.data.lens, cam.data.shift_x, cam.data.shift_y)
    return out


def test_cameras_round_trip_through_alembic_and_fbx(tmp_path):
    """Re-imported with Blender's own importers, per frame. Measured (bpy 5.0.1): Alembic matrix 1.5e-6,
    FBX matrix 4.8e-7 and keyed lens exact; Blender's Alembic importer reads the lens once, but the
    file holds every frame's lens."""
    rng = np.random.default_rng(15)
    frames = np.arange(10) * 3
    zoom = np.linspace(1.0, 1.3, 10)
    pred = synthetic(rng, 10, (28, 49), (1920, 1080), [[1600, 0, 950], [0, 1500, 545], [0, 0, 1]],
                     frames=frames, fps=25.0, focal_scale=zoom)
    mod("scene.importer").import_prediction(pred, options=options(points=False))
    exchange = mod("scene.exchange")
    errors = mod("da3_blender.errors")
    scene = bpy.context.scene
    (cam,) = exchange.imported_cameras(scene)
    ref = _frames_of(cam, scene)
    assert len({round(v[1], 4) for v in ref.values()}) == len(ref)  # the lens changes on every frame
    with pytest.raises(errors.BadInputError, match=r"\.abc"):
        exchange.export_cameras(tmp_path / "cam.obj")
    abc = exchange.export_cameras(tmp_path / "cam.abc")
    fbx = exchange.export_cameras(tmp_path / "cam.fbx")
    raw = open(abc, "rb").read()
    assert all(np.float64(v[1]).tobytes() in raw for v in ref.values())  # every frame's focal length is in the file

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = 25  # Blender's Alembic importer keeps the scene's fps
    bpy.ops.wm.alembic_import(filepath=abc, set_frame_range=True, as_background_job=False)
    (back,) = [o for o in scene.objects if o.type == "CAMERA"]
    assert (scene.frame_start, scene.frame_end) == (1, 1 + frames[-1])
    got = _frames_of(back, scene)
    assert max(np.abs(got[f][0] - ref[f][0]).max() for f in ref) < 1e-5
    assert got[1][1] == pytest.approx(ref[1][1], rel=1e-6)  # the first frame's lens (read once)
    assert all(got[f][2:] == pytest.approx(ref[f][2:], abs=1e-6) for f in ref)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.import_scene.fbx(filepath=fbx, anim_offset=0)  # the importer's default shifts keys by one frame
    (back,) = [o for o in scene.objects if o.type == "CAMERA"]
    assert (scene.render.fps, scene.render.fps_base) == (25, 1.0)
    scene.frame_start, scene.frame_end = 1, 1 + frames[-1]
    got = _frames_of(back, scene)
    assert max(np.abs(got[f][0] - ref[f][0]).max() for f in ref) < 1e-5
    assert max(abs(got[f][1] - ref[f][1]) for f in ref) < 1e-4  # the keyed lens survives
    assert all(got[f][2:] == pytest.approx(ref[f][2:], abs=1e-6) for f in ref)


def test_still_cameras_export_by_name_and_export_operator(tmp_path):
    rng = np.random.default_rng(16)
    pred = synthetic(rng, 3, (28, 49), (1920, 1080), [[1600, 0, 960], [0, 1600, 540], [0, 0, 1]],
                     paths=[f"/photos/set/img_{i}.jpg" for i in range(3)])
    mod("scene.importer").import_prediction(pred, options=options(points=False))
    bpy.ops.mesh.primitive_cube_add()  # the user's own object: neither exported nor deselected
    cube = bpy.context.active_object
    ref = {o.name: (np.array(o.matrix_world), o.data.lens) for o in mod("scene.exchange").imported_cameras(bpy.context.scene)}
    op = mod("operators.export_camera").DA3_OT_export_camera
    bpy.utils.register_class(op)
    try:
        assert bpy.ops.da3.export_camera(filepath=str(tmp_path / "stills.fbx"), file_format="FBX") == {"FINISHED"}
    finally:
        bpy.utils.unregister_class(op)
    assert cube.select_get() and bpy.context.view_layer.objects.active == cube
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=str(tmp_path / "stills.fbx"))
    got = {o.name: o for o in bpy.context.scene.objects}
    assert sorted(got) == sorted(ref) == ["img_0", "img_1", "img_2"]
    for name, (matrix, lens) in ref.items():
        assert np.abs(np.array(got[name].matrix_world) - matrix).max() < 1e-5
        assert got[name].data.lens == pytest.approx(lens, abs=1e-4)


def _render(scene, path, frame):
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    w, h = image.size
    px = np.array(image.pixels[:], dtype=np.float64).reshape(h, w, 4)[::-1, :, :3]  # top row first
    bpy.data.images.remove(image)
    return px


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


# Measured (16 samples, 48x28, bpy 5.0.1): 49.4 / 44.9 dB against the frame's own image, 8.3 dB against the
# other frame's; 27.3 dB with Blender's default AgX view transform instead of Standard.
RENDER_PSNR_DB = 35.0


def test_video_render_through_the_camera_gives_back_each_frame(tmp_path):
    """Import defaults (Standard view transform, per-frame plane visibility, footage render size), a
    Cycles render at two frames through the animated camera: only that frame's plane, and its image."""
    rng = np.random.default_rng(17)
    h, w = 28, 48
    k = [[40.0, 0, 24.0], [0, 40.0, 14.0], [0, 0, 1]]
    pred = synthetic(rng, 2, (h, w), (w, h), k, frames=[0, 4], fps=25.0)
    pred.meta["video"].update(width=w, height=h, frame_count=6)
    pred.extrinsics[0] = np.eye(4)[:3]
    rot = np.array([[np.cos(0.15), 0, -np.sin(0.15)], [0, 1, 0], [np.sin(0.15), 0, np.cos(0.15)]])
    pred.extrinsics[1] = np.concatenate([rot, [[0.3], [0.05], [0.1]]], axis=1)
    y, x = np.mgrid[0:h, 0:w] + 0.5
    pred.depth[0] = 3.0 + 0.2 * np.sin(x / 7.0)
    pred.depth[1] = 2.5 + 0.2 * np.cos(y / 5.0)
    pred.processed_images[0] = np.stack([128 + 100 * np.sin(x / 4.0), 60 + 40 * np.cos(y / 5.0), 90 + 0 * x], -1)
    pred.processed_images[1] = np.stack([50 + 0 * x, 128 + 100 * np.cos(x / 3.0 + y / 6.0), 140 + 90 * np.sin(y / 4.0)], -1)
    root = mod("scene.importer").import_prediction(pred, options=options(points=False, planes=True, plane_stride=1))
    scene = bpy.context.scene
    assert scene.view_settings.view_transform == "Standard"
    assert (scene.render.resolution_x, scene.render.resolution_y) == (w, h)
    assert (scene.frame_start, scene.frame_end) == (1, 6)  # the last decoded frame: frame_count 6 -> scene frame 6
    planes = {o.name: o for o in role(root, "planes").objects}
    assert sorted(planes) == ["frame_0001 plane", "frame_0005 plane"]  # named by scene frame (old result: 0-based + 1)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    for i, frame in enumerate((1, 5)):
        px = _render(scene, tmp_path / f"f{frame}.png", frame)
        assert [o.name for o in planes.values() if not o.hide_render] == [f"frame_{frame:04d} plane"]
        assert [o.name for o in planes.values() if not o.hide_viewport] == [f"frame_{frame:04d} plane"]
        inner = np.s_[1:-1, 1:-1]  # the plane spans pixel centres: the outer half pixel is background
        own = _psnr(px[inner], pred.processed_images[i][inner] / 255.0)
        other = _psnr(px[inner], pred.processed_images[1 - i][inner] / 255.0)
        print(f"frame {frame}: {own:.1f} dB against its own image, {other:.1f} dB against the other")
        assert own >= RENDER_PSNR_DB and other < 20.0
    scene.frame_set(3)  # between the sampled frames no plane is shown
    assert all(o.hide_render and o.hide_viewport for o in planes.values())


def test_a_1000_frame_result_imports_one_camera_sampled_points_and_bounded_planes():
    rng = np.random.default_rng(18)
    n = 1000
    pred = synthetic(rng, n, (8, 14), (1920, 1080), [[1600, 0, 960], [0, 1600, 540], [0, 0, 1]],
                     frames=np.arange(n), fps=25.0)
    importer = mod("scene.importer")
    root = importer.import_prediction(pred, options=options(max_points=5000, planes=True))
    (cam,) = role(root, "cameras").objects
    curves = mod("scene.compat").action_fcurves(cam.animation_data.action, cam)
    assert len(curves) == 7 and all(len(c.keyframe_points) == n for c in curves)
    keys = np.empty(2 * n, np.float32)
    curves[0].keyframe_points.foreach_get("co", keys)
    assert np.array_equal(keys[0::2], 1 + np.arange(n))
    assert bpy.context.scene.frame_end == n
    (points_obj,) = role(root, "points").objects
    view = read(points_obj.data, "view", dtype=np.int32)
    assert len(view) == 5000 and len(np.unique(view)) > 0.95 * n  # sampled across all frames
    assert len(role(root, "planes").objects) == 0
    assert "more than 100" in root["da3_planes_note"]
    root = importer.import_prediction(pred, options=options(points=False, planes=True, planes_every=10))
    planes = role(root, "planes").objects
    assert len(planes) == 100 and sorted(o.name for o in planes)[:2] == ["frame_0001 plane", "frame_0011 plane"]
    root = importer.import_prediction(pred, options=options(points=False, planes=True, planes_max_views=0, planes_every=250))
    assert len(role(root, "planes").objects) == 4  # 0 = no limit
