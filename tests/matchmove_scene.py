"""An analytic set for the matchmove tests (issue 27): a 6 m square floor at z = 0 (Z up, metres), two
boxes and a sphere standing on it, seen by cameras tilted down and away from the origin. Depth is
ray-cast here (no renderer), so every test has exact geometry to compare with.

:func:`make_result` turns it into a DA3 result in an arbitrary world (the first camera's OpenCV frame,
scaled by ``units``): what a relative-depth model would give, up to its own scale.
"""

from __future__ import annotations

import numpy as np

from da3_blender.geometry import affine_inverse
from da3_blender.prediction import Prediction

HALF_FLOOR = 3.0
BOXES = (((-1.2, -0.6, 0.0), (-0.4, 0.4, 0.9)), ((0.5, 0.3, 0.0), (1.3, 1.1, 0.5)))
SPHERE = ((0.3, -1.0, 0.45), 0.45)
COLOURS = {0: (120, 110, 100), 1: (200, 60, 40), 2: (40, 160, 70), 3: (60, 90, 210)}  # floor, boxes, sphere


def look_at(position, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV: x right, y down, z forward) of a camera at ``position`` looking at ``target``."""
    pos, tgt = np.asarray(position, float), np.asarray(target, float)
    fwd = tgt - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, fwd], axis=1)
    c2w[:3, 3] = pos
    return affine_inverse(c2w)


def cameras(count: int = 6, radius: float = 3.6, height: float = 1.6, seed: int = 0) -> np.ndarray:
    """World-to-camera (N,4,4): an arc around the set, heights varying, looking slightly off the centre."""
    rng = np.random.default_rng(seed)
    out = []
    for i, angle in enumerate(np.linspace(-0.9, 0.9, count) - np.pi / 2):
        pos = (radius * np.cos(angle), radius * np.sin(angle), height + 0.3 * np.sin(1.7 * i))
        out.append(look_at(pos, (0.1 * rng.normal(), 0.1 * rng.normal(), 0.25)))
    return np.stack(out)


def intrinsics(width: int, height: int, hfov_deg: float = 65.0) -> np.ndarray:
    f = width / (2 * np.tan(np.radians(hfov_deg) / 2))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def _hit_box(origin, dirs, lo, hi):
    inv = 1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    t0, t1 = (np.asarray(lo) - origin) * inv, (np.asarray(hi) - origin) * inv
    near, far = np.minimum(t0, t1).max(axis=1), np.maximum(t0, t1).min(axis=1)
    return np.where((near <= far) & (near > 0), near, np.inf)


def _hit_sphere(origin, dirs):
    centre, r = SPHERE
    oc = origin - np.asarray(centre)
    b = dirs @ oc
    c = oc @ oc - r * r
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc > 0) & (t > 0), t, np.inf)


def ray_cast(w2c: np.ndarray, k: np.ndarray, width: int, height: int):
    """(z-depth (H,W), object id (H,W): -1 sky, 0 floor, 1..2 boxes, 3 sphere) of one camera."""
    c2w = affine_inverse(w2c)
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    dirs = cam @ c2w[:3, :3].T  # per unit of z-depth
    origin = c2w[:3, 3]
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    hits = []
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / unit[:, 2]
    p = origin + unit * t[:, None]
    on_floor = (t > 0) & (np.abs(p[:, 0]) <= HALF_FLOOR) & (np.abs(p[:, 1]) <= HALF_FLOOR)
    hits.append(np.where(on_floor, t, np.inf))
    hits += [_hit_box(origin, unit, lo, hi) for lo, hi in BOXES]
    hits.append(_hit_sphere(origin, unit))
    hits = np.stack(hits, axis=1)
    ids = np.argmin(hits, axis=1)
    dist = hits[np.arange(len(ids)), ids]
    sky = ~np.isfinite(dist)
    depth = dist / np.linalg.norm(dirs, axis=1)  # range -> z-depth
    depth[sky] = 200.0
    ids[sky] = -1
    return depth.reshape(height, width).astype(np.float32), ids.reshape(height, width)


def surface_distance(points: np.ndarray) -> np.ndarray:
    """Distance (m) of world points to the nearest true surface (floor square, box shells, sphere)."""
    p = np.asarray(points, np.float64)
    outside = np.maximum(np.abs(p[:, :2]) - HALF_FLOOR, 0)
    dists = [np.sqrt(p[:, 2] ** 2 + (outside ** 2).sum(1))]
    for lo, hi in BOXES:
        lo, hi = np.asarray(lo), np.asarray(hi)
        d_out = np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0), axis=1)
        d_in = np.minimum(p - lo, hi - p).min(axis=1)
        dists.append(np.where(d_out > 0, d_out, np.abs(d_in)))
    centre, r = SPHERE
    dists.append(np.abs(np.linalg.norm(p - np.asarray(centre), axis=1) - r))
    return np.min(dists, axis=0)


def make_result(count: int = 6, width: int = 160, height: int = 120, units: float = 0.4, seed: int = 0,
                w2c: np.ndarray | None = None):
    """(Prediction, true world-to-camera (N,4,4) in metres, object ids (N,H,W)). The result's world is the
    first camera's frame, ``units`` result units per metre (a relative model's arbitrary scale)."""
    w2c_true = cameras(count, seed=seed) if w2c is None else w2c
    k = intrinsics(width, height)
    depths, ids = zip(*(ray_cast(m, k, width, height) for m in w2c_true))
    depth, ids = np.stack(depths), np.stack(ids)
    rel = w2c_true @ affine_inverse(w2c_true[0])[None]  # the first camera's frame as the world
    rel[:, :3, 3] *= units
    images = np.zeros(ids.shape + (3,), np.uint8)
    for obj, colour in COLOURS.items():
        images[ids == obj] = colour
    sky = ids < 0
    conf = np.where(sky, 1.0, 2.0 + 0.1 * np.random.default_rng(seed).random(ids.shape)).astype(np.float32)
    pred = Prediction(depth=(depth * units).astype(np.float32), processed_images=images, conf=conf,
                      extrinsics=rel[:, :3, :4].astype(np.float32), intrinsics=np.tile(k, (count, 1, 1)).astype(np.float32),
                      sky=sky, is_metric=False)
    return pred, w2c_true, ids
