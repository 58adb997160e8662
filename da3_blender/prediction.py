"""The result of a DA3 run, as numpy arrays, and its on-disk form (an npz without objects).

``Prediction`` is what :meth:`DepthAnything3.inference` returns, what the worker writes and what
the Blender scene builders read. Field names and layouts follow the official DA3 ``Prediction``
(``processed_images``, ``depth``, ``conf``, ``extrinsics`` (N,3,4) world-to-camera in OpenCV axes,
``intrinsics`` (N,3,3) in processed-image pixels). We add what a Blender scene needs to line
cameras up with the footage: where each view came from and how processed pixels map back to the
original image.

Result files
------------
A result file is a plain ``.npz`` (``np.savez_compressed``), readable with ``allow_pickle=False``.
It uses the official ``npz`` export key names so files from the official DA3 and from us are
interchangeable:

=====================  ===========================  ====================================
key                    shape / dtype                meaning
=====================  ===========================  ====================================
``image``              (N,H,W,3) uint8              processed images
``depth``              (N,H,W) float32              z-depth
``conf``               (N,H,W) float32              confidence (optional)
``extrinsics``         (N,3,4) float32              world-to-camera, OpenCV (optional)
``intrinsics``         (N,3,3) float32              processed-image pixels (optional)
``sky``                (N,H,W) bool                 sky mask (optional)
``is_metric``          () bool                      depth and translations in metres
``scale_factor``       () float64                   nested metric scale (NaN if none)
``orig_size``          (N,2) int64                  original image size (W, H)
``proc_to_orig``       (N,3,3) float64              K_orig = proc_to_orig @ K_proc (pixel edges)
``frame_numbers``      (N,) int64                   scene frame (-1 if none), see below
``timestamps``         (N,) float64                 seconds from the shot's start (NaN if none)
``source_paths``       (N,) unicode                 file each view came from ("" if in memory)
``meta_json``          () unicode                   JSON: format version, model, options, video
``gs_means`` ...       see ``gaussians.py``         3D Gaussians (``infer_gs``; optional):
                                                    ``gs_means``, ``gs_scales``, ``gs_rotations``,
                                                    ``gs_harmonics``, ``gs_opacities``
``tracks_xyz`` ...     see ``tracks.py``            camera-solve feature tracks (``refine``; optional):
                                                    ``tracks_xyz``, ``tracks_rgb``, ``tracks_obs``
=====================  ===========================  ====================================

Frame numbers: each view's number is its frame in the Blender scene, on every surface and in every
export (EXR and depth_vis names, cameras, planes, COLMAP names): a sequence frame's own number
(``plate.1001.exr`` -> 1001), a video frame's 0-based index plus the run's ``frame_start`` (default
1), a still's trailing digits. Results carry ``meta["frame_numbers"] == "scene"`` to say so; older
results (no such key) stored a video's 0-based index: :func:`scene_frame_numbers` adds the frame
start to those.

Only ``depth`` is required when loading; the official ``mini_npz`` (no images) and ``npz`` files
load too, with neutral defaults for the rest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ResultFormatError
from .files import open_atomic
from .matchmove.mesh import Mesh
from .results.gaussians import Gaussians
from .results.tracks import Tracks

RESULT_FORMAT = "da3-blender-result"
RESULT_VERSION = 1
FRAME_NUMBERS_KEY = "frame_numbers"  # meta key: "scene" when frame_numbers are scene frames
SCENE_FRAMES = "scene"


@dataclass
class Prediction:
    depth: np.ndarray  # (N,H,W) float32
    processed_images: np.ndarray | None = None  # (N,H,W,3) uint8
    conf: np.ndarray | None = None  # (N,H,W) float32
    extrinsics: np.ndarray | None = None  # (N,3,4) float32 w2c OpenCV
    intrinsics: np.ndarray | None = None  # (N,3,3) float32 processed pixels
    sky: np.ndarray | None = None  # (N,H,W) bool
    is_metric: bool = False
    scale_factor: float | None = None
    # where the views came from (our additions; defaults describe "unknown")
    orig_size: np.ndarray | None = None  # (N,2) int (W,H)
    proc_to_orig: np.ndarray | None = None  # (N,3,3) float64
    frame_numbers: np.ndarray | None = None  # (N,) int64, -1 = none
    timestamps: np.ndarray | None = None  # (N,) float64, NaN = none
    source_paths: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    gaussians: Gaussians | None = None  # N*H*W 3D Gaussians (infer_gs), prediction world frame
    tracks: Tracks | None = None  # camera-solve feature tracks (solve.refine), prediction world frame
    mesh: Any = None  # matchmove.mesh.Mesh: the fused proxy mesh (issue 27), prediction world frame

    def __post_init__(self):
        n, h, w = self.depth.shape
        if self.orig_size is None:
            self.orig_size = np.tile(np.array([[w, h]], dtype=np.int64), (n, 1))
        if self.proc_to_orig is None:
            self.proc_to_orig = np.tile(np.eye(3), (n, 1, 1))
        if self.frame_numbers is None:
            self.frame_numbers = np.full(n, -1, dtype=np.int64)
        if self.timestamps is None:
            self.timestamps = np.full(n, np.nan)
        if self.source_paths is None:
            self.source_paths = [""] * n

    @property
    def num_views(self) -> int:
        return int(self.depth.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """Processed (H, W)."""
        return int(self.depth.shape[1]), int(self.depth.shape[2])

    def original_intrinsics(self) -> np.ndarray | None:
        """Intrinsics in original-image pixels (edge convention), (N,3,3) float64."""
        if self.intrinsics is None:
            return None
        return self.proc_to_orig @ self.intrinsics.astype(np.float64)


def scene_frame_numbers(pred: Prediction, frame_start: int = 1) -> np.ndarray:
    """Each view's scene frame (int64). Results written before frame numbers became scene frames (no
    ``meta["frame_numbers"]``) numbered a video's frames from 0: ``frame_start`` is added to those."""
    numbers = np.asarray(pred.frame_numbers, dtype=np.int64)
    meta = pred.meta or {}
    if meta.get(FRAME_NUMBERS_KEY) != SCENE_FRAMES and isinstance(meta.get("video"), dict) and np.all(numbers >= 0):
        return numbers + int(frame_start)
    return numbers


def video_frame_indices(pred: Prediction) -> np.ndarray | None:
    """Each view's frame in its video file as decoded (0-based, int64), to read the frames again (the camera
    solve, Blender's clip frame = index + 1); None when the views are not frames of one video (images,
    sequences, stills, or a view without a frame number). Results before scene frames stored the index."""
    meta = pred.meta or {}
    video = meta.get("video")
    numbers = np.asarray(pred.frame_numbers, dtype=np.int64)
    if not isinstance(video, dict) or video.get("kind", "video") != "video" or len(numbers) == 0 or np.any(numbers < 0):
        return None
    if meta.get(FRAME_NUMBERS_KEY) != SCENE_FRAMES:
        return numbers
    return video_indices(numbers, video)


def video_indices(scene_frames, video: dict) -> np.ndarray:
    """Scene frames of a video's views -> their 0-based decoded indices: the video's frame 0 is scene
    frame ``video["frame_start"]`` (``inputs.read_video``; its ``frame_range`` starts there too)."""
    start = video.get("frame_start")
    if start is None:
        start = (video.get("frame_range") or [0])[0]
    return np.asarray(scene_frames, dtype=np.int64) - int(start)


def save_result(path: str | os.PathLike, pred: Prediction, meta: dict[str, Any] | None = None) -> str:
    """Write ``pred`` atomically (temp file in the same folder, then rename). Returns the path."""
    path = os.fspath(path)
    all_meta = {"format": RESULT_FORMAT, "version": RESULT_VERSION}
    all_meta.update(pred.meta or {})
    all_meta.update(meta or {})
    arrays: dict[str, np.ndarray] = {
        "depth": np.asarray(pred.depth, dtype=np.float32),
        "is_metric": np.asarray(bool(pred.is_metric)),
        "scale_factor": np.asarray(np.nan if pred.scale_factor is None else float(pred.scale_factor)),
        "orig_size": np.asarray(pred.orig_size, dtype=np.int64),
        "proc_to_orig": np.asarray(pred.proc_to_orig, dtype=np.float64),
        "frame_numbers": np.asarray(pred.frame_numbers, dtype=np.int64),
        "timestamps": np.asarray(pred.timestamps, dtype=np.float64),
        "source_paths": np.asarray([str(p) for p in pred.source_paths], dtype=np.str_),
        "meta_json": np.asarray(json.dumps(all_meta, default=_json_default)),
    }
    if pred.processed_images is not None:
        arrays["image"] = np.asarray(pred.processed_images, dtype=np.uint8)
    for key in ("conf", "extrinsics", "intrinsics"):
        value = getattr(pred, key)
        if value is not None:
            arrays[key] = np.asarray(value, dtype=np.float32)
    if pred.sky is not None:
        arrays["sky"] = np.asarray(pred.sky, dtype=bool)
    if pred.gaussians is not None:
        arrays.update(pred.gaussians.to_arrays())
    if pred.tracks is not None:
        arrays.update(pred.tracks.to_arrays())
    if pred.mesh is not None:
        arrays.update(pred.mesh.to_arrays())
    with open_atomic(path) as fh:
        np.savez_compressed(fh, **arrays)
    return path


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def load_result(path: str | os.PathLike) -> Prediction:
    """Read a result file written by :func:`save_result`, or an official DA3 ``npz``/``mini_npz``.

    Raises :class:`ResultFormatError` (one line, names the file) for anything unreadable: a missing,
    truncated or damaged file, a damaged array header, wrong types or shapes, Python objects.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ResultFormatError(f"result file not found: {path}")
    data = _read_arrays(path, name)
    meta = _read_meta(data, name)
    try:
        return _prediction_from_arrays(data, meta, name)
    except ResultFormatError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # arrays of the wrong kind
        raise ResultFormatError(f"{name} is damaged ({type(exc).__name__}: {str(exc)[:200]}); run DA3 again to "
                                "recreate it") from None


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata (``meta_json``) of a result file, checked as :func:`load_result` checks it, without
    reading its arrays ({} for an official file without it); :class:`ResultFormatError` otherwise."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ResultFormatError(f"result file not found: {path}")
    return _read_meta(_read_arrays(path, name, ("meta_json",)), name)


def _read_arrays(path: str, name: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    damaged = (f"{name} is not a readable DA3 result (corrupt or truncated npz: {{}}); run DA3 again to "
               "recreate it")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files if keys is None or k in keys}
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise ResultFormatError(damaged.format(str(exc)[:200])) from None
        raise ResultFormatError(
            f"{name} is not a DA3 result (it contains Python objects, which are never loaded as they could run "
            "code); choose a result written by DA3 for Blender, the da3 command or official DA3"
        ) from None
    except MemoryError:
        raise ResultFormatError(f"{name}: an array in it is too large to read (damaged?); run DA3 again") from None
    except Exception as exc:  # noqa: BLE001 - zip, header (SyntaxError, TokenError, TypeError) or read errors
        raise ResultFormatError(damaged.format(f"{type(exc).__name__}: {str(exc)[:200]}")) from None


def _read_meta(data: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    if "meta_json" not in data:
        return {}
    try:
        meta = json.loads(str(data["meta_json"]))
    except (ValueError, RecursionError):
        raise ResultFormatError(f"{name}: its metadata is not valid JSON; run DA3 again to recreate it") from None
    if not isinstance(meta, dict):
        raise ResultFormatError(f"{name}: its metadata is not a JSON object; run DA3 again to recreate it")
    if meta.get("format") != RESULT_FORMAT:
        raise ResultFormatError(f"{name}: unknown result format {meta.get('format')!r:.80}")
    version = meta.get("version")
    if not isinstance(version, int) or version > RESULT_VERSION or version < 1:
        raise ResultFormatError(
            f"{name}: result format version {version!r:.40} is not supported by this version "
            f"(reads 1..{RESULT_VERSION}); update DA3 for Blender"
        )
    return meta


def _prediction_from_arrays(data: dict[str, np.ndarray], meta: dict[str, Any], name: str) -> Prediction:
    if "depth" not in data:
        raise ResultFormatError(f"{name} has no 'depth' array: not a DA3 result")
    depth = np.asarray(data["depth"], dtype=np.float32)
    if depth.ndim == 2:
        depth = depth[None]
    if depth.ndim != 3 or depth.shape[0] < 1:
        raise ResultFormatError(f"{name}: 'depth' has shape {depth.shape}, expected (N,H,W)")
    n, h, w = depth.shape

    def get(key, shape, dtype):
        if key not in data:
            return None
        arr = np.asarray(data[key])
        if arr.shape != shape:
            raise ResultFormatError(f"{name}: '{key}' has shape {arr.shape}, expected {shape}")
        return arr.astype(dtype, copy=False)

    extr = data.get("extrinsics")
    if extr is not None and extr.shape == (n, 4, 4):  # official quirk (align without scale)
        data["extrinsics"] = extr[:, :3, :]
    sf = data.get("scale_factor")
    sf = None if sf is None or not np.isfinite(float(sf)) else float(sf)
    paths = data.get("source_paths")
    try:
        gaussians = Gaussians.from_arrays(data)
    except ValueError as err:
        raise ResultFormatError(f"{name}: {err}; run DA3 again to recreate it") from None
    problem = None if gaussians is None else gaussians.check(n * h * w)
    if problem:
        raise ResultFormatError(f"{name}: {problem} (one per pixel of {n} views of {w}x{h}); run DA3 again to recreate it")
    tracks = Tracks.from_arrays(data)
    problem = None if tracks is None else tracks.check(n)
    if problem:
        raise ResultFormatError(f"{name}: {problem}; run DA3 again to recreate it")
    try:
        mesh = Mesh.from_arrays(data)
    except ValueError as err:
        raise ResultFormatError(f"{name}: {err}; run DA3 again to recreate it") from None
    return Prediction(
        depth=depth,
        processed_images=get("image", (n, h, w, 3), np.uint8),
        conf=get("conf", (n, h, w), np.float32),
        extrinsics=get("extrinsics", (n, 3, 4), np.float32),
        intrinsics=get("intrinsics", (n, 3, 3), np.float32),
        sky=get("sky", (n, h, w), bool),
        is_metric=bool(data["is_metric"]) if "is_metric" in data else False,
        scale_factor=sf,
        orig_size=get("orig_size", (n, 2), np.int64),
        proc_to_orig=get("proc_to_orig", (n, 3, 3), np.float64),
        frame_numbers=get("frame_numbers", (n,), np.int64),
        timestamps=get("timestamps", (n,), np.float64),
        source_paths=None if paths is None else [str(p) for p in get("source_paths", (n,), np.str_)],
        meta=meta,
        gaussians=gaussians,
        tracks=tracks,
        mesh=mesh,
    )
