"""``scene.glb``: the coloured point cloud and camera frustums as hand-written glTF 2.0 binary.

Same scene as the official (trimesh) export: points with confidence >= ``min(max(1.05, P_pct),
P90)``, in the frame ``A = T_center . diag(1,-1,-1,1) . w2c_0`` (first camera, OpenCV -> glTF axes
x right / y up / z backward, then the per-axis median of the points moved to the origin). ``A`` is
stored in ``scenes[0].extras.hf_alignment`` (row-major 4x4) so the world frame can be recovered:
``X_world = A^-1 X_glb``. Differences from the official export, on purpose: points are lifted at
pixel centres (see :mod:`.points`), the subsample is seeded, frustums reach the image *edges*
(the official corners are the centres of the corner pixels), and no ``scene.jpg``/``depth_vis``
is written unless ``depth_vis`` is asked for.

glTF layout: one buffer; per mesh a POSITION (float32 VEC3, with min/max) and a COLOR_0 (uint8
normalised VEC4, alpha 255) accessor; the points are one mesh of mode 0 (POINTS), each camera a
mesh of mode 1 (LINES); one node per mesh, all in scene 0.
"""

from __future__ import annotations

import colorsys
import json
import os
import struct

import numpy as np

from ..geometry import affine_inverse
from ..options import DEFAULT_CONF_THRESH_PERCENTILE, DEFAULT_NUM_MAX_POINTS
from ..prediction import Prediction
from ..files import open_atomic
from .points import build_points, cameras_for_points, glb_conf_threshold, subsample

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
ARRAY_BUFFER = 34962
FLOAT, UNSIGNED_BYTE = 5126, 5121
POINTS, LINES = 0, 1
CAMERA_SIZE = 0.03  # frustum depth as a fraction of the scene diagonal (official)


def write_glb(path: str, meshes: list[tuple[str, int, np.ndarray, np.ndarray]], extras: dict | None = None) -> str:
    """Write meshes ``(name, mode, positions (V,3) float32, colors (V,4) uint8)`` as one GLB file."""
    gltf: dict = {"asset": {"version": "2.0", "generator": "da3_blender"}, "scene": 0, "scenes": [{}]}
    if extras:
        gltf["scenes"][0]["extras"] = extras
    blob = bytearray()
    views, accessors, gl_meshes, nodes = [], [], [], []

    def add_view(data: bytes) -> int:
        blob.extend(b"\0" * (-len(blob) % 4))
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "target": ARRAY_BUFFER})
        blob.extend(data)
        return len(views) - 1

    for name, mode, positions, colors in meshes:
        positions = np.ascontiguousarray(positions, dtype="<f4")
        colors = np.ascontiguousarray(colors, dtype=np.uint8)
        if len(positions) == 0:
            continue  # glTF accessors need count >= 1
        accessors.append({
            "bufferView": add_view(positions.tobytes()), "componentType": FLOAT, "count": len(positions),
            "type": "VEC3", "min": positions.min(axis=0).tolist(), "max": positions.max(axis=0).tolist(),
        })
        accessors.append({
            "bufferView": add_view(colors.tobytes()), "componentType": UNSIGNED_BYTE, "normalized": True,
            "count": len(colors), "type": "VEC4",
        })
        prim = {"attributes": {"POSITION": len(accessors) - 2, "COLOR_0": len(accessors) - 1}, "mode": mode}
        gl_meshes.append({"name": name, "primitives": [prim]})
        nodes.append({"name": name, "mesh": len(gl_meshes) - 1})
    if nodes:
        gltf["scenes"][0]["nodes"] = list(range(len(nodes)))
        gltf.update(nodes=nodes, meshes=gl_meshes, accessors=accessors, bufferViews=views, buffers=[{"byteLength": len(blob)}])
    blob.extend(b"\0" * (-len(blob) % 4))
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    chunks = struct.pack("<II", len(js), CHUNK_JSON) + js
    if blob:
        chunks += struct.pack("<II", len(blob), CHUNK_BIN) + bytes(blob)
    with open_atomic(path) as fh:
        fh.write(struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)))
        fh.write(chunks)
    return path


def alignment_transform(w2c0: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """``A = T_center . diag(1,-1,-1,1) . w2c_0``; T_center moves the median of the points to 0."""
    a = np.diag([1.0, -1.0, -1.0, 1.0]) @ w2c0
    center = np.median(transform(a, points_world), axis=0) if len(points_world) else np.zeros(3)
    t_center = np.eye(4)
    t_center[:3, 3] = -center
    return t_center @ a


def world_alignment(pred: Prediction) -> np.ndarray:
    """A result moved into a world (``meta["world"]``, issue 27) keeps it: Z up -> glTF Y up, no re-centring;
    ``KEEP`` (OpenCV axes) -> glTF axes."""
    a = np.eye(4)
    a[:3, :3] = np.diag([1.0, -1.0, -1.0]) if pred.meta["world"].get("up_axis") not in ("FLOOR", "Z_UP") else \
        np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    return a


def transform(mat: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 to (M,3) points, in float64."""
    return np.asarray(points, dtype=np.float64) @ mat[:3, :3].T + mat[:3, 3]


def view_color(i: int, n: int) -> np.ndarray:
    """Official per-camera colour: HSV(h=(i+0.5)/n, s=0.85, v=0.95) x 255, truncated."""
    return (np.array(colorsys.hsv_to_rgb((i + 0.5) / max(n, 1), 0.85, 0.95)) * 255).astype(np.uint8)


def scene_scale(points: np.ndarray, fallback: float = 1.0) -> float:
    """Scene diagonal ``|P95 - P5|`` of the points (official)."""
    if len(points) < 2:
        return fallback
    diag = float(np.linalg.norm(np.percentile(points, 95, axis=0) - np.percentile(points, 5, axis=0)))
    return diag if np.isfinite(diag) and diag > 0 else fallback


def frustum_segments(k: np.ndarray, w2c: np.ndarray, width: int, height: int, size: float) -> np.ndarray:
    """(16,3) world endpoints of 8 segments: centre -> 4 image corners, then the 4 rectangle edges.

    Corners are the image edges (0,0), (W,0), (W,H), (0,H) in pixel-edge coordinates, at z = ``size``.
    """
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=np.float64)
    rays = corners @ np.linalg.inv(k).T
    plane = rays / rays[:, 2:3] * size
    c2w = affine_inverse(w2c)
    plane_w = transform(c2w, plane)
    centre = c2w[:3, 3]
    ends = [(centre, plane_w[j]) for j in range(4)] + [(plane_w[j], plane_w[(j + 1) % 4]) for j in range(4)]
    return np.array([p for seg in ends for p in seg])


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)


def export_glb(
    pred: Prediction,
    export_dir: str,
    conf_thresh_percentile: float = DEFAULT_CONF_THRESH_PERCENTILE,
    num_max_points: int = DEFAULT_NUM_MAX_POINTS,
    show_cameras: bool = True,
    seed: int = 0,
) -> list[str]:
    k, w2c = cameras_for_points(pred, "glb")
    points = build_points(pred, glb_conf_threshold(pred.conf, conf_thresh_percentile), k, w2c)
    align = world_alignment(pred) if (pred.meta or {}).get("world") else alignment_transform(w2c[0], points.xyz)
    points.xyz = transform(align, points.xyz).astype(np.float32)
    points = points.take(np.isfinite(points.xyz).all(axis=1))
    points = subsample(points, num_max_points, seed)
    meshes = [("points", POINTS, points.xyz, _rgba(points.rgb))]
    if show_cameras:
        size = scene_scale(points.xyz) * CAMERA_SIZE
        height, width = pred.image_size
        for i in range(len(k)):
            segs = transform(align, frustum_segments(k[i], w2c[i], width, height, size))
            colors = _rgba(np.tile(view_color(i, len(k)), (len(segs), 1)))
            meshes.append((f"camera_{i:04d}", LINES, segs.astype(np.float32), colors))
    extras = {"hf_alignment": align.tolist()}
    return [write_glb(os.path.join(export_dir, "scene.glb"), meshes, extras)]
