"""Worlds a result can be built or exported in (issue 27).

``FLOOR``: the floor (``meta["floor"]``, :mod:`.floor`) at Z = 0 with +Z up, the origin on the floor under
the first camera, the first camera's forward direction projected on the floor along +Y. ``Z_UP`` and
``KEEP`` are the first camera's frame turned Z up or as is (:mod:`scene.conventions`). A world is a rigid
transform ``T`` (result world -> new world, 4x4) and a scale ``s``: ``x_new = s (R x + t)``.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..errors import BadInputError
from ..geometry import affine_inverse, to_4x4
from .floor import find_floor, no_floor_note

Z_UP_BASIS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # OpenCV camera -> Z up (Rx(-90))


def floor_transform(normal, offset, first_c2w) -> np.ndarray:
    """World -> FLOOR frame (4x4, rigid) for the plane ``normal . x + offset = 0`` and the first camera."""
    z = np.asarray(normal, np.float64)
    z = z / np.linalg.norm(z)
    c2w = to_4x4(first_c2w)
    centre = c2w[:3, 3]
    origin = centre - (z @ centre + float(offset)) * z
    y = None
    for axis in (c2w[:3, 2], -c2w[:3, 1]):  # forward; straight down: the camera's up instead
        flat = axis - (axis @ z) * z
        if np.linalg.norm(flat) > 1e-6:
            y = flat / np.linalg.norm(flat)
            break
    x = np.cross(y, z)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z])
    out[:3, 3] = -out[:3, :3] @ origin
    return out


def first_c2w(pred) -> np.ndarray:
    return np.eye(4) if pred.extrinsics is None else affine_inverse(np.asarray(pred.extrinsics, np.float64)[0])


def result_floor(pred):
    """``meta["floor"]`` of the result, else the floor found now (stored in ``meta``); a reason (str) if none."""
    meta = pred.meta if pred.meta is not None else {}
    floor = meta.get("floor")
    if isinstance(floor, dict) and "normal" in floor:
        return floor
    if meta.get("floor_note"):
        return meta["floor_note"]
    found = find_floor(pred)
    if isinstance(found, dict):
        meta["floor"] = found
    else:
        meta["floor_note"] = no_floor_note(found)
    pred.meta = meta
    return found if isinstance(found, dict) else meta["floor_note"]


def camera_height(floor: dict, pred) -> float:
    """The first camera's height above the floor, in the result's units."""
    return float(np.asarray(floor["normal"]) @ first_c2w(pred)[:3, 3] + floor["offset"])


def height_scale(height: float | None, floor) -> float:
    """The scale making the first camera ``height`` metres above the floor (1 when no height is given)."""
    if height is None:
        return 1.0
    if not (isinstance(height, (int, float)) and math.isfinite(height) and height > 0):
        raise BadInputError(f"camera height {height!r} must be a positive number of metres")
    if not isinstance(floor, dict):
        raise BadInputError(f"a camera height needs a floor, and {floor}: set the scale instead (--scale)")
    return float(height) / floor["height"]


def floor_world(pred):
    """(T world -> FLOOR frame, floor dict with ``height``) or (None, the note) when no floor is found."""
    floor = result_floor(pred)
    if not isinstance(floor, dict):
        return None, floor
    transform = floor_transform(floor["normal"], floor["offset"], first_c2w(pred))
    return transform, {**floor, "height": camera_height(floor, pred)}


def world_transform(pred, up_axis: str):
    """(T, floor or None, note or None) for an up axis id of ``options.UP_AXES``; FLOOR falls back to Z_UP."""
    floor, note = None, None
    if up_axis == "FLOOR":
        transform, found = floor_world(pred)
        if transform is not None:
            return transform, found, None
        note, up_axis = found, "Z_UP"
    w2c0 = affine_inverse(first_c2w(pred))
    basis = np.eye(4)
    if up_axis == "Z_UP":
        basis[:3, :3] = Z_UP_BASIS
    elif up_axis != "KEEP":
        raise BadInputError(f"unknown up axis {up_axis!r}; use Z_UP, KEEP or FLOOR")
    return basis @ w2c0, floor, note


def moved_floor(floor: dict, transform: np.ndarray, scale: float) -> dict:
    """A floor record expressed in the world ``x' = s (R x + t)``."""
    rot, t = transform[:3, :3], transform[:3, 3]
    normal = rot @ np.asarray(floor["normal"], np.float64)
    out = dict(floor)
    out["normal"] = [float(v) for v in normal]
    out["offset"] = float(scale * (floor["offset"] - normal @ t))
    pts = np.asarray(floor.get("points") or np.zeros((0, 3)), np.float64).reshape(-1, 3)
    out["points"] = np.round(scale * (pts @ rot.T + t), 6).tolist()
    if "height" in out:
        out["height"] = float(scale * out["height"])
    return out


def move_prediction(pred, up_axis: str | None, height: float | None = None, scale: float | None = None):
    """A copy of ``pred`` in another world (for exports): cameras, depth (scaled), the floor and the mesh.
    ``up_axis`` None keeps the result's world; returns (prediction, note or None)."""
    if up_axis is None and height is None and scale in (None, 1.0):
        return pred, None
    if up_axis is None:
        transform, floor, note = np.eye(4), None, None
        if height is not None:
            transform_f, floor = floor_world(pred)
            note = None if transform_f is not None else floor
    else:
        transform, floor, note = world_transform(pred, up_axis)
    s = height_scale(height, floor if floor is not None else note) if height is not None else float(scale or 1.0)
    out = copy.copy(pred)
    out.meta = dict(pred.meta or {})
    if pred.extrinsics is not None or pred.num_views == 1:
        w2c = to_4x4(np.asarray(pred.extrinsics, np.float64)) if pred.extrinsics is not None else np.eye(4)[None]
        w2c = w2c @ affine_inverse(transform)[None]
        w2c[:, :3, 3] *= s
        out.extrinsics = w2c[:, :3, :4].astype(np.float32)
    out.depth = (np.asarray(pred.depth, np.float32) * s).astype(np.float32)
    if isinstance(out.meta.get("floor"), dict):
        out.meta["floor"] = moved_floor(out.meta["floor"], transform, s)
    mesh = getattr(pred, "mesh", None)
    if mesh is not None:
        out.mesh = mesh.moved(transform, s)
    out.meta["world"] = {"up_axis": up_axis or "RESULT", "transform": transform.tolist(), "scale": s}
    if note:
        out.meta["world"]["note"] = note
    return out, note
