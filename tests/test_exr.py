"""EXR depth passes: read back with OpenEXR, the values, names and header camera are what we wrote."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from da3_blender.errors import BadInputError, MissingDependencyError
from da3_blender.exports import export
from da3_blender.geometry import to_4x4
from da3_blender.prediction import Prediction

OpenEXR = pytest.importorskip("OpenEXR", reason="the OpenEXR package (pip install '.[exr]') is needed for EXR tests")

N, H, W = 3, 12, 20


def make_prediction(frames=(0, 12, 60), seed=0, crop=(0.0, 0.0), scale=(3.0, 2.0)):
    rng = np.random.default_rng(seed)
    ext = np.zeros((N, 3, 4), np.float32)
    for i in range(N):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        ext[i, :, :3] = q if np.linalg.det(q) > 0 else -q
        ext[i, :, 3] = rng.normal(size=3)
    k = np.array([[18.0, 0, 10.4], [0, 17.0, 5.8], [0, 0, 1]], np.float32)
    p2o = np.array([[scale[0], 0, crop[0]], [0, scale[1], crop[1]], [0, 0, 1]])
    orig = (int(W * scale[0] + 2 * crop[0]), int(H * scale[1] + 2 * crop[1]))
    sky = np.zeros((N, H, W), bool)
    sky[:, :3] = True
    return Prediction(
        depth=rng.uniform(1.0, 9.0, (N, H, W)).astype(np.float32),
        conf=rng.uniform(1.0, 3.0, (N, H, W)).astype(np.float32),
        sky=sky,
        extrinsics=ext,
        intrinsics=np.tile(k, (N, 1, 1)),
        orig_size=np.tile([orig], (N, 1)),
        proc_to_orig=np.tile(p2o, (N, 1, 1)),
        frame_numbers=None if frames is None else np.asarray(frames, np.int64),
        source_paths=["/footage/shot.mp4"] * N,
        is_metric=True,
    )


def read(path):
    f = OpenEXR.File(os.fspath(path), separate_channels=True)
    return f.header(), {name: ch.pixels for name, ch in f.channels().items()}


def project(world, m):
    """Row-vector convention of the EXR matrices: p' = (x, y, z, 1) M, then divide by w."""
    p = np.append(world, 1.0) @ np.asarray(m, np.float64)
    return p[:3] / p[3]


def test_exr_values_names_and_header_camera(tmp_path):
    pred = make_prediction()
    files = export(pred, "exr", tmp_path)
    assert [os.path.relpath(f, tmp_path) for f in files] == [
        os.path.join("exr", f"depth.{n:04d}.exr") for n in (0, 12, 60)]
    rng = np.random.default_rng(1)
    for i, path in enumerate(files):
        header, ch = read(path)
        assert sorted(ch) == ["Z", "confidence", "sky"]
        assert all(c.dtype == np.float32 and c.shape == (H, W) for c in ch.values())
        assert np.array_equal(ch["Z"], pred.depth[i])
        assert np.array_equal(ch["confidence"], pred.conf[i])
        assert np.array_equal(ch["sky"], pred.sky[i].astype(np.float32))
        assert np.array_equal(header["K"], pred.intrinsics[i])
        assert header["da3SourceFrame"] == pred.frame_numbers[i] and header["da3Source"] == "/footage/shot.mp4"
        assert header["da3Metric"] == 1 and header["pixelAspectRatio"] == pytest.approx(1.5)
        # the header camera sees each pixel's lifted point at that pixel (NDC) and at its depth (camera z)
        c2w = np.linalg.inv(to_4x4(pred.extrinsics[i].astype(np.float64)))
        k_inv = np.linalg.inv(pred.intrinsics[i].astype(np.float64))
        for r, c in zip(rng.integers(0, H, 10), rng.integers(0, W, 10)):
            d = float(pred.depth[i, r, c])
            world = (c2w @ np.append(d * k_inv @ [c + 0.5, r + 0.5, 1.0], 1.0))[:3]
            cam = np.append(world, 1.0) @ header["worldToCamera"].astype(np.float64)
            assert cam[2] == pytest.approx(d, rel=1e-5)  # z forward
            ndc = project(world, header["worldToNDC"])
            assert ndc[:2] == pytest.approx([(c + 0.5) / W, (r + 0.5) / H], abs=1e-5)  # (0,0) top-left
        below = (c2w @ [0.0, 1.0, 5.0, 1.0])[:3]  # a point below the optical axis (OpenCV y down)
        assert (np.append(below, 1.0) @ header["worldToCamera"])[1] < 0  # OpenEXR camera: y up
    raw = open(files[0], "rb").read()  # the standard attributes have their standard types
    assert b"worldToCamera\0m44f\0" in raw and b"worldToNDC\0m44f\0" in raw and b"K\0m33f\0" in raw


def test_exr_half_and_views_without_frame_numbers(tmp_path):
    pred = make_prediction(frames=None)
    pred.sky = None
    files = export(pred, "exr", tmp_path, exr_half=True)
    assert [os.path.basename(f) for f in files] == ["depth.0000.exr", "depth.0001.exr", "depth.0002.exr"]
    header, ch = read(files[2])
    assert sorted(ch) == ["Z", "confidence"]  # no sky channel when the model has no sky
    assert ch["Z"].dtype == np.float16 and np.array_equal(ch["Z"], pred.depth[2].astype(np.float16))
    assert header["da3SourceFrame"] == -1


def test_exr_at_plate_resolution_nearest_and_bilinear(tmp_path):
    crop = (4.0, 3.0)  # the processed image sits inside the plate (as after a centre crop)
    pred = make_prediction(crop=crop, scale=(3.0, 2.0))
    big_w, big_h = pred.orig_size[0]
    (path, *_), = [export(pred, "exr", tmp_path / "n", exr_resolution="plate")]
    assert os.path.relpath(path, tmp_path / "n") == os.path.join("exr_plate", "depth.0000.exr")
    header, ch = read(path)
    assert ch["Z"].shape == (big_h, big_w)
    assert np.array_equal(header["K"], (pred.proc_to_orig[0] @ pred.intrinsics[0]).astype(np.float32))
    assert header["pixelAspectRatio"] == 1.0
    y, x = np.mgrid[0:big_h, 0:big_w]
    u, v = (x + 0.5 - crop[0]) / 3.0, (y + 0.5 - crop[1]) / 2.0  # plate pixel centres in processed pixels
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    assert inside.sum() == H * W * 6 and (~inside).any()
    r, c = np.floor(v[inside]).astype(int), np.floor(u[inside]).astype(int)
    assert np.array_equal(ch["Z"][inside], pred.depth[0][r, c])
    assert np.array_equal(ch["sky"][inside], pred.sky[0][r, c].astype(np.float32))
    assert not ch["Z"][~inside].any() and not ch["confidence"][~inside].any()  # 0 = no depth
    # bilinear reproduces a depth that is linear across the image between pixel centres
    cols = np.arange(W) + 0.5
    rows = np.arange(H)[:, None] + 0.5
    pred.depth[:] = (2.0 + 0.1 * cols + 0.05 * rows).astype(np.float32)
    (path, *_), = [export(pred, "exr", tmp_path / "b", exr_resolution="plate", exr_plate_filter="bilinear")]
    _, ch = read(path)
    interior = inside & (u >= 0.5) & (u <= W - 0.5) & (v >= 0.5) & (v <= H - 0.5)
    assert np.allclose(ch["Z"][interior], (2.0 + 0.1 * u + 0.05 * v)[interior], atol=1e-5)


def test_exr_bad_options_and_missing_openexr_change_nothing(tmp_path, monkeypatch):
    pred = make_prediction()
    with pytest.raises(BadInputError, match="exr resolution 'huge'"):
        export(pred, "exr", tmp_path, exr_resolution="huge")
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # as if the package were not installed
    with pytest.raises(MissingDependencyError, match="pip install") as err:
        export(pred, "mini_npz-exr", tmp_path)
    assert "\n" not in str(err.value)
    assert not os.listdir(tmp_path)  # nothing written, not even the formats before exr
