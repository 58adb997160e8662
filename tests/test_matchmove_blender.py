"""The matchmove scene in Blender (issue 27), against ray-cast truth (tests/matchmove_scene.py): imported with
``up_axis="FLOOR", mesh=True, shadow_catcher=True`` the floor is level at Z = 0, the cameras stand at their true
heights, the proxy mesh lies on the true surfaces and the shadow catcher on the floor; bad input leaves a note
or one error line and the file as it was."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for scene tests")
pytest.importorskip("skimage", reason="scikit-image (the mesh extra) fuses the proxy mesh")

from da3_blender.geometry import affine_inverse  # noqa: E402
from da3_blender.prediction import Prediction, save_result  # noqa: E402

from matchmove_scene import look_at, make_result, surface_distance  # noqa: E402

FLIP = np.diag([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    pred, w2c_true, ids = make_result()
    path = save_result(tmp_path_factory.mktemp("mm") / "set.npz", pred)
    return path, pred, w2c_true, ids


@pytest.fixture
def importer(extension):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return importlib.import_module(f"{extension.__name__}.scene.importer")


def _objects(root, role):
    return [o for c in root.children if c.get("da3_role") == role for o in c.objects]


def _true_from_blender(root, w2c_true):
    """The similarity Blender -> true world implied by the first camera (rotation, translation, scale)."""
    cams = sorted(_objects(root, "cameras"), key=lambda o: o.name)
    m = np.array(cams[0].matrix_world)
    c2w_true = affine_inverse(w2c_true[0])
    rot = m[:3, :3] @ FLIP @ c2w_true[:3, :3].T  # true -> Blender rotation
    return rot, m[:3, 3], c2w_true[:3, 3], cams


def test_floor_mesh_and_shadow_catcher(importer, shot):
    path, pred, w2c_true, _ = shot
    h0 = float(affine_inverse(w2c_true[0])[2, 3])
    opts = importer.ImportOptions(up_axis="FLOOR", mesh=True, shadow_catcher=True, camera_height=h0, planes=False)
    root = importer.import_result_file(path, opts)
    assert root["da3_up_axis"] == "FLOOR" and "da3_floor_note" not in root
    rot, origin_b, origin_t, cams = _true_from_blender(root, w2c_true)
    up = rot @ np.array([0.0, 0.0, 1.0])
    assert np.degrees(np.arccos(np.clip(up[2], -1, 1))) < 0.5  # the true floor's normal is Blender's +Z
    heights = np.array([np.array(c.matrix_world)[2, 3] for c in cams])
    assert np.allclose(heights, affine_inverse(w2c_true)[:, 2, 3], rtol=0.01)  # metres, from the first camera's height
    assert json.loads(root["da3_floor"])["height"] == pytest.approx(h0, rel=0.01)

    def to_true(p):
        return (np.asarray(p) - origin_b) @ rot + origin_t

    mesh_obj, = _objects(root, "mesh")
    verts = np.array([mesh_obj.matrix_world @ v.co for v in mesh_obj.data.vertices])
    dist = surface_distance(to_true(verts))
    assert np.median(dist) <= 0.02 and np.percentile(dist, 90) <= 0.05
    spatial = pytest.importorskip("scipy.spatial")
    from da3_blender.geometry import unproject_depth

    faces = np.array([p.vertices[:] for p in mesh_obj.data.polygons])
    tree = spatial.cKDTree(np.concatenate([to_true(verts), to_true(verts[faces].mean(axis=1))]))
    seen = unproject_depth(pred.depth / 0.4, pred.intrinsics, w2c_true)[~pred.sky]
    assert (tree.query(seen[::5])[0] <= 0.05).mean() >= 0.9  # the seen surface is meshed
    assert mesh_obj.data.attributes.get("Col") is not None

    catcher, = _objects(root, "floor")
    assert catcher.is_shadow_catcher and bpy.context.scene.render.film_transparent
    corners = np.array([catcher.matrix_world @ v.co for v in catcher.data.vertices])
    assert np.abs(to_true(corners)[:, 2]).max() <= 0.01  # on the true floor within 1 cm
    assert np.ptp(corners[:, 0]) > 2.0 and np.ptp(corners[:, 1]) > 2.0  # covers the floor seen
    assert all(len(c.data.background_images) == 1 for c in cams)  # the plate behind each camera


def test_floor_is_the_default_and_z_up_with_a_note_without_one(importer, shot):
    path, pred, w2c_true, _ = shot
    root = importer.import_result_file(path, importer.ImportOptions(planes=False, points=False))
    assert root["da3_up_axis"] == "FLOOR"
    sky = Prediction(depth=pred.depth, extrinsics=pred.extrinsics, intrinsics=pred.intrinsics,
                     sky=np.ones_like(pred.sky), conf=pred.conf)
    wall = make_result(count=1, w2c=np.stack([look_at((-0.8, -1.2, 0.45), (-0.8, 0.0, 0.45))]))[0]
    for case in (sky, wall):
        case.source_paths = None
        opts = importer.ImportOptions(planes=False, points=False, shadow_catcher=True)
        root = importer.import_prediction(case, name="nofloor", options=opts)
        assert root["da3_up_axis"] == "Z_UP"
        assert root["da3_floor_note"].startswith("no floor found: ")
        assert root["da3_shadow_catcher_note"].startswith("no shadow catcher: no floor found")
        cam = sorted(_objects(root, "cameras"), key=lambda o: o.name)[0]
        assert np.allclose(np.array(cam.matrix_world)[:3, 3], 0, atol=1e-6)  # Z up: the first camera at the origin


@pytest.mark.parametrize("case", ["no cameras", "all sky", "height without floor"])
def test_bad_input_leaves_the_file_unchanged(importer, shot, case):
    path, pred, _, _ = shot
    before = {k: len(getattr(bpy.data, k)) for k in ("objects", "meshes", "collections", "materials", "images")}
    errors = importlib.import_module(importer.__name__.rsplit(".", 2)[0] + ".da3_blender.errors")
    if case == "no cameras":
        bad, opts = Prediction(depth=pred.depth, intrinsics=pred.intrinsics), importer.ImportOptions(mesh=True)
        match = "no camera poses"
    elif case == "all sky":
        bad = Prediction(depth=pred.depth, extrinsics=pred.extrinsics, intrinsics=pred.intrinsics,
                         sky=np.ones_like(pred.sky))
        opts, match = importer.ImportOptions(mesh=True, planes=False), "no confident, non-sky depth"
    else:
        bad = Prediction(depth=pred.depth, extrinsics=pred.extrinsics, intrinsics=pred.intrinsics,
                         sky=np.ones_like(pred.sky))
        opts, match = importer.ImportOptions(camera_height=1.7, planes=False), "camera height needs a floor"
    with pytest.raises(errors.DA3Error, match=match):
        importer.import_prediction(bad, name="bad", options=opts)
    assert {k: len(getattr(bpy.data, k)) for k in before} == before


@pytest.fixture
def registered(extension):
    import addon_utils

    addon_utils.enable(extension.__name__, default_set=True, handle_error=None)
    yield bpy.context
    addon_utils.disable(extension.__name__, default_set=True)


def test_set_floor_and_set_scale_reorient_the_whole_import(registered, extension, shot):
    path, pred, w2c_true, ids = shot
    importer = importlib.import_module(f"{extension.__name__}.scene.importer")
    opts = importer.ImportOptions(up_axis="KEEP", planes=False, conf_percentile=0.0, max_points=0, shadow_catcher=True)
    root = importer.import_result_file(path, opts)
    cloud, = _objects(root, "points")
    floor_index = np.flatnonzero(ids[~pred.sky] == 0)  # the cloud keeps the views' pixel order
    pick = floor_index[np.linspace(0, len(floor_index) - 1, 40).astype(int)]
    select = np.zeros(len(cloud.data.vertices), bool)
    select[pick] = True
    cloud.data.vertices.foreach_set("select", select)
    bpy.ops.object.select_all(action="DESELECT")
    cloud.select_set(True)
    registered.view_layer.objects.active = cloud
    assert bpy.ops.da3.set_floor() == {"FINISHED"}
    rot, _, _, cams = _true_from_blender(root, w2c_true)
    up = rot @ np.array([0.0, 0.0, 1.0]) / np.linalg.norm(rot @ np.array([0.0, 0.0, 1.0]))
    assert np.degrees(np.arccos(np.clip(up[2], -1, 1))) < 0.5
    heights = np.array([np.array(c.matrix_world)[2, 3] for c in cams])
    assert np.allclose(heights / affine_inverse(w2c_true)[:, 2, 3], 0.4, rtol=0.01)  # the result's units
    catcher, = _objects(root, "floor")
    assert max(abs((catcher.matrix_world @ v.co).z) for v in catcher.data.vertices) < 1e-6
    # two floor points a known distance apart: the whole import in metres
    a, b = pick[0], pick[-1]
    from da3_blender.geometry import unproject_depth

    true_pts = unproject_depth(pred.depth / 0.4, pred.intrinsics, w2c_true)[~pred.sky]
    select[:] = False
    select[[a, b]] = True
    cloud.data.vertices.foreach_set("select", select)
    distance = float(np.linalg.norm(true_pts[a] - true_pts[b]))
    assert bpy.ops.da3.set_scale(distance=distance) == {"FINISHED"}
    heights = np.array([np.array(c.matrix_world)[2, 3] for c in cams])
    assert np.allclose(heights, affine_inverse(w2c_true)[:, 2, 3], rtol=0.01)
    assert all(abs(np.linalg.norm(np.array(c.matrix_world)[:3, 0]) - 1) < 1e-6 for c in cams)  # never scaled
    select[:] = False
    select[pick[:2]] = True
    cloud.data.vertices.foreach_set("select", select)
    with pytest.raises(RuntimeError, match="2 point.s. selected: select three or more"):  # one line; the scene stays
        bpy.ops.da3.set_floor()
    assert np.allclose([np.array(c.matrix_world)[2, 3] for c in cams], heights)


def test_import_operator_builds_the_matchmove_scene(registered, shot):
    path, _, _, _ = shot
    assert bpy.ops.da3.import_result(filepath=str(path), build_planes=False, up_axis="FLOOR", build_mesh=True,
                                     mesh_holdout=True, mesh_max_faces=20_000, shadow_catcher=True) == {"FINISHED"}
    root = next(c for c in bpy.data.collections if c.get("da3_role") == "root")
    assert root["da3_up_axis"] == "FLOOR"
    assert sorted(c["da3_role"] for c in root.children) == ["cameras", "floor", "mesh", "points"]
    mesh_obj, = _objects(root, "mesh")
    assert mesh_obj.is_holdout and 0 < len(mesh_obj.data.polygons) <= 20_000
