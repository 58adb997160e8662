"""``exr``: one OpenEXR depth pass per view, for compositing (Nuke, Blender's compositor, Flame).

Files: ``exr/depth.NNNN.exr`` at the processed resolution, or ``exr_plate/depth.NNNN.exr`` at the
plate (original image) resolution. ``NNNN`` is the view's frame number, its frame in the Blender
scene (a sequence frame's own number, a video frame's index + frame start, a still's trailing
digits), zero-padded to 4 digits, so a sequence loads as one and lines up with the plate; views
without (unique) frame numbers use their index. Results from before issue 17 (0-based video frames)
are numbered as the scene imports them (frame start 1).

Channels (``FLOAT``, or ``HALF`` with ``half=True``; ZIP compressed, lossless):

* ``Z`` -- z-depth along the camera axis in the result's units (metres for metric models), the
  unit the header's camera translations use;
* ``confidence`` -- DA3's depth confidence (when the model gives one);
* ``sky`` -- 1 where the model sees sky, else 0 (when the model gives a sky mask).

At plate resolution each plate pixel centre is mapped into the processed image through
``proc_to_orig`` and sampled ``nearest`` (default: no invented depths across silhouettes) or
``bilinear`` (smooth, but mixes foreground and background depth at edges; a pixel whose four
neighbours are not all valid falls back to nearest). ``sky`` is always nearest. Plate pixels
outside the processed image (``*_crop`` methods) get ``Z = 0``, ``confidence = 0``, ``sky = 0``:
0 means "no depth" (DA3 depth is always positive).

Header: the standard ``worldToCamera`` and ``worldToNDC`` attributes (``m44f``; Imath row-vector
convention: ``p' = p * M``; camera space as OpenEXR/RenderMan define it: x right, y up, z forward,
left-handed; NDC (0,0) top-left, (1,1) bottom-right of the display window after the divide by w,
z = 1/depth), in the prediction's world frame (the frame of the ``npz``/``colmap``/``ply``
exports); ``pixelAspectRatio`` of the file's pixels; custom ``K`` (``m33f``: intrinsics of this
file's pixels, pixel-edge coordinates: the image's top-left corner is (0, 0)),
``da3SourceFrame`` (int, -1 if none), ``da3Source`` (the source file) and ``da3Metric`` (int).

OpenEXR (the ASWF ``OpenEXR`` package, pinned in the ``exr`` extra) is optional: it is imported
only when this format is written, with a one-line error naming the package when it is missing.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BadInputError, MissingDependencyError
from ..files import open_atomic
from ..geometry import to_4x4
from ..options import (
    DEFAULT_EXR_HALF, DEFAULT_EXR_PLATE_FILTER, DEFAULT_EXR_RESOLUTION, EXR_PLATE_FILTERS, EXR_RESOLUTIONS, choice_ids,
)
from ..prediction import Prediction, scene_frame_numbers

PLATE_FILTERS = choice_ids(EXR_PLATE_FILTERS)
RESOLUTIONS = choice_ids(EXR_RESOLUTIONS)
CAMERA_FLIP = np.diag([1.0, -1.0, 1.0, 1.0])  # OpenCV camera (y down) -> OpenEXR camera (y up)


def _openexr():
    try:
        import OpenEXR
    except ImportError:
        raise MissingDependencyError(
            "the exr export needs the OpenEXR package; install it with: pip install 'OpenEXR==3.5.3' "
            "(or the project's [exr] extra)") from None
    return OpenEXR


def check_exr_options(resolution: str = DEFAULT_EXR_RESOLUTION, plate_filter: str = DEFAULT_EXR_PLATE_FILTER) -> None:
    """One-line errors for unknown choices; also fails (before any work) when OpenEXR is missing."""
    if resolution not in RESOLUTIONS:
        raise BadInputError(f"exr resolution {resolution!r} is unknown; use one of {', '.join(RESOLUTIONS)}")
    if plate_filter not in PLATE_FILTERS:
        raise BadInputError(f"exr plate filter {plate_filter!r} is unknown; use one of {', '.join(PLATE_FILTERS)}")
    _openexr()


def file_numbers(pred: Prediction) -> list[int]:
    """Each view's number in its file name: the source frame number, else the view index."""
    numbers = scene_frame_numbers(pred)
    if len(numbers) == pred.num_views and np.all(numbers >= 0) and len(np.unique(numbers)) == len(numbers):
        return [int(n) for n in numbers]
    return list(range(pred.num_views))


def exr_path(export_dir: str, number: int, resolution: str = DEFAULT_EXR_RESOLUTION) -> str:
    folder = "exr" if resolution == "processed" else "exr_plate"
    return os.path.join(export_dir, folder, f"depth.{number:04d}.exr")


def plate_sampler(proc_to_orig: np.ndarray, proc_hw: tuple[int, int], orig_wh: tuple[int, int]):
    """Where each plate pixel centre falls in the processed image: ``(u, v, inside)``, (H0, W0) each,
    in processed pixel-edge coordinates."""
    h, w = proc_hw
    big_w, big_h = int(orig_wh[0]), int(orig_wh[1])
    inv = np.linalg.inv(np.asarray(proc_to_orig, dtype=np.float64))
    x = np.arange(big_w, dtype=np.float64)[None, :] + 0.5
    y = np.arange(big_h, dtype=np.float64)[:, None] + 0.5
    zz = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
    u = (inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) / zz
    v = (inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / zz
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return u, v, inside


def resample(image: np.ndarray, u: np.ndarray, v: np.ndarray, inside: np.ndarray, method: str = "nearest",
             valid: np.ndarray | None = None) -> np.ndarray:
    """Sample ``image`` (h, w) at processed coordinates ``u``, ``v`` (pixel edges); 0 outside.
    ``bilinear`` interpolates between pixel centres; where a neighbour is not ``valid`` it uses nearest."""
    h, w = image.shape
    col = np.clip(np.floor(u).astype(np.int64), 0, w - 1)
    row = np.clip(np.floor(v).astype(np.int64), 0, h - 1)
    out = image[row, col].astype(np.float32)
    if method == "bilinear":
        fu, fv = np.clip(u - 0.5, 0, w - 1), np.clip(v - 0.5, 0, h - 1)
        c0, r0 = np.minimum(np.floor(fu).astype(np.int64), w - 2 if w > 1 else 0), \
            np.minimum(np.floor(fv).astype(np.int64), h - 2 if h > 1 else 0)
        c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
        a, b = (fu - c0).astype(np.float32), (fv - r0).astype(np.float32)
        img = image.astype(np.float32)
        mixed = ((1 - a) * (1 - b) * img[r0, c0] + a * (1 - b) * img[r0, c1]
                 + (1 - a) * b * img[r1, c0] + a * b * img[r1, c1])
        ok = np.ones(u.shape, dtype=bool) if valid is None else \
            valid[r0, c0] & valid[r0, c1] & valid[r1, c0] & valid[r1, c1]
        out = np.where(ok, mixed, out).astype(np.float32)
    out[~inside] = 0.0
    return out


def camera_attributes(w2c: np.ndarray | None, k: np.ndarray | None, width: int, height: int) -> dict:
    """The header's camera: ``worldToCamera``, ``worldToNDC`` (4x4 float32, row-vector convention) and
    ``K`` (3x3 float32), each only when its inputs exist."""
    def m(a):  # C order: the OpenEXR binding copies the buffer as is (a transposed view would stay transposed)
        return np.ascontiguousarray(a, dtype=np.float32)

    attrs = {}
    if k is not None:
        attrs["K"] = m(k)
    if w2c is None:
        return attrs
    w2c = to_4x4(np.asarray(w2c, dtype=np.float64))
    attrs["worldToCamera"] = m((CAMERA_FLIP @ w2c).T)
    if k is not None:
        k = np.asarray(k, dtype=np.float64)
        proj = np.array([[k[0, 0] / width, k[0, 1] / width, k[0, 2] / width, 0.0],
                         [0.0, k[1, 1] / height, k[1, 2] / height, 0.0],
                         [0.0, 0.0, 0.0, 1.0],
                         [0.0, 0.0, 1.0, 0.0]])  # OpenCV camera -> (u/W, v/H, 1/z) after the divide by w
        attrs["worldToNDC"] = m((proj @ w2c).T)
    return attrs


def view_channels(pred: Prediction, i: int, resolution: str = DEFAULT_EXR_RESOLUTION,
                  plate_filter: str = DEFAULT_EXR_PLATE_FILTER):
    """``(channels, K, (W, H), pixel_aspect)`` of view ``i``: float32 (H, W) arrays by channel name."""
    depth = np.asarray(pred.depth[i], dtype=np.float32)
    conf = None if pred.conf is None else np.asarray(pred.conf[i], dtype=np.float32)
    sky = None if pred.sky is None else np.asarray(pred.sky[i], dtype=bool)
    k = None if pred.intrinsics is None else np.asarray(pred.intrinsics[i], dtype=np.float64)
    p2o = np.asarray(pred.proc_to_orig[i], dtype=np.float64)
    h, w = depth.shape
    if resolution == "processed":
        channels = {"Z": depth}
        if conf is not None:
            channels["confidence"] = conf
        if sky is not None:
            channels["sky"] = sky.astype(np.float32)
        aspect = float(p2o[0, 0] / p2o[1, 1]) if p2o[0, 0] > 0 and p2o[1, 1] > 0 else 1.0
        return channels, k, (w, h), aspect
    big_w, big_h = (int(s) for s in pred.orig_size[i])
    u, v, inside = plate_sampler(p2o, (h, w), (big_w, big_h))
    valid = np.isfinite(depth) & (depth > 0)
    channels = {"Z": resample(depth, u, v, inside, plate_filter, valid)}
    if conf is not None:
        channels["confidence"] = resample(conf, u, v, inside, plate_filter, valid)
    if sky is not None:
        channels["sky"] = resample(sky.astype(np.float32), u, v, inside, "nearest")
    return channels, None if k is None else p2o @ k, (big_w, big_h), 1.0


def export_exr(pred: Prediction, export_dir: str, *, half: bool = DEFAULT_EXR_HALF,
               resolution: str = DEFAULT_EXR_RESOLUTION, plate_filter: str = DEFAULT_EXR_PLATE_FILTER) -> list[str]:
    """Write one EXR per view (see the module doc); returns the paths in view order."""
    check_exr_options(resolution, plate_filter)
    exr = _openexr()
    dtype = np.float16 if half else np.float32
    extrinsics = None if pred.extrinsics is None else np.asarray(pred.extrinsics, dtype=np.float64)
    frames = scene_frame_numbers(pred)
    sources = pred.source_paths or [""] * pred.num_views
    paths = []
    for i, number in enumerate(file_numbers(pred)):
        channels, k, (width, height), aspect = view_channels(pred, i, resolution, plate_filter)
        header = {"compression": exr.ZIP_COMPRESSION, "pixelAspectRatio": aspect,
                  "da3SourceFrame": int(frames[i]), "da3Source": str(sources[i] or ""),
                  "da3Metric": int(bool(pred.is_metric))}
        header.update(camera_attributes(None if extrinsics is None else extrinsics[i], k, width, height))
        data = {name: np.ascontiguousarray(values, dtype=dtype) for name, values in channels.items()}
        path = exr_path(export_dir, number, resolution)
        with open_atomic(path) as fh:
            exr.File(header, data).write(fh)
        paths.append(path)
    return paths
