"""Exports: files a user can open elsewhere, checked by reading them back independently."""

from __future__ import annotations

import colorsys
import json
import os
import struct

import numpy as np
import pytest

from da3_blender.errors import BadInputError
from da3_blender.exports import export, read_colmap_text
from da3_blender.prediction import Prediction, load_result

N, H, W = 3, 28, 42
SX, SY = 3.5, 2.25  # processed -> original scale, deliberately non-uniform
ORIG_W, ORIG_H = 147, 63


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def make_prediction(seed=1) -> Prediction:
    rng = np.random.default_rng(seed)
    k = np.zeros((N, 3, 3), np.float32)
    ext = np.zeros((N, 3, 4), np.float32)
    to_orig = np.tile(np.diag([SX, SY, 1.0]), (N, 1, 1))
    to_orig[2, :2, 2] = [-4.0, 3.0]  # one view also offset, like a crop
    for i in range(N):
        k[i] = [[30 + i, 0, 19.3 + 0.4 * i], [0, 36 + 2 * i, 15.1 - 0.3 * i], [0, 0, 1]]
        ext[i, :, :3] = _rotation(rng.normal(size=3), 0.2 * (i + 1))
        ext[i, :, 3] = rng.normal(size=3)
    return Prediction(
        depth=(2 + 3 * rng.random((N, H, W))).astype(np.float32),
        processed_images=rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8),
        conf=(1 + 2 * rng.random((N, H, W))).astype(np.float32),
        extrinsics=ext,
        intrinsics=k,
        orig_size=np.tile([[ORIG_W, ORIG_H]], (N, 1)),
        proc_to_orig=to_orig,
        source_paths=["/photos/a.jpg", "/photos/b.jpg", "/photos/c.jpg"],
    )


def glb_threshold(conf, pct=40.0):
    return min(max(1.05, np.percentile(conf, pct)), np.percentile(conf, 90))


def to4(m):
    out = np.eye(4)
    out[: m.shape[0], :4] = m
    return out


def match_pixels(pred, world):
    """For each world point, the (view, row, col) whose camera sees it at that pixel's centre and depth."""
    found = np.full((len(world), 3), -1)
    hits = np.zeros(len(world), int)
    for v in range(pred.num_views):
        w2c = to4(pred.extrinsics[v].astype(np.float64))
        cam = world @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam @ pred.intrinsics[v].astype(np.float64).T
        u, y = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
        col, row = np.floor(u).astype(int), np.floor(y).astype(int)
        inside = (col >= 0) & (col < W) & (row >= 0) & (row < H) & (cam[:, 2] > 0)
        col, row = np.clip(col, 0, W - 1), np.clip(row, 0, H - 1)
        at_centre = np.hypot(u - (col + 0.5), y - (row + 0.5)) < 1e-2  # far below the 0.5 px budget
        same_depth = np.abs(cam[:, 2] - pred.depth[v, row, col]) < 1e-4 * cam[:, 2]
        ok = inside & at_centre & same_depth
        found[ok] = np.stack([np.full(ok.sum(), v), row[ok], col[ok]], axis=1)
        hits += ok
    assert (hits == 1).all(), "every point must re-project onto exactly one source pixel centre"
    return found


# ----------------------------------------------------------------------------- npz


def test_npz_and_mini_npz_official_layout_and_load_back(tmp_path):
    pred = make_prediction()
    paths = export(pred, "npz-mini_npz", tmp_path)
    assert paths == [str(tmp_path / "exports/npz/results.npz"), str(tmp_path / "exports/mini_npz/results.npz")]
    with np.load(paths[0], allow_pickle=False) as f:
        assert sorted(f.files) == sorted(["image", "depth", "conf", "extrinsics", "intrinsics"])
        assert f["image"].dtype == np.uint8 and f["image"].shape == (N, H, W, 3)
        assert f["depth"].dtype == np.float32 and f["depth"].shape == (N, H, W)
        assert np.abs(f["depth"] - pred.depth).max() <= 5e-7 + 1e-6
        assert np.abs(f["conf"] - pred.conf).max() <= 0.005 + 1e-6
        assert f["extrinsics"].shape == (N, 3, 4) and f["intrinsics"].shape == (N, 3, 3)
    with np.load(paths[1], allow_pickle=False) as f:
        assert sorted(f.files) == sorted(["depth", "conf", "extrinsics", "intrinsics"])
        assert np.abs(f["depth"] - pred.depth).max() <= 1e-6
    full, mini = load_result(paths[0]), load_result(paths[1])
    np.testing.assert_array_equal(full.processed_images, pred.processed_images)
    for back in (full, mini):
        np.testing.assert_allclose(back.depth, pred.depth, atol=1e-6)
        np.testing.assert_array_equal(back.extrinsics, pred.extrinsics)
        np.testing.assert_array_equal(back.intrinsics, pred.intrinsics)
    assert not [p for p in os.listdir(tmp_path / "exports/npz") if p != "results.npz"], "no temp files left"


# ----------------------------------------------------------------------------- glb


def read_glb(path):
    data = open(path, "rb").read()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    text = data[20 : 20 + json_len]
    assert text == text.rstrip(b" ") + b" " * (len(text) - len(text.rstrip(b" "))), "JSON padded with spaces"
    gltf = json.loads(text)
    binary = b""
    if 20 + json_len < len(data):
        bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
        assert bin_type == 0x004E4942 and bin_len % 4 == 0
        binary = data[28 + json_len : 28 + json_len + bin_len]
        assert 28 + json_len + bin_len == len(data)
        assert gltf["buffers"] == [{"byteLength": bin_len}]

    def accessor(i):
        acc = gltf["accessors"][i]
        view = gltf["bufferViews"][acc["bufferView"]]
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
        dtype, width = {(5126, "VEC3"): ("<f4", 3), (5121, "VEC4"): ("u1", 4)}[(acc["componentType"], acc["type"])]
        arr = np.frombuffer(binary, dtype, acc["count"] * width, view["byteOffset"]).reshape(-1, width)
        assert view["byteLength"] == arr.nbytes
        return acc, arr

    meshes = {}
    for node in gltf["scenes"][0].get("nodes", []):
        mesh = gltf["meshes"][gltf["nodes"][node]["mesh"]]
        (prim,) = mesh["primitives"]
        pos_acc, pos = accessor(prim["attributes"]["POSITION"])
        col_acc, col = accessor(prim["attributes"]["COLOR_0"])
        assert col_acc["normalized"] is True and len(col) == len(pos)
        np.testing.assert_array_equal(pos_acc["min"], pos.min(axis=0))
        np.testing.assert_array_equal(pos_acc["max"], pos.max(axis=0))
        meshes[mesh["name"]] = (prim["mode"], pos, col)
    return gltf, meshes


def test_glb_points_are_the_confident_pixels_with_their_colours(tmp_path):
    pred = make_prediction()
    (path,) = export(pred, "glb", tmp_path)
    assert path == str(tmp_path / "scene.glb")
    gltf, meshes = read_glb(path)
    mode, pos, col = meshes["points"]
    assert mode == 0
    valid = (pred.depth > 0) & (pred.conf >= glb_threshold(pred.conf))
    assert len(pos) == valid.sum()
    align = np.array(gltf["scenes"][0]["extras"]["hf_alignment"])
    flip = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(align[:3, :3], flip @ pred.extrinsics[0, :, :3], atol=1e-6)
    np.testing.assert_allclose(np.median(pos, axis=0), 0, atol=1e-4)  # centred on the median
    world = (pos.astype(np.float64) - align[:3, 3]) @ np.linalg.inv(align[:3, :3]).T
    v, r, c = match_pixels(pred, world).T
    assert valid[v, r, c].all() and len(set(zip(v, r, c))) == len(pos)
    np.testing.assert_array_equal(col[:, :3], pred.processed_images[v, r, c])
    assert (col[:, 3] == 255).all()


def test_glb_cameras_colours_and_positions(tmp_path):
    pred = make_prediction()
    gltf, meshes = read_glb(export(pred, "glb", tmp_path)[0])
    align = np.array(gltf["scenes"][0]["extras"]["hf_alignment"])
    cams = [name for name in meshes if name != "points"]
    assert len(cams) == N
    for i, name in enumerate(sorted(cams)):
        mode, pos, col = meshes[name]
        assert mode == 1 and len(pos) == 16  # 8 line segments
        rgb = (np.array(colorsys.hsv_to_rgb((i + 0.5) / N, 0.85, 0.95)) * 255).astype(np.uint8)
        assert (col == np.append(rgb, 255)).all()
        world = (pos[0].astype(np.float64) - align[:3, 3]) @ np.linalg.inv(align[:3, :3]).T
        rot, t = pred.extrinsics[i, :, :3].astype(np.float64), pred.extrinsics[i, :, 3]
        np.testing.assert_allclose(world, -rot.T @ t, atol=1e-5)  # segments start at the camera centre
    _, meshes = read_glb(export(pred, "glb", tmp_path / "nocam", show_cameras=False)[0])
    assert list(meshes) == ["points"]


def test_glb_subsample_is_capped_and_seeded(tmp_path):
    pred = make_prediction()
    a = export(pred, "glb", tmp_path / "a", num_max_points=50, seed=3)[0]
    b = export(pred, "glb", tmp_path / "b", num_max_points=50, seed=3)[0]
    c = export(pred, "glb", tmp_path / "c", num_max_points=50, seed=4)[0]
    gltf, meshes = read_glb(a)
    assert len(meshes["points"][1]) == 50
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()
    align = np.array(gltf["scenes"][0]["extras"]["hf_alignment"])
    world = (meshes["points"][1].astype(np.float64) - align[:3, 3]) @ np.linalg.inv(align[:3, :3]).T
    v, r, c_ = match_pixels(pred, world).T
    assert (pred.conf[v, r, c_] >= glb_threshold(pred.conf)).all()


def test_glb_without_any_valid_point_is_still_valid(tmp_path):
    pred = make_prediction()
    pred.depth[:] = 0
    _, meshes = read_glb(export(pred, "glb", tmp_path)[0])
    assert "points" not in meshes and len(meshes) == N


def test_blender_imports_the_glb_and_ply(tmp_path):
    bpy = pytest.importorskip("bpy")
    pred = make_prediction()
    glb, ply = export(pred, "glb-ply", tmp_path)
    _, meshes = read_glb(glb)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.import_scene.gltf(filepath=glb) == {"FINISHED"}
    objects = {ob.name: ob for ob in bpy.data.objects}
    assert sorted(objects) == sorted(meshes)
    co = np.array([v.co[:] for v in objects["points"].data.vertices])
    gl = meshes["points"][1]
    np.testing.assert_allclose(co, np.stack([gl[:, 0], -gl[:, 2], gl[:, 1]], 1), atol=1e-6)  # glTF Y-up -> Z-up
    assert len(bpy.data.scenes[0]["hf_alignment"]) == 4
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.wm.ply_import(filepath=ply) == {"FINISHED"}
    (ob,) = bpy.data.objects
    _, vert = read_ply(ply)
    assert len(ob.data.vertices) == len(vert)
    view = np.array([d.value for d in ob.data.attributes["view"].data])
    np.testing.assert_array_equal(view, vert["view"])


# ----------------------------------------------------------------------------- ply


def read_ply(path):
    data = open(path, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in header if line.startswith("element vertex")).split()[2])
    types = {"float": "<f4", "uchar": "u1", "int": "<i4", "ushort": "<u2"}
    fields = [(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")]
    vertices = np.frombuffer(data, fields, count, end)
    assert end + vertices.nbytes == len(data)
    return [f for f, _ in fields], vertices


def test_ply_world_frame_points_colours_confidence(tmp_path):
    pred = make_prediction()
    (path,) = export(pred, "ply", tmp_path)
    names, vert = read_ply(path)
    assert names == ["x", "y", "z", "red", "green", "blue", "confidence", "view"]
    valid = (pred.depth > 0) & (pred.conf >= glb_threshold(pred.conf))
    assert len(vert) == valid.sum()
    world = np.stack([vert["x"], vert["y"], vert["z"]], axis=1).astype(np.float64)
    v, r, c = match_pixels(pred, world).T  # no glTF flip: prediction's world frame
    np.testing.assert_array_equal(vert["view"], v)
    np.testing.assert_array_equal(vert["confidence"], pred.conf[v, r, c])
    np.testing.assert_array_equal(np.stack([vert["red"], vert["green"], vert["blue"]], 1), pred.processed_images[v, r, c])
    _, capped = read_ply(export(pred, "ply", tmp_path / "cap", num_max_points=40)[0])
    assert len(capped) == 40


def test_ply_single_view_without_conf_or_poses_is_in_camera_frame(tmp_path):
    full = make_prediction()
    depth = full.depth[:1].copy()
    depth[0, 3, 4] = 0.0
    depth[0, 5, 6] = np.nan
    sky = np.zeros((1, H, W), bool)
    sky[0, 7, 8:10] = True
    pred = Prediction(depth=depth, processed_images=full.processed_images[:1], intrinsics=full.intrinsics[:1], sky=sky)
    names, vert = read_ply(export(pred, "ply", tmp_path)[0])
    assert "confidence" not in names
    assert len(vert) == H * W - 4  # every pixel with a finite positive depth, except sky
    fx, fy, cx, cy = full.intrinsics[0, 0, 0], full.intrinsics[0, 1, 1], full.intrinsics[0, 0, 2], full.intrinsics[0, 1, 2]
    u, v = vert["x"] / vert["z"] * fx + cx, vert["y"] / vert["z"] * fy + cy
    assert np.abs(u - (np.floor(u) + 0.5)).max() < 1e-3 and np.abs(v - (np.floor(v) + 0.5)).max() < 1e-3
    _, meshes = read_glb(export(pred, "glb", tmp_path)[0])
    assert len(meshes["points"][1]) == H * W - 4 and len(meshes) == 2


# ----------------------------------------------------------------------------- colmap


def quat_to_rot(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
    ])


def test_colmap_cameras_poses_and_observations_in_original_pixels(tmp_path):
    pred = make_prediction()
    before = {k: np.copy(getattr(pred, k)) for k in ("depth", "conf", "intrinsics", "extrinsics", "proc_to_orig")}
    paths = export(pred, "colmap", tmp_path)
    folder = tmp_path / "colmap/sparse/0"
    assert paths == [str(folder / f) for f in ("cameras.txt", "images.txt", "points3D.txt")]
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(pred, key), value, err_msg=f"export modified prediction.{key}")
    cameras, images, points = read_colmap_text(folder)
    assert sorted(images) == [1, 2, 3] and [images[i].name for i in (1, 2, 3)] == ["a.jpg", "b.jpg", "c.jpg"]
    for i in range(N):
        image = images[i + 1]
        cam = cameras[image.camera_id]
        k, p = pred.intrinsics[i], pred.proc_to_orig[i]
        assert cam.model == "PINHOLE" and (cam.width, cam.height) == (ORIG_W, ORIG_H)
        np.testing.assert_allclose(cam.params, [SX * k[0, 0], SY * k[1, 1], SX * k[0, 2] + p[0, 2], SY * k[1, 2] + p[1, 2]], rtol=1e-6)
        np.testing.assert_allclose(quat_to_rot(image.qvec), pred.extrinsics[i, :, :3], atol=1e-6)
        np.testing.assert_allclose(image.tvec, pred.extrinsics[i, :, 3], atol=1e-6)
    assert len(points) == (pred.conf >= np.percentile(pred.conf, 40)).sum()
    worst = 0.0
    for pid, point in points.items():
        (img_id,), (idx,) = point.image_ids, point.point2D_idxs
        image, cam = images[img_id], cameras[images[img_id].camera_id]
        assert image.point3D_ids[idx] == pid
        fx, fy, cx, cy = cam.params
        xc = quat_to_rot(image.qvec) @ point.xyz + image.tvec
        proj = np.array([fx * xc[0] / xc[2] + cx, fy * xc[1] / xc[2] + cy])
        obs = image.xys[idx]
        worst = max(worst, np.abs(proj - obs).max())
        # the observation is the source pixel's centre in original pixels, at the predicted depth
        v, p = img_id - 1, pred.proc_to_orig[img_id - 1]
        u_proc, v_proc = (obs[0] - p[0, 2]) / SX - 0.5, (obs[1] - p[1, 2]) / SY - 0.5
        col, row = int(round(u_proc)), int(round(v_proc))
        assert abs(u_proc - col) < 1e-4 and abs(v_proc - row) < 1e-4
        assert abs(xc[2] - pred.depth[v, row, col]) < 1e-4 * xc[2]
        np.testing.assert_array_equal(point.rgb, pred.processed_images[v, row, col])
    assert worst < 1e-3, worst


def test_colmap_names_for_in_memory_images_and_video_frames(tmp_path):
    pred = make_prediction()
    pred.source_paths = ["", "", ""]
    export(pred, "colmap", tmp_path / "mem")
    _, images, _ = read_colmap_text(tmp_path / "mem/colmap/sparse/0")
    assert [images[i].name for i in (1, 2, 3)] == ["000000.png", "000001.png", "000002.png"]
    pred.source_paths = ["/v/clip.mp4"] * 3
    pred.frame_numbers = np.array([30, 90, 150])
    export(pred, "colmap", tmp_path / "vid")
    _, images, _ = read_colmap_text(tmp_path / "vid/colmap/sparse/0")
    assert len({images[i].name for i in (1, 2, 3)}) == 3 and images[2].name == "clip_000090.png"


def test_colmap_keeps_file_names_that_are_not_utf8(tmp_path):
    """A Latin-1 name from os.listdir (lone surrogates) is written as the file's own bytes."""
    pred = make_prediction()
    latin1 = os.fsdecode(b"/photos/caf\xe9.jpg")
    pred.source_paths = [latin1, "/photos/b.jpg", "/photos/\u00e9t\u00e9.jpg"]
    export(pred, "colmap", tmp_path)
    folder = tmp_path / "colmap/sparse/0"
    raw = (folder / "images.txt").read_bytes()
    assert b" caf\xe9.jpg\n" in raw and " \u00e9t\u00e9.jpg\n".encode("utf-8") in raw
    _, images, _ = read_colmap_text(folder)
    assert [images[i].name for i in (1, 2, 3)] == ["caf\udce9.jpg", "b.jpg", "\u00e9t\u00e9.jpg"]


# ----------------------------------------------------------------------------- writing


def _full_disk(monkeypatch):
    import errno

    def savez_compressed(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", savez_compressed)


@pytest.mark.parametrize("what", ["export", "result"])
def test_full_disk_is_a_one_line_error_and_keeps_the_old_file(tmp_path, monkeypatch, what):
    from da3_blender.prediction import save_result

    pred = make_prediction()
    if what == "export":
        target = tmp_path / "exports" / "mini_npz" / "results.npz"
        write = lambda: export(pred, "mini_npz", tmp_path)  # noqa: E731
    else:
        target = tmp_path / "result.npz"
        write = lambda: save_result(target, pred)  # noqa: E731
    write()
    before = target.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(BadInputError) as info:
        write()
    text = str(info.value)
    assert "\n" not in text and str(target) in text and "disk space" in text and "free some space" in text
    assert target.read_bytes() == before, "the previous file must survive a failed write"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")], "temp file left behind"


def test_unwritable_export_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(BadInputError, match="choose another output folder"):
        export(make_prediction(), "ply", blocker / "sub")


# ----------------------------------------------------------------------------- depth_vis

SPECTRAL_NEAR, SPECTRAL_FAR = (0x9E, 0x01, 0x42), (0x5E, 0x4F, 0xA2)  # ColorBrewer Spectral ends


def test_depth_vis_side_by_side_near_red_far_blue(tmp_path):
    from PIL import Image

    pred = make_prediction()
    pred.depth[0, 0, 0] = 0.5  # nearest
    pred.depth[0, 0, 1] = 50.0  # farthest
    pred.depth[0, 0, 2] = 0.0  # invalid
    paths = export(pred, "depth_vis", tmp_path)
    assert paths == [str(tmp_path / f"depth_vis/{i:04d}.png") for i in range(N)]
    img = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert img.shape == (H, 2 * W, 3)
    np.testing.assert_array_equal(img[:, :W], pred.processed_images[0])
    vis = img[:, W:].astype(int)
    assert np.abs(vis[0, 0] - SPECTRAL_NEAR).max() <= 1
    assert np.abs(vis[0, 1] - SPECTRAL_FAR).max() <= 1
    assert np.abs(vis[0, 2] - SPECTRAL_FAR).max() <= 1  # invalid depth shows as the far end, as official
    inv = 1 / pred.depth[0][pred.depth[0] > 0]
    lo, hi = np.percentile(inv, 2), np.percentile(inv, 98)
    with np.errstate(divide="ignore"):
        rel = (1 / pred.depth[0] - lo) / (hi - lo)
    mid = vis[(rel > 0.45) & (rel < 0.55)]
    assert len(mid) and (mid[:, :2] > 200).all(), "mid inverse depth is the pale yellow middle of Spectral"


# ----------------------------------------------------------------------------- all / mono / errors


def test_all_formats_at_once_leave_the_prediction_untouched(tmp_path):
    pred = make_prediction()
    before = {k: np.copy(v) for k, v in vars(pred).items() if isinstance(v, np.ndarray)}
    paths = export(pred, "npz-mini_npz-glb-ply-colmap-depth_vis", tmp_path)
    assert len(paths) == 2 + 1 + 1 + 3 + N and all(os.path.isfile(p) for p in paths)
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(pred, key), value, err_msg=f"export modified prediction.{key}")


def test_mono_prediction_gets_depth_exports(tmp_path):
    pred = make_prediction()
    mono = Prediction(depth=pred.depth, processed_images=pred.processed_images, sky=np.zeros((N, H, W), bool))
    fractions = []
    paths = export(mono, "mini_npz-depth_vis", tmp_path, progress=fractions.append)
    assert len(paths) == 1 + N and fractions == [0.5, 1.0]
    back = load_result(paths[0])
    assert back.conf is None and back.extrinsics is None


def test_bad_format_lists_the_valid_ones(tmp_path):
    from da3_blender.options import EXPORT_FORMAT_NAMES

    with pytest.raises(BadInputError, match=r"'foo'.*valid formats are " + ", ".join(EXPORT_FORMAT_NAMES)):
        export(make_prediction(), "glb-foo", tmp_path)
    with pytest.raises(BadInputError, match="valid formats"):
        export(make_prediction(), "", tmp_path)
    assert not os.listdir(tmp_path), "nothing written when the format string is wrong"


def test_missing_cameras_name_the_model_to_use(tmp_path):
    pred = make_prediction()
    mono = Prediction(depth=pred.depth, processed_images=pred.processed_images)
    for fmt in ("glb", "ply", "colmap", "mini_npz-glb"):
        with pytest.raises(BadInputError, match="any-view model"):
            export(mono, fmt, tmp_path)
    unposed = Prediction(depth=pred.depth, intrinsics=pred.intrinsics)
    with pytest.raises(BadInputError, match="poses"):
        export(unposed, "ply", tmp_path)
    assert not os.listdir(tmp_path), "inputs are checked before anything is written"
    with pytest.raises(BadInputError, match="mini_npz"):
        export(Prediction(depth=pred.depth), "npz", tmp_path)
    with pytest.raises(BadInputError, match="export_dir"):
        export(pred, "mini_npz", None)
