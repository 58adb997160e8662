"""The dominant ground plane of a result, found robustly (issue 27).

:func:`find_floor` samples confident, non-sky points of (a subsample of) the views, fits planes with
RANSAC and refines the best with least squares on its inliers. A plane is a floor candidate when every
camera centre lies above it and its normal is within :data:`MAX_TILT_DEG` of the cameras' mean up
direction (OpenCV -y); the candidate with the largest support wins. The result's world and units are
kept: ``normal . x + offset = 0`` on the floor, ``normal . x + offset > 0`` above it (where the cameras are).
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import affine_inverse, to_4x4, unproject_depth

MAX_TILT_DEG = 35.0  # the floor's normal is within this of the cameras' mean up
MAX_VIEWS = 48  # views sampled for the fit (a 1,000-frame shot costs as much as 48 frames)
MAX_POINTS = 60_000  # points over all sampled views
RANSAC_POINTS = 6_000  # points each hypothesis is scored on
RANSAC_ITERATIONS = 400
INLIER_FRACTION = 0.01  # inlier distance: 1 % of the median camera-to-point distance
MIN_SHARE = 0.04  # a floor holds at least this share of the sampled points
MIN_POINTS = 60
DOMINANT = 3.0  # no floor when another plane holds this many times more points
MIN_SPREAD = 0.15  # the inliers' second principal extent over their first: a floor is an area, not a strip
STORED_POINTS = 400  # inlier points kept in meta["floor"]["points"] (extent of the shadow catcher, re-imports)


def sample_points(pred, conf_percentile: float = 40.0, seed: int = 0):
    """(points (M,3) float64 world, camera centres (N,3), camera up directions (N,3)) or a reason (str)."""
    depth = np.asarray(pred.depth)
    n, h, w = depth.shape
    if pred.extrinsics is None and n > 1:
        return "the result has no camera poses"
    w2c = np.eye(4)[None].repeat(n, 0) if pred.extrinsics is None else to_4x4(np.asarray(pred.extrinsics, np.float64))
    if pred.intrinsics is None:
        return "the result has no camera intrinsics"
    k = np.asarray(pred.intrinsics, np.float64).reshape(n, 3, 3)
    c2w = affine_inverse(w2c)
    views = np.unique(np.linspace(0, n - 1, min(n, MAX_VIEWS)).round().astype(int))
    stride = max(1, int(math.sqrt(len(views) * h * w / MAX_POINTS)))
    parts = []
    conf_cut = None
    if pred.conf is not None:
        sample = np.asarray(pred.conf)[views, ::stride, ::stride]
        conf_cut = float(np.percentile(sample[np.isfinite(sample)], conf_percentile)) if np.isfinite(sample).any() else None
    for i in views:
        d = np.asarray(depth[i], np.float64)[::stride, ::stride]
        ok = np.isfinite(d) & (d > 0)
        if pred.sky is not None:
            ok &= ~np.asarray(pred.sky[i], bool)[::stride, ::stride]
        if conf_cut is not None:
            ok &= np.asarray(pred.conf[i])[::stride, ::stride] >= conf_cut
        if not ok.any():
            continue
        ks = k[i].copy()
        ks[:2] /= stride  # the strided grid's intrinsics (pixel centres stay centres)
        pts = unproject_depth(d, ks[None], w2c[i][None])[0][ok]
        parts.append(pts)
    if not parts:
        return "no confident, non-sky points"
    points = np.concatenate(parts)
    return points, c2w[:, :3, 3], -c2w[:, :3, 1]


def _hypotheses(pts: np.ndarray, rng, iterations: int):
    """Planes (normals (I,3), offsets (I,)) through random point triples; degenerate triples dropped."""
    idx = rng.integers(0, len(pts), size=(iterations, 3))
    a, b, c = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normal = np.cross(b - a, c - a)
    norm = np.linalg.norm(normal, axis=1)
    keep = norm > 1e-12
    normal = normal[keep] / norm[keep, None]
    return normal, -np.einsum("ij,ij->i", normal, a[keep])


def _orient(normal, offset, centres):
    """Flip each plane so the cameras' mean centre is on its positive side."""
    side = normal @ centres.mean(axis=0) + offset
    sign = np.where(side < 0, -1.0, 1.0)
    return normal * sign[:, None], offset * sign


def _valid(normal, offset, centres, up, margin):
    """Planes every camera centre is above (by ``margin``) whose normal is near the mean up."""
    above = (centres @ normal.T + offset[None]).min(axis=0) > margin
    cos_tilt = normal @ up
    return above & (cos_tilt >= math.cos(math.radians(MAX_TILT_DEG)))


def _refine(points, normal, offset, threshold, iterations: int = 3):
    """Least-squares plane (SVD) on the inliers, repeated; returns (normal, offset, inlier mask)."""
    inliers = np.abs(points @ normal + offset) < threshold
    for _ in range(iterations):
        if inliers.sum() < 3:
            break
        sel = points[inliers]
        centre = sel.mean(axis=0)
        _, _, vt = np.linalg.svd(sel - centre, full_matrices=False)
        n_new = vt[2] * (1.0 if vt[2] @ normal >= 0 else -1.0)
        normal, offset = n_new, -float(n_new @ centre)
        inliers = np.abs(points @ normal + offset) < threshold
    return normal, offset, inliers


def find_floor(pred, conf_percentile: float = 40.0, seed: int = 0):
    """The floor of ``pred`` as a dict (see :func:`floor_record`), or a one-line reason (str) when there is none."""
    sampled = sample_points(pred, conf_percentile, seed)
    if isinstance(sampled, str):
        return sampled
    points, centres, ups = sampled
    if len(points) < MIN_POINTS:
        return f"only {len(points)} confident points"
    up = ups.mean(axis=0)
    if np.linalg.norm(up) < 1e-9:
        return "the cameras share no up direction"
    up /= np.linalg.norm(up)
    rng = np.random.default_rng(seed)
    scale = float(np.median(np.linalg.norm(points - centres.mean(axis=0), axis=1)))
    threshold = INLIER_FRACTION * scale
    pick = points if len(points) <= RANSAC_POINTS else points[rng.choice(len(points), RANSAC_POINTS, replace=False)]
    normal, offset = _hypotheses(pick, rng, RANSAC_ITERATIONS)
    normal, offset = _orient(normal, offset, centres)
    valid = _valid(normal, offset, centres, up, threshold)
    if not valid.any():
        return f"no plane below every camera within {MAX_TILT_DEG:g} degrees of their up direction"
    support = np.zeros(len(normal), np.int64)
    for start in range(0, len(normal), 64):  # (64, P) distance blocks: bounded memory
        dist = np.abs(pick @ normal[start:start + 64].T + offset[None, start:start + 64])
        support[start:start + 64] = (dist < threshold).sum(axis=0)
    if support.max() > DOMINANT * support[valid].max():  # e.g. the ground seen from above: a level plane is a slice
        return "the dominant plane is not level with the cameras (an aerial shot or a wall)"
    normal, offset, support = normal[valid], offset[valid], support[valid]
    best = int(np.argmax(support))
    n_fit, d_fit, inliers = _refine(points, normal[best], offset[best], threshold)
    share = float(inliers.mean())
    if inliers.sum() < MIN_POINTS or share < MIN_SHARE:
        return f"the best level plane holds only {share:.0%} of the confident points"
    spread = np.linalg.svd(points[inliers] - points[inliers].mean(axis=0), compute_uv=False)
    if spread[1] < MIN_SPREAD * spread[0]:
        return "the level points form a strip, not a floor"
    if not _valid(n_fit[None], np.array([d_fit]), centres, up, threshold)[0]:
        return "the refined plane no longer lies below every camera"
    return floor_record(n_fit, d_fit, points[inliers], share, rng)


def floor_record(normal, offset, inlier_points, share: float, rng=None) -> dict:
    """``meta["floor"]``: normal, offset (world units), inlier share, RMS distance, a sample of the inliers."""
    rng = rng or np.random.default_rng(0)
    dist = inlier_points @ normal + offset
    keep = inlier_points if len(inlier_points) <= STORED_POINTS else \
        inlier_points[rng.choice(len(inlier_points), STORED_POINTS, replace=False)]
    return {"normal": [float(v) for v in normal], "offset": float(offset), "inlier_share": float(share),
            "rms": float(np.sqrt(np.mean(dist ** 2))), "points": np.round(keep, 6).tolist()}


def fit_plane(points) -> tuple[np.ndarray, float]:
    """The least-squares plane through three or more points: (unit normal, offset); ValueError if degenerate."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    if len(pts) < 3:
        raise ValueError(f"{len(pts)} points: a plane needs three or more")
    centre = pts.mean(axis=0)
    _, sv, vt = np.linalg.svd(pts - centre, full_matrices=False)
    if sv[1] < 1e-9 * max(1.0, sv[0]):
        raise ValueError("the points lie on one line: a plane needs points spread in two directions")
    return vt[2], -float(vt[2] @ centre)


def no_floor_note(reason: str) -> str:
    return f"no floor found: {reason}; kept the first camera's axes"
