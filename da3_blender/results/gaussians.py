"""3D Gaussians predicted by DA3-GIANT / NESTED (``infer_gs``), as plain numpy arrays.

One Gaussian per processed pixel, in view-major then row-major pixel order (``M = N*H*W``), so a
per-pixel mask of the prediction (``depth``, borders) selects Gaussians directly. Coordinates are the
prediction's world frame (the frame of ``Prediction.extrinsics`` and ``depth``; see
``inference.run_inference``). Standard library + numpy only: Blender's Python reads these.

=============  ===============  ==========================================================
field          shape / dtype    meaning
=============  ===============  ==========================================================
``means``      (M,3) float32    centres
``scales``     (M,3) float32    standard deviations along the Gaussian's own axes (> 0)
``rotations``  (M,4) float32    unit quaternion (w, x, y, z) of the Gaussian's axes
``harmonics``  (M,3,9) float32  real SH colour coefficients (RGB x 9, degree 2); DC = [..., 0]
``opacities``  (M,) float32     in (0, 1)
=============  ===============  ==========================================================

In the result npz they are stored as ``gs_means``, ``gs_scales``, ... (:func:`to_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814  # Y_0^0: colour = 0.5 + SH_C0 * DC (the 3DGS convention)
FIELDS = {"means": (3,), "scales": (3,), "rotations": (4,), "harmonics": (3, 9), "opacities": ()}
PREFIX = "gs_"


@dataclass
class Gaussians:
    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    harmonics: np.ndarray
    opacities: np.ndarray

    def __post_init__(self):
        for name in FIELDS:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float32))

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def check(self, count: int | None = None) -> str | None:
        """None if the arrays are consistent (and hold ``count`` Gaussians), else what is wrong."""
        m = len(self) if count is None else count
        for name, tail in FIELDS.items():
            shape = getattr(self, name).shape
            if shape != (m, *tail) and not (name == "harmonics" and shape[:2] == (m, 3) and len(shape) == 3):
                return f"gaussian {name} has shape {shape}, expected {(m, *tail)}"
        return None

    def subset(self, index) -> "Gaussians":
        """The Gaussians selected by a boolean mask or an index array."""
        return Gaussians(**{name: getattr(self, name)[index] for name in FIELDS})

    def colors(self) -> np.ndarray:
        """(M,3) float32 RGB in [0, 1] from the DC coefficient (view-independent part)."""
        return np.clip(0.5 + SH_C0 * self.harmonics[:, :, 0], 0.0, 1.0).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {PREFIX + name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_arrays(cls, data) -> "Gaussians | None":
        """From a mapping with the ``gs_*`` keys (a result npz); None if it has none."""
        if not any(PREFIX + name in data for name in FIELDS):
            return None
        missing = [PREFIX + name for name in FIELDS if PREFIX + name not in data]
        if missing:
            raise ValueError(f"incomplete Gaussians: {', '.join(missing)} missing")
        return cls(**{name: np.asarray(data[PREFIX + name]) for name in FIELDS})


def per_pixel_mask(depth: np.ndarray, views_interval: int = 1, depth_percentile: float | None = 0.9,
                   prune_border: bool = True) -> np.ndarray:
    """(N,H,W) bool: which pixels' Gaussians the official ``gs_ply`` export keeps.

    Border: ``int(8/256 * H)`` rows and ``int(8/256 * W)`` columns dropped on every side (none when
    that is 0; the official code then keeps nothing, a bug we do not copy). Depth: per view,
    depth <= its ``depth_percentile`` quantile (linear interpolation, as ``torch.quantile``).
    Views: every ``views_interval``-th view from the first.
    """
    depth = np.asarray(depth, dtype=np.float32)
    n, h, w = depth.shape
    mask = np.zeros((n, h, w), dtype=bool)
    mask[::max(int(views_interval), 1)] = True
    if prune_border:
        th, tw = int(8 / 256 * h), int(8 / 256 * w)
        border = np.zeros((h, w), dtype=bool)
        border[th:h - th, tw:w - tw] = True
        mask &= border
    if depth_percentile is not None and depth_percentile < 1:
        limit = np.quantile(depth.reshape(n, -1), depth_percentile, axis=1).astype(np.float32)
        mask &= depth <= limit[:, None, None]
    return mask
