"""The ``gs_ply`` export: the official ``save_gaussian_ply`` file, field by field, from the same Gaussians
(``tests/fixtures/gs_head_official.ply``, made by ``scripts/make_gs_fixture.py``), read back with a
small PLY reader written here; pruning options. (The pipeline writing it: tests/test_gaussians.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from da3_blender.errors import BadInputError
from da3_blender.exports import export, parse_formats
from da3_blender.exports.gs_ply import export_gs_ply
from da3_blender.results.gaussians import Gaussians, per_pixel_mask
from da3_blender.prediction import Prediction

FIXTURES = Path(__file__).parent / "fixtures"
PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4"}


def read_ply(path) -> tuple[list[str], np.ndarray]:
    """(header lines, vertex array) of a binary little-endian PLY with one vertex element."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0", header[:2]
    count, fields = None, []
    for line in header[2:]:
        words = line.split()
        if words[0] == "element":
            assert words[1] == "vertex" and count is None, line
            count = int(words[2])
        elif words[0] == "property":
            fields.append((words[2], PLY_TYPES[words[1]]))
    vertices = np.frombuffer(raw, dtype=fields, count=count, offset=end)
    assert end + vertices.nbytes == len(raw), "trailing bytes after the vertices"
    return header, vertices


@pytest.fixture(scope="module")
def fixture_pred():
    with np.load(FIXTURES / "gs_head_official.npz", allow_pickle=False) as npz:
        gs = Gaussians(**{k: npz[f"unposed/out/{k}"][0] for k in ("means", "scales", "rotations", "harmonics", "opacities")})
        depth = npz["unposed/in/depth"][0]
    return Prediction(depth=depth, gaussians=gs)


def test_matches_the_official_writer_field_by_field(fixture_pred, tmp_path):
    path, = export(fixture_pred, "gs_ply", tmp_path)
    assert path == str(tmp_path / "gs_ply" / "0000.ply")
    header, ours = read_ply(path)
    ref_header, ref = read_ply(FIXTURES / "gs_head_official.ply")
    assert header == ref_header  # same properties in the same order, same count
    assert ours.dtype.names[:9] == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    assert ours.dtype.names[9:] == ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
    for name in ours.dtype.names:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-6, atol=0, err_msg=name)
    n, h, w = fixture_pred.depth.shape
    assert 0 < len(ours) < n * h * w  # border and depth pruning removed some


def test_round_trip_values(fixture_pred, tmp_path):
    path, = export_gs_ply(fixture_pred, str(tmp_path), sh_dc_only=False)
    _, v = read_ply(path)
    keep = per_pixel_mask(fixture_pred.depth).reshape(-1)
    gs = fixture_pred.gaussians.subset(keep)
    assert len(v) == len(gs) == int(keep.sum())
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], -1), gs.means)
    np.testing.assert_allclose(np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], -1)), gs.scales, rtol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), gs.opacities, rtol=1e-5)
    np.testing.assert_array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], -1), gs.rotations)
    rest = np.stack([v[f"f_rest_{i}"] for i in range(24)], -1).reshape(-1, 3, 8)
    np.testing.assert_array_equal(rest, gs.harmonics[:, :, 1:])
    assert not np.any(np.stack([v["nx"], v["ny"], v["nz"]]))


def test_pruning_options(fixture_pred, tmp_path):
    depth = fixture_pred.depth
    n, h, w = depth.shape
    every, = export_gs_ply(fixture_pred, str(tmp_path / "a"), depth_percentile=None, prune_border=False)
    assert len(read_ply(every)[1]) == n * h * w
    first, = export_gs_ply(fixture_pred, str(tmp_path / "b"), views_interval=2, depth_percentile=None, prune_border=False)
    np.testing.assert_array_equal(read_ply(first)[1]["x"], fixture_pred.gaussians.means[:h * w, 0])
    pruned, = export(fixture_pred, "gs_ply", tmp_path / "c", gs_views_interval=2)  # the official defaults otherwise
    keep = per_pixel_mask(depth, views_interval=2).reshape(-1)
    assert keep[h * w:].sum() == 0 and len(read_ply(pruned)[1]) == keep.sum() > 0
    with pytest.raises(BadInputError, match="gs_views_interval"):
        export(fixture_pred, "gs_ply", tmp_path / "d", gs_views_interval=0)
    mask = per_pixel_mask(depth)
    th, tw = int(8 / 256 * h), int(8 / 256 * w)
    assert th and tw and not mask[:, :th].any() and not mask[:, :, -tw:].any()
    for i in range(n):  # at most 90 % of a view's border-free pixels, the nearest ones
        kept, dropped = depth[i][mask[i]], depth[i][th:h - th, tw:w - tw][~mask[i][th:h - th, tw:w - tw]]
        assert kept.max() <= np.quantile(depth[i], 0.9) and (dropped.size == 0 or dropped.min() > kept.max())
    tiny = per_pixel_mask(np.ones((1, 20, 20), np.float32), depth_percentile=None)
    assert tiny.all()  # under 32 px nothing is trimmed (the official code would keep nothing)


def test_refused_without_gaussians(tmp_path):
    pred = Prediction(depth=np.ones((1, 4, 4), np.float32))
    assert "gs_ply" in parse_formats("glb-gs_ply")
    with pytest.raises(BadInputError, match="infer_gs"):
        export(pred, "mini_npz-gs_ply", tmp_path)
    assert not any(tmp_path.iterdir())  # checked before anything was written
