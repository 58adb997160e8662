"""Camera and point geometry in numpy (OpenCV axes: x right, y down, z forward).

Pixel convention used across the project: intrinsics are in *pixel-edge* coordinates (the
top-left corner of the image is (0, 0), so DA3's ``cx = W/2`` is the exact image centre) and
pixel ``(row i, col j)`` is sampled at its centre ``(j + 0.5, i + 0.5)``. The official DA3
unprojects at ``(j, i)`` instead, which puts every point half a pixel off its pixel (0.707 px
diagonally) when looked at through a camera built from the same K; we deliberately fix that.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np


def to_4x4(mat: np.ndarray) -> np.ndarray:
    """(..., 3, 4) or (..., 4, 4) -> (..., 4, 4) homogeneous."""
    mat = np.asarray(mat)
    if mat.shape[-2:] == (4, 4):
        return mat.astype(np.float64, copy=True)
    out = np.zeros(mat.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :4] = mat
    out[..., 3, 3] = 1.0
    return out


def affine_inverse(mat: np.ndarray) -> np.ndarray:
    """Inverse of rigid/similarity transforms (..., 3|4, 4) -> (..., 4, 4), via [R^-1 | -R^-1 t]."""
    m = to_4x4(mat)
    rot_inv = np.linalg.inv(m[..., :3, :3])
    out = np.zeros_like(m)
    out[..., :3, :3] = rot_inv
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_inv, m[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z) with w >= 0."""
    rot = np.asarray(rot, dtype=np.float64)
    m00, m11, m22 = rot[..., 0, 0], rot[..., 1, 1], rot[..., 2, 2]
    q = np.stack([
        np.sqrt(np.maximum(0.0, 1 + m00 + m11 + m22)),
        np.sqrt(np.maximum(0.0, 1 + m00 - m11 - m22)),
        np.sqrt(np.maximum(0.0, 1 - m00 + m11 - m22)),
        np.sqrt(np.maximum(0.0, 1 - m00 - m11 + m22)),
    ], axis=-1) / 2.0
    q[..., 1] = np.copysign(q[..., 1], rot[..., 2, 1] - rot[..., 1, 2])
    q[..., 2] = np.copysign(q[..., 2], rot[..., 0, 2] - rot[..., 2, 0])
    q[..., 3] = np.copysign(q[..., 3], rot[..., 1, 0] - rot[..., 0, 1])
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z), any norm -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (u = column + 0.5, v = row + 0.5), each (H, W) float64."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64) + 0.5, np.arange(width, dtype=np.float64) + 0.5, indexing="ij")
    return u, v


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray | None = None) -> np.ndarray:
    """Lift z-depth maps to 3D at pixel centres.

    depth (N,H,W) or (H,W); intrinsics (N|1,3,3); extrinsics (N,3|4,4) world-to-camera or None.
    Returns (N,H,W,3) float64 points in world (or camera, without extrinsics) coordinates.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim == 2:
        depth = depth[None]
    n, h, w = depth.shape
    k = np.broadcast_to(np.asarray(intrinsics, dtype=np.float64).reshape(-1, 3, 3), (n, 3, 3))
    u, v = pixel_grid(h, w)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H,W,3)
    rays = np.einsum("nij,hwj->nhwi", np.linalg.inv(k), pix)
    cam = rays * depth[..., None]
    if extrinsics is None:
        return cam
    c2w = affine_inverse(np.asarray(extrinsics).reshape(n, *np.asarray(extrinsics).shape[-2:]))
    return np.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]


def project_points(points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (...,3) through one camera. Returns (uv (...,2) pixel-edge coords, z (...))."""
    w2c = to_4x4(extrinsics)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[..., 2]
    proj = cam @ np.asarray(intrinsics, dtype=np.float64).T
    return proj[..., :2] / proj[..., 2:3], z


def camera_centers(extrinsics: np.ndarray) -> np.ndarray:
    """World positions of cameras given (N,3|4,4) world-to-camera matrices."""
    return affine_inverse(extrinsics)[:, :3, 3]


# --------------------------------------------------------------------------------------------
# Similarity alignment of camera trajectories (Umeyama, as in evo; spec §7.2)
# --------------------------------------------------------------------------------------------


class Sim3Fit(NamedTuple):
    """``dst ≈ scale * rotation @ src + translation``; ``inliers`` marks the points of the final fit."""

    scale: float
    rotation: np.ndarray  # (3,3)
    translation: np.ndarray  # (3,)
    inliers: np.ndarray  # (N,) bool


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector ``a`` onto unit vector ``b``."""
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(np.dot(a, b))
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        # half turn about any axis perpendicular to a
        perp = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        perp /= np.linalg.norm(perp)
        return 2.0 * np.outer(perp, perp) - np.eye(3)
    k = axis / sin
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * kx + (1.0 - cos) * kx @ kx


def _nearest_rotation(mat: np.ndarray) -> np.ndarray:
    """Closest proper rotation (Frobenius) to a 3x3 matrix."""
    u, _, vt = np.linalg.svd(mat)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    return u @ d @ vt


def _umeyama(src: np.ndarray, dst: np.ndarray, fallback_rotation: np.ndarray | None = None,
             weights: np.ndarray | None = None, with_scale: bool = True):
    """Umeyama Sim3; returns (s, R, t, ok) with ok=False when the rotation was not determined.

    ``weights`` (N,) >= 0 make it the weighted least-squares fit; ``with_scale=False`` fixes s = 1 (SE3).
    """
    if weights is None:
        mu_x, mu_y = src.mean(axis=0), dst.mean(axis=0)
        xc, yc = src - mu_x, dst - mu_y
        var_x = float(np.mean(np.sum(xc * xc, axis=1)))
        cov = yc.T @ xc / len(src)
    else:
        w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        mu_x, mu_y = w @ src, w @ dst
        xc, yc = src - mu_x, dst - mu_y
        var_x = float(w @ np.sum(xc * xc, axis=1))
        cov = (yc * w[:, None]).T @ xc
    u, d, vt = np.linalg.svd(cov)
    eps = np.finfo(np.float64).eps
    ok = np.count_nonzero(d > max(eps, 1e-12 * d[0])) >= 2  # evo needs rank >= 2
    if ok:
        flip = np.diag([1.0, 1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
        rot = u @ flip @ vt
        scale = float(np.trace(np.diag(d) @ flip) / var_x)
    else:
        # 1 point, 2 points or collinear points: the rotation about the line is free. The scale is
        # still the least-squares one (2 points: the ratio of their distances), or 1 if unknown.
        if fallback_rotation is not None:
            rot = np.asarray(fallback_rotation, dtype=np.float64)
        elif d[0] > eps:
            rot = _rotation_between(vt[0], u[:, 0])
        else:
            rot = np.eye(3)
        scale = float(d[0] / var_x) if var_x > eps and d[0] > 1e-12 * var_x else 1.0
    if not with_scale:
        scale = 1.0
    return scale, rot, mu_y - scale * rot @ mu_x, ok


def umeyama_sim3(
    src: np.ndarray, dst: np.ndarray, fallback_rotation: np.ndarray | None = None,
    weights: np.ndarray | None = None, with_scale: bool = True,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``(s, R, t)`` with ``dst ≈ s * R @ src + t`` for (N,3) point sets (Umeyama 1991, as evo).

    Reflections are excluded (``diag(1, 1, -1)`` when ``det(U) det(V) < 0``). Where evo raises (fewer
    than two singular values of the covariance above eps: 1 or 2 points, or collinear points), this
    does not: ``R`` is ``fallback_rotation`` if given, else the smallest rotation taking the source line
    onto the target line (identity for a single point); ``s`` is the least-squares scale for that
    line (for 2 points, the ratio of the distances between them), or 1 when it cannot be known
    (1 point, or all points coincide); ``t = mean(dst) - s R mean(src)``. ``weights`` (N,) make every
    mean and the covariance weighted (weighted least squares); ``with_scale=False`` gives the rigid
    (SE3) fit, s = 1.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if len(src) != len(dst) or len(src) == 0:
        raise ValueError(f"umeyama_sim3 needs two equally long non-empty point sets, got {len(src)} and {len(dst)}")
    if weights is not None and (len(weights) != len(src) or not np.sum(weights) > 0):
        raise ValueError("umeyama_sim3 weights must be one non-negative number per point, not all zero")
    scale, rot, trans, _ = _umeyama(src, dst, fallback_rotation, weights, with_scale)
    return scale, rot, trans


def _median_nn_distance(reference: np.ndarray, points: np.ndarray) -> float:
    """Median over ``points`` of the distance to the nearest ``reference`` point."""
    nearest = [
        np.linalg.norm(chunk[:, None, :] - reference[None, :, :], axis=-1).min(axis=1)
        for chunk in np.array_split(points, max(1, len(points) // 1024))
    ]
    return float(np.median(np.concatenate(nearest)))


def align_to_input_poses(
    pred_extrinsics: np.ndarray, input_extrinsics: np.ndarray, ransac_min_views: int = 10, seed: int = 42
) -> Sim3Fit:
    """Sim3 taking the user's cameras into the prediction's frame (spec §7.2, official ``align_poses_umeyama``).

    pred_extrinsics (N,3|4,4) and input_extrinsics (N,3|4,4) are w2c. Only camera centres are fitted:
    ``pred_centre ≈ s R input_centre + t``. With N >= ``ransac_min_views`` a RANSAC as in the official
    code is run (``default_rng(seed)``, 10 draws of ``max(3, (N+1)//2)`` views, inlier threshold = the
    median nearest-neighbour distance after the full fit, best = most inliers then lowest mean error,
    refit on >= 3 inliers). When the centres leave the rotation undetermined (1-2 views, collinear),
    the official code raises; here the rotation is the average of ``R_pred_c2w @ R_input_c2w^T`` over
    views (so a single view's camera is matched exactly, with s = 1) and the scale is as in
    :func:`umeyama_sim3`.
    """
    pred_c2w = affine_inverse(pred_extrinsics)
    in_c2w = affine_inverse(input_extrinsics)
    if len(pred_c2w) != len(in_c2w) or len(pred_c2w) == 0:
        raise ValueError(f"need as many input poses as predicted views, got {len(in_c2w)} and {len(pred_c2w)}")
    ref, est = pred_c2w[:, :3, 3], in_c2w[:, :3, 3]
    orient = _nearest_rotation(np.einsum("nij,nkj->ik", pred_c2w[:, :3, :3], in_c2w[:, :3, :3]))
    n = len(ref)
    scale, rot, trans, _ = _umeyama(est, ref, orient)
    if n < ransac_min_views:
        return Sim3Fit(scale, rot, trans, np.ones(n, dtype=bool))

    rng = np.random.default_rng(seed)
    thresh = _median_nn_distance(ref, scale * est @ rot.T + trans)
    best, best_inliers, best_score = (scale, rot, trans), None, (-1, np.inf)
    for _ in range(10):
        sample = rng.choice(np.arange(n), size=max(3, (n + 1) // 2), replace=False)
        s, r, t, ok = _umeyama(est[sample], ref[sample])
        if not ok:  # the official (evo) raises here and skips the draw
            continue
        errs = np.linalg.norm(s * est @ r.T + t - ref, axis=1)
        inliers = errs <= thresh
        k = int(inliers.sum())
        mean_err = float(errs[inliers].mean()) if k else np.inf
        if k > best_score[0] or (k == best_score[0] and mean_err < best_score[1]):
            best, best_inliers, best_score = (s, r, t), inliers, (k, mean_err)
    if best_inliers is None:
        return Sim3Fit(scale, rot, trans, np.ones(n, dtype=bool))
    if best_inliers.sum() >= 3:
        best = _umeyama(est[best_inliers], ref[best_inliers], orient)[:3]
    return Sim3Fit(best[0], best[1], best[2], best_inliers)


def apply_sim3_to_extrinsics(extrinsics: np.ndarray, fit: Sim3Fit | tuple) -> np.ndarray:
    """Map w2c cameras (N,3|4,4) through ``x -> s R x + t`` of their world; returns rigid (N,3,4) w2c."""
    scale, rot, trans = fit[:3]
    c2w = affine_inverse(extrinsics)
    out = np.zeros_like(c2w)
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * c2w[:, :3, 3] @ rot.T + trans
    out[:, 3, 3] = 1.0
    return affine_inverse(out)[:, :3, :]


def align_prediction_to_input_poses(
    prediction: Mapping[str, Any],
    input_extrinsics: np.ndarray,
    input_intrinsics: np.ndarray | None = None,
    align_to_input_ext_scale: bool = True,
    ransac_min_views: int = 10,
    seed: int = 42,
) -> dict[str, Any]:
    """Official ``_align_to_input_extrinsics_intrinsics`` (spec §7.2) on a dict with ``depth``, ``extrinsics``.

    Returns a new dict (same other keys) plus ``"sim3"`` (:class:`Sim3Fit`). ``input_extrinsics`` are
    the user's original (un-normalised) w2c poses. ``intrinsics`` become ``input_intrinsics`` (processed
    pixels) when given. With ``align_to_input_ext_scale`` the cameras are the user's (N,3,4) and depth is
    divided by s (the user's units); otherwise depth stays in model units and the user's cameras are
    mapped into the prediction frame, returned as (N,3,4) w2c like every other path (the official
    returns (N,4,4) there: a quirk we do not keep).
    """
    out = dict(prediction)
    input_extrinsics = np.asarray(input_extrinsics)
    fit = align_to_input_poses(prediction["extrinsics"], input_extrinsics, ransac_min_views=ransac_min_views, seed=seed)
    dtype = np.asarray(prediction["extrinsics"]).dtype
    if input_intrinsics is not None:
        out["intrinsics"] = np.asarray(input_intrinsics, dtype=dtype)
    if align_to_input_ext_scale:
        out["extrinsics"] = input_extrinsics[:, :3, :].astype(dtype, copy=True)
        depth = np.asarray(prediction["depth"])
        out["depth"] = (depth / fit.scale).astype(depth.dtype, copy=False)
    else:
        out["extrinsics"] = apply_sim3_to_extrinsics(input_extrinsics, fit).astype(dtype)
    out["sim3"] = fit
    return out
