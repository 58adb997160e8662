"""COLMAP text model of a camera solve: the solve's tracks as points3D with every observation.

Written by :func:`exports.colmap.export_colmap` when the prediction carries tracks (``refine``):
the same ``colmap/sparse/0/{cameras,images,points3D}.txt`` layout and image names, each view's
camera in original pixels (``RADIAL f cx cy k1 k2`` when the solve estimated distortion, else
``PINHOLE``), ``POINTS2D`` the tracked features of the view and each 3D point's ``TRACK`` all the
views that see it, so COLMAP or GLOMAP can bundle-adjust or extend the model directly.
"""

from __future__ import annotations

import os

import numpy as np

from ..files import open_atomic
from ..prediction import Prediction
from .colmap import write_cameras, write_images


def export_colmap_tracks(pred: Prediction, folder: str, names: list[str]) -> list[str]:
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
