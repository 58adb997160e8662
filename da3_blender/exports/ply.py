"""``points.ply``: the glb point cloud as a binary little-endian PLY, in the prediction's world frame.

Same points as the glb export (threshold ``min(max(1.05, P_pct(conf)), P90(conf))``, finite depth
> 0, sky dropped, seeded subsample to ``num_max_points``) but with no glTF flip and no centring:
coordinates are the prediction's own world frame, OpenCV axes (x right, y down, z forward of the
first camera when DA3 chose the poses), so they line up with ``prediction.extrinsics`` directly.
Vertex properties: ``float x y z``, ``uchar red green blue``, ``float confidence`` (only when the
prediction has confidence) and ``int view`` (index of the view the point came from).
"""

from __future__ import annotations

import os

import numpy as np

from ..options import DEFAULT_CONF_THRESH_PERCENTILE, DEFAULT_NUM_MAX_POINTS
from ..prediction import Prediction
from ..files import open_atomic
from .points import build_points, cameras_for_points, glb_conf_threshold, subsample


def export_ply(
    pred: Prediction,
    export_dir: str,
    conf_thresh_percentile: float = DEFAULT_CONF_THRESH_PERCENTILE,
    num_max_points: int = DEFAULT_NUM_MAX_POINTS,
    seed: int = 0,
) -> list[str]:
    k, w2c = cameras_for_points(pred, "ply")
    points = build_points(pred, glb_conf_threshold(pred.conf, conf_thresh_percentile), k, w2c)
    points = subsample(points, num_max_points, seed)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if points.conf is not None:
        fields.append(("confidence", "<f4"))
    fields.append(("view", "<i4"))
    vertices = np.empty(len(points), dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = points.xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = points.rgb[:, channel]
    if points.conf is not None:
        vertices["confidence"] = points.conf
    vertices["view"] = points.view
    ply_types = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment DA3 for Blender point cloud, world frame of the prediction (OpenCV axes)",
        f"element vertex {len(points)}",
        *(f"property {ply_types[t]} {name}" for name, t in fields),
        "end_header",
    ]
    path = os.path.join(export_dir, "points.ply")
    with open_atomic(path) as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertices.tobytes())
    return [path]
