"""Camera solve: measure DA3's cameras by their reprojection error and refine them to sub-pixel.

``refine(pred, images, lens=...)`` tracks SIFT features through the source frames, triangulates
the tracks from the prediction's cameras and bundle-adjusts every camera, the focal length and
(``lens="radial"``) radial distortion with pycolmap; ``measure(pred, images)`` reports the solve
error of the cameras as they are. Errors are RMS reprojection errors in source-image pixels. See
README "Camera solve". pycolmap is the optional ``solve`` extra (``pip install pycolmap==4.2.1``).
"""

from __future__ import annotations

from .pipeline import LENS_MODELS, PYCOLMAP_PIN, measure, refine

__all__ = ["LENS_MODELS", "PYCOLMAP_PIN", "measure", "refine"]
