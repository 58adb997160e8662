"""Camera and point geometry in numpy (OpenCV axes: x right, y down, z forward).

Pixel convention used across the project: intrinsics are in *pixel-edge* coordinates (the
top-left corner of the image is (0, 0), so DA3's ``cx = W/2`` is the exact image centre) and
pixel ``(row i, col j)`` is sampled at its centre ``(j + 0.5, i + 0.5)``. The official DA3
unprojects at ``(j, i)`` instead, which puts every point half a pixel off its pixel (0.707 px
diagonally) when looked at through a camera built from the same K; we deliberately fix that.
"""

from __future__ import annotations

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
