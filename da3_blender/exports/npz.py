"""Official ``npz`` and ``mini_npz`` exports (same paths, keys and rounding as DA3).

Written synchronously and atomically (the official writes run in a background thread, so
``inference()`` could return before the file existed). Plain arrays only: loadable with
``np.load(..., allow_pickle=False)`` and by :func:`da3_blender.prediction.load_result`.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BadInputError
from ..prediction import Prediction
from ..files import open_atomic


def check_npz_input(pred: Prediction) -> None:
    if pred.processed_images is None:
        raise BadInputError("the npz export needs the processed images, which this prediction lacks; use mini_npz")


def _cameras_and_conf(pred: Prediction) -> dict[str, np.ndarray]:
    out = {}
    if pred.conf is not None:
        out["conf"] = np.round(np.asarray(pred.conf, dtype=np.float32), 2)
    if pred.extrinsics is not None:
        out["extrinsics"] = np.asarray(pred.extrinsics, dtype=np.float32)
    if pred.intrinsics is not None:
        out["intrinsics"] = np.asarray(pred.intrinsics, dtype=np.float32)
    return out


def _write(path: str, arrays: dict[str, np.ndarray]) -> str:
    with open_atomic(path) as fh:
        np.savez_compressed(fh, **arrays)
    return path


def export_npz(pred: Prediction, export_dir: str) -> list[str]:
    """``exports/npz/results.npz``: image (uint8), depth (6 decimals), conf (2), extrinsics, intrinsics."""
    check_npz_input(pred)
    arrays = {
        "image": np.asarray(pred.processed_images, dtype=np.uint8),
        "depth": np.round(np.asarray(pred.depth, dtype=np.float32), 6),
        **_cameras_and_conf(pred),
    }
    return [_write(os.path.join(export_dir, "exports", "npz", "results.npz"), arrays)]


def export_mini_npz(pred: Prediction, export_dir: str) -> list[str]:
    """``exports/mini_npz/results.npz``: depth (8 decimals), conf (2), extrinsics, intrinsics."""
    arrays = {"depth": np.round(np.asarray(pred.depth, dtype=np.float32), 8), **_cameras_and_conf(pred)}
    return [_write(os.path.join(export_dir, "exports", "mini_npz", "results.npz"), arrays)]
