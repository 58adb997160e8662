"""Depth colouring as the official ``visualize_depth``, without matplotlib.

Inverse depth between its 2nd and 98th percentiles is mapped to matplotlib's "Spectral" colour
map, near = red (first anchor), far = blue-violet (last anchor). The map is rebuilt from
ColorBrewer's 11 Spectral anchors exactly as matplotlib does it: a 256-entry LUT linearly
interpolated between evenly spaced anchors, looked up at ``int(t * 256)`` (t = 1 -> 255),
then ``x 255`` truncated to uint8. Arithmetic follows the official float32 path.
"""

from __future__ import annotations

import numpy as np

# ColorBrewer "Spectral", 11 classes (Cynthia Brewer, colorbrewer2.org), as 8-bit RGB.
SPECTRAL_ANCHORS = np.array(
    [
        [158, 1, 66],
        [213, 62, 79],
        [244, 109, 67],
        [253, 174, 97],
        [254, 224, 139],
        [255, 255, 191],
        [230, 245, 152],
        [171, 221, 164],
        [102, 194, 165],
        [50, 136, 189],
        [94, 79, 162],
    ],
    dtype=np.float64,
)
LUT_SIZE = 256


def spectral_lut() -> np.ndarray:
    """(256, 3) float64 in [0, 1]: entry k is the map at k / 255."""
    anchors = SPECTRAL_ANCHORS / 255.0
    xs = np.linspace(0.0, 1.0, len(anchors))
    at = np.linspace(0.0, 1.0, LUT_SIZE)
    return np.clip(np.stack([np.interp(at, xs, anchors[:, c]) for c in range(3)], axis=-1), 0.0, 1.0)


_LUT = spectral_lut()


def apply_spectral(t: np.ndarray) -> np.ndarray:
    """Colour t in [0, 1] (any shape, float) -> (..., 3) uint8; NaN -> black (matplotlib's "bad")."""
    t = np.asarray(t)
    x = t * t.dtype.type(LUT_SIZE) if t.dtype.kind == "f" else t.astype(np.float64) * LUT_SIZE
    bad = np.isnan(x)
    x = np.where(x == LUT_SIZE, LUT_SIZE - 1, x)
    idx = np.clip(np.where(bad, 0, x), 0, LUT_SIZE - 1).astype(np.intp)
    rgb = (_LUT[idx] * 255.0).astype(np.uint8)
    rgb[bad] = 0
    return rgb


def colorize_depth(depth: np.ndarray, percentile: float = 2.0) -> np.ndarray:
    """(H,W) depth -> (H,W,3) uint8 Spectral picture of inverse depth (official ``visualize_depth``).

    Pixels with depth <= 0 are not inverted: their raw value clips to the far end (last colour),
    as in the official code. NaN depth is black.
    """
    inv = np.array(depth, dtype=np.float32, copy=True)
    valid = inv > 0
    inv[valid] = 1.0 / inv[valid]
    if valid.sum() <= 10:
        lo = hi = 0.0
    else:
        lo = float(np.percentile(inv[valid], percentile))
        hi = float(np.percentile(inv[valid], 100 - percentile))
    if lo == hi:
        lo, hi = lo - 1e-6, hi + 1e-6
    lo32, span32 = np.float32(lo), np.float32(hi - lo)
    t = np.float32(1.0) - np.clip((inv - lo32) / span32, 0, 1)
    return apply_spectral(t)
