"""3D Gaussians in Blender (bpy): one ellipsoid instance per kept Gaussian with its position, axes and
size; they sit where the point cloud of the same pixels sits; Cycles shows their colour through the
first camera; failures leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for scene tests")

from test_scene import counts, empty_file, mod  # noqa: E402,F401  (the scene tests' empty file, counts and module lookup)


def prediction(rng, n=2, h=12, w=16, on_pixels=True):
    """Random cameras and depth; Gaussians at the pixels' points (``on_pixels``), random axes/sizes."""
    geometry = mod("da3_blender.geometry")
    Gaussians = mod("da3_blender.results.gaussians").Gaussians
    Prediction = mod("da3_blender.prediction").Prediction
    k = np.tile(np.array([[14.0, 0, w / 2], [0, 15.0, h / 2], [0, 0, 1]]), (n, 1, 1))
    ext = np.zeros((n, 3, 4))
    for i in range(n):
        q = rng.normal(size=4)
        ext[i, :, :3] = geometry.quaternion_to_rotation(q)
        ext[i, :, 3] = rng.normal(size=3)
    depth = rng.uniform(2.0, 4.0, (n, h, w)).astype(np.float32)
    m = n * h * w
    means = geometry.unproject_depth(depth, k, ext).reshape(m, 3) if on_pixels else rng.normal(size=(m, 3))
    quats = rng.normal(size=(m, 4))
    gs = Gaussians(means=means, scales=rng.uniform(0.01, 0.1, (m, 3)), rotations=quats / np.linalg.norm(quats, axis=1)[:, None],
                   harmonics=rng.normal(size=(m, 3, 9)), opacities=rng.uniform(0.2, 0.9, m))
    return Prediction(depth=depth, extrinsics=ext.astype(np.float32), intrinsics=k.astype(np.float32),
                      processed_images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), gaussians=gs)


def options(**kw):
    base = dict(conf_percentile=0.0, max_points=0, planes=False, points=False, cameras=False)
    base.update(kw)
    return mod("scene.importer").ImportOptions(**base)


def role(root, name):
    return next(c for c in root.children if c.get("da3_role") == name)


def instances(obj) -> np.ndarray:
    """(K,4,4) world matrices of the evaluated instances of ``obj``."""
    obj.update_tag()
    graph = bpy.context.evaluated_depsgraph_get()
    graph.update()
    return np.array([np.array(i.matrix_world) for i in graph.object_instances
                     if i.is_instance and i.parent is not None and i.parent.original == obj])


def test_one_instance_per_kept_gaussian_with_its_transform():
    rng = np.random.default_rng(0)
    pred = prediction(rng)
    splats, geometry = mod("scene.splats"), mod("da3_blender.geometry")
    keep = mod("da3_blender.results.gaussians").per_pixel_mask(pred.depth).reshape(-1)
    root = mod("scene.importer").import_prediction(pred, options=options(up_axis="Z_UP", scale=2.5))
    (obj,) = role(root, "splats").objects
    mats = instances(obj)
    assert len(mats) == int(keep.sum()) == obj["da3_gaussians"] > 0
    data = splats.splat_data(pred, mod("scene.conventions").up_matrix("Z_UP"), 2.5)
    # match by position (the depsgraph's instance order is not part of the contract)
    order = np.argmin(np.linalg.norm(mats[:, None, :3, 3] - data["positions"][None], axis=-1), axis=1)
    assert sorted(order) == list(range(len(mats)))
    np.testing.assert_allclose(mats[:, :3, 3], data["positions"][order], atol=1e-5)
    lin = mats[:, :3, :3]
    size = np.linalg.norm(lin, axis=1)  # column norms = the instance's scale per axis
    np.testing.assert_allclose(size, splats.DEFAULT_SIZE * data["scales"][order], rtol=1e-5)
    np.testing.assert_allclose(lin / size[:, None, :], geometry.quaternion_to_rotation(data["rotations"][order]), atol=1e-5)
    # the Blender axes are the Gaussians' axes turned by the same rotation as the world (first camera, up axis)
    w2c0 = geometry.to_4x4(pred.extrinsics[0])
    turn = mod("scene.conventions").up_matrix("Z_UP") @ w2c0[:3, :3]
    gs_rot = geometry.quaternion_to_rotation(pred.gaussians.rotations[np.flatnonzero(keep)][order])
    np.testing.assert_allclose(lin / size[:, None, :], turn @ gs_rot, atol=1e-5)
    np.testing.assert_allclose(size, 2.5 * splats.DEFAULT_SIZE * pred.gaussians.scales[np.flatnonzero(keep)][order], rtol=1e-5)


def test_gaussians_sit_on_the_point_cloud_of_their_pixels():
    rng = np.random.default_rng(1)
    pred = prediction(rng)
    root = mod("scene.importer").import_prediction(pred, options=options(points=True, up_axis="Z_UP", scale=3.0))
    (pts,) = role(root, "points").objects
    (obj,) = role(root, "splats").objects
    co = np.empty(len(pts.data.vertices) * 3, np.float32)
    pts.data.vertices.foreach_get("co", co)
    n, h, w = pred.depth.shape
    assert len(co) == 3 * n * h * w  # every pixel is a point (in pixel order)
    keep = np.flatnonzero(mod("da3_blender.results.gaussians").per_pixel_mask(pred.depth))
    pos = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", pos)
    np.testing.assert_allclose(pos.reshape(-1, 3), co.reshape(-1, 3)[keep], atol=2e-4)
    col = np.empty(len(obj.data.vertices) * 4, np.float32)
    obj.data.attributes["Col"].data.foreach_get("color", col)
    srgb = np.clip(0.5 + 0.28209479177387814 * pred.gaussians.harmonics[keep, :, 0], 0, 1)
    np.testing.assert_allclose(col.reshape(-1, 4)[:, :3], mod("scene.conventions").srgb_to_linear(srgb), atol=1e-6)


def test_a_known_pose_result_keeps_its_world_splats_points_and_cameras():
    """Issue 17: a result aligned to given cameras is built in their world: cameras where the poses say,
    points and Gaussians on the same pixels' points (nothing re-based onto view 0)."""
    rng = np.random.default_rng(4)
    pred = prediction(rng)
    pred.meta = {"options": {"pose_conditioned": True, "align_to_input_ext_scale": True}}
    conv = mod("scene.conventions")
    root = mod("scene.importer").import_prediction(pred, options=options(points=True, cameras=True, scale=2.0))
    assert root["da3_world"] == "known poses"
    cams = sorted(role(root, "cameras").objects, key=lambda ob: ob.name)
    want = conv.camera_matrices(np.asarray(pred.extrinsics, np.float64), conv.up_matrix("Z_UP"), 2.0)
    assert np.abs(np.array([np.array(ob.matrix_world) for ob in cams]) - want).max() < 1e-5
    (pts,) = role(root, "points").objects
    (obj,) = role(root, "splats").objects
    co = np.empty(len(pts.data.vertices) * 3, np.float32)
    pts.data.vertices.foreach_get("co", co)
    pos = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", pos)
    keep = np.flatnonzero(mod("da3_blender.results.gaussians").per_pixel_mask(pred.depth))
    np.testing.assert_allclose(pos.reshape(-1, 3), co.reshape(-1, 3)[keep], atol=2e-4)
    world = mod("da3_blender.geometry").unproject_depth(pred.depth, pred.intrinsics, pred.extrinsics).reshape(-1, 3)
    np.testing.assert_allclose(co.reshape(-1, 3), 2.0 * world @ conv.up_matrix("Z_UP").T, atol=2e-4)


def test_min_opacity_and_max_points():
    rng = np.random.default_rng(2)
    pred = prediction(rng, n=1)
    root = mod("scene.importer").import_prediction(pred, options=options(max_points=50, seed=4))
    (obj,) = role(root, "splats").objects
    assert len(instances(obj)) == 50
    opacity = np.empty(50, np.float32)
    obj.data.attributes["opacity"].data.foreach_get("value", opacity)
    mod("scene.points").set_group_input(obj.modifiers["DA3 Splats"], "Min Opacity", 0.5)
    assert len(instances(obj)) == int((opacity >= 0.5).sum()) < 50


def test_splats_render_their_colour_in_cycles(tmp_path):
    """One view seen by its own camera: red Gaussians on a plane at depth 3 fill the image centre."""
    rng = np.random.default_rng(3)
    h, w = 18, 32
    pred = prediction(rng, n=1, h=h, w=w)
    pred.extrinsics[0] = np.eye(4)[:3]
    pred.depth[:] = 3.0
    pred.intrinsics[0] = [[30, 0, w / 2], [0, 30, h / 2], [0, 0, 1]]
    gs = pred.gaussians
    gs.means[:] = mod("da3_blender.geometry").unproject_depth(pred.depth, pred.intrinsics).reshape(-1, 3)
    gs.scales[:] = 0.06
    gs.opacities[:] = 0.95
    c0 = 0.28209479177387814
    gs.harmonics[:, :, 0] = (np.array([1.0, 0.0, 0.0]) - 0.5) / c0  # DC colour: pure red
    mod("scene.importer").import_prediction(pred, options=options(cameras=True))
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4
    scene.cycles.device = "CPU"
    scene.view_settings.view_transform = "Standard"
    scene.render.filepath = str(tmp_path / "r.png")
    bpy.ops.render.render(write_still=True)
    px = np.array(bpy.data.images.load(str(tmp_path / "r.png")).pixels[:]).reshape(h, w, 4)
    centre = px[5:13, 8:24, :3].reshape(-1, 3)
    assert np.median(centre[:, 0]) > 0.7 and np.median(centre[:, 1:]) < 0.15, np.median(centre, axis=0)


def test_results_without_gaussians_and_failures_leave_nothing(monkeypatch):
    rng = np.random.default_rng(5)
    pred = prediction(rng, n=1)
    importer, splats = mod("scene.importer"), mod("scene.splats")
    plain = mod("da3_blender.prediction").Prediction(depth=pred.depth, extrinsics=pred.extrinsics,
                                                     intrinsics=pred.intrinsics)
    root = importer.import_prediction(plain, options=options(points=True))
    assert all(c.get("da3_role") != "splats" for c in root.children)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    before = counts()

    def broken(name, data):  # the material and node group exist by then
        raise RuntimeError("boom")

    monkeypatch.setattr(splats, "splats_mesh", broken)
    with pytest.raises(RuntimeError, match="boom"):
        importer.import_prediction(pred, options=options(points=True, cameras=True))
    assert counts() == before
    monkeypatch.undo()
    bad = prediction(rng, n=1)
    bad.gaussians = bad.gaussians.subset(np.arange(10))
    with pytest.raises(mod("da3_blender.errors").ResultFormatError, match="gaussian"):
        importer.import_prediction(bad, options=options(points=True))
    assert counts() == before
