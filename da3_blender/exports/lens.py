"""The solve's lens model for compositing: distort, undistort, the overscan frame (numpy only).

Model (``meta["solve"]["distortion"]``, :mod:`da3_blender.solve.bundle`; COLMAP's ``RADIAL``, Blender's
polynomial k1, k2 with k3 = 0): a point whose pinhole (undistorted) normalised coordinates are
``n = ((u - cx) / fx, (v - cy) / fy)`` is seen at ``n_d = n (1 + k1 r^2 + k2 r^4)``, ``r = |n|``, i.e. at
pixel ``(fx n_d,x + cx, fy n_d,y + cy)``. Pixel coordinates are pixel-*edge* coordinates of the plate
(the top-left corner of the image is (0, 0); pixel (row i, col j) has its centre at (j + 0.5, i + 0.5)).

The undistorted frame has the plate's focal lengths and grows by ``pad_x``/``pad_y`` pixels on each side
(symmetric, so the frame's centre stays the plate's centre) until every plate pixel's undistorted
position lies inside it: ``K_undistorted`` = K with ``cx + pad_x``, ``cy + pad_y``. A lens that folds
inside the frame (``d r_d / d r <= 0``) is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError
from ..prediction import Prediction

MAX_OVERSCAN = 2.0  # the undistorted frame is at most this many times the plate on each axis
K_TOLERANCE = 1e-5  # relative: views whose K and size agree this well share one pair of maps


@dataclass
class Lens:
    k: np.ndarray  # (3,3) plate intrinsics, pixel edges
    k1: float
    k2: float
    width: int
    height: int
    pad_x: int = 0
    pad_y: int = 0

    @property
    def overscan_size(self) -> tuple[int, int]:
        return self.width + 2 * self.pad_x, self.height + 2 * self.pad_y

    @property
    def k_undistorted(self) -> np.ndarray:
        k = self.k.copy()
        k[0, 2] += self.pad_x
        k[1, 2] += self.pad_y
        return k

    @property
    def has_distortion(self) -> bool:
        return bool(self.k1 or self.k2)


def distortion_of(pred: Prediction) -> tuple[float, float] | None:
    """``(k1, k2)`` of the result's solve, or None when it estimated no distortion."""
    d = ((pred.meta or {}).get("solve") or {}).get("distortion")
    if not d:
        return None
    return float(d.get("k1", 0.0)), float(d.get("k2", 0.0))


def radial(r2: np.ndarray, k1: float, k2: float) -> np.ndarray:
    return 1.0 + k1 * r2 + k2 * r2 * r2


def distort_normalised(n: np.ndarray, k1: float, k2: float) -> np.ndarray:
    """Pinhole normalised coordinates (..., 2) -> distorted ones."""
    r2 = np.sum(n * n, axis=-1, keepdims=True)
    return n * radial(r2, k1, k2)


def undistort_normalised(nd: np.ndarray, k1: float, k2: float, iterations: int = 20) -> np.ndarray:
    """Distorted normalised coordinates (..., 2) -> pinhole ones (Newton on the radius; exact to ~1e-12)."""
    rd = np.sqrt(np.sum(nd * nd, axis=-1, keepdims=True))
    r = rd.copy()
    for _ in range(iterations):
        r2 = r * r
        f = r * radial(r2, k1, k2) - rd
        df = 1.0 + 3.0 * k1 * r2 + 5.0 * k2 * r2 * r2
        r = r - f / np.where(np.abs(df) < 1e-12, 1e-12, df)
    scale = np.where(rd > 0, r / np.where(rd > 0, rd, 1.0), 1.0)
    return nd * scale


def to_normalised(uv: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.stack([(uv[..., 0] - k[0, 2]) / k[0, 0], (uv[..., 1] - k[1, 2]) / k[1, 1]], axis=-1)


def to_pixels(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.stack([n[..., 0] * k[0, 0] + k[0, 2], n[..., 1] * k[1, 1] + k[1, 2]], axis=-1)


def distort_pixels(uv: np.ndarray, lens: Lens) -> np.ndarray:
    """Positions in the undistorted (overscan) frame -> where the plate sees them (plate pixels)."""
    return to_pixels(distort_normalised(to_normalised(uv, lens.k_undistorted), lens.k1, lens.k2), lens.k)


def undistort_pixels(uv: np.ndarray, lens: Lens) -> np.ndarray:
    """Plate pixel positions -> their positions in the undistorted (overscan) frame."""
    return to_pixels(undistort_normalised(to_normalised(uv, lens.k), lens.k1, lens.k2), lens.k_undistorted)


def _border(width: int, height: int) -> np.ndarray:
    """The plate's outline in pixel edges: every pixel corner along the four sides."""
    xs, ys = np.arange(width + 1, dtype=np.float64), np.arange(height + 1, dtype=np.float64)
    return np.concatenate([np.stack([xs, np.zeros_like(xs)], 1), np.stack([xs, np.full_like(xs, height)], 1),
                           np.stack([np.zeros_like(ys), ys], 1), np.stack([np.full_like(ys, width), ys], 1)])


def fit_overscan(lens: Lens) -> Lens:
    """``lens`` with the padding that keeps every plate pixel (see the module doc); one-line errors for a
    lens that folds inside the frame or needs an overscan over :data:`MAX_OVERSCAN`."""
    lens.pad_x = lens.pad_y = 0
    if not lens.has_distortion:
        return lens
    border = _border(lens.width, lens.height)
    rd_max = float(np.max(np.linalg.norm(to_normalised(border, lens.k), axis=-1)))
    r = np.linspace(0.0, 4.0 * rd_max + 1.0, 8192)
    rd = r * radial(r * r, lens.k1, lens.k2)
    folds = np.nonzero(np.diff(rd) <= 0)[0]
    reach = rd[folds[0]] if len(folds) else rd[-1]
    if reach <= rd_max:
        raise BadInputError(f"the lens distortion (k1 {lens.k1:.4g}, k2 {lens.k2:.4g}) folds inside the frame, so it "
                            "has no undistorted image; solve again with the fixed lens (no distortion)")
    und = undistort_pixels(border, lens)  # pads are 0 here: the plate's own frame
    pad_x = int(np.ceil(max(0.0, -und[:, 0].min(), und[:, 0].max() - lens.width) - 1e-9))
    pad_y = int(np.ceil(max(0.0, -und[:, 1].min(), und[:, 1].max() - lens.height) - 1e-9))
    if lens.width + 2 * pad_x > MAX_OVERSCAN * lens.width or lens.height + 2 * pad_y > MAX_OVERSCAN * lens.height:
        raise BadInputError(f"the lens distortion (k1 {lens.k1:.4g}, k2 {lens.k2:.4g}) would need an undistorted "
                            f"frame over {MAX_OVERSCAN:g}x the plate; solve again with the fixed lens")
    lens.pad_x, lens.pad_y = pad_x, pad_y
    return lens


def plate_lenses(pred: Prediction, fmt: str) -> list[Lens]:
    """Each view's lens at plate resolution (overscan fitted), or a one-line error for a result without
    intrinsics. Views of one lens share equal objects' values (see :func:`shared_lens`)."""
    if pred.intrinsics is None:
        raise BadInputError(f"the {fmt} export needs the cameras' intrinsics and this result has none (mono/metric "
                            "models predict no cameras); run a model that predicts cameras")
    k_orig = pred.original_intrinsics()
    dist = distortion_of(pred) or (0.0, 0.0)
    sizes = np.asarray(pred.orig_size, dtype=np.int64)
    return [fit_overscan(Lens(k_orig[i].copy(), dist[0], dist[1], int(sizes[i][0]), int(sizes[i][1])))
            for i in range(pred.num_views)]


def common_overscan(lenses: list[Lens]) -> list[Lens]:
    """One overscan for views of the same plate size (a sequence keeps one format through a zoom)."""
    for size in {(l.width, l.height) for l in lenses}:
        same = [l for l in lenses if (l.width, l.height) == size]
        px, py = max(l.pad_x for l in same), max(l.pad_y for l in same)
        for l in same:
            l.pad_x, l.pad_y = px, py
    return lenses


def shared_lens(lenses: list[Lens]) -> Lens | None:
    """The one lens every view has (K and size within :data:`K_TOLERANCE`), else None (a zoom)."""
    first = lenses[0]
    scale = max(first.width, first.height)
    for l in lenses[1:]:
        if (l.width, l.height) != (first.width, first.height) or np.max(np.abs(l.k - first.k)) > K_TOLERANCE * scale:
            return None
    return first
