"""Undistorted plates: a plate rendered through the lens model (EXR half RGBA and PNG) comes out as the
pinhole picture in the overscan frame, half stays half, frames are named by frame number."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from comp_helpers import FIRST, K1, K2, PLATE_H, PLATE_W, shot
from da3_blender.errors import BadInputError
from da3_blender.exports import export
from da3_blender.exports import undistort as undistort_mod

OpenEXR = pytest.importorskip("OpenEXR", reason="the OpenEXR package (pip install '.[exr]') is needed")


def pattern(p):  # a smooth picture in the pinhole frame, 24 px cells
    return 0.5 + 0.45 * np.cos(2 * np.pi * p[..., 0] / 24) * np.cos(2 * np.pi * p[..., 1] / 24)


def centres(w, h):
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return np.stack([x, y], axis=-1)


def render_plate(k, ku):
    """The plate a lens with K1, K2 sees of ``pattern`` laid out in the overscan frame (K_undistorted)."""
    target = centres(PLATE_W, PLATE_H)

    def distort(q):
        n = (q - ku[:2, 2]) / [ku[0, 0], ku[1, 1]]
        r2 = np.sum(n * n, axis=-1, keepdims=True)
        return n * (1 + K1 * r2 + K2 * r2 * r2) * [k[0, 0], k[1, 1]] + k[:2, 2]

    q = target - k[:2, 2] + ku[:2, 2]
    for _ in range(60):
        q = q + (target - distort(q))
    return pattern(q)


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plates")
    pred = shot(n=2)
    export(pred, "stmap", tmp / "lens")  # the overscan camera, to render the plates with
    info = json.loads((tmp / "lens" / "stmap" / "lens.json").read_text())
    k, ku = np.asarray(info["K"]), np.asarray(info["K_undistorted"])
    grey = render_plate(k, ku)
    exr_path, png_path = tmp / f"shot.{FIRST}.exr", tmp / f"shot.{FIRST + 1}.png"
    half = grey.astype(np.float16)
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION},
                 {"R": half, "G": half, "B": (half * 0.5).astype(np.float16), "A": np.ones_like(half)}).write(str(exr_path))
    Image.fromarray(np.rint(np.stack([grey] * 3, -1) * 255).astype(np.uint8)).save(png_path)
    pred.source_paths = [str(exr_path), str(png_path)]
    return pred, info, tmp


def test_plates_come_out_undistorted_in_the_overscan_frame(plates, monkeypatch):
    pred, info, tmp = plates
    monkeypatch.setattr(undistort_mod, "STRIP_ROWS", 7)  # many strips
    files = export(pred, "undistorted", tmp / "out")
    assert [f.rsplit("/", 1)[1] for f in files] == [f"plate.{FIRST}.exr", f"plate.{FIRST + 1}.png", "camera.json"]
    ow, oh = info["overscan_width"], info["overscan_height"]
    truth = pattern(centres(ow, oh))
    # where the overscan pixel's source lies well inside the plate (elsewhere: black, nothing to show)
    ku, k = np.asarray(info["K_undistorted"]), np.asarray(info["K"])
    n = (centres(ow, oh) - ku[:2, 2]) / [ku[0, 0], ku[1, 1]]
    r2 = np.sum(n * n, axis=-1, keepdims=True)
    src = n * (1 + K1 * r2 + K2 * r2 * r2) * [k[0, 0], k[1, 1]] + k[:2, 2]
    inside = (src[..., 0] > 1) & (src[..., 0] < PLATE_W - 1) & (src[..., 1] > 1) & (src[..., 1] < PLATE_H - 1)
    outside = (src[..., 0] < -1) | (src[..., 0] > PLATE_W + 1) | (src[..., 1] < -1) | (src[..., 1] > PLATE_H + 1)
    f = OpenEXR.File(files[0], separate_channels=True)
    ch = {name: c.pixels for name, c in f.channels().items()}
    assert set(ch) == {"R", "G", "B", "A"} and all(c.dtype == np.float16 for c in ch.values())
    assert ch["R"].shape == (oh, ow) and np.allclose(f.header()["K"], ku, atol=1e-3)
    assert np.max(np.abs(ch["R"].astype(np.float64) - truth)[inside]) < 0.02
    assert np.all(ch["A"][inside] == 1) and np.all(ch["A"][outside] == 0)
    png = np.asarray(Image.open(files[1])).astype(np.float64) / 255
    assert png.shape == (oh, ow, 3) and np.max(np.abs(png[..., 0] - truth)[inside]) < 0.025
    cams = json.loads((tmp / "out" / "undistorted" / "camera.json").read_text())
    assert [c["frame"] for c in cams["frames"]] == [FIRST, FIRST + 1]
    assert (cams["frames"][0]["width"], cams["frames"][0]["height"]) == (ow, oh)
    # strips change nothing
    monkeypatch.setattr(undistort_mod, "STRIP_ROWS", 10_000)
    files2 = export(pred, "undistorted", tmp / "out2")
    assert np.array_equal(np.asarray(Image.open(files2[1])), np.asarray(Image.open(files[1])))


def test_missing_plates_are_one_line(plates, tmp_path):
    pred, _, _ = plates
    pred = shot(n=2)  # /plates/shot.1001.exr does not exist here
    with pytest.raises(BadInputError, match="plates.*missing") as err:
        export(pred, "undistorted", tmp_path / "x")
    assert "\n" not in str(err.value) and not (tmp_path / "x").exists()


def test_a_video_result_undistorts_its_own_frames(robot_video, tmp_path):
    """A video's views are decoded from the movie by their frame numbers (scene frame - the video's start
    frame): with no distortion each output is the decoded frame itself."""
    from da3_blender.inputs.collect import read_video

    source = read_video(str(robot_video), fps=0, max_frames=4, frame_start=1001)
    frames = [np.asarray(f) for f in source.images]
    assert not np.array_equal(frames[1], frames[3])  # a wrong frame would show
    pred = shot(n=2, distortion=None, size=(1024, 576))
    pred.source_paths = [str(robot_video)] * 2
    pred.frame_numbers = np.array([1002, 1004], np.int64)
    pred.meta["video"] = dict(source.video)
    files = export(pred, "undistorted", tmp_path)
    assert [f.rsplit("/", 1)[1] for f in files] == ["plate.1002.png", "plate.1004.png", "camera.json"]
    for path, want in zip(files[:2], (frames[1], frames[3])):
        got = np.asarray(Image.open(path))
        assert got.shape == want.shape and np.array_equal(got, want)
