"""Long shots in the camera solve: a known lens (only the poses solved) and loop pairs (issue 30).

The known-lens test uses the session's rendered shot (tests/solve_helpers.py); the loop tests an orbit
that returns to its start (scripts/render_solve_shot.py --path orbit) with random-walk drift on its
input cameras, in a room whose opposite walls repeat each other (views half an orbit apart look alike).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from da3_blender import solve  # noqa: E402
from da3_blender.solve import loops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solve_helpers as H  # noqa: E402


def test_known_lens_holds_the_given_intrinsics_and_solves_the_poses(shot):
    n = 16
    e_in, k_in = H.perturb(shot["extrinsics"][:n], shot["intrinsics"][:n], seed=7, focal_frac=0.0)
    k_in[:, 0, 0] *= 1.0005  # the given lens, a hair off the render's: held as given, not re-estimated
    k_in[:, 1, 1] *= 1.0005
    pred = H.prediction(e_in, k_in, shot["size"], paths=shot["paths"][:n])
    out = solve.refine(pred, shot["paths"][:n], lens="known")
    s = out.meta["solve"]
    assert s["reason"] is None and s["lens"] == "known" and s["distortion"] is None
    k_out = np.asarray(out.proc_to_orig) @ out.intrinsics.astype(np.float64)
    np.testing.assert_allclose(k_out, k_in, rtol=1e-5)  # focal length and principal point exactly as given
    assert s["rms_px"] <= 0.6 and s["rms_px_before"] >= 3.0, (s["rms_px"], s["rms_px_before"])
    rot, pos = H.gauge_errors(out.extrinsics, shot["extrinsics"][:n])
    rot_in, pos_in = H.gauge_errors(e_in, shot["extrinsics"][:n])
    assert rot.max() <= 0.1 and pos.max() <= 0.005, (rot.max(), pos.max())
    assert rot_in.max() > 0.5 and pos_in.max() > 0.02


def test_known_lens_on_every_surface(tmp_path):
    from da3_blender.commands.common import job_from_args
    from da3_blender.commands.main import build_parser
    from da3_blender.job import build_job

    assert build_job(["a.png"], options={"refine": "known"})["options"]["refine"] == "known"
    args = build_parser().parse_args(["auto", "x.png", "--refine", "known"])
    assert job_from_args(args)["options"]["refine"] == "known"
    assert "known" in solve.LENS_MODELS


ORBIT_FRAMES = 48


@pytest.fixture(scope="module")
def orbit(tmp_path_factory):
    """A full turn that comes back to its start (render_solve_shot.py --path orbit), 48 frames of 480x270."""
    folder = os.environ.get("DA3_SOLVE_ORBIT_SHOT")
    if not folder:  # rendered once per machine (solve_helpers.rendered_shot: issue 26, CI time)
        folder = H.rendered_shot(tmp_path_factory, "solve_orbit", frames=ORBIT_FRAMES, width=480, height=270,
                                 path="orbit")
    info = H.load_shot(folder)
    info["paths"] = H.render_solve_shot.frame_paths(folder, ORBIT_FRAMES)
    return info


def drift(extrinsics, intrinsics, seed=0, rot_deg=0.8, pos_frac=0.005, focal_frac=0.03):
    """Cameras that drift as streamed ones do: each view's error is the last one's plus a random step
    (``rot_deg`` about a random axis, ``pos_frac`` of the path), so the end is several degrees off."""
    rng = np.random.default_rng(seed)
    length = H.path_length(extrinsics)
    out_e, out_k = extrinsics.copy(), intrinsics.copy()
    turn, shift = np.eye(3), np.zeros(3)
    for i in range(len(extrinsics)):
        turn = H._axis_angle(rng.normal(size=3), np.radians(rot_deg)) @ turn
        step = rng.normal(size=3)
        shift = shift + pos_frac * length * step / np.linalg.norm(step)
        rot = extrinsics[i, :, :3] @ turn.T
        out_e[i, :, :3], out_e[i, :, 3] = rot, -rot @ (-extrinsics[i, :, :3].T @ extrinsics[i, :, 3] + shift)
    out_k[:, :2, :2] *= 1 + focal_frac
    return out_e, out_k


@pytest.mark.slow
def test_loop_pairs_close_an_orbit_that_drifted(orbit, monkeypatch):
    e, k = drift(orbit["extrinsics"], orbit["intrinsics"])
    rot_in, pos_in = H.gauge_errors(e, orbit["extrinsics"])
    assert rot_in.max() > 3.0 and pos_in.max() > 0.02  # the input's end is several degrees and % off its start
    pred = H.prediction(e, k, orbit["size"], paths=orbit["paths"])
    out = solve.refine(pred, orbit["paths"], lens="fixed")
    s = out.meta["solve"]
    rot, pos = H.gauge_errors(out.extrinsics, orbit["extrinsics"])
    focal = np.abs(np.asarray(s["focal_px"]) / orbit["intrinsics"][:, 0, 0] - 1).max()
    assert s["reason"] is None and s["rms_px"] < 0.5, s
    assert s["loop_pairs"] >= 3 and s["longest_track_gap"] >= ORBIT_FRAMES - 8, s  # tracks span the loop
    # 480x270 frames: what the views' pixels allow (see docs/loop-closure.md); the sequential solve is 3x worse
    assert rot.max() <= 0.4 and pos.max() <= 0.007 and focal <= 0.005, (rot.max(), pos.max(), focal)

    monkeypatch.setattr(loops, "loop_pairs", lambda *a, **kw: ({}, {}))  # the same solve without loop pairs
    open_path = solve.refine(pred, orbit["paths"], lens="fixed")
    assert open_path.meta["solve"]["loop_pairs"] == 0 and open_path.meta["solve"]["longest_track_gap"] < 20
    rot_open, pos_open = H.gauge_errors(open_path.extrinsics, orbit["extrinsics"])
    # the open path's end drifts: its worst position ~10x the loop solve's (3.4 % against 0.3 %), its worst
    # rotation ~2x (0.60 against 0.30 degrees, near what these 480x270 frames allow: docs/loop-closure.md)
    assert rot_open.max() > 1.5 * rot.max() and pos_open.max() > 5 * pos.max(), (rot_open.max(), pos_open.max())


def test_a_repeated_wall_elsewhere_is_no_loop(orbit):
    """Half a turn apart the repeating room looks the same (walls and boxes twinned): the pair matches
    well and scores high, but the input cameras look the other way, so it is no loop pair."""
    import pycolmap

    from da3_blender.inputs.images import load_image
    from da3_blender.solve import features as feat
    from da3_blender.solve.pipeline import input_rig

    e, k = drift(orbit["extrinsics"], orbit["intrinsics"])
    pred = H.prediction(e, k, orbit["size"], paths=orbit["paths"])
    rig = input_rig(pred)
    extractor = feat.make_extractor(pycolmap)
    views = {v: feat.extract(pycolmap, extractor, load_image(orbit["paths"][v])) for v in (0, 24, 47)}

    def matched(i, j):
        m = feat.verify_pair(pycolmap, views[i][0], views[j][0], feat.match_pair(views[i][1], views[j][1]))
        return views[i][0][m[:, 0]], views[j][0][m[:, 1]]

    twin, revisit = matched(0, 24), matched(0, 47)
    assert len(twin[0]) > len(revisit[0]) > 50  # the twin even matches better than the real revisit
    assert loops.agrees(pycolmap, rig, pred, 0, 24, *twin) == (False, "rotation")
    assert loops.agrees(pycolmap, rig, pred, 0, 47, *revisit) == (True, "")
    plausible = loops.plausible_pairs(rig, pred)
    assert not plausible[0, 24] and plausible[0, 47]


def test_a_shot_without_a_loop_matches_none_of_the_candidates_its_tracks_tie(shot, monkeypatch):
    """A straight 48-frame shot: retrieval offers frames 10+ apart that overlap, but the sequential tracks
    tie each such pair already, so none is matched (on a 1080p shot that was 12 s for nothing new)."""
    import pycolmap

    from da3_blender.solve import features as feat
    from da3_blender.solve import pipeline

    e, k = H.perturb(shot["extrinsics"], shot["intrinsics"], seed=1)
    pred = H.prediction(e, k, shot["size"], paths=shot["paths"])
    rig = pipeline.input_rig(pred)
    features = pipeline._features(pycolmap, shot["paths"], pred, None)
    tracks = pipeline._tracks(pycolmap, features, rig, None)
    matched = []
    real_match = feat.match_pair
    monkeypatch.setattr(feat, "match_pair", lambda *a: matched.append(1) or real_match(*a))
    found, info = loops.loop_pairs(pycolmap, features, rig, pred, None, tracks)
    assert info["candidates"] > 20 and info["tied"] == info["candidates"], info
    assert found == {} and not matched
    # without the sequential tracks every candidate is matched, and they are overlapping frames, not loops
    found_all, info_all = loops.loop_pairs(pycolmap, features, rig, pred, None)
    assert info_all["tied"] == 0 and len(matched) == info_all["candidates"] and len(found_all) > 20


def test_shared_tracks_counts_the_tracks_both_views_see():
    from da3_blender.solve import features as feat

    # track 0 in views 0, 1, 2; track 1 in views 0, 2; track 2 in views 1, 3
    tracks = feat.TrackSet(np.array([0, 0, 0, 1, 1, 2, 2]), np.array([0, 1, 2, 0, 2, 1, 3]), np.zeros((7, 2)),
                           np.arange(7))
    assert loops.shared_tracks(tracks, [(0, 1), (0, 2), (1, 3), (0, 3), (2, 5)]).tolist() == [1, 2, 1, 0, 0]
    assert loops.shared_tracks(None, [(0, 1)]).tolist() == [0]
