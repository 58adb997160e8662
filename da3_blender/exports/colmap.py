"""COLMAP text model ``colmap/sparse/0/{cameras,images,points3D}.txt``, and a reader for it.

One PINHOLE camera per image, in ORIGINAL image pixels: ``K_orig = proc_to_orig @ K`` and size
``orig_size``. COLMAP puts the image's top-left corner at (0, 0) and the first pixel's centre at
(0.5, 0.5), the same pixel-edge convention as our K, so no half-pixel shift is needed. Image poses
are the world-to-camera rotation (as qvec w, x, y, z) and translation. Every point has a track of
one observation (a prediction refined by the camera solve writes its tracks instead, with all their
observations: :func:`export_colmap_tracks`): the centre of the pixel it was lifted from, mapped to original pixels (the
official export uses the pixel corner, half a pixel off). Points: confidence >= ``P_pct(conf)``
(official, no clamp), finite depth > 0, sky dropped, no subsampling. Image names are the
basenames of ``source_paths`` (``{i:06d}.png`` for in-memory images; ``{stem}_{frame:06d}.png``
when several views share a file, e.g. video frames). The prediction is never modified.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from ..errors import BadInputError, ResultFormatError
from ..files import open_atomic
from ..geometry import quaternion_to_rotation, rotation_to_quaternion
from ..options import DEFAULT_CONF_THRESH_PERCENTILE
from ..prediction import Prediction, scene_frame_numbers
from .points import build_points, cameras_for_points, plain_conf_threshold


class Camera(NamedTuple):
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray


class Image(NamedTuple):
    id: int
    qvec: np.ndarray  # (w, x, y, z) of the world-to-camera rotation
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray  # (P,2) observations in pixels
    point3D_ids: np.ndarray  # (P,) int64, -1 = none


class Point3D(NamedTuple):
    id: int
    xyz: np.ndarray
    rgb: np.ndarray
    error: float
    image_ids: np.ndarray
    point2D_idxs: np.ndarray


# COLMAP's qvec is (w, x, y, z), the geometry module's convention
rotmat_to_qvec = rotation_to_quaternion
qvec_to_rotmat = quaternion_to_rotation


def image_names(pred: Prediction) -> list[str]:
    """Unique COLMAP image names for the views (see module docstring)."""
    bases = [os.path.basename(str(p)) for p in pred.source_paths]
    frames = scene_frame_numbers(pred)  # video frames: the scene frame, as every export numbers them
    names = []
    for i, base in enumerate(bases):
        if not base:
            names.append(f"{i:06d}.png")
        elif bases.count(base) > 1:
            frame = int(frames[i]) if frames[i] >= 0 else i
            names.append(f"{os.path.splitext(base)[0]}_{frame:06d}.png")
        else:
            names.append(base)
    return names


def _pinhole(k_orig: np.ndarray, view: int) -> tuple[float, float, float, float]:
    if abs(k_orig[0, 1]) > 1e-6 * abs(k_orig[0, 0]) or not np.allclose(k_orig[2], [0, 0, 1]):
        raise BadInputError(
            f"view {view}: its intrinsics in original pixels are not a plain pinhole camera "
            "(skew or projective mapping in proc_to_orig); COLMAP export supports resize/crop preprocessing only"
        )
    return float(k_orig[0, 0]), float(k_orig[1, 1]), float(k_orig[0, 2]), float(k_orig[1, 2])


def write_cameras(folder: str, pred: Prediction, k_orig: np.ndarray, distortion: dict | None = None) -> str:
    """``cameras.txt``: one camera per view in original pixels, ``PINHOLE`` or with a solve's distortion ``RADIAL``."""
    path = os.path.join(folder, "cameras.txt")
    with open_atomic(path, "w") as fh:
        fh.write("# Camera list with one line of data per camera:\n")
        fh.write("#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
        fh.write(f"# Number of cameras: {len(k_orig)}\n")
        for i in range(len(k_orig)):
            width, height = (int(v) for v in pred.orig_size[i])
            fx, fy, cx, cy = _pinhole(k_orig[i], i)
            if distortion:
                line = f"RADIAL {width} {height} {fx!r} {cx!r} {cy!r} {distortion['k1']!r} {distortion['k2']!r}"
            else:
                line = f"PINHOLE {width} {height} {fx!r} {fy!r} {cx!r} {cy!r}"
            fh.write(f"{i + 1} {line}\n")
    return path


def write_images(folder: str, w2c: np.ndarray, names: list[str], obs_xy: np.ndarray, obs_point_id: np.ndarray,
                 obs_view: np.ndarray) -> str:
    """``images.txt``: each view's pose and its observations (``obs_*`` sorted by view; point ids from 1)."""
    n = len(w2c)
    starts = np.concatenate([[0], np.cumsum(np.bincount(obs_view, minlength=n))])
    path = os.path.join(folder, "images.txt")
    with open_atomic(path, "w") as fh:
        fh.write("# Image list with two lines of data per image:\n")
        fh.write("#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n")
        fh.write("#   POINTS2D[] as (X, Y, POINT3D_ID)\n")
        fh.write(f"# Number of images: {n}, mean observations per image: {len(obs_view) / max(n, 1)}\n")
        for i in range(n):
            rot = w2c[i, :3, :3]
            scale = np.cbrt(np.linalg.det(rot))  # a similarity w2c projects like the rigid [R/s | t/s]
            pose = [*rotmat_to_qvec(rot / scale), *(w2c[i, :3, 3] / scale)]
            fh.write(f"{i + 1} {' '.join(repr(float(v)) for v in pose)} {i + 1} {names[i]}\n")
            sl = slice(starts[i], starts[i + 1])
            fh.write(" ".join("%.6f %.6f %d" % t for t in zip(obs_xy[sl, 0].tolist(), obs_xy[sl, 1].tolist(),
                                                              obs_point_id[sl].tolist())))
            fh.write("\n")
    return path


def export_colmap_tracks(pred: Prediction, folder: str, names: list[str]) -> list[str]:
    """COLMAP text model of a camera solve: the solve's tracks as points3D with every observation.

    Written by :func:`export_colmap` when the prediction carries tracks (``refine``):
    the same ``colmap/sparse/0/{cameras,images,points3D}.txt`` layout and image names, each view's
    camera in original pixels (``RADIAL f cx cy k1 k2`` when the solve estimated distortion, else
    ``PINHOLE``), ``POINTS2D`` the tracked features of the view and each 3D point's ``TRACK`` all the
    views that see it, so COLMAP or GLOMAP can bundle-adjust or extend the model directly.
    """
    tracks = pred.tracks
    n = pred.num_views
    k_orig = np.asarray(pred.proc_to_orig, np.float64) @ np.asarray(pred.intrinsics, np.float64)
    order = np.lexsort((tracks.obs_track, tracks.obs_view))  # observations by view
    starts = np.concatenate([[0], np.cumsum(np.bincount(tracks.obs_view, minlength=n))])
    idx_in_view = np.empty(len(order), dtype=np.int64)
    idx_in_view[order] = np.arange(len(order)) - starts[tracks.obs_view[order]]
    cam_path = write_cameras(folder, pred, k_orig, (pred.meta.get("solve") or {}).get("distortion"))
    img_path = write_images(folder, np.asarray(pred.extrinsics, np.float64), names, tracks.obs_xy[order],
                            tracks.obs_track[order] + 1, tracks.obs_view[order])

    pts_path = os.path.join(folder, "points3D.txt")
    rgb = tracks.rgb if tracks.rgb is not None else np.full((len(tracks), 3), 128, np.uint8)
    track_starts = np.concatenate([[0], np.cumsum(np.bincount(tracks.obs_track, minlength=len(tracks)))])
    with open_atomic(pts_path, "w") as fh:
        fh.write("# 3D point list with one line of data per point:\n")
        fh.write("#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        fh.write(f"# Number of points: {len(tracks)}, mean track length: {len(order) / max(len(tracks), 1)}\n")
        views, idx = (tracks.obs_view + 1).tolist(), idx_in_view.tolist()
        for p in range(len(tracks)):
            obs = " ".join(f"{views[o]} {idx[o]}" for o in range(track_starts[p], track_starts[p + 1]))
            x, y, z = tracks.xyz[p].tolist()
            r, g, b = (int(c) for c in rgb[p])
            fh.write(f"{p + 1} {x:.9g} {y:.9g} {z:.9g} {r} {g} {b} 0 {obs}\n")
    return [cam_path, img_path, pts_path]


def export_colmap(pred: Prediction, export_dir: str, conf_thresh_percentile: float = DEFAULT_CONF_THRESH_PERCENTILE) -> list[str]:
    folder = os.path.join(export_dir, "colmap", "sparse", "0")
    if pred.tracks is not None and pred.extrinsics is not None and pred.intrinsics is not None:
        return export_colmap_tracks(pred, folder, image_names(pred))
    k, w2c = cameras_for_points(pred, "colmap")
    points = build_points(pred, plain_conf_threshold(pred.conf, conf_thresh_percentile), k, w2c)
    to_orig = np.asarray(pred.proc_to_orig, dtype=np.float64)
    k_orig = to_orig @ k
    names = image_names(pred)
    n = len(k)
    counts = np.bincount(points.view, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    # observation = source pixel centre, mapped to original pixels
    centres = np.stack([points.col + 0.5, points.row + 0.5, np.ones(len(points))], axis=-1)
    obs = np.einsum("mij,mj->mi", to_orig[points.view], centres)[:, :2]
    point_ids = np.arange(1, len(points) + 1)

    cam_path = write_cameras(folder, pred, k_orig)
    img_path = write_images(folder, w2c, names, obs, point_ids, points.view)

    pts_path = os.path.join(folder, "points3D.txt")
    with open_atomic(pts_path, "w") as fh:
        fh.write("# 3D point list with one line of data per point:\n")
        fh.write("#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        fh.write(f"# Number of points: {len(points)}, mean track length: {1 if len(points) else 0}\n")
        idx_in_image = np.arange(len(points)) - starts[points.view]
        chunk = 200_000
        for lo in range(0, len(points), chunk):
            sl = slice(lo, lo + chunk)
            rows = zip(
                point_ids[sl].tolist(), *points.xyz[sl].T.tolist(), *points.rgb[sl].T.tolist(),
                (points.view[sl] + 1).tolist(), idx_in_image[sl].tolist(),
            )
            fh.write("".join("%d %.9g %.9g %.9g %d %d %d 0 %d %d\n" % r for r in rows))
    return [cam_path, img_path, pts_path]


def _data_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise ResultFormatError(f"COLMAP model file not found: {path}")
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:  # names as written, bytes kept
        return [line.rstrip("\r\n") for line in fh if not line.startswith("#")]


def read_colmap_text(folder: str | os.PathLike) -> tuple[dict[int, Camera], dict[int, Image], dict[int, Point3D]]:
    """Read ``cameras.txt``, ``images.txt`` and ``points3D.txt`` from a COLMAP text model folder."""
    folder = os.fspath(folder)
    try:
        cameras = {}
        for line in _data_lines(os.path.join(folder, "cameras.txt")):
            if line.strip():
                tok = line.split()
                cameras[int(tok[0])] = Camera(int(tok[0]), tok[1], int(tok[2]), int(tok[3]), np.array(tok[4:], dtype=np.float64))
        images = {}
        lines = _data_lines(os.path.join(folder, "images.txt"))
        i = 0
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            tok = lines[i].split(maxsplit=9)
            obs = np.array(lines[i + 1].split() if i + 1 < len(lines) else [], dtype=np.float64).reshape(-1, 3)
            images[int(tok[0])] = Image(
                int(tok[0]), np.array(tok[1:5], dtype=np.float64), np.array(tok[5:8], dtype=np.float64),
                int(tok[8]), tok[9], obs[:, :2], obs[:, 2].astype(np.int64),
            )
            i += 2
        points = {}
        for line in _data_lines(os.path.join(folder, "points3D.txt")):
            if line.strip():
                tok = line.split()
                track = np.array(tok[8:], dtype=np.int64).reshape(-1, 2)
                points[int(tok[0])] = Point3D(
                    int(tok[0]), np.array(tok[1:4], dtype=np.float64), np.array(tok[4:7], dtype=np.uint8),
                    float(tok[7]), track[:, 0], track[:, 1],
                )
    except (ValueError, IndexError) as exc:
        raise ResultFormatError(f"{folder} is not a readable COLMAP text model ({exc})") from None
    return cameras, images, points
