"""Never worse, view by view: the input and the refined cameras measured on the same observations.

Both camera sets are measured on one set of observations of the tracks the solve kept: those the
refined solve kept, and those it dropped that either camera set explains within the solve's final
outlier threshold (the same pixels for both: max(1 px, 3x the median error of the refined solve)), so
an observation the refined cameras lost but the input cameras fit counts against the refined ones.
Each set has its own points, fitted on the same (kept) observations: the solve's for the refined
cameras; for the input cameras each track placed where it fits them best (least squares from the
linear triangulation or from the solved point, whichever fits better). A view whose error the solve
would raise above its input error beyond noise (``WORSE_RATIO`` x + ``WORSE_SLACK_PX``) keeps its
input camera (pose and lens), and its figure is its input error. A view with no observation measured
has no figure (None: "no tracks").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cancel import checkpoint
from . import features as feat
from .bundle import Rig, residuals, triangulate
from .isolate import adjust
from .motion import FINAL_MEDIANS, ROUNDS

WORSE_RATIO, WORSE_SLACK_PX = 1.05, 0.05  # a view is worse when after > ratio x before + slack (px)


@dataclass
class Verdict:
    rig: Rig  # the cameras to return: the refined ones, the views they would make worse at their input
    kept_input_camera: list  # those views
    before: np.ndarray  # per measured observation: error through the input cameras (px)
    after: np.ndarray  # ... through the returned cameras
    views: np.ndarray  # ... its view
    tracks: int  # tracks measured

    def per_view(self, err: np.ndarray, n: int) -> list:
        """RMS of each view's observations, None where it has none."""
        sums = np.bincount(self.views, weights=err * err, minlength=n)
        counts = np.bincount(self.views, minlength=n)
        return [float(np.sqrt(s / c)) if c else None for s, c in zip(sums, counts)]


def _keys(tracks: feat.TrackSet, stride: int) -> np.ndarray:
    return tracks.obs_view * stride + tracks.obs_feature  # one keypoint of one view: one observation


def _clamped(rig: Rig, points: np.ndarray, tracks, worst: float) -> np.ndarray:
    err, front = residuals(rig, points, tracks)
    return np.where(front & np.isfinite(err), np.minimum(err, worst), worst)


def measure_input(pycolmap, rig_in: Rig, tracks, sizes, solved_points) -> tuple[np.ndarray, np.ndarray]:
    """Each observation's error through the input cameras and the points: each placed best for them
    (least squares from the linear triangulation or from ``solved_points``, whichever fits its track better)."""
    linear = triangulate(rig_in, tracks)
    linear = np.where(np.all(np.isfinite(linear), axis=1)[:, None], linear, solved_points)
    n = len(rig_in.R)
    candidates = [linear]
    for start in (linear, solved_points):
        candidates.append(adjust(pycolmap, rig_in, start, tracks, camera_of_view=np.arange(n), model="PINHOLE",
                                 sizes=sizes, refine_cameras=False)[1])
        checkpoint()
    worst = float(np.hypot(*np.max(sizes, axis=0)))  # no observation is further off than the frame's diagonal
    best = best_points = None
    for points in candidates:
        err = _clamped(rig_in, points, tracks, worst)
        cost = np.bincount(tracks.obs_track, weights=err ** 2, minlength=len(points))
        if best is None:
            best, best_cost, best_points = err, cost, points
        else:
            better = cost < best_cost
            best, best_cost = np.where(better[tracks.obs_track], err, best), np.minimum(cost, best_cost)
            best_points = np.where(better[:, None], points, best_points)
    return best, best_points


def judge(pycolmap, rig_in: Rig, rig: Rig, points: np.ndarray, solved: feat.TrackSet, entered: feat.TrackSet,
          sizes) -> Verdict:
    """Both camera sets on the same observations (see the module docstring), and the cameras to return."""
    n = len(rig_in.R)
    worst = float(np.hypot(*np.max(sizes, axis=0)))
    stride = int(max(entered.obs_feature.max(initial=0), solved.obs_feature.max(initial=0))) + 1
    keys_e, keys_s = _keys(entered, stride), _keys(solved, stride)
    order = np.argsort(keys_s)
    at = np.clip(np.searchsorted(keys_s[order], keys_e), 0, len(order) - 1)
    kept = keys_s[order][at] == keys_e  # the refined solve kept this observation
    track_of = np.full(entered.num_tracks, -1)
    track_of[entered.obs_track[kept]] = solved.obs_track[order][at[kept]]
    ours = track_of[entered.obs_track] >= 0  # observations of the tracks the solve kept (sorted as theirs)
    tracks = feat.TrackSet(track_of[entered.obs_track[ours]], entered.obs_view[ours], entered.obs_xy[ours],
                           entered.obs_feature[ours])
    kept = kept[ours]
    _, input_points = measure_input(pycolmap, rig_in, solved, sizes, points)  # fitted on the kept observations
    before = _clamped(rig_in, input_points, tracks, worst)
    after = _clamped(rig, points, tracks, worst)
    threshold = max(ROUNDS[-2][1], FINAL_MEDIANS * float(np.median(after[kept])))
    measured = kept | (before < threshold) | (after < threshold)
    verdict = Verdict(rig.copy(), [], before[measured], after[measured], tracks.obs_view[measured], solved.num_tracks)
    rms_before, rms_after = verdict.per_view(verdict.before, n), verdict.per_view(verdict.after, n)
    for v in range(n):
        if rms_after[v] is not None and rms_after[v] > WORSE_RATIO * rms_before[v] + WORSE_SLACK_PX:
            verdict.kept_input_camera.append(v)
            for name in ("R", "t", "f", "c", "k"):
                getattr(verdict.rig, name)[v] = getattr(rig_in, name)[v]
    if verdict.kept_input_camera:
        back = np.isin(verdict.views, verdict.kept_input_camera)
        verdict.after = np.where(back, verdict.before, verdict.after)  # the same camera as before: the same figure
    return verdict
