"""The matchmove scene's core (issue 27): floor, FLOOR world, scale, fused mesh, against ray-cast truth
(tests/matchmove_scene.py: a floor, two boxes and a sphere; cameras tilted and away from the origin)."""

from __future__ import annotations

import numpy as np
import pytest

from da3_blender.errors import BadInputError
from da3_blender.geometry import affine_inverse, to_4x4
from da3_blender.matchmove import floor, world
from da3_blender.prediction import Prediction, load_result, save_result

from matchmove_scene import look_at, make_result, surface_distance


@pytest.fixture(scope="module")
def scene():
    return make_result()


def c2w_of(pred):
    return affine_inverse(to_4x4(np.asarray(pred.extrinsics, np.float64)))


def true_to_world(moved, w2c_true):
    """The similarity true world -> moved world, from the first camera (it must explain every camera)."""
    return c2w_of(moved)[0] @ w2c_true[0]


def test_floor_found_level_and_below_every_camera(scene):
    pred, w2c_true, _ = scene
    found = floor.find_floor(pred)
    assert isinstance(found, dict), found
    assert found["inlier_share"] > 0.5 and found["rms"] < 1e-3 and len(found["points"]) > 100
    moved, note = world.move_prediction(pred, "FLOOR")
    assert note is None
    s = true_to_world(moved, w2c_true)
    up = s[:3, :3] @ np.array([0.0, 0.0, 1.0]) / np.linalg.norm(s[:3, :3], axis=0)[2]
    assert np.degrees(np.arccos(np.clip(up[2], -1, 1))) < 0.5  # the true floor's normal is +Z
    # every camera: the same similarity (one rigid world), heights up to the scale within 1 %
    heights_true = affine_inverse(w2c_true)[:, 2, 3]
    heights = c2w_of(moved)[:, 2, 3]
    ratio = heights / heights_true
    assert np.all(np.abs(ratio / ratio[0] - 1) < 0.01)
    first = c2w_of(moved)[0]
    assert np.allclose(first[:2, 3], 0, atol=1e-4)  # origin on the floor under the first camera
    fwd = first[:3, 2]
    assert fwd[1] > 0 and abs(fwd[0]) < 1e-6  # looking along +Y


def test_camera_height_gives_metres_and_the_record_follows(scene):
    pred, w2c_true, _ = scene
    h0 = float(affine_inverse(w2c_true[0])[2, 3])
    moved, _ = world.move_prediction(pred, "FLOOR", height=h0)
    assert np.allclose(c2w_of(moved)[:, 2, 3], affine_inverse(w2c_true)[:, 2, 3], rtol=0.01)
    rec = moved.meta["floor"]
    assert np.allclose(rec["normal"], [0, 0, 1], atol=1e-6) and abs(rec["offset"]) < 1e-6
    assert np.percentile(np.abs(np.asarray(rec["points"])[:, 2]), 95) < 0.002
    assert moved.meta["world"]["up_axis"] == "FLOOR" and moved.meta["world"]["scale"] == pytest.approx(1 / 0.4, rel=1e-3)


def test_moving_again_is_stable(scene, tmp_path):
    """A result exported in the FLOOR world and found again gives the same world (exports and re-imports agree)."""
    pred, _, _ = scene
    moved, _ = world.move_prediction(pred, "FLOOR", height=1.6)
    path = save_result(tmp_path / "r.npz", moved)
    again, _ = world.move_prediction(load_result(path), "FLOOR")
    assert np.allclose(again.extrinsics, moved.extrinsics, atol=1e-4)


@pytest.mark.parametrize("case", ["wall", "sky", "aerial", "no cameras"])
def test_no_floor_is_a_note_and_z_up(scene, case):
    pred, w2c_true, _ = scene
    if case == "sky":
        pred = Prediction(depth=pred.depth, extrinsics=pred.extrinsics, intrinsics=pred.intrinsics,
                          sky=np.ones_like(pred.sky))
    elif case == "no cameras":
        pred = Prediction(depth=pred.depth, intrinsics=pred.intrinsics)
    else:  # a close-up of a wall (looking level at the box side) or straight down from high above
        w2c = np.stack([look_at((-0.8, -1.2, 0.45), (-0.8, 0.0, 0.45))]) if case == "wall" else \
            np.stack([look_at((0.0, 0.0, 30.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))])
        pred = make_result(count=1, w2c=w2c)[0]
    moved, note = world.move_prediction(pred, "FLOOR")
    assert note and note.startswith("no floor found: ") and note.endswith("kept the first camera's axes")
    assert moved.meta["world"]["up_axis"] == "FLOOR" and "note" in moved.meta["world"]
    with pytest.raises(BadInputError, match="camera height"):
        world.move_prediction(pred, "FLOOR", height=1.7)


def test_floor_from_points_and_one_view(scene):
    pred, _, _ = scene
    one = Prediction(depth=pred.depth[:1], extrinsics=pred.extrinsics[:1], intrinsics=pred.intrinsics[:1],
                     sky=pred.sky[:1], conf=pred.conf[:1])
    assert isinstance(floor.find_floor(one), dict)
    n, d = floor.fit_plane([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]])
    assert abs(abs(n[2]) - 1) < 1e-9 and abs(d * n[2] + 1) < 1e-9
    with pytest.raises(ValueError, match="one line"):
        floor.fit_plane([[0, 0, 0], [1, 1, 1], [2, 2, 2]])


def test_fused_mesh_against_the_true_surfaces(scene, tmp_path):
    pytest.importorskip("skimage")
    spatial = pytest.importorskip("scipy.spatial")
    from da3_blender.geometry import unproject_depth
    from da3_blender.matchmove.fusion import mesh_of
    from da3_blender.exports.mesh import export_mesh

    pred, w2c_true, _ = scene
    h0 = float(affine_inverse(w2c_true[0])[2, 3])
    moved, _ = world.move_prediction(pred, "FLOOR", height=h0)  # metres
    mesh = mesh_of(moved)
    s = true_to_world(moved, w2c_true)
    true = (mesh.vertices - s[:3, 3]) @ s[:3, :3]
    dist = surface_distance(true)
    assert np.median(dist) <= 0.02 and np.percentile(dist, 90) <= 0.05
    tri = true[mesh.faces]
    tree = spatial.cKDTree(np.concatenate([true, tri.mean(axis=1)]))
    seen = unproject_depth(pred.depth / 0.4, pred.intrinsics, w2c_true)[~pred.sky]
    near, _ = tree.query(seen[::5])
    assert (near <= 0.05).mean() >= 0.9
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    on_floor = np.abs(tri.mean(axis=1)[:, 2]) < 0.01
    assert (normals[on_floor, 2] > 0).mean() > 0.99  # faces look at the cameras
    assert mesh.colors[on_floor.nonzero()[0][:50]].std() < 40  # the floor's colour
    files = export_mesh(moved, str(tmp_path))
    assert [f.rsplit("/", 2)[-2:] for f in files] == [["mesh", "mesh.glb"], ["mesh", "mesh.ply"]]
    back = load_result(save_result(tmp_path / "m.npz", moved))
    assert np.array_equal(back.mesh.faces, mesh.faces)


def test_mesh_face_cap(scene):
    pytest.importorskip("skimage")
    from da3_blender.matchmove.fusion import fuse_mesh

    pred, _, _ = scene
    mesh = fuse_mesh(pred.depth, pred.intrinsics, pred.extrinsics, pred.conf, pred.sky, max_faces=5000)
    assert 0 < len(mesh.faces) <= 5000


def test_mesh_bad_input(scene):
    pytest.importorskip("skimage")
    from da3_blender.matchmove.fusion import fuse_mesh, mesh_of

    pred, _, _ = scene
    with pytest.raises(BadInputError, match="no confident, non-sky depth"):
        fuse_mesh(pred.depth, pred.intrinsics, pred.extrinsics, sky=np.ones_like(pred.sky))
    with pytest.raises(BadInputError, match="no cameras"):
        mesh_of(Prediction(depth=pred.depth))


def _ply_xyz(path):
    """The vertex positions of a binary little-endian PLY (the vertex element comes first)."""
    head, body = open(path, "rb").read().split(b"end_header\n", 1)
    lines = head.decode().splitlines()
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[2])
    start = next(i for i, line in enumerate(lines) if line.startswith("element vertex"))
    types = {"float": "<f4", "uchar": "u1", "int": "<i4", "double": "<f8"}
    fields = []
    for line in lines[start + 1:]:
        if not line.startswith("property "):
            break
        _, kind, name = line.split()
        fields.append((name, types[kind]))
    rec = np.frombuffer(body[:count * np.dtype(fields).itemsize], dtype=fields)
    return np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)


def test_cli_export_in_the_floor_world(scene, tmp_path, capsys):
    pytest.importorskip("skimage")
    from da3_blender.commands.main import main

    pred, w2c_true, ids = scene
    path = save_result(tmp_path / "shot.npz", pred)
    h0 = float(affine_inverse(w2c_true[0])[2, 3])
    out = tmp_path / "out"
    assert main(["export", str(path), "--export-dir", str(out), "--export-format", "ply-mesh-mini_npz",
                 "--up-axis", "floor", "--camera-height", str(h0), "--conf-thresh-percentile", "0"]) == 0
    points = _ply_xyz(out / "points.ply")
    floor_points = points[np.abs(points[:, 2]) < 0.02]
    assert len(floor_points) > 0.5 * (ids == 0).sum()  # the floor's pixels lie at Z = 0, in metres
    assert points[:, 2].max() == pytest.approx(0.9, abs=0.02)  # the tallest box's top
    mesh_z = _ply_xyz(out / "mesh" / "mesh.ply")[:, 2]
    assert np.percentile(mesh_z, 2) > -0.02 and mesh_z.max() < 0.95
    with np.load(out / "exports" / "mini_npz" / "results.npz") as npz:  # the official layout: cameras moved too
        heights = affine_inverse(to_4x4(npz["extrinsics"].astype(np.float64)))[:, 2, 3]
    assert np.allclose(heights, affine_inverse(w2c_true)[:, 2, 3], rtol=0.01)
    assert main(["export", str(path), "--export-dir", str(out), "--up-axis", "sideways"]) == 2
    assert main(["export", str(path), "--export-dir", str(out), "--camera-height", "-1"]) == 2
    assert "camera height" in capsys.readouterr().err


def test_headless_matchmove_options(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("reconstruct_mm", Path(__file__).parents[1] / "scripts" / "reconstruct.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    base = [str(img), "--output", str(tmp_path / "x.blend")]
    s = script.scene_settings(script.parse_args(base + ["--up-axis", "floor", "--camera-height", "1.7", "--mesh",
                                                        "--mesh-max-faces", "2000", "--shadow-catcher"]))
    assert {k: s[k] for k in ("up_axis", "camera_height", "build_mesh", "mesh_max_faces", "shadow_catcher",
                              "mesh_holdout")} == {"up_axis": "FLOOR", "camera_height": 1.7, "build_mesh": True,
                                                   "mesh_max_faces": 2000, "shadow_catcher": True, "mesh_holdout": False}
    with pytest.raises(SystemExit) as ex:
        script.parse_args(base + ["--camera-height", "0"])
    assert ex.value.code == 2


def test_mesh_without_scikit_image_fails_before_any_work(monkeypatch):
    import importlib.util

    from da3_blender.errors import MissingDependencyError
    from da3_blender.matchmove.steps import check_options

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'da3-blender\[mesh\]'"):
        check_options(mesh=True)
    check_options(mesh=False, up_axis="FLOOR", camera_height=1.5, mesh_max_faces=10)
    with pytest.raises(BadInputError, match="unknown up axis"):
        check_options(up_axis="SIDEWAYS")


def test_the_run_step_fuses_records_and_moves(scene, tmp_path):
    """What a job with mesh / up_axis / camera_height does after the network: the result keeps the mesh and the floor."""
    pytest.importorskip("skimage")
    from da3_blender.job import build_job
    from da3_blender.matchmove.steps import after_inference

    pred, w2c_true, _ = scene
    job = build_job([str(tmp_path)], str(tmp_path / "r.npz"), options={"mesh": True, "mesh_max_faces": 5000,
                                                                        "up_axis": "FLOOR", "camera_height": 1.6})
    assert job["options"]["up_axis"] == "FLOOR"
    with pytest.raises(BadInputError, match="up axis"):
        build_job([str(tmp_path)], str(tmp_path / "r.npz"), options={"up_axis": "floor!"})
    with pytest.raises(BadInputError, match="camera height"):
        build_job([str(tmp_path)], str(tmp_path / "r.npz"), options={"camera_height": 0})
    stages = []
    fresh = Prediction(depth=pred.depth, conf=pred.conf, sky=pred.sky, extrinsics=pred.extrinsics,
                       intrinsics=pred.intrinsics, processed_images=pred.processed_images)
    moved = after_inference(fresh, lambda *a: stages.append(a[0]), mesh=True, mesh_max_faces=5000,
                            up_axis="FLOOR", camera_height=1.6)
    assert "postprocess" in stages and 0 < len(moved.mesh.faces) <= 5000
    back = load_result(save_result(tmp_path / "r.npz", moved))
    assert back.meta["floor"]["normal"] == pytest.approx([0, 0, 1], abs=1e-6)
    assert np.percentile(np.abs(back.mesh.vertices[:, 2]), 5) < 0.01  # the mesh's floor at Z = 0 too
    assert c2w_of(back)[0, 2, 3] == pytest.approx(1.6, rel=1e-4)
