"""STMaps of the solve's lens: read back with OpenEXR, checked against the model formula, inverted by
each other, and a distorted grid restored by Nuke-style bilinear sampling."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from comp_helpers import K1, K2, PLATE_H, PLATE_W, bilinear, shot
from da3_blender.errors import BadInputError
from da3_blender.exports import export
from da3_blender import files as files_mod
from da3_blender.exports import stmap as stmap_mod

OpenEXR = pytest.importorskip("OpenEXR", reason="the OpenEXR package (pip install '.[exr]') is needed for STMaps")


def read_map(path):
    f = OpenEXR.File(os.fspath(path), separate_channels=True)
    ch = {name: c.pixels for name, c in f.channels().items()}
    assert set(ch) == {"R", "G", "B"} and all(c.dtype == np.float32 for c in ch.values())
    return f.header(), np.stack([ch["R"], ch["G"], ch["B"]], axis=-1).astype(np.float64)


def to_px(st, w, h):  # Nuke: s = x / W, t = 1 - y / H (pixel edges from the top-left)
    return np.stack([st[..., 0] * w, (1 - st[..., 1]) * h], axis=-1)


def centres(w, h):
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return np.stack([x, y], axis=-1)


def distort(q, k, ku):  # the model, written out: overscan position -> plate position
    nx, ny = (q[..., 0] - ku[0, 2]) / ku[0, 0], (q[..., 1] - ku[1, 2]) / ku[1, 1]
    r2 = nx * nx + ny * ny
    f = 1 + K1 * r2 + K2 * r2 * r2
    return np.stack([nx * f * k[0, 0] + k[0, 2], ny * f * k[1, 1] + k[1, 2]], axis=-1)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    out = tmp_path_factory.mktemp("stmap")
    pred = shot()
    files = export(pred, "stmap", out)
    info = json.loads((out / "stmap" / "lens.json").read_text())
    return pred, files, info, read_map(out / "stmap" / "undistort.exr"), read_map(out / "stmap" / "redistort.exr")


def test_lens_json_and_headers(maps):
    pred, files, info, (h_und, und), (h_red, red) = maps
    assert [os.path.basename(f) for f in files] == ["undistort.exr", "redistort.exr", "lens.json"]
    k = pred.original_intrinsics()[0]
    assert np.allclose(info["K"], k, atol=1e-4) and (info["k1"], info["k2"]) == (K1, K2)
    assert (info["width"], info["height"]) == (PLATE_W, PLATE_H)
    ow, oh = info["overscan_width"], info["overscan_height"]
    assert ow > PLATE_W and oh > PLATE_H  # barrel: the undistorted frame grows
    ku = np.asarray(info["K_undistorted"])
    assert np.allclose(ku[:, :2], k[:, :2], atol=1e-4)
    assert np.isclose(ku[0, 2] - k[0, 2], (ow - PLATE_W) / 2) and np.isclose(ku[1, 2] - k[1, 2], (oh - PLATE_H) / 2)
    assert und.shape == (oh, ow, 3) and red.shape == (PLATE_H, PLATE_W, 3)
    for header in (h_und, h_red):
        assert list(header["da3PlateSize"]) == [PLATE_W, PLATE_H] and list(header["da3OverscanSize"]) == [ow, oh]
    assert "note" not in info and np.all(und[..., 2] == 0)


def test_maps_follow_the_model_and_invert_each_other(maps):
    pred, _, info, (_, und), (_, red) = maps
    k, ku = np.asarray(info["K"]), np.asarray(info["K_undistorted"])
    ow, oh = info["overscan_width"], info["overscan_height"]
    # undistort map: each overscan pixel holds the plate position the formula gives
    assert np.max(np.abs(to_px(und, PLATE_W, PLATE_H) - distort(centres(ow, oh), k, ku))) < 0.01
    # redistort map: each plate pixel holds an overscan position that the formula sends back to it
    q = to_px(red, ow, oh)
    assert np.max(np.abs(distort(q, k, ku) - centres(PLATE_W, PLATE_H))) < 0.01
    # no plate pixel is lost: every one lands inside the overscan frame
    assert q[..., 0].min() > 0 and q[..., 1].min() > 0 and q[..., 0].max() < ow and q[..., 1].max() < oh
    # redistort(undistort(p)) = p through Nuke-style sampling of the maps
    back = to_px(bilinear(und, q), PLATE_W, PLATE_H)
    assert np.max(np.abs(back - centres(PLATE_W, PLATE_H))) < 0.01


def test_undistort_map_restores_a_distorted_grid(maps):
    pred, _, info, (_, und), _ = maps
    k, ku = np.asarray(info["K"]), np.asarray(info["K_undistorted"])
    ow, oh = info["overscan_width"], info["overscan_height"]

    def grid(p):  # a smooth grid in the undistorted (pinhole) frame, 24 px cells (bilinear error ~0.01)
        return (0.5 + 0.5 * np.cos(2 * np.pi * p[..., 0] / 24) * np.cos(2 * np.pi * p[..., 1] / 24))[..., None]

    # render the plate: each plate pixel sees the pinhole position the model sends onto it (fixed point)
    target = centres(PLATE_W, PLATE_H)
    q = target - k[:2, 2] + ku[:2, 2]
    for _ in range(60):
        q = q + (target - distort(q, k, ku))
    assert np.max(np.abs(distort(q, k, ku) - target)) < 1e-6
    plate = grid(q)
    restored = bilinear(plate, to_px(und, PLATE_W, PLATE_H))
    src = to_px(und, PLATE_W, PLATE_H)
    inside = (src[..., 0] > 1) & (src[..., 0] < PLATE_W - 1) & (src[..., 1] > 1) & (src[..., 1] < PLATE_H - 1)
    truth = grid(centres(ow, oh))
    assert inside.mean() > 0.8
    assert np.max(np.abs(restored - truth)[inside]) < 0.02
    wrong = bilinear(plate, centres(ow, oh) - ku[:2, 2] + k[:2, 2])  # ignoring the lens: far off
    assert np.max(np.abs(wrong - truth)[inside]) > 0.3


def test_no_distortion_gives_identity_maps_with_a_note(tmp_path):
    export(shot(distortion=None), "stmap", tmp_path)
    info = json.loads((tmp_path / "stmap" / "lens.json").read_text())
    assert "identity" in info["note"] and (info["overscan_width"], info["overscan_height"]) == (PLATE_W, PLATE_H)
    for name in ("undistort.exr", "redistort.exr"):
        _, m = read_map(tmp_path / "stmap" / name)
        assert np.max(np.abs(to_px(m, PLATE_W, PLATE_H) - centres(PLATE_W, PLATE_H))) < 1e-3


def test_zoom_gives_a_pair_per_frame_and_a_long_one_warns(tmp_path, monkeypatch, caplog):
    files = export(shot(n=3, zoom=True), "stmap", tmp_path / "a")
    names = sorted(os.path.basename(f) for f in files)
    assert names == ["lens.json"] + [f"{m}.{n}.exr" for m in ("redistort", "undistort") for n in (1001, 1002, 1003)]
    info = json.loads((tmp_path / "a" / "stmap" / "lens.json").read_text())
    assert [f["frame"] for f in info["frames"]] == [1001, 1002, 1003]
    assert info["frames"][2]["K"][0][0] > info["frames"][0]["K"][0][0]
    sizes = {tuple(read_map(f)[0]["da3OverscanSize"]) for f in files if f.endswith(".exr") and "undistort" in f}
    assert len(sizes) == 1  # one overscan format through the zoom
    monkeypatch.setattr(stmap_mod, "WARN_BYTES", 1 << 20)
    monkeypatch.setattr(files_mod.os, "fsync", lambda fd: None)  # 2,000 fsyncs are the test's slow part
    with caplog.at_level(logging.WARNING, logger="da3_blender"):
        files = export(shot(n=1000, zoom=True, size=(32, 18)), "stmap", tmp_path / "b")
    assert len(files) == 2001
    (line,) = [r.getMessage() for r in caplog.records if "stmap" in r.getMessage()]
    assert "1000 frames" in line and "GiB" in line and "\n" not in line


def test_bad_input_is_one_line(tmp_path):
    pred = shot()
    pred.intrinsics = None
    with pytest.raises(BadInputError, match="intrinsics") as err:
        export(pred, "stmap", tmp_path / "x")
    assert "\n" not in str(err.value) and not (tmp_path / "x").exists()
    folded = shot(distortion=(0.9, -4.0))
    with pytest.raises(BadInputError, match="folds"):
        export(folded, "stmap", tmp_path / "y")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the export folder should go")
    with pytest.raises(BadInputError) as err:
        export(shot(), "stmap", blocker / "out")
    assert "\n" not in str(err.value)
