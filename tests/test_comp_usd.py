"""The USD stage of a shot, read back with pxr: stage metadata, the camera per frame equal to the result's,
the point cloud in the same world."""

from __future__ import annotations

import numpy as np
import pytest

from comp_helpers import FIRST, PLATE_H, PLATE_W, shot
from da3_blender.errors import BadInputError, MissingDependencyError
from da3_blender.exports import export

pxr = pytest.importorskip("pxr", reason="usd-core (pip install '.[usd]') is needed for USD tests")
from pxr import Usd, UsdGeom  # noqa: E402

F = np.diag([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("usd")
    pred = shot()
    (path,) = export(pred, "usd", out, num_max_points=500)
    assert path == str(out / "usd" / "shot.usda")
    return pred, Usd.Stage.Open(path)


def test_stage_metadata(stage):
    _, st = stage
    assert UsdGeom.GetStageUpAxis(st) == UsdGeom.Tokens.y and UsdGeom.GetStageMetersPerUnit(st) == 1.0
    assert st.GetTimeCodesPerSecond() == 24000 / 1001 and st.GetFramesPerSecond() == 24000 / 1001
    assert (st.GetStartTimeCode(), st.GetEndTimeCode()) == (FIRST, FIRST + 4)
    assert st.GetDefaultPrim().GetPath() == "/World"


def test_camera_per_frame_equals_the_result(stage):
    pred, st = stage
    cam = UsdGeom.Camera(st.GetPrimAtPath("/World/DA3_camera"))
    k = pred.original_intrinsics()
    w2c = np.tile(np.eye(4), (pred.num_views, 1, 1))
    w2c[:, :3] = pred.extrinsics
    for i in range(pred.num_views):
        time = Usd.TimeCode(FIRST + i)
        c2w = np.array(cam.ComputeLocalToWorldTransform(time)).T  # row-vector -> column-vector
        expected = np.eye(4)
        expected[:3] = (w2c[0] @ np.linalg.inv(w2c[i]))[:3]  # the camera in the first view's frame
        expected = np.diag([1.0, -1, -1, 1]) @ expected @ np.diag([1.0, -1, -1, 1])  # Y up, looking down -Z
        assert np.max(np.abs(c2w - expected)) < 1e-5
        focal = cam.GetFocalLengthAttr().Get(time)
        h_ap, v_ap = cam.GetHorizontalApertureAttr().Get(time), cam.GetVerticalApertureAttr().Get(time)
        h_off, v_off = cam.GetHorizontalApertureOffsetAttr().Get(time), cam.GetVerticalApertureOffsetAttr().Get(time)
        fx, fy = focal / h_ap * PLATE_W, focal / v_ap * PLATE_H
        cx, cy = PLATE_W / 2 - h_off / h_ap * PLATE_W, PLATE_H / 2 + v_off / v_ap * PLATE_H
        assert np.allclose([fx, fy, cx, cy], [k[i, 0, 0], k[i, 1, 1], k[i, 0, 2], k[i, 1, 2]], rtol=1e-5, atol=1e-5)
        assert focal * 100 == pytest.approx(k[i, 0, 0] * 36 / PLATE_W, rel=1e-6)  # tenths of a metre: 100 mm
        near, far = cam.GetClippingRangeAttr().Get(time)
        assert 0 < near < 2.0 < far


def test_points_with_colours_in_the_same_world(stage):
    pred, st = stage
    pts = UsdGeom.Points(st.GetPrimAtPath("/World/DA3_points"))
    xyz = np.array(pts.GetPointsAttr().Get())
    colours = np.array(pts.GetDisplayColorPrimvar().Get())
    assert xyz.shape == colours.shape and 0 < len(xyz) <= 500 and colours.min() >= 0 and colours.max() <= 1
    assert pts.GetDisplayColorPrimvar().GetInterpolation() == UsdGeom.Tokens.vertex
    # back in the first camera's OpenCV frame, the points lie in front of it at the depths the result has
    cam_pts = xyz @ F
    assert np.all(cam_pts[:, 2] > 0) and np.median(cam_pts[:, 2]) < 8.0


def test_usdc_and_bad_input(tmp_path, monkeypatch):
    (path,) = export(shot(n=2), "usd", tmp_path, usd_format="usdc", num_max_points=50)
    assert path.endswith("shot.usdc") and open(path, "rb").read(8) == b"PXR-USDC"
    with pytest.raises(BadInputError, match="usd format 'usdz'"):
        export(shot(n=2), "usd", tmp_path / "a", usd_format="usdz")
    pred = shot(n=2)
    pred.intrinsics = None
    with pytest.raises(BadInputError, match="cameras") as err:
        export(pred, "usd", tmp_path / "b")
    assert "\n" not in str(err.value) and not (tmp_path / "b").exists()

    def missing():
        raise MissingDependencyError("the usd export needs the usd-core package; install it with: x")

    monkeypatch.setattr("da3_blender.exports.comp.pxr", missing)
    with pytest.raises(MissingDependencyError, match="usd-core"):
        export(shot(n=2), "usd", tmp_path / "c")
    assert not (tmp_path / "c").exists()
