"""Nodal (tripod) camera solve: a pan about one point has no parallax; it is solved about one centre.

Ground truth: our render of a 50-degree tripod pan with a tilt (scripts/render_solve_shot.py --path
nodal, 40 frames of 960x540), given feed-forward-like cameras (every view rotated by 1 degree, moved by
10 cm in a 12 m room, focal off by 5 %). Plus the nodal bundle adjustment alone on synthetic tracks
with barrel distortion (fast, no render).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from da3_blender import solve  # noqa: E402
from da3_blender.errors import BadInputError  # noqa: E402
from da3_blender.solve import nodal  # noqa: E402
from da3_blender.solve.bundle import Rig, project, residuals  # noqa: E402
from da3_blender.solve.features import TrackSet  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solve_helpers as H  # noqa: E402
from solve_helpers import NODAL_FRAMES  # noqa: E402 (the shot fixtures are in conftest.py)


def _rotation_errors(est_extr, gt_extr) -> np.ndarray:
    """Per-view rotation error (degrees) after aligning the orientation gauge over all cameras."""
    est, gt = np.asarray(est_extr, np.float64)[:, :, :3], np.asarray(gt_extr, np.float64)[:, :, :3]
    u, _, vt = np.linalg.svd(np.sum(np.einsum("nji,njk->nik", gt, est), axis=0))
    q = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    rel = np.einsum("nij,nkj->nik", est @ q.T, gt)
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))


def _nodal_input(shot, seed=3, move=0.10):
    e, k = H.perturb(shot["extrinsics"], shot["intrinsics"], seed=seed)  # path length 0: rotation and focal only
    rng = np.random.default_rng(seed)
    for i in range(len(e)):  # DA3 on a tripod shot still moves the camera a little
        step = rng.normal(size=3)
        centre = -e[i, :, :3].T @ e[i, :, 3] + move * step / np.linalg.norm(step)
        e[i, :, 3] = -e[i, :, :3] @ centre
    return H.prediction(e, k, shot["size"], paths=shot["paths"]), e


@pytest.mark.slow
def test_tripod_pan_is_solved_nodal_to_subpixel(nodal_shot):
    pred, e_in = _nodal_input(nodal_shot)
    out = solve.refine(pred, nodal_shot["paths"], lens="fixed")
    s = out.meta["solve"]
    assert s["motion"] == "nodal" and s["reason"] is None, s
    assert s["rms_px"] <= 0.5 and s["rms_px_before"] >= 3.0, (s["rms_px"], s["rms_px_before"])
    rot = _rotation_errors(out.extrinsics, nodal_shot["extrinsics"])
    assert rot.max() <= 0.1 and _rotation_errors(e_in, nodal_shot["extrinsics"]).max() > 0.5, rot.max()
    focal = np.asarray(s["focal_px"]) / nodal_shot["intrinsics"][:, 0, 0] - 1
    assert np.abs(focal).max() <= 0.003, focal
    extr = out.extrinsics.astype(np.float64)
    centres = -np.einsum("nji,nj->ni", extr[:, :, :3], extr[:, :, 3])
    centre_in = -e_in[0, :, :3].T @ e_in[0, :, 3]
    assert np.abs(centres - centre_in).max() < 1e-4  # one camera position: view 0's, for every frame
    assert len(s["per_view_rms_px"]) == NODAL_FRAMES and s["tracks"] > 300
    # the tracks sit in front of the cameras at the predicted depth (3 m in this stand-in prediction)
    dist = np.linalg.norm(out.tracks.xyz - centre_in, axis=1)
    assert np.all(np.isfinite(dist)) and np.median(dist) == pytest.approx(3.0, rel=0.3)


@pytest.mark.slow
def test_free_motion_forced_on_a_tripod_pan_never_does_worse(nodal_shot):
    """motion="free" cannot triangulate a pan: it either refuses in one line or returns cameras no worse
    than the input (the solve's promise), never a silent wrong move."""
    pred, _ = _nodal_input(nodal_shot, seed=4)
    try:
        out = solve.refine(pred, nodal_shot["paths"], motion="free")
    except BadInputError as exc:
        assert "\n" not in str(exc) and "nodal" in str(exc)
    else:
        s = out.meta["solve"]
        assert s["motion"] == "free" and s["rms_px"] <= s["rms_px_before"]


@pytest.mark.slow
def test_moving_camera_is_not_mistaken_for_a_pan(shot):
    """The arc shot (3 m of travel) forced nodal fits far worse than free; auto keeps it free."""
    pred, _ = H.prediction(*H.perturb(shot["extrinsics"][:16], shot["intrinsics"][:16], seed=5), shot["size"],
                           paths=shot["paths"][:16]), None
    auto = solve.refine(pred, shot["paths"][:16])
    assert auto.meta["solve"]["motion"] == "free" and auto.meta["solve"]["rms_px"] <= 0.5
    forced = solve.refine(pred, shot["paths"][:16], motion="nodal")
    s = forced.meta["solve"]
    assert s["motion"] == "nodal"
    assert s["reason"] is not None or s["rms_px"] > 2 * auto.meta["solve"]["rms_px"]


def test_unknown_motion_is_refused_in_one_line(tmp_path):
    k = np.array([[800.0, 0, 480], [0, 800, 270], [0, 0, 1]])
    pred = H.prediction(np.tile(np.eye(3, 4), (2, 1, 1)), np.stack([k, k]), (960, 540))
    with pytest.raises(BadInputError, match="unknown refine motion 'dolly'; use one of: auto, free, nodal"):
        solve.refine(pred, [str(tmp_path / "a.png"), str(tmp_path / "b.png")], motion="dolly")


def _synthetic_pan(k1=-0.05, noise=0.3, n=30, seed=0):
    rng = np.random.default_rng(seed)
    yaw, pitch = np.linspace(-0.5, 0.5, n), 0.12 * np.sin(np.linspace(0, 6, n))
    rots = nodal._exp(np.stack([pitch, yaw, np.zeros(n)], 1))
    truth = Rig(R=rots, t=np.zeros((n, 3)), f=np.full((n, 2), 900.0), c=np.tile([480.0, 270.0], (n, 1)),
                k=np.tile([k1, 0.0], (n, 1)))
    d = rng.normal(size=(4000, 3))
    d[:, 2] = 3 * np.abs(d[:, 2])
    d = nodal._exp(np.stack([np.zeros(len(d)), rng.uniform(-0.7, 0.7, len(d)), np.zeros(len(d))], 1)) @ d[:, :, None]
    d = d[:, :, 0] / np.linalg.norm(d[:, :, 0], axis=1, keepdims=True)
    t, v = np.repeat(np.arange(len(d)), n), np.tile(np.arange(n), len(d))
    xy, z = project(truth, d[t], v)
    cam = np.einsum("oij,oj->oi", rots[v], d[t])
    r2 = np.sum((cam[:, :2] / cam[:, 2:]) ** 2, axis=1)
    seen = (z > 0) & (r2 < 1) & np.all((xy > 0) & (xy < [960, 540]), axis=1)
    xy = xy + rng.normal(scale=noise, size=xy.shape)
    return truth, TrackSet(t, v, xy, np.zeros_like(t)).subset(seen)


def test_nodal_adjustment_recovers_rotations_focal_and_distortion():
    truth, tracks = _synthetic_pan()
    n = len(truth.R)
    rng = np.random.default_rng(1)
    start = truth.copy()
    start.R = np.stack([H._axis_angle(rng.normal(size=3), np.radians(1.0)) @ r for r in truth.R])
    start.f, start.k = truth.f * 1.05, np.zeros((n, 2))
    d0 = nodal.directions(start, tracks)
    before = np.sqrt(np.mean(residuals(start, d0, tracks)[0] ** 2))
    rig, d = nodal.adjust(start, d0, tracks, camera_of_view=np.zeros(n, int), radial=True)
    after = np.sqrt(np.mean(residuals(rig, d, tracks)[0] ** 2))
    assert before > 5 and after < 0.45, (before, after)  # 0.3 px noise per axis: 0.42 px RMS
    assert rig.f[0, 0] == pytest.approx(900.0, rel=0.003) and abs(rig.k[0, 0] + 0.05) < 0.01, (rig.f[0], rig.k[0])
    np.testing.assert_array_equal(rig.R[0], start.R[0])  # view 0 holds the gauge
    extr = lambda r: np.concatenate([r.R, r.t[:, :, None]], axis=2)  # noqa: E731
    assert _rotation_errors(extr(rig), extr(truth)).max() < 0.05
