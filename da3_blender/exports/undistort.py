"""``undistorted``: each plate undistorted into the overscan frame (the ``stmap`` export's lens).

Files: ``undistorted/plate.NNNN.exr`` for EXR plates (every channel kept, half or float as the input,
ZIP compressed; header ``K`` = the overscan camera) or ``undistorted/plate.NNNN.png`` for the others
(8-bit, as Pillow reads them; a video's frames too), NNNN the scene frame number (as the ``exr``
export), and ``undistorted/camera.json``: each frame's ``K`` (``K_undistorted``, pixels, pixel-edge
convention) and the frame's ``width``/``height`` (the overscan size): the camera to render CG with.

Each output pixel takes the plate at the position the lens model sends it to (:mod:`.lens`), bilinear
between pixel centres as Nuke's STMap does; positions outside the plate are 0 (black, alpha 0). The
frame is built in strips of :data:`STRIP_ROWS` rows, so beside the plate and its undistorted copy only
one strip of coordinates is in memory (4K float plates: ~2 x 140 MB, not the GBs of a whole-frame map).
Without distortion the frames are the plates, resampled 1:1 (a note in ``camera.json`` says so).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import BadInputError
from ..files import open_atomic
from ..prediction import Prediction
from .exr import _openexr, file_numbers
from .lens import Lens, common_overscan, distort_pixels, plate_lenses
from .stmap import NO_DISTORTION_NOTE, pixel_grid

STRIP_ROWS = 128


def sample_bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) at pixel-edge positions ``xy`` (..., 2): bilinear between pixel centres, edge
    pixels held to the border, 0 outside the image; float32 (..., C)."""
    h, w = image.shape[:2]
    x, y = xy[..., 0], xy[..., 1]
    inside = (x >= 0) & (x <= w) & (y >= 0) & (y <= h)
    fx, fy = np.clip(x - 0.5, 0, w - 1), np.clip(y - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(fx).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(fy).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    a, b = (fx - x0)[..., None].astype(np.float32), (fy - y0)[..., None].astype(np.float32)
    out = ((1 - a) * (1 - b) * image[y0, x0] + a * (1 - b) * image[y0, x1]
           + (1 - a) * b * image[y1, x0] + a * b * image[y1, x1]).astype(np.float32)
    out[~inside] = 0.0
    return out


def undistort_image(image: np.ndarray, lens: Lens) -> np.ndarray:
    """(H, W, C) plate -> (H', W', C) float32 in the overscan frame, strip by strip."""
    width, height = lens.overscan_size
    src = image.astype(np.float32, copy=False)
    out = np.empty((height, width, image.shape[2]), np.float32)
    for top in range(0, height, STRIP_ROWS):
        rows = np.arange(top, min(height, top + STRIP_ROWS))
        out[rows] = sample_bilinear(src, distort_pixels(pixel_grid(rows, width), lens))
    return out


def _is_exr(path: str) -> bool:
    return path.lower().endswith(".exr")


def _video_frames(pred: Prediction):
    """The frames of a video result, decoded in view order, or None for image files."""
    from ..inputs.collect import VideoFrames
    from ..inputs.paths import is_video_path

    paths = [str(p) for p in pred.source_paths]
    video = (pred.meta or {}).get("video") or {}
    if len(set(paths)) == 1 and is_video_path(paths[0]):
        start = int(video.get("frame_start", 1)) if (pred.meta or {}).get("frame_numbers") == "scene" else 0
        width, height = (int(v) for v in pred.orig_size[0])
        return iter(VideoFrames(paths[0], [int(f) - start for f in pred.frame_numbers], width, height))
    return None


def check_plates(pred: Prediction) -> None:
    """One-line errors before any work: the result's plates must be there."""
    paths = [str(p or "") for p in (pred.source_paths or [])]
    missing = [p for p in paths if not p or not os.path.isfile(p)]
    if missing:
        first = missing[0] or "(no source file recorded)"
        raise BadInputError(f"the undistorted export reads the plates and {len(missing)} of them are missing "
                            f"(e.g. {first}); export where the footage is, or re-run DA3 on it")


def _write_exr(src: str, dst: str, lens: Lens) -> None:
    exr = _openexr()
    f = exr.File(src, separate_channels=True)
    channels = {name: c.pixels for name, c in f.channels().items()}
    names = sorted(channels)
    stack = np.stack([channels[n].astype(np.float32) for n in names], axis=-1)
    out = undistort_image(stack, lens)
    data = {n: np.ascontiguousarray(out[..., i].astype(channels[n].dtype if channels[n].dtype.kind == "f"
                                                       else np.float32)) for i, n in enumerate(names)}
    header = {"compression": exr.ZIP_COMPRESSION, "K": np.ascontiguousarray(lens.k_undistorted, np.float32)}
    with open_atomic(dst) as fh:
        exr.File(header, data).write(fh)


def _write_png(image: np.ndarray, dst: str, lens: Lens) -> None:
    from PIL import Image

    out = np.clip(np.rint(undistort_image(image, lens)), 0, 255).astype(np.uint8)
    with open_atomic(dst) as fh:
        Image.fromarray(out if out.shape[2] > 1 else out[..., 0]).save(fh, format="PNG")


def _load_8bit(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        return np.asarray(im)


def export_undistorted(pred: Prediction, export_dir: str) -> list[str]:
    """Write the undistorted frames and ``camera.json`` (see the module doc); returns the paths."""
    check_plates(pred)
    lenses = common_overscan(plate_lenses(pred, "undistorted"))
    folder = os.path.join(export_dir, "undistorted")
    frames = _video_frames(pred)
    paths, cams = [], []
    for i, (number, lens) in enumerate(zip(file_numbers(pred), lenses)):
        src = str(pred.source_paths[i])
        if frames is None and _is_exr(src):
            dst = os.path.join(folder, f"plate.{number:04d}.exr")
            _write_exr(src, dst, lens)
        else:
            dst = os.path.join(folder, f"plate.{number:04d}.png")
            _write_png(next(frames) if frames is not None else _load_8bit(src), dst, lens)
        paths.append(dst)
        width, height = lens.overscan_size
        cams.append({"frame": number, "K": lens.k_undistorted.tolist(), "width": width, "height": height})
    info = {"frames": cams, "k1": lenses[0].k1, "k2": lenses[0].k2}
    if not lenses[0].has_distortion:
        info["note"] = NO_DISTORTION_NOTE
    path = os.path.join(folder, "camera.json")
    with open_atomic(path, "w") as fh:
        json.dump(info, fh, indent=1)
    return paths + [path]
