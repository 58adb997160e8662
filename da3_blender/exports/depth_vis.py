"""``depth_vis/NNNN.png``: [processed image | colour-mapped depth] side by side, one per view.

``NNNN`` is the view's frame number, as the EXR passes and the scene number it (the scene frame:
a sequence frame's own number, a video frame's index + frame start), else its index (see
:func:`.exr.file_numbers`).

The official export writes JPEG (quality 95); we write lossless PNG so the colours are exactly
the colour map's. Without processed images (e.g. a prediction read from a mini_npz) only the
depth picture is written.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..prediction import Prediction
from .colormap import colorize_depth
from ..files import open_atomic
from .exr import file_numbers


def depth_vis_image(pred: Prediction, view: int) -> np.ndarray:
    """(H, 2W, 3) uint8, or (H, W, 3) without processed images."""
    depth_rgb = colorize_depth(pred.depth[view])
    if pred.processed_images is None:
        return depth_rgb
    return np.concatenate([np.asarray(pred.processed_images[view], dtype=np.uint8), depth_rgb], axis=1)


def export_depth_vis(pred: Prediction, export_dir: str) -> list[str]:
    paths = []
    for i, number in enumerate(file_numbers(pred)):
        path = os.path.join(export_dir, "depth_vis", f"{number:04d}.png")
        with open_atomic(path) as fh:
            Image.fromarray(depth_vis_image(pred, i)).save(fh, format="PNG")
        paths.append(path)
    return paths
