"""The coloured point cloud shared by the glb, ply and colmap exports.

Points are lifted with :func:`da3_blender.geometry.unproject_depth`, i.e. at pixel *centres*
``(col + 0.5, row + 0.5)`` with K in pixel-edge coordinates. The official DA3 exports lift at
integer pixel coordinates, which puts every point half a pixel off its pixel; we deliberately
fix that, so a point seen through its own camera lands on the centre of the pixel it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError
from ..geometry import to_4x4, unproject_depth
from ..prediction import Prediction

GREY = np.array([128, 128, 128], dtype=np.uint8)  # colour of points when the prediction has no images
ANY_VIEW_HINT = "use an any-view model (da3-large, da3-giant or da3nested-giant-large)"


@dataclass
class PointCloud:
    xyz: np.ndarray  # (M,3) float32, world frame of the prediction (OpenCV axes)
    rgb: np.ndarray  # (M,3) uint8
    conf: np.ndarray | None  # (M,) float32, None when the prediction has no confidence
    view: np.ndarray  # (M,) int32 view index
    row: np.ndarray  # (M,) int32 source pixel row in the processed image
    col: np.ndarray  # (M,) int32 source pixel column

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def take(self, index: np.ndarray) -> "PointCloud":
        return PointCloud(
            xyz=self.xyz[index],
            rgb=self.rgb[index],
            conf=None if self.conf is None else self.conf[index],
            view=self.view[index],
            row=self.row[index],
            col=self.col[index],
        )


def glb_conf_threshold(conf: np.ndarray | None, percentile: float, floor: float = 1.05, ceil_percentile: float = 90.0):
    """Official glb threshold ``min(max(floor, P_pct(conf)), P_ceil(conf))`` over all views; None without conf."""
    if conf is None:
        return None
    return float(min(max(floor, np.percentile(conf, percentile)), np.percentile(conf, ceil_percentile)))


def plain_conf_threshold(conf: np.ndarray | None, percentile: float):
    """Official colmap threshold: ``P_pct(conf)`` over all views, no clamp; None without conf."""
    return None if conf is None else float(np.percentile(conf, percentile))


def cameras_for_points(pred: Prediction, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(K (N,3,3), w2c (N,4,4)) float64 for lifting points, or BadInputError naming the model to use.

    Without extrinsics a single view is placed at the origin (its camera frame is the world
    frame); several unposed views cannot share one point cloud, so they are refused.
    """
    if pred.intrinsics is None:
        raise BadInputError(
            f"the {fmt} export needs camera intrinsics, which this prediction has none of "
            f"(mono/metric models predict no cameras); {ANY_VIEW_HINT}, or export depth_vis/mini_npz"
        )
    k = np.asarray(pred.intrinsics, dtype=np.float64).reshape(pred.num_views, 3, 3)
    if pred.extrinsics is None:
        if pred.num_views != 1:
            raise BadInputError(
                f"the {fmt} export needs camera poses to merge {pred.num_views} views, and this prediction "
                f"has none (mono/metric models predict no poses); {ANY_VIEW_HINT}, or export one image at a time"
            )
        return k, np.eye(4)[None]
    return k, to_4x4(np.asarray(pred.extrinsics, dtype=np.float64).reshape(pred.num_views, -1, 4))


def valid_mask(pred: Prediction, view: int, conf_thresh: float | None) -> np.ndarray:
    """Pixels that become points: finite depth > 0, conf >= threshold, and not sky."""
    depth = np.asarray(pred.depth[view])
    valid = np.isfinite(depth) & (depth > 0)
    if conf_thresh is not None and pred.conf is not None:
        valid &= np.asarray(pred.conf[view]) >= conf_thresh
    if pred.sky is not None:  # sky depth is a filled-in far value, not geometry
        valid &= ~np.asarray(pred.sky[view], dtype=bool)
    return valid


def build_points(pred: Prediction, conf_thresh: float | None, k: np.ndarray, w2c: np.ndarray) -> PointCloud:
    """All valid pixels of all views lifted to the world frame, in view then row-major pixel order."""
    parts = []
    for i in range(pred.num_views):
        rows, cols = np.nonzero(valid_mask(pred, i, conf_thresh))
        xyz = unproject_depth(pred.depth[i], k[i], w2c[i][None])[0][rows, cols].astype(np.float32)
        finite = np.isfinite(xyz).all(axis=1)
        rows, cols, xyz = rows[finite], cols[finite], xyz[finite]
        if pred.processed_images is not None:
            rgb = np.asarray(pred.processed_images[i], dtype=np.uint8)[rows, cols]
        else:
            rgb = np.tile(GREY, (rows.size, 1))
        conf = None if pred.conf is None else np.asarray(pred.conf[i], dtype=np.float32)[rows, cols]
        parts.append(PointCloud(xyz, rgb, conf, np.full(rows.size, i, np.int32), rows.astype(np.int32), cols.astype(np.int32)))
    return PointCloud(
        xyz=np.concatenate([p.xyz for p in parts]),
        rgb=np.concatenate([p.rgb for p in parts]),
        conf=None if pred.conf is None else np.concatenate([p.conf for p in parts]),
        view=np.concatenate([p.view for p in parts]),
        row=np.concatenate([p.row for p in parts]),
        col=np.concatenate([p.col for p in parts]),
    )


def subsample(points: PointCloud, num_max_points: int, seed: int) -> PointCloud:
    """Uniform random subset without replacement (seeded; the official one is not), original order kept."""
    if len(points) <= num_max_points:
        return points
    keep = np.random.default_rng(seed).choice(len(points), num_max_points, replace=False)
    return points.take(np.sort(keep))
