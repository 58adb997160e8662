"""OpenCV (DA3) to Blender conventions, in numpy only (no bpy here, so it is testable anywhere).

================  ==========================================================================
topic             convention
================  ==========================================================================
DA3 input         ``extrinsics`` world-to-camera ``[R|t]``, OpenCV axes (x right, y down,
                  z forward); ``intrinsics`` K in pixel-*edge* coordinates
pixels            pixel (row i, col j) is the point at (j + 0.5, i + 0.5) (``geometry``)
origin            the reference camera = the first view: its camera frame is the world; a result
                  aligned to known poses keeps their world instead (``importer.in_input_world``)
up axis           ``Z_UP``: ``C = Rx(-90)``, ``(x, y, z) -> (x, z, -y)``: Blender Z up, the first
                  camera at the origin looking along +Y; ``KEEP``: ``C = I`` (the first camera's
                  OpenCV frame as is: y down, z forward)
scale             ``s`` multiplies points and camera *translations*; camera objects are never
                  scaled (projections do not change)
camera object     ``M = [C R' F | s C t']`` with ``[R'|t'] = w2c_0 . inv(w2c_i)`` (camera-to-
                  reference) and ``F = diag(1, -1, -1)`` (Blender cameras look down -Z, +Y up)
intrinsics        ``sensor_fit`` HORIZONTAL, ``sensor_width`` 36, ``lens = fx 36 / W``,
                  ``shift_x = (W/2 - cx) / W``, ``shift_y = r (cy - H/2) / W``, ``r = fx / fy``,
                  pixel aspect ``(1, r)`` if r >= 1 else ``(1/r, 1)``; W, H, K of the *original*
                  image (the footage), so a render at W x H lines up with it
================  ==========================================================================
"""

from __future__ import annotations

import math

import numpy as np

from ..da3_blender.geometry import affine_inverse, rotation_to_quaternion, to_4x4

SENSOR_WIDTH = 36.0
FLIP = np.diag([1.0, -1.0, -1.0])
UP_AXES = {
    "Z_UP": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),  # Rx(-90 deg)
    "KEEP": np.eye(3),
}


def up_matrix(up_axis: str) -> np.ndarray:
    """The world change of basis ``C`` (3x3) for an up-axis option."""
    try:
        return UP_AXES[up_axis].copy()
    except KeyError:
        raise ValueError(f"unknown up axis {up_axis!r}; use one of {sorted(UP_AXES)}") from None


def relative_extrinsics(extrinsics: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """World-to-camera (N,4,4) re-expressed with the reference camera's frame as the world."""
    return to_4x4(extrinsics) @ affine_inverse(reference)[None]


def pixel_to_world(k: np.ndarray, w2c_rel: np.ndarray, up: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(M, b)`` with ``world = depth * M @ (u, v, 1) + b`` for one view: K^-1, camera-to-reference,
    the up axis and the scale folded into one 3x3 (pixel-edge coordinates: centres at +0.5).
    Batched too: K (N,3,3) and w2c (N,4,4) give M (N,3,3) and b (N,3), in one inversion each."""
    c2w = affine_inverse(w2c_rel)
    up = np.asarray(up, dtype=np.float64)
    m = scale * (up @ c2w[..., :3, :3] @ np.linalg.inv(np.asarray(k, dtype=np.float64)))
    return m, scale * (c2w[..., :3, 3] @ up.T)


def lift(u: np.ndarray, v: np.ndarray, depth: np.ndarray, m: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Blender-world points (..., 3) float32 of pixel coordinates ``u``, ``v`` at z-``depth``
    (broadcast together: a row of ``u`` and a column of ``v`` lift a whole grid)."""
    d = np.asarray(depth, np.float32)
    cam = np.empty(d.shape + (3,), np.float32)  # (u d, v d, d): the pixel's ray scaled by its depth
    np.multiply(np.asarray(u, np.float32), d, out=cam[..., 0])
    np.multiply(np.asarray(v, np.float32), d, out=cam[..., 1])
    cam[..., 2] = d
    out = cam.reshape(-1, 3) @ m.T.astype(np.float32)
    out += b.astype(np.float32)
    return out.reshape(cam.shape)


def camera_matrices(w2c_rel: np.ndarray, up: np.ndarray, scale: float) -> np.ndarray:
    """Reference-frame world-to-camera (N,3|4,4) -> Blender camera ``matrix_world`` (N,4,4)."""
    c2w = affine_inverse(w2c_rel)
    out = np.zeros_like(c2w)
    out[:, :3, :3] = up @ c2w[:, :3, :3] @ FLIP
    out[:, :3, 3] = scale * (c2w[:, :3, 3] @ up.T)
    out[:, 3, 3] = 1.0
    return out


def matrix_to_w2c(matrix_world: np.ndarray, up: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of :func:`camera_matrices` for one Blender camera matrix (scale in it is ignored)."""
    m = np.asarray(matrix_world, dtype=np.float64)
    rot = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0, keepdims=True)
    c2w = np.eye(4)
    c2w[:3, :3] = up.T @ rot @ FLIP
    c2w[:3, 3] = (up.T @ m[:3, 3]) / scale
    return affine_inverse(c2w)


def intrinsics_to_blender(k: np.ndarray, width, height) -> dict[str, np.ndarray]:
    """K (N,3,3) in pixel-edge coordinates of a W x H image -> Blender camera values (arrays (N,))."""
    k = np.asarray(k, dtype=np.float64).reshape(-1, 3, 3)
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    fx, fy, cx, cy = k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]
    r = fx / fy
    return {
        "lens": fx * SENSOR_WIDTH / w,
        "shift_x": (w / 2 - cx) / w,
        "shift_y": r * (cy - h / 2) / w,
        "ratio": r,
        "pixel_aspect_x": np.where(r >= 1, 1.0, 1.0 / r),
        "pixel_aspect_y": np.where(r >= 1, r, 1.0),
    }


def blender_to_intrinsics(lens, sensor_width, sensor_height, sensor_fit, shift_x, shift_y, width, height,
                          pixel_aspect_x=1.0, pixel_aspect_y=1.0) -> np.ndarray:
    """Blender camera + render settings -> K (3x3, pixel-edge coordinates of the W x H render).

    Follows ``BKE_camera_params_compute_viewplane``: all sensor fits, shifts and pixel aspects.
    """
    ycor = pixel_aspect_y / pixel_aspect_x
    horizontal = sensor_fit == "HORIZONTAL" or (sensor_fit == "AUTO" and pixel_aspect_x * width >= pixel_aspect_y * height)
    sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width
    viewfac = width if horizontal else ycor * height
    fx = lens * viewfac / sensor
    k = np.eye(3)
    k[0, 0] = fx
    k[1, 1] = fx / ycor
    k[0, 2] = width / 2 - shift_x * viewfac
    k[1, 2] = height / 2 + shift_y * viewfac / ycor
    return k


def fallback_intrinsics(n: int, width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Centred pinhole K (N,3,3) with a horizontal field of view, for results without intrinsics."""
    f = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
    k = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    return np.tile(k, (n, 1, 1))


def rotations_to_quaternions(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (N,3,3) -> unit quaternions (N,4) w,x,y,z, signs flipped for continuity."""
    q = rotation_to_quaternion(rot)
    for i in range(1, len(q)):  # hemisphere continuity (cheap: N is the number of frames)
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in 0..1 -> scene-linear (attribute colours are linear)."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


SRGB8_TO_LINEAR = srgb_to_linear(np.arange(256) / 255.0)  # look-up table for uint8 colours
