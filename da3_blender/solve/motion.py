"""The bundle adjustments of the camera solve, free and nodal, and the choice between them.

**Free**: tracks triangulated from the input cameras (never from the predicted depth), then every
pose, the lens and the points adjusted by pycolmap (bundle.adjust). **Nodal**: a pan from a tripod
has no parallax, so its tracks cannot be triangulated and nothing fixes the camera positions; it is
solved about one centre (nodal.adjust: rotations, lens and track directions), as matchmove tools do
(Blender's "Tripod" solve). ``motion="auto"`` runs the free solve, and the nodal one as well when
the free one fails, is not sub-pixel, its move makes little parallax or it explains too few of the
observations (``NODAL_CHECK_*``); the nodal solve wins when it explains the
tracks as well (``NODAL_RMS_RATIO``/``NODAL_RMS_SLACK_PX``, keeping nearly as many observations):
the simpler model, with no invented camera moves.
Both run in rounds (``ROUNDS``) that drop outliers, and a view left with too few tracks keeps its
input pose (a nodal one: its input rotation, at the shot's centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cancel import checkpoint
from ..errors import BadInputError
from . import nodal
from . import features as feat
from .bundle import HELD_LENS_MODEL, Rig, project, residuals, triangulate, triangulation_angles
from .isolate import adjust  # a long round runs in a child process: a cancel stops it

MIN_TRACKS = 30  # fewer verified tracks than this: nothing to solve with
MIN_VIEW_OBSERVATIONS = 15  # a view seeing fewer tracks keeps its input pose
MIN_ANGLE_DEG = 0.2  # tracks whose rays meet at a narrower angle do not fix depth
# bundle adjustment rounds: (Cauchy loss scale px or None for least squares, outlier threshold px after it);
# the last threshold is at least FINAL_MEDIANS times the median error (noisier footage keeps its tracks). The
# last round keeps a tight robust loss: observations just inside the threshold that the cameras bent to fit
# (aliased or slightly wrong matches) weigh less; on a 240-frame orbit (the same tracks) it took the worst view
# from 0.118 to 0.094 degrees, the mean position error from 0.049 % to 0.033 % of the path (issue 30, BENCHMARKS.md)
ROUNDS = ((4.0, 8.0), (1.0, 3.0), (None, 1.0), (0.5, None))  # None after the last: the cut before it again
# the most solver iterations of each round of the free solve: the first two only sort out the outliers at 8 and
# 3 px (their robust losses crept on to the cap of 100 for ~0.3 % lower cost: 10 of a 50-frame 1080p solve's 21 s
# of bundle adjustment; at 15 the RMS is within 1.5 % of 100's); the least-squares round converges in ~15; in the
# last the cameras settle within 10-20 (the points creep on: 60 iterations moved no camera by 1e-4 degrees
# more), and on the 240-frame orbit 40 and 100 give the same worst view (issue 30, BENCHMARKS.md)
ROUND_ITERATIONS = (15, 15, 100, 40)
COMPLETE_AFTER = 1  # after this round every track of the free solve is placed again for the refined cameras
FINAL_MEDIANS = 3.0
NODAL_CHECK_PX = 20.0  # a free solve whose move makes less parallax than this (px) is checked against nodal,
NODAL_CHECK_RMS_PX = 1.0  # and so is one that is not sub-pixel (a pan a free solve cannot explain),
NODAL_CHECK_KEPT = 0.5  # and one that kept under this share of the observations its first round had (a pan "explained"
# by an invented move on the few tracks that fit it: a 12-frame tripod pan, 2,245 of ~21,000, 0.49 px, 380 px of parallax)
NODAL_RMS_RATIO, NODAL_RMS_SLACK_PX = 1.1, 0.05  # nodal wins when its error <= ratio * free + slack ...
NODAL_MIN_OBSERVATIONS = 0.8  # ... keeping at least this fraction of the free solve's observations


def report(progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress("solve", min(max(float(fraction), 0.0), 1.0), message)


def _initial_points(rig: Rig, tracks: feat.TrackSet) -> tuple[np.ndarray, feat.TrackSet]:
    points = triangulate(rig, tracks)
    good = np.all(np.isfinite(points), axis=1)
    angles = triangulation_angles(rig, np.nan_to_num(points), tracks)
    good &= angles > MIN_ANGLE_DEG
    err, front = residuals(rig, np.nan_to_num(points), tracks)
    keep = good[tracks.obs_track] & front
    if keep.any():
        keep &= err < max(10.0, 8 * float(np.median(err[keep])))
    return retriangulate(rig, tracks.subset(keep))


def retriangulate(rig: Rig, tracks: feat.TrackSet) -> tuple[np.ndarray, feat.TrackSet]:
    points = triangulate(rig, tracks)
    ok = np.all(np.isfinite(points), axis=1)
    if not ok.all():
        tracks = tracks.subset(ok[tracks.obs_track])
        points = triangulate(rig, tracks)
    return points, tracks


def _weak_views(tracks: feat.TrackSet, n: int) -> set:
    return set(np.nonzero(np.bincount(tracks.obs_view, minlength=n) < MIN_VIEW_OBSERVATIONS)[0].tolist())


def _rounds(rig: Rig, points: np.ndarray, tracks, adjust_round, hold, progress, span, complete=None) -> tuple:
    """Bundle adjustment rounds (ROUNDS) with outliers dropped between them; views left with too few
    tracks are put back by ``hold(rig, view)`` and held there. After round ``COMPLETE_AFTER``,
    ``complete(rig)`` gives every track of the shot placed for the refined cameras (points, tracks), and
    the outlier filter that follows keeps what fits: observations lost to the input cameras' errors come back."""
    weak: set = set()
    last_cut = None
    for r, (loss, threshold) in enumerate(ROUNDS):
        new_weak = _weak_views(tracks, len(rig.R)) - weak
        for v in sorted(new_weak):  # too few tracks: back to the input pose, held there
            hold(rig, v)
        weak |= new_weak
        rig, points = adjust_round(rig, points, tracks, sorted(weak), loss, ROUND_ITERATIONS[r])
        checkpoint()
        report(progress, span[0] + (span[1] - span[0]) * (r + 1) / len(ROUNDS), f"bundle adjustment {r + 1}/{len(ROUNDS)}")
        if complete is not None and r == COMPLETE_AFTER:
            points, tracks = complete(rig)
        if threshold is None and r == len(ROUNDS) - 1:
            threshold = last_cut  # what the robust last round left far off (a wrong track it barely felt) goes too
        if threshold is not None:
            err, front = residuals(rig, points, tracks)
            if r == len(ROUNDS) - 2:
                threshold = last_cut = max(threshold, FINAL_MEDIANS * float(np.median(err)))
            keep = (err < threshold) & front
            if (~keep).any():
                counts = np.bincount(tracks.obs_track[keep], minlength=len(points))
                tracks, points = tracks.subset(keep), points[counts >= 2]
        if tracks.num_tracks < MIN_TRACKS:
            raise BadInputError(f"the camera solve kept {tracks.num_tracks} consistent tracks (needs {MIN_TRACKS}): "
                                "the frames do not fit these cameras (moving objects, or not this prediction's frames)")
    return rig, points, tracks, sorted(weak)


def _bundle(pycolmap, rig0: Rig, rig_in: Rig, tracks, camera_of_view, model, sizes, progress, span=(0.7, 0.85),
            all_tracks=None):
    """The free solve: tracks triangulated from the input cameras, every pose, the lens and the points
    adjusted; the rig and points come back in the prediction's frame (:func:`_to_input_frame`). The first
    rounds adjust ``tracks`` (the strongest, for time); from round ``COMPLETE_AFTER`` on, ``all_tracks``
    (every track of the shot, default ``tracks``) are placed for the refined cameras and adjusted."""
    all_tracks = tracks if all_tracks is None else all_tracks
    points, tracks = _initial_points(rig0, tracks)
    gauge = []  # the similarity adjustment frame -> input frame, fixed once a view is held (see _to_input_frame)

    def adjust_round(rig, points, tracks, held, loss, iterations):
        return adjust(pycolmap, rig, points, tracks, camera_of_view=camera_of_view, model=model, sizes=sizes,
                      constant_views=held, loss_scale=loss, max_iterations=iterations)

    def hold(rig, v):
        if not gauge:
            gauge.append(_gauge(rig, rig_in))
        s, r_m, t_m = gauge[0]  # the input pose in the adjustment's frame: the final similarity puts it back exactly
        rig.R[v] = rig_in.R[v] @ r_m
        rig.t[v] = -rig.R[v] @ (r_m.T @ (rig_in.centres[v] - t_m) / s)

    if tracks.num_tracks < MIN_TRACKS:
        raise BadInputError(f"the camera solve could triangulate {tracks.num_tracks} tracks (needs {MIN_TRACKS}): the "
                            "input cameras barely move; a pan from a tripod solves as nodal (motion 'auto' or 'nodal')")
    rig, points, tracks, weak = _rounds(rig0.copy(), points, tracks, adjust_round, hold, progress, span,
                                        complete=lambda rig: _initial_points(rig, all_tracks))
    rig, points = _similarity(rig, points, gauge[0] if gauge else _gauge(rig, rig_in))
    for v in weak:  # exactly their input pose (the similarity put them back up to its rounding)
        rig.R[v], rig.t[v] = rig_in.R[v], rig_in.t[v]
    return rig, points, tracks, weak


def _bundle_nodal(rig0: Rig, rig_in: Rig, tracks, camera_of_view, model, progress, span=(0.85, 0.95)):
    """The nodal solve (solve/nodal.py): one centre, rotations, lens and track directions (centre at the origin)."""
    rig = rig0.copy()
    rig.t[:] = 0.0
    _, front = residuals(rig, nodal.directions(rig, tracks), tracks)
    tracks = tracks.subset(front)
    d = nodal.directions(rig, tracks)

    def adjust_round(rig, d, tracks, held, loss, _iterations):  # nodal.adjust converges on its own terms
        return nodal.adjust(rig, d, tracks, camera_of_view=camera_of_view, radial=model == "RADIAL",
                            held_views=held, loss_scale=loss, hold_lens=model == HELD_LENS_MODEL)

    def hold(rig, v):
        rig.R[v] = rig_in.R[v]

    return _rounds(rig, d, tracks, adjust_round, hold, progress, span)


def _gauge(rig: Rig, rig_in: Rig) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``x -> s r_m x + t_m`` from the adjustment's frame to the prediction's: view 0 back at
    its input pose, the spread of the centres restored.

    Once a view is held at its input pose the adjustment's scale is pinned by two constant poses, so the
    similarity in force when the first one was held stays the frame's (held views go in through it and
    come back out exactly)."""
    c_ref, c_in = rig.centres, rig_in.centres
    spread_ref = np.sum(np.linalg.norm(c_ref - c_ref[0], axis=1))
    spread_in = np.sum(np.linalg.norm(c_in - c_in[0], axis=1))
    s = spread_in / spread_ref if spread_ref > 1e-12 and spread_in > 1e-12 else 1.0
    r_m = rig_in.R[0].T @ rig.R[0]
    return s, r_m, c_in[0] - s * r_m @ c_ref[0]


def _similarity(rig: Rig, points: np.ndarray, gauge) -> tuple[Rig, np.ndarray]:
    s, r_m, t_m = gauge
    out = rig.copy()
    out.R = rig.R @ r_m.T
    centres = s * rig.centres @ r_m.T + t_m
    out.t = -np.einsum("nij,nj->ni", out.R, centres)
    return out, s * points @ r_m.T + t_m


def parallax_px(rig: Rig, points: np.ndarray, tracks) -> float:
    """The parallax a solved move makes, in pixels: focal length x the widest baseline / the near depth
    (10th percentile of the observations' depths). A pan about one point makes none."""
    centres = rig.centres
    baseline = 2 * float(np.max(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
    _, z = project(rig, points[tracks.obs_track], tracks.obs_view)
    z = z[z > 0]
    return float(np.median(rig.f[:, 0]) * baseline / np.percentile(z, 10)) if len(z) else 0.0


def _nodal_points(pred, rig: Rig, d: np.ndarray, tracks, centre: np.ndarray) -> np.ndarray:
    """Track positions for a nodal solve: along each direction at DA3's depth where its first observation
    lies (only for display and export: no projection depends on it), else at the median depth."""
    depth = None if pred is None or pred.depth is None else np.asarray(pred.depth, dtype=np.float64)
    first = tracks.starts[:-1]
    views, xy = tracks.obs_view[first], tracks.obs_xy[first]
    z_cam = np.einsum("tij,tj->ti", rig.R[views], d)[:, 2]
    dist = np.ones(len(d))
    if depth is not None and depth.ndim == 3:
        to_proc = np.linalg.inv(np.asarray(pred.proc_to_orig, dtype=np.float64))[views]
        pix = np.einsum("tij,tj->ti", to_proc, np.concatenate([xy, np.ones((len(xy), 1))], axis=1))[:, :2]
        h, w = depth.shape[1:]
        col, row = np.clip(pix[:, 0].astype(int), 0, w - 1), np.clip(pix[:, 1].astype(int), 0, h - 1)
        z = depth[views, row, col]
        valid = np.isfinite(z) & (z > 0)
        fallback = float(np.median(z[valid])) if valid.any() else 1.0
        dist = np.where(valid, z, fallback) / np.maximum(z_cam, 1e-6)
    return centre + d * dist[:, None]


@dataclass
class Candidate:
    """One solve of the shot, in the prediction's frame and units."""

    rig: Rig
    points: np.ndarray
    tracks: feat.TrackSet
    held: list  # views that kept their input pose (rotation, for nodal)
    rms_px: float


def _free(pycolmap, rig0, rig_in, tracks, camera_of_view, model, sizes, progress, all_tracks=None) -> tuple[Candidate, bool]:
    """The free solve, and whether a nodal one should be tried too (it failed to be sub-pixel, barely moves,
    or explains too few of the observations)."""
    offered = len(tracks.obs_view)  # what its first rounds adjust (every track comes back later: not a measure)
    rig, points, tracks, weak = _bundle(pycolmap, rig0, rig_in, tracks, camera_of_view, model, sizes, progress,
                                        all_tracks=all_tracks)
    error = rms(residuals(rig, points, tracks)[0])  # of the cameras as they come out
    check_nodal = (parallax_px(rig, points, tracks) < NODAL_CHECK_PX or not error <= NODAL_CHECK_RMS_PX
                   or len(tracks.obs_view) < NODAL_CHECK_KEPT * offered)
    return Candidate(rig, points, tracks, weak, error), check_nodal


def _nodal(pred, rig0, rig_in, tracks, camera_of_view, model, progress) -> Candidate:
    rig, d, tracks, weak = _bundle_nodal(rig0, rig_in, tracks, camera_of_view, model, progress)
    centre = rig_in.centres[0]  # view 0 keeps its pose: the whole shot turns about its centre
    points = _nodal_points(pred, rig, d, tracks, centre)
    rig.t = -np.einsum("nij,j->ni", rig.R, centre)
    return Candidate(rig, points, tracks, weak, rms(residuals(rig, points, tracks)[0]))


def choose_motion(pycolmap, pred, rig0: Rig, rig_in: Rig, tracks, camera_of_view, model, sizes, motion,
                  progress, all_tracks=None) -> tuple[Candidate, str]:
    """The solve for ``motion`` ("auto", "free" or "nodal") and the motion used; ``all_tracks``: every
    track, for the free solve's last rounds (``tracks``: the strongest of them, for its first rounds)."""
    free = nodal_solve = failure = None
    check_nodal = motion == "nodal"
    if motion != "nodal":
        try:
            free, check_nodal = _free(pycolmap, rig0, rig_in, tracks, camera_of_view, model, sizes, progress,
                                      all_tracks)
        except BadInputError as exc:
            if motion == "free":
                raise
            failure, check_nodal = exc, True
    if check_nodal and motion != "free":
        try:
            nodal_solve = _nodal(pred, rig0, rig_in, tracks, camera_of_view, model, progress)
        except BadInputError as exc:
            if free is None:
                raise (failure or exc) from None
    if nodal_solve is not None and (free is None or _nodal_wins(free, nodal_solve)):
        return nodal_solve, "nodal"
    return free, "free"


def _nodal_wins(free: Candidate, nodal_solve: Candidate) -> bool:
    return (nodal_solve.rms_px <= NODAL_RMS_RATIO * free.rms_px + NODAL_RMS_SLACK_PX
            and len(nodal_solve.tracks.obs_view) >= NODAL_MIN_OBSERVATIONS * len(free.tracks.obs_view))


def rms(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err * err))) if len(err) else float("nan")
