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
    path = os.path.join(export_dir, "points.ply")
    write_ply(path, vertices, "DA3 for Blender point cloud, world frame of the prediction (OpenCV axes)")
    return [path]


_PLY_TYPES = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short",
              "u4": "uint", "i4": "int"}


def write_ply(path: str, vertices: np.ndarray, comment: str | None = None) -> None:
    """The one PLY writer (``points.ply``, ``gs_ply``): binary little-endian, one ``vertex`` element whose
    properties are the fields of the structured array ``vertices``, in order; written atomically."""
    properties = []
    for name in vertices.dtype.names:
        kind = vertices.dtype[name]
        if kind.byteorder == ">" or kind.str[1:] not in _PLY_TYPES:
            raise ValueError(f"PLY property {name}: {kind} has no little-endian PLY type")
        properties.append(f"property {_PLY_TYPES[kind.str[1:]]} {name}")
    header = ["ply", "format binary_little_endian 1.0", *([f"comment {comment}"] if comment else []),
              f"element vertex {len(vertices)}", *properties, "end_header"]
    with open_atomic(path) as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertices.tobytes())
