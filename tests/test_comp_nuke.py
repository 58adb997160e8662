"""The Nuke script and .chan file: read back with a small .nk reader and checked against the scene's
camera (the result's cameras in the scene's world, Y up), key by key and by projecting points."""

from __future__ import annotations

import os

import numpy as np
import pytest

from comp_helpers import FIRST, rot, shot
from da3_blender.errors import BadInputError
from da3_blender.exports import export
from nk_reader import read_nk, value_at

F = np.diag([1.0, -1.0, -1.0])


def expected_cameras(pred):
    """Camera-to-world (N,4,4) in the scene's world, Y up: the first view's OpenCV frame with y, z negated."""
    w2c = np.tile(np.eye(4), (pred.num_views, 1, 1))
    w2c[:, :3] = np.asarray(pred.extrinsics, np.float64)
    c2w = np.linalg.inv(w2c @ np.linalg.inv(w2c[0]))
    out = np.tile(np.eye(4), (pred.num_views, 1, 1))
    out[:, :3, :3] = F @ c2w[:, :3, :3] @ F
    out[:, :3, 3] = c2w[:, :3, 3] @ F
    return out, w2c


def nodes_by_name(nodes):
    return {knobs.get("name"): (cls, knobs) for cls, knobs in nodes}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("nuke")
    pred = shot()
    files = export(pred, "nuke", out)
    return pred, out, files, read_nk((out / "nuke" / "shot.nk").read_text())


def test_camera_keys_match_the_scene_camera(written):
    pred, _, _, nodes = written
    cls, cam = nodes_by_name(nodes)["DA3_camera"]
    assert cls == "Camera2" and cam["rot_order"] == "ZXY"
    expected, _ = expected_cameras(pred)
    size = max(1.0, np.ptp(expected[:, :3, 3], axis=0).max())
    k = pred.original_intrinsics()
    for i in range(pred.num_views):
        f = FIRST + i
        t = np.array([value_at(c, f) for c in cam["translate"]])
        rx, ry, rz = (value_at(c, f) for c in cam["rotate"])
        r = rot("y", ry) @ rot("x", rx) @ rot("z", rz)
        angle = np.degrees(np.max(np.abs(r - expected[i, :3, :3])))  # small angles: the matrices' difference
        assert angle < 1e-4 and np.max(np.abs(t - expected[i, :3, 3])) < 1e-5 * size
        assert value_at(cam["focal"], f) == k[i, 0, 0] * 36.0 / 240  # exact
    assert cam["haperture"] == 36.0


def test_projection_through_the_nuke_camera_lands_on_the_plate_pixel(written):
    """Nuke's projection: x_ndc = 2 focal / haperture * x / -z + u; pixels x = (x_ndc + 1) W / 2 and,
    from the bottom, y = H / 2 + (W p / 2) y_ndc with the format's pixel aspect p."""
    pred, _, _, nodes = written
    cam = nodes_by_name(nodes)["DA3_camera"][1]
    root = [knobs for cls, knobs in nodes if cls == "Root"][0]
    w, h, *_, p, _ = root["format"].split()
    w, h, p = int(w), int(h), float(p)
    expected, w2c = expected_cameras(pred)
    k = pred.original_intrinsics()
    rng = np.random.default_rng(1)
    for i in range(pred.num_views):
        f = FIRST + i
        world_cv = np.linalg.inv(w2c[i]) @ np.append(rng.uniform(-1, 1, 2) * [1, 0.5], [1, 1]) * 3.0
        world_cv[3] = 1.0
        uv = k[i] @ (w2c[i] @ world_cv)[:3]
        truth = uv[:2] / uv[2]  # the plate pixel (edges, from the top)
        world_y = F @ (w2c[0] @ world_cv)[:3]  # the same point in the script's world
        t = np.array([value_at(c, f) for c in cam["translate"]])
        rx, ry, rz = (value_at(c, f) for c in cam["rotate"])
        local = (rot("y", ry) @ rot("x", rx) @ rot("z", rz)).T @ (world_y - t)
        scale = 2 * value_at(cam["focal"], f) / cam["haperture"]
        u, v = (value_at(c, f) for c in cam["win_translate"])
        x_ndc, y_ndc = scale * local[0] / -local[2] + u, scale * local[1] / -local[2] + v
        px, py_bottom = (x_ndc + 1) * w / 2, h / 2 + w * p / 2 * y_ndc
        assert abs(px - truth[0]) < 1e-4 and abs((h - py_bottom) - truth[1]) < 1e-4  # float32 poses


def test_root_plate_and_lens_nodes(written):
    pred, out, files, nodes = written
    assert [os.path.relpath(f, out) for f in files] == ["stmap/undistort.exr", "stmap/redistort.exr", "stmap/lens.json",
                                                 "nuke/shot.nk", "nuke/camera.chan"]
    assert (out / "stmap" / "undistort.exr").is_file()  # the lens nodes' maps were written with it
    root = [knobs for cls, knobs in nodes if cls == "Root"][0]
    assert (root["first_frame"], root["last_frame"]) == (FIRST, FIRST + 4)
    assert root["fps"] == 24000 / 1001
    named = nodes_by_name(nodes)
    plate = named["Plate"][1]
    assert plate["file"] == "/plates/shot.####.exr" and plate["first"] == FIRST and plate["last"] == FIRST + 4
    assert named["Undistort"][0] == named["Redistort"][0] == "STMap"
    assert named["UndistortMap"][1]["file"] == str(out / "stmap" / "undistort.exr").replace(os.sep, "/")
    assert named["RedistortMap"][1]["file"].endswith("stmap/redistort.exr")
    ow, oh = (int(v) for v in named["UndistortMap"][1]["format"].split()[:2])
    assert ow > 240 and oh > 136
    text = (out / "nuke" / "shot.nk").read_text()
    assert text.index("name UndistortMap") < text.index("push $N_plate") < text.index("name Undistort\n")


def test_chan_file_matches_the_script(written):
    pred, out, _, nodes = written
    cam = nodes_by_name(nodes)["DA3_camera"][1]
    rows = np.loadtxt(out / "nuke" / "camera.chan")
    assert rows.shape == (5, 8) and list(rows[:, 0]) == list(range(FIRST, FIRST + 5))
    k = pred.original_intrinsics()
    for row in rows:
        f = row[0]
        assert np.allclose(row[1:4], [value_at(c, f) for c in cam["translate"]], atol=1e-12)
        assert np.allclose(row[4:7], [value_at(c, f) for c in cam["rotate"]], atol=1e-12)
        i = int(f) - FIRST
        assert np.isclose(row[7], np.degrees(2 * np.arctan(136 / (2 * k[i, 1, 1]))), atol=1e-9)


def test_no_lens_no_stmap_nodes_and_bad_input(tmp_path):
    files = export(shot(distortion=None), "nuke", tmp_path)
    assert len(files) == 2 and not (tmp_path / "stmap").exists()
    named = nodes_by_name(read_nk((tmp_path / "nuke" / "shot.nk").read_text()))
    assert "Plate" in named and "Undistort" not in named
    pred = shot()
    pred.extrinsics = None
    with pytest.raises(BadInputError, match="cameras") as err:
        export(pred, "nuke", tmp_path / "x")
    assert "\n" not in str(err.value) and not (tmp_path / "x").exists()


def test_da3_export_command_writes_comp_files_and_refuses_in_one_line(tmp_path, capsys):
    from da3_blender.commands.main import main
    from da3_blender.prediction import save_result

    save_result(tmp_path / "shot.npz", shot())
    assert main(["export", str(tmp_path / "shot.npz"), "--export-format", "nuke-stmap", "--export-dir",
                 str(tmp_path / "comp")]) == 0
    out = capsys.readouterr().out
    assert "nuke/shot.nk" in out and "stmap/undistort.exr" in out
    pred = shot()
    pred.intrinsics = pred.extrinsics = None
    save_result(tmp_path / "mono.npz", pred)
    for fmt in ("nuke", "stmap", "usd", "undistorted"):
        code = main(["export", str(tmp_path / "mono.npz"), "--export-format", fmt, "--export-dir", str(tmp_path / fmt)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and err[0].startswith("da3: error:") and "cameras" in err[0] and fmt in err[0], err
        assert not (tmp_path / fmt).exists()


def test_paths_are_escaped_for_tcl(tmp_path):
    pred = shot(distortion=None)
    pred.meta["video"]["pattern"] = "/plates/take [2] $A/shot.####.exr"
    export(pred, "nuke", tmp_path)
    plate = nodes_by_name(read_nk((tmp_path / "nuke" / "shot.nk").read_text()))["Plate"][1]
    assert plate["file"] == r"/plates/take \[2\] \$A/shot.####.exr"  # Nuke reads it back as the path
