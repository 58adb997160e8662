"""Loop pairs for the camera solve: frames far apart in time that see the same place, tied by tracks.

The sequential matcher (features.select_pairs) ties frames at most a few dozen apart, so a long shot
that comes back to where it started (an orbit, a walk around a building) is solved as an open path
whose ends drift apart. Here the frames far apart in time that look alike (:mod:`.retrieval`) are
matched, and a pair is kept only if

1. at least ``features.MIN_PAIR_INLIERS`` matches fit one fundamental matrix (as every pair), and of them
   as many fit one essential matrix through the input cameras' lenses;
2. the relative rotation of that essential matrix agrees with the input cameras' within
   :data:`MAX_ROTATION_DEG` (streaming drifts by a few degrees over a long shot; a repeated texture
   seen from elsewhere, e.g. the twin of a wall on the other side of a room, disagrees by far more);
3. the input cameras put the two views within :data:`MAX_BASELINE_DEPTHS` times the median depth of
   the matched points (DA3's depth in the first view): two windows of a facade that look alike but
   lie metres apart along it are rejected although they face the same way.

A candidate whose two frames the sequential tracks already tie (at least :data:`TIED_TRACKS` tracks seen
in both) is not matched: a loop is a place seen again that the tracks do not yet connect, and on a shot
without one every candidate is such a pair (a 50-frame 1080p shot: 140 candidates, each sharing 450+
tracks, 12 s of matching and checking for nothing new). Weakly tied pairs are still matched: on the
240-frame orbit, skipping from 50 shared tracks up kept 59 of 547 pairs and the worst view went from 0.109
to 0.114 degrees; from 200 up, 400 pairs and 0.106 degrees in a quarter less time (issue 30, BENCHMARKS.md).

Shots of fewer than :data:`MIN_FRAMES` frames are not searched (their sequential and wide pairs tie
them already). Before any matching, only pairs the input cameras allow compete for a frame's candidates: viewing
directions at most :data:`PRIOR_MAX_ANGLE_DEG` apart and centres within :data:`MAX_BASELINE_DEPTHS`
times the views' median depth (so the look-alikes elsewhere do not crowd out the real revisits).

The kept matches are merged with the sequential tracks (union of keypoints, conflicting tracks dropped
as ``features.build_tracks`` does) before the bundle adjustment, so one track can span the loop. A loop
pair that slips through is an ordinary set of observations to the bundle adjustment: its robust loss
and outlier rounds drop what does not fit.
"""

from __future__ import annotations

import time

import numpy as np

from ..cancel import checkpoint
from . import features as feat
from . import retrieval
from .motion import report

MAX_ROTATION_DEG = 15.0
PRIOR_MAX_ANGLE_DEG = 90.0  # input viewing directions further apart than this share too little to be a loop pair
MAX_BASELINE_DEPTHS = 0.5
E_MAX_ERROR_PX = 4.0
MIN_FRAMES = 2 * retrieval.MIN_GAP  # shots shorter than this are not searched
MAX_CANDIDATES_PER_FRAME = 3  # verified pairs at most (the best-scoring first): 3 x frames
TIED_TRACKS = 200  # a candidate whose frames share this many sequential tracks is tied already: not matched


def _camera(pycolmap, f, c):
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", float(f[0]), int(2 * c[0]) + 1, int(2 * c[1]) + 1)
    cam.params = np.array([f[0], f[1], c[0], c[1]], dtype=np.float64)
    return cam


def depth_at(pred, view: int, xy: np.ndarray) -> np.ndarray:
    """DA3's depth (prediction units) under source pixels ``xy`` of ``view``; NaN where there is none."""
    if pred is None or pred.depth is None or pred.proc_to_orig is None:
        return np.full(len(xy), np.nan)
    depth = np.asarray(pred.depth[view], dtype=np.float64)
    to_proc = np.linalg.inv(np.asarray(pred.proc_to_orig[view], dtype=np.float64))
    pix = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ to_proc.T
    h, w = depth.shape
    col, row = np.clip(pix[:, 0].astype(int), 0, w - 1), np.clip(pix[:, 1].astype(int), 0, h - 1)
    z = depth[row, col]
    return np.where(np.isfinite(z) & (z > 0), z, np.nan)


def plausible_pairs(rig_in, pred=None) -> np.ndarray:
    """(N,N) bool: the pairs the input cameras allow (the prior of the module doc)."""
    axes = rig_in.R[:, 2, :]
    ok = axes @ axes.T >= np.cos(np.radians(PRIOR_MAX_ANGLE_DEG))
    if pred is not None and pred.depth is not None:
        depth = np.asarray(pred.depth, dtype=np.float64).reshape(len(pred.depth), -1)
        typical = np.array([np.median(d[np.isfinite(d) & (d > 0)]) if np.any(np.isfinite(d) & (d > 0)) else np.inf
                            for d in depth])
        centres = rig_in.centres
        dist = np.linalg.norm(centres[:, None] - centres[None], axis=2)
        ok &= dist <= MAX_BASELINE_DEPTHS * np.minimum(typical[:, None], typical[None, :])
    return ok


def _rotation_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def agrees(pycolmap, rig_in, pred, i: int, j: int, xy_i: np.ndarray, xy_j: np.ndarray) -> tuple[bool, str]:
    """Whether matched points ``xy_i`` <-> ``xy_j`` of views i and j agree with the input cameras
    (checks 1-3 of the module doc) -> (kept, why not)."""
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = E_MAX_ERROR_PX
    ransac.random_seed = 0
    result = pycolmap.estimate_essential_matrix(xy_i, xy_j, _camera(pycolmap, rig_in.f[i], rig_in.c[i]),
                                                _camera(pycolmap, rig_in.f[j], rig_in.c[j]), ransac)
    if not result or int(result["num_inliers"]) < feat.MIN_PAIR_INLIERS:
        return False, "essential"
    r_geom = np.asarray(result["cam2_from_cam1"].rotation.matrix())
    r_in = rig_in.R[j] @ rig_in.R[i].T
    if _rotation_deg(r_geom @ r_in.T) > MAX_ROTATION_DEG:
        return False, "rotation"
    depth = depth_at(pred, i, xy_i)
    if np.isfinite(depth).any():
        baseline = float(np.linalg.norm(rig_in.centres[i] - rig_in.centres[j]))
        if baseline > MAX_BASELINE_DEPTHS * float(np.nanmedian(depth)):
            return False, "baseline"
    return True, ""


def shared_tracks(tracks: feat.TrackSet | None, pairs: list) -> np.ndarray:
    """How many tracks of ``tracks`` each pair ``(i, j)`` of views sees in both (zeros without tracks)."""
    if tracks is None or not len(tracks.obs_track) or not pairs:
        return np.zeros(len(pairs), dtype=np.int64)
    n_views = max(int(tracks.obs_view.max()), int(np.max(pairs))) + 1
    order = np.lexsort((tracks.obs_track, tracks.obs_view))
    starts = np.searchsorted(tracks.obs_view[order], np.arange(n_views + 1))
    seen = [tracks.obs_track[order[starts[v]:starts[v + 1]]] for v in range(n_views)]  # sorted track ids per view
    return np.array([len(np.intersect1d(seen[i], seen[j], assume_unique=True)) for i, j in pairs], dtype=np.int64)


def loop_pairs(pycolmap, features: feat.Features, rig_in, pred=None, progress=None,
               tracks: feat.TrackSet | None = None) -> tuple[dict, dict]:
    """Verified loop pairs ``{(i, j): (K,2) feature matches}`` and what the search found (``candidates``,
    ``tied``: candidates the sequential ``tracks`` tie already, not matched; ``rejected`` by reason)."""
    n = len(features.desc)
    last = [time.monotonic()]

    def check():  # a cancel point; the progress callback (where a cancel may be raised too) every 0.2 s
        checkpoint()
        if time.monotonic() - last[0] > 0.2:
            last[0] = time.monotonic()
            report(progress, 0.7, "loop pairs: finding places seen again")

    if n < MIN_FRAMES:  # a short shot: the sequential and wide pairs (features.WIDE_STEPS) tie it already
        return {}, {"candidates": 0, "tied": 0, "rejected": {}}
    extr = np.concatenate([rig_in.R, rig_in.t[:, :, None]], axis=2)
    sequential = set(feat.select_pairs(extr))
    cands = retrieval.candidates(retrieval.similarity(features.desc, check), exclude=sequential,
                                 plausible=plausible_pairs(rig_in, pred))
    cands = cands[:MAX_CANDIDATES_PER_FRAME * n]
    tied = shared_tracks(tracks, cands) >= TIED_TRACKS
    found, rejected = {}, {}
    for (i, j) in (pair for pair, t in zip(cands, tied) if not t):
        check()
        m = feat.verify_pair(pycolmap, features.xy[i], features.xy[j], feat.match_pair(features.desc[i], features.desc[j]))
        ok, why = (False, "matches") if not len(m) else agrees(
            pycolmap, rig_in, pred, i, j, features.xy[i][m[:, 0]], features.xy[j][m[:, 1]])
        if ok:
            found[(i, j)] = m
        else:
            rejected[why] = rejected.get(why, 0) + 1
    report(progress, 0.7, f"loop pairs: {len(found)} of {len(cands)} candidates kept ({int(tied.sum())} tied already)")
    return found, {"candidates": len(cands), "tied": int(tied.sum()), "rejected": rejected}


def merge(features: feat.Features, tracks: feat.TrackSet, pairs: dict) -> feat.TrackSet:
    """The sequential ``tracks`` with the loop ``pairs``' matches joined in (features.build_tracks)."""
    if not pairs:
        return tracks
    t, v, f = tracks.obs_track, tracks.obs_view, tracks.obs_feature
    same = t[1:] == t[:-1]  # consecutive observations of one track (sorted by track): a chain of matches
    a, b = np.nonzero(same)[0], np.nonzero(same)[0] + 1
    chains = {}
    key = v[a] * (int(v.max()) + 1) + v[b]
    for k in np.unique(key):
        sel = key == k
        chains[(int(v[a][sel][0]), int(v[b][sel][0]))] = np.stack([f[a][sel], f[b][sel]], axis=1)
    for pair, m in pairs.items():
        chains[pair] = np.concatenate([chains[pair], m]) if pair in chains else m
    return feat.build_tracks(features, chains)


def longest_gap(tracks: feat.TrackSet) -> int:
    """The most frames between two views that one track ties together."""
    if not len(tracks.obs_track):
        return 0
    n = tracks.num_tracks
    lo = np.full(n, np.iinfo(np.int64).max)
    hi = np.full(n, -1)
    np.minimum.at(lo, tracks.obs_track, tracks.obs_view)
    np.maximum.at(hi, tracks.obs_track, tracks.obs_view)
    return int(np.max(hi - lo))
