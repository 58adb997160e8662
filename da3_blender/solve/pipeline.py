"""The camera solve pipeline: features -> tracks -> bundle adjustment -> a refined Prediction.

The input cameras are priors: tracks are triangulated from them (never from the predicted depth,
so a wrong depth cannot mislead the solve), view 0 keeps its pose and the shot keeps its scale
(the refined cameras are put back in the prediction's frame and units by the similarity that
restores view 0 and the spread of the camera centres), a view with too few tracks keeps its input
pose, and when the error does not go down the input cameras come back unchanged with the reason.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..cancel import checkpoint
from ..errors import BadInputError, MissingDependencyError
from ..options import DEFAULT_REFINE_LENS, DEFAULT_REFINE_MOTION, REFINE_LENSES, REFINE_MOTIONS, choice_ids
from ..prediction import Prediction, video_frame_indices
from ..results.tracks import Tracks
from . import features as feat
from . import loops, sift_child, subpixel
from .read_ahead import read_ahead
from .bundle import HELD_LENS_MODEL, Rig
from .compare import judge
from .motion import MIN_TRACKS, choose_motion
from .motion import rms as _rms
from .motion import report as _report

log = logging.getLogger(__name__)

LENS_MODELS = choice_ids(REFINE_LENSES)
MOTIONS = choice_ids(REFINE_MOTIONS)
MAX_SOLVE_TRACKS = 12_000  # the longest tracks go to the first bundle adjustment rounds (their time grows with them)
MAX_FINAL_TRACKS = 40_000  # ... and at most this many to the last rounds, from the refined cameras (issue 30: the
# 12,000 alone left a 240-frame orbit at 1.4x the worst-view error of every track, BENCHMARKS.md)
PYCOLMAP_PIN = "pycolmap==4.2.1"
SUBPIXEL = True  # align the tracks at the source resolution when SIFT ran on reduced frames
PATCH_CHECK = True  # drop observations whose patch does not align with their track's reference (subpixel.py)
PARALLEL_SIFT = True  # every other frame's SIFT in a second process (solve/sift_child.py)


@dataclass
class Solve:
    """Everything a solve found (also what the scene builders and the COLMAP export read)."""

    rig: Rig  # refined cameras (source pixels)
    rig_before: Rig  # the input cameras
    points: np.ndarray  # (T,3) track positions, prediction frame
    tracks: feat.TrackSet
    constant_views: list
    sizes: np.ndarray  # (N,2) source sizes
    colours: np.ndarray  # (T,3) uint8

    def as_tracks(self) -> Tracks:
        return Tracks(self.points, self.tracks.obs_track, self.tracks.obs_view, self.tracks.obs_xy, self.colours)


def lens_for_refine(refine) -> str | None:
    """``refine`` option -> lens id: False/None -> None, True -> the default lens, or a lens id."""
    if refine is None or refine is False:
        return None
    if refine is True:
        return DEFAULT_REFINE_LENS
    if refine not in LENS_MODELS:
        raise BadInputError(f"unknown refine lens {refine!r}; use True, False or one of: {', '.join(LENS_MODELS)}")
    return refine


def check_motion(motion: str) -> str:
    """``motion`` checked against options.REFINE_MOTIONS (the job's check says the same)."""
    if motion not in MOTIONS:
        raise BadInputError(f"unknown refine motion {motion!r}; use one of: {', '.join(MOTIONS)}")
    return motion


def require_pycolmap():
    try:
        import pycolmap  # noqa: PLC0415 (optional extra)
    except ImportError:
        raise MissingDependencyError(
            f"refining cameras needs pycolmap: pip install {PYCOLMAP_PIN} (or the extension's 'solve' extra: "
            "pip install 'da3-blender[solve]')") from None
    return pycolmap


def input_rig(pred: Prediction) -> Rig:
    """The prediction's cameras in source pixels (rigid rotations, pinhole, no distortion)."""
    k = pred.original_intrinsics()
    w2c = np.asarray(pred.extrinsics, dtype=np.float64)
    rot, trans = w2c[:, :, :3].copy(), w2c[:, :, 3].copy()
    scale = np.cbrt(np.linalg.det(rot))  # a similarity w2c projects like the rigid [R/s | t/s]
    rot, trans = rot / scale[:, None, None], trans / scale[:, None]
    u, _, vt = np.linalg.svd(rot)
    rot = u @ vt
    n = len(rot)
    return Rig(R=rot, t=trans, f=np.stack([k[:, 0, 0], k[:, 1, 1]], 1), c=k[:, :2, 2].copy(), k=np.zeros((n, 2)))


def _check(pred: Prediction, images, lens: str, motion: str) -> list:
    if lens not in LENS_MODELS:
        raise BadInputError(f"unknown lens model {lens!r} for refine; use one of: {', '.join(LENS_MODELS)}")
    check_motion(motion)
    if pred.extrinsics is None or pred.intrinsics is None:
        raise BadInputError("this prediction has no cameras to refine (a model without camera poses, e.g. "
                            "DA3MONO/DA3METRIC); run a model that predicts cameras")
    n = pred.num_views
    if n < 2:
        raise BadInputError("refining cameras needs at least 2 views (got 1): tracks are features seen from "
                            "several cameras; give more frames of the shot")
    if images is None:
        images = _source_frames(pred)
    frames = images.images if hasattr(images, "images") and hasattr(images, "source_paths") else images
    if len(frames) != n:
        raise BadInputError(f"got {len(frames)} images for a prediction of {n} views: the images must be the "
                            "prediction's source frames, in view order")
    return frames


def _source_frames(pred: Prediction):
    """The prediction's own source frames (image files, or the video's frames), read in order."""
    from ..inputs.collect import VideoFrames
    from ..inputs.paths import is_video_path

    paths = [str(p) for p in pred.source_paths]
    if not all(paths):
        raise BadInputError("refine needs the source frames: pass the images (paths or collect_inputs) in view order")
    if len(set(paths)) == 1 and is_video_path(paths[0]):
        indices = video_frame_indices(pred)
        if indices is None or np.any(indices < 0):
            raise BadInputError(f"{paths[0]}: this result does not say which frames of the video its views are; "
                                "pass the frames (collect_inputs of the video, as the run read it) in view order")
        width, height = (int(v) for v in pred.orig_size[0])
        return VideoFrames(paths[0], [int(f) for f in indices], width, height)
    return paths


def _load(item, i: int, size) -> np.ndarray:
    from ..inputs.images import load_image

    if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__"):
        img = load_image(item)
    else:
        img = np.asarray(item.convert("RGB") if hasattr(item, "convert") else item)
    if img.ndim not in (2, 3) or (img.shape[1], img.shape[0]) != (int(size[0]), int(size[1])):
        raise BadInputError(
            f"image {i} is {img.shape[1]}x{img.shape[0]} but view {i} of the prediction came from a "
            f"{int(size[0])}x{int(size[1])} source: the images must be the prediction's source frames, in view order")
    return img


def _features(pycolmap, frames, pred: Prediction, progress) -> feat.Features:
    """SIFT of every frame, in order (a video decodes once); every other frame in a second process
    (solve/sift_child.py) when the shot is long enough, so both cores extract."""
    extractor = feat.make_extractor(pycolmap)
    n = pred.num_views
    xy, desc, rgb, shape = [None] * n, [None] * n, [None] * n, [None] * n
    done = [0]

    def keep(i, img, factor, kp, d):
        kp = feat.to_source(kp, factor)
        xy[i], shape[i], desc[i], rgb[i] = kp[:, :2], kp[:, 2:4], d, feat.colours_at(img, kp[:, :2])
        done[0] += 1
        _report(progress, 0.4 * done[0] / n, f"features {done[0]}/{n}")

    helper = _sift_helper(n)
    waiting = None  # (view, image, factor) the helper is extracting
    try:
        with read_ahead(frames, lambda item, i: _load(item, i, pred.orig_size[i])) as loaded:
            for i, img in enumerate(loaded):
                checkpoint()
                factor = feat.sift_factor(img.shape[1], img.shape[0])
                gray = feat.to_gray(img, factor)
                if helper is not None and waiting is None:
                    helper.submit(gray)
                    waiting = (i, img, factor)
                    continue
                keep(i, img, factor, *feat.extract_gray(pycolmap, extractor, gray))
                if waiting is not None:
                    keep(*waiting, *helper.result())
                    waiting = None
        if waiting is not None:
            keep(*waiting, *helper.result())
    finally:
        if helper is not None:
            helper.close()
    factor = max(feat.sift_factor(int(w), int(h)) for w, h in pred.orig_size)
    return feat.Features(xy, desc, rgb, shape, factor)


def _sift_helper(n: int):
    """A second SIFT process for a shot of ``n`` frames, or None (a short shot, or it cannot start)."""
    if n < sift_child.MIN_FRAMES or not PARALLEL_SIFT:
        return None
    try:
        return sift_child.SiftHelper()
    except OSError as exc:
        log.warning("SIFT runs in one process: its helper process did not start (%s)", exc)
        return None


def _subpixel(features: feat.Features, tracks: feat.TrackSet, frames, pred: Prediction, progress) -> feat.TrackSet:
    """Every observation's patch checked against its track's reference, those that do not align dropped, and,
    when SIFT ran on reduced frames, the rest aligned at the source resolution (solve/subpixel.py)."""
    shift = float(features.factor) if features.factor > 1 and SUBPIXEL else 0.0
    if not (shift or PATCH_CHECK):
        return tracks
    _report(progress, 0.7, "tracks: patches checked" + (" and aligned at full size" if shift else ""))
    with read_ahead(frames, lambda item, i: _load(item, i, pred.orig_size[i])) as images:
        tracks, moved, failed = subpixel.refine(tracks, features.shape, images, max_shift_px=shift, drop=PATCH_CHECK)
    log.info("patch check: %d observations moved, %d failed (%s)", moved, failed, "dropped" if PATCH_CHECK else "kept")
    return tracks


def _tracks(pycolmap, features: feat.Features, rig: Rig, progress) -> feat.TrackSet:
    extr = np.concatenate([rig.R, rig.t[:, :, None]], axis=2)
    pairs = feat.select_pairs(extr)

    def matched(k):
        if k % 8 == 0:
            _report(progress, 0.4 + 0.3 * (k + 1) / len(pairs), f"matching {k + 1}/{len(pairs)} pairs")

    tracks = feat.build_tracks(features, feat.verified_matches(pycolmap, features, pairs, matched))
    if tracks.num_tracks < MIN_TRACKS:
        raise BadInputError(
            f"the camera solve found {tracks.num_tracks} feature tracks (needs {MIN_TRACKS}): the frames are too "
            "textureless, too blurred or do not overlap (or are not this prediction's frames); keep the DA3 cameras")
    return tracks


def _lens_setup(rig: Rig, sizes: np.ndarray, lens: str) -> tuple[Rig, np.ndarray, str]:
    """The starting lens: one camera per source size (``fixed``/``radial``) or per view (``zoom``);
    ``known``: each view's own intrinsics as given, held (bundle.HELD_LENS_MODEL)."""
    out = rig.copy()
    n = len(rig.R)
    if lens == "known":
        return out, np.arange(n), HELD_LENS_MODEL
    if lens == "zoom":
        camera_of_view = np.arange(n)
    else:
        _, camera_of_view = np.unique(sizes, axis=0, return_inverse=True)
        camera_of_view = camera_of_view.reshape(-1)
    focal = np.sqrt(rig.f[:, 0] * rig.f[:, 1])
    for cam in np.unique(camera_of_view):
        views = camera_of_view == cam
        out.f[views] = np.median(focal[views])
        out.c[views] = np.median(rig.c[views], axis=0)
    return out, camera_of_view, "RADIAL" if lens == "radial" else "SIMPLE_PINHOLE"


def _track_colours(features, tracks: feat.TrackSet) -> np.ndarray:
    """(T,3) uint8: the colour under each track's first observation (grey when unknown)."""
    if features is None or not features.rgb:
        return np.full((tracks.num_tracks, 3), 128, np.uint8)
    first = tracks.starts[:-1]
    return np.array([features.rgb[v][f] for v, f in zip(tracks.obs_view[first], tracks.obs_feature[first])],
                    np.uint8).reshape(-1, 3)


def solve(pred: Prediction, images, lens: str = DEFAULT_REFINE_LENS, progress=None,
          motion: str = DEFAULT_REFINE_MOTION) -> tuple[dict, Solve]:
    """The figures (``meta["solve"]``) and the solve itself; raises one-line errors for bad input."""
    started = time.monotonic()
    pycolmap = require_pycolmap()
    frames = _check(pred, images, lens, motion)
    n = pred.num_views
    sizes = np.asarray(pred.orig_size, dtype=np.int64)
    rig_in = input_rig(pred)
    features = _features(pycolmap, frames, pred, progress)
    tracks = _tracks(pycolmap, features, rig_in, progress)
    found, _ = loops.loop_pairs(pycolmap, features, rig_in, pred, progress, tracks)  # places seen again (solve/loops.py)
    tracks = feat.strongest_tracks(loops.merge(features, tracks, found), MAX_FINAL_TRACKS)
    tracks = _subpixel(features, tracks, frames, pred, progress)
    rig0, camera_of_view, model = _lens_setup(rig_in, sizes, lens)
    chosen, used = choose_motion(pycolmap, pred, rig0, rig_in, feat.strongest_tracks(tracks, MAX_SOLVE_TRACKS),
                                 camera_of_view, model, sizes, motion, progress, all_tracks=tracks)
    points, weak = chosen.points, chosen.held
    colours = _track_colours(features, chosen.tracks)
    verdict = judge(pycolmap, rig_in, chosen.rig, points, chosen.tracks, tracks, sizes)
    rig = verdict.rig
    figures = {
        "lens": lens,
        "motion": used,
        "rms_px": _rms(verdict.after),
        "rms_px_before": _rms(verdict.before),
        "per_view_rms_px": verdict.per_view(verdict.after, n),  # None: no tracks in that view
        "per_view_rms_px_before": verdict.per_view(verdict.before, n),
        "tracks": verdict.tracks,
        "observations": int(len(verdict.views)),
        "distortion": {"model": "radial", "k1": float(chosen.rig.k[0, 0]), "k2": float(chosen.rig.k[0, 1])}
        if lens == "radial" else None,
        "focal_px": [float(f) for f in rig.f[:, 0]],
        "kept_input_pose": [int(v) for v in weak],
        "kept_input_camera": [int(v) for v in verdict.kept_input_camera],
        "loop_pairs": len(found),
        "longest_track_gap": loops.longest_gap(chosen.tracks),
        "reason": None,
    }
    if not figures["rms_px"] < figures["rms_px_before"]:
        figures.update(rms_px=figures["rms_px_before"], per_view_rms_px=figures["per_view_rms_px_before"],
                       distortion=None, focal_px=[float(f) for f in rig_in.f[:, 0]], kept_input_camera=list(range(n)),
                       reason=f"the solve did not lower the error ({_rms(verdict.after):.3f} px vs "
                              f"{figures['rms_px_before']:.3f} px): the input cameras are kept")
        rig = rig_in
    figures["seconds"] = time.monotonic() - started
    _report(progress, 1.0, f"solve error {figures['rms_px_before']:.2f} -> {figures['rms_px']:.2f} px")
    return figures, Solve(rig, rig_in, points, chosen.tracks, weak, sizes, colours)


def _apply(pred: Prediction, rig: Rig, figures: dict) -> Prediction:
    out = copy.copy(pred)
    out.meta = dict(pred.meta or {})
    out.meta["solve"] = figures
    if figures["reason"] is not None:
        return out
    extr = np.concatenate([rig.R, rig.t[:, :, None]], axis=2)
    k_orig = np.zeros((len(extr), 3, 3))
    k_orig[:, 0, 0], k_orig[:, 1, 1] = rig.f[:, 0], rig.f[:, 1]
    k_orig[:, :2, 2], k_orig[:, 2, 2] = rig.c, 1.0
    k_proc = np.linalg.inv(np.asarray(pred.proc_to_orig, dtype=np.float64)) @ k_orig
    out.extrinsics = extr.astype(np.float32)
    out.intrinsics = k_proc.astype(np.float32)
    return out


def refine(pred: Prediction, images=None, *, lens: str = DEFAULT_REFINE_LENS, motion: str = DEFAULT_REFINE_MOTION,
           progress=None) -> Prediction:
    """A new Prediction with bundle-adjusted cameras and ``meta["solve"]`` (see the module docstring).

    ``images``: the source frames in view order (paths, arrays, or an ``inputs.collect_inputs`` set;
    None: ``pred.source_paths``). ``lens``: ``fixed`` (one focal length), ``zoom`` (one per view),
    ``radial`` (one focal length with k1, k2) or ``known`` (the prediction's intrinsics, e.g. the ones the
    user gave, are held: only the poses are solved). ``motion``: ``auto`` (free, or nodal when a pan about
    one point explains the tracks as well), ``free`` or ``nodal`` (a tripod shot: one centre, only the
    rotations and the lens move); ``meta["solve"]["motion"]`` says which. ``progress(stage, fraction, message)`` is called with
    stage ``"solve"``; raising :class:`CancelledError` from it cancels. Depth is left as it is (the
    shot keeps its frame and scale).
    """
    figures, result = solve(pred, images, lens, progress, motion)
    out = _apply(pred, result.rig, figures)
    if figures["reason"] is None:
        out.tracks = result.as_tracks()
    return out


def measure(pred: Prediction, images=None) -> dict:
    """The solve error of the cameras as they are: ``rms_px``, ``per_view_rms_px``, ``tracks``,
    ``observations`` (tracks found and cleaned as :func:`refine` does, then measured through the
    prediction's own cameras). The prediction is not changed."""
    figures, _ = solve(pred, images, "zoom")
    return {"rms_px": figures["rms_px_before"], "per_view_rms_px": figures["per_view_rms_px_before"],
            "tracks": figures["tracks"], "observations": figures["observations"], "seconds": figures["seconds"],
            "refinable_to_px": figures["rms_px"] if figures["reason"] is None else figures["rms_px_before"]}
