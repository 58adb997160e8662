"""``stmap``: the lens as STMaps (Nuke's STMap node, Flame, 3DEqualizer) and ``stmap/lens.json``.

Files (under the export folder):

* ``stmap/undistort.exr``: the size of the undistorted (overscan) frame; each pixel holds where in the
  plate its colour comes from. Plate -> STMap(src = plate, stmap = this) -> the undistorted plate.
* ``stmap/redistort.exr``: the size of the plate; each pixel holds where in the undistorted (overscan)
  frame its colour comes from. CG rendered with ``K_undistorted`` at the overscan size -> STMap -> lined
  up with the plate's lens.
* a lens whose K changes along the shot (a zoom) gets a pair per frame: ``undistort.NNNN.exr`` /
  ``redistort.NNNN.exr``, NNNN the scene frame number (as the ``exr`` export), all of one overscan size;
* ``stmap/lens.json``: ``K`` and ``K_undistorted`` (3x3, pixels, pixel-edge convention), ``k1``, ``k2``,
  ``width``, ``height``, ``overscan_width``, ``overscan_height``, the model and, for a zoom, ``frames``
  (each frame's number, K and K_undistorted).

Values: float32 RGB, R = s, G = t, B = 0, in Nuke's convention: s = x / W and t = 1 - y / H for the
source position (x, y) in pixel-edge coordinates from the top-left corner, so an identity map holds
s = (col + 0.5) / W, t = 1 - (row + 0.5) / H (pixel centres, t from the bottom). The model and the
overscan are :mod:`.lens`'s. Without distortion (lens ``fixed``/``zoom``, no solve) both maps are the
identity at the plate size and ``lens.json`` says so in ``note``. The EXR headers carry
``da3PlateSize``/``da3OverscanSize`` (v2i) and ``da3K1``/``da3K2``.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from ..files import open_atomic
from ..prediction import Prediction
from .exr import _openexr, file_numbers
from .lens import Lens, common_overscan, distort_pixels, plate_lenses, shared_lens, undistort_pixels

log = logging.getLogger("da3_blender")
STRIP_ROWS = 256  # maps are computed in strips of this many rows
WARN_BYTES = 2 << 30  # a per-frame sequence of maps over this (uncompressed) gets a warning
NO_DISTORTION_NOTE = ("this result has no lens distortion (no camera solve, or lens fixed/zoom): "
                      "identity maps, the undistorted frame is the plate")


def pixel_grid(rows: np.ndarray, width: int) -> np.ndarray:
    """Pixel centres (len(rows), width, 2) in pixel-edge coordinates."""
    x = np.arange(width, dtype=np.float64) + 0.5
    y = rows.astype(np.float64) + 0.5
    return np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=-1)


def st_values(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Source positions (..., 2) in pixel edges of a W x H image -> (..., 3) float32 (s, t, 0)."""
    out = np.zeros(xy.shape[:-1] + (3,), np.float32)
    out[..., 0] = xy[..., 0] / width
    out[..., 1] = 1.0 - xy[..., 1] / height
    return out


def st_to_pixels(st: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`st_values`: (..., >=2) s, t -> (..., 2) pixel-edge positions."""
    return np.stack([st[..., 0] * width, (1.0 - st[..., 1]) * height], axis=-1)


def undistort_map(lens: Lens) -> np.ndarray:
    """(H', W', 3) float32 over the overscan frame: the plate position of each of its pixels."""
    width, height = lens.overscan_size
    out = np.empty((height, width, 3), np.float32)
    for top in range(0, height, STRIP_ROWS):
        rows = np.arange(top, min(height, top + STRIP_ROWS))
        out[rows] = st_values(distort_pixels(pixel_grid(rows, width), lens), lens.width, lens.height)
    return out


def redistort_map(lens: Lens) -> np.ndarray:
    """(H, W, 3) float32 over the plate: the overscan-frame position of each plate pixel."""
    width, height = lens.overscan_size
    out = np.empty((lens.height, lens.width, 3), np.float32)
    for top in range(0, lens.height, STRIP_ROWS):
        rows = np.arange(top, min(lens.height, top + STRIP_ROWS))
        out[rows] = st_values(undistort_pixels(pixel_grid(rows, lens.width), lens), width, height)
    return out


def _write_map(path: str, values: np.ndarray, lens: Lens) -> str:
    exr = _openexr()
    width, height = lens.overscan_size
    header = {"compression": exr.ZIP_COMPRESSION,
              "da3PlateSize": np.array([lens.width, lens.height], np.int32),
              "da3OverscanSize": np.array([width, height], np.int32),
              "da3K1": float(lens.k1), "da3K2": float(lens.k2)}
    channels = {c: np.ascontiguousarray(values[..., i]) for i, c in enumerate("RGB")}
    with open_atomic(path) as fh:
        exr.File(header, channels).write(fh)
    return path


def _lens_entry(lens: Lens) -> dict:
    width, height = lens.overscan_size
    return {"K": lens.k.tolist(), "K_undistorted": lens.k_undistorted.tolist(), "k1": lens.k1, "k2": lens.k2,
            "width": lens.width, "height": lens.height, "overscan_width": width, "overscan_height": height}


def stmap_plan(pred: Prediction) -> tuple[list[Lens], Lens | None]:
    """Each view's lens (one overscan per plate size) and the shared one, None when maps go per frame."""
    lenses = common_overscan(plate_lenses(pred, "stmap"))
    if not lenses[0].has_distortion and len({(l.width, l.height) for l in lenses}) == 1:
        return lenses, lenses[0]  # identity maps do not depend on K
    return lenses, shared_lens(lenses)


def size_warning(lenses: list[Lens], shared: Lens | None) -> str | None:
    """A warning line when per-frame maps add up to more than :data:`WARN_BYTES`, else None."""
    if shared is not None:
        return None
    total = sum(12 * (l.width * l.height + int(np.prod(l.overscan_size))) for l in lenses)
    if total <= WARN_BYTES:
        return None
    return (f"stmap: the lens changes along the shot, so each of the {len(lenses)} frames gets its own pair of maps "
            f"(about {total / 2 ** 30:.1f} GiB before compression); they are written one frame at a time")


def export_stmap(pred: Prediction, export_dir: str) -> list[str]:
    """Write the maps and ``lens.json`` (see the module doc); returns the paths written."""
    _openexr()
    lenses, shared = stmap_plan(pred)
    warning = size_warning(lenses, shared)
    if warning:
        log.warning(warning)
    folder = os.path.join(export_dir, "stmap")
    os.makedirs(folder, exist_ok=True)
    paths: list[str] = []
    first = shared or lenses[0]
    info = {"model": "radial: x_d = x (1 + k1 r^2 + k2 r^4) on normalised coordinates ((u - cx) / fx, (v - cy) / fy)",
            "convention": "s = x / W, t = 1 - y / H (pixel-edge x, y from the top-left corner)", **_lens_entry(first)}
    if not first.has_distortion:
        info["note"] = NO_DISTORTION_NOTE
    if shared is not None:
        paths.append(_write_map(os.path.join(folder, "undistort.exr"), undistort_map(shared), shared))
        paths.append(_write_map(os.path.join(folder, "redistort.exr"), redistort_map(shared), shared))
    else:
        info["frames"] = []
        for number, lens in zip(file_numbers(pred), lenses):  # one frame in memory at a time
            paths.append(_write_map(os.path.join(folder, f"undistort.{number:04d}.exr"), undistort_map(lens), lens))
            paths.append(_write_map(os.path.join(folder, f"redistort.{number:04d}.exr"), redistort_map(lens), lens))
            info["frames"].append({"frame": number, "K": lens.k.tolist(), "K_undistorted": lens.k_undistorted.tolist()})
    path = os.path.join(folder, "lens.json")
    with open_atomic(path, "w") as fh:
        json.dump(info, fh, indent=1)
    return paths + [path]
