"""A small shot for the comp exports (tests/test_comp_*.py): a smooth camera path over scene frames
1001.., a plate K with an off-centre principal point, a radial lens, and Nuke-style sampling."""

from __future__ import annotations

import numpy as np

from da3_blender.prediction import Prediction

PLATE_W, PLATE_H = 240, 136
PROC_W, PROC_H = 60, 34
K1, K2 = -0.12, 0.03
FIRST = 1001


def rot(axis: str, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def shot(n: int = 5, distortion=(K1, K2), zoom: bool = False, size=(PLATE_W, PLATE_H)) -> Prediction:
    """``n`` views on frames 1001.. of a dolly with pan and tilt; plate K fx 210 (fy 212), centre off by (3.2, -2.1)."""
    w, h = size
    sx, sy = w / PROC_W, h / PROC_H
    p2o = np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1.0]])
    ext = np.zeros((n, 3, 4))
    k_orig = np.zeros((n, 3, 3))
    for i in range(n):
        c2w = rot("y", 8.0 * i) @ rot("x", -3.0 + 1.5 * i) @ rot("z", 0.7 * i)
        centre = np.array([0.3 * i, -0.05 * i, 0.2 * i * i / max(n, 1)])
        ext[i, :, :3] = c2w.T
        ext[i, :, 3] = -c2w.T @ centre
        f = 210.0 * (1.0 + (0.01 * i if zoom else 0.0)) * w / PLATE_W
        k_orig[i] = [[f, 0, w / 2 + 3.2], [0, f * 212 / 210, h / 2 - 2.1], [0, 0, 1]]
    rng = np.random.default_rng(0)
    meta = {"frame_numbers": "scene", "input_kind": "sequence",
            "video": {"kind": "sequence", "pattern": "/plates/shot.####.exr", "path": "/plates/shot.1001.exr",
                      "rate": [24000, 1001], "fps": 24000 / 1001, "frame_range": [FIRST, FIRST + n - 1],
                      "width": w, "height": h}}
    if distortion is not None:
        meta["solve"] = {"lens": "radial", "motion": "free", "rms_px": 0.4, "rms_px_before": 2.0, "tracks": 0,
                         "per_view_rms_px": [0.4] * n, "per_view_rms_px_before": [2.0] * n, "reason": None,
                         "distortion": {"model": "radial", "k1": distortion[0], "k2": distortion[1]}}
    return Prediction(
        depth=rng.uniform(2.0, 6.0, (n, PROC_H, PROC_W)).astype(np.float32),
        processed_images=rng.integers(0, 255, (n, PROC_H, PROC_W, 3), dtype=np.uint8),
        conf=rng.uniform(1.0, 3.0, (n, PROC_H, PROC_W)).astype(np.float32),
        extrinsics=ext.astype(np.float32),
        intrinsics=(np.linalg.inv(p2o) @ k_orig).astype(np.float32),
        orig_size=np.tile([w, h], (n, 1)),
        proc_to_orig=np.tile(p2o, (n, 1, 1)),
        frame_numbers=np.arange(FIRST, FIRST + n, dtype=np.int64),
        source_paths=[f"/plates/shot.{FIRST + i}.exr" for i in range(n)],
        meta=meta,
    )


def bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H, W, C) at pixel-edge positions ``xy`` (..., 2) as Nuke's STMap does (bilinear
    between pixel centres, edge pixels repeated)."""
    h, w = image.shape[:2]
    fx = np.clip(xy[..., 0] - 0.5, 0, w - 1)
    fy = np.clip(xy[..., 1] - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(fx).astype(int), max(w - 2, 0))
    y0 = np.minimum(np.floor(fy).astype(int), max(h - 2, 0))
    a, b = (fx - x0)[..., None], (fy - y0)[..., None]
    img = image.astype(np.float64)
    return ((1 - a) * (1 - b) * img[y0, x0] + a * (1 - b) * img[y0, x0 + 1]
            + (1 - a) * b * img[y0 + 1, x0] + a * b * img[y0 + 1, x0 + 1])
