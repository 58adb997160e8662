"""What :func:`da3_blender.inference.run_inference` is given, checked before any work: the images (a
path, a list of paths / PIL images / arrays, or an :class:`inputs.InputSet`), read one at a time, and
the known cameras (extrinsics, intrinsics)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from .. import geometry
from ..errors import BadInputError


def _is_input_set(obj) -> bool:
    return all(hasattr(obj, a) for a in ("images", "source_paths", "frame_numbers", "timestamps"))


def image_source(image, exif_transpose: bool):
    """-> (iterator of HxWx3 uint8 arrays, view count, InputSet/PathSource or None).

    Nothing is decoded here: paths are read, and an InputSet's images (a video: decoded frame by frame)
    taken, one at a time as the iterator is consumed.
    """
    if _is_input_set(image):
        items = image.images
        if len(items) == 0:
            raise BadInputError("the input set has no images")
        return (as_rgb_array(im, exif_transpose) for im in items), len(items), image
    if isinstance(image, (str, os.PathLike)):
        items: list = [image]
    elif isinstance(image, np.ndarray) and image.ndim == 4:
        items = list(image)
    elif isinstance(image, np.ndarray) or _is_pil(image):
        items = [image]
    elif isinstance(image, Sequence) or hasattr(image, "__iter__"):
        items = list(image)
    else:
        raise BadInputError(
            f"cannot read images from a {type(image).__name__}: pass a path, or a list of paths, PIL images or "
            "HxWx3 uint8 arrays"
        )
    if not items:
        raise BadInputError("no images given: pass at least one image path, PIL image or HxWx3 uint8 array")

    def read():
        from .images import load_image

        for item in items:
            if isinstance(item, (str, os.PathLike)):
                yield load_image(item, exif_transpose=exif_transpose)
            else:
                yield as_rgb_array(item, exif_transpose)

    source = PathSource([os.fspath(p) for p in items]) if all(isinstance(it, (str, os.PathLike)) for it in items) else None
    return read(), len(items), source


class PathSource:
    """Provenance for a plain list of paths (same attributes as an InputSet)."""

    kind = "images"
    video = None

    def __init__(self, paths: list[str]):
        from .paths import frame_number_from_name

        self.source_paths = paths
        # the same rule as inputs.collect_inputs, so both paths give the same provenance
        self.frame_numbers = np.array([frame_number_from_name(p) for p in paths], dtype=np.int64)
        self.timestamps = np.full(len(paths), np.nan)


def _is_pil(obj) -> bool:
    return isinstance(obj, Image.Image)


def as_rgb_array(item, exif_transpose: bool) -> np.ndarray:
    """PIL image -> HxWx3 uint8 RGB (alpha dropped, as the official ``convert("RGB")``); arrays pass
    through (``preprocess`` validates them)."""
    if _is_pil(item):
        if exif_transpose:
            item = ImageOps.exif_transpose(item)
        return np.asarray(item.convert("RGB"), dtype=np.uint8)
    return np.asarray(item)


def _float_array(value, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"{name} must be an array of numbers") from None


def check_extrinsics(extrinsics, n: int) -> np.ndarray | None:
    """-> (N,4,4) float64 world-to-camera, or None."""
    if extrinsics is None:
        return None
    ext = _float_array(extrinsics, "extrinsics")
    if ext.ndim == 2 and n == 1:
        ext = ext[None]
    if ext.ndim != 3 or ext.shape[1:] not in ((4, 4), (3, 4)):
        raise BadInputError(f"extrinsics have shape {ext.shape}: pass (N,4,4) or (N,3,4) world-to-camera matrices")
    if ext.shape[0] != n:
        raise BadInputError(f"got {ext.shape[0]} extrinsics for {n} images: pass one world-to-camera matrix per image")
    if not np.all(np.isfinite(ext)):
        raise BadInputError("extrinsics contain NaN or infinite values")
    ext = geometry.to_4x4(ext)
    rot = ext[:, :3, :3]
    error = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max()
    if error > 1e-3 or np.any(np.linalg.det(rot) < 0):
        raise BadInputError(
            f"extrinsics are not rigid (rotation block off by {error:.2g}, or a reflection): pass world-to-camera "
            "[R|t] matrices with R a rotation"
        )
    return ext


def check_intrinsics(intrinsics, n: int, extrinsics) -> np.ndarray | None:
    """-> (N,3,3) float64 in original-image pixels, or None."""
    if intrinsics is None:
        if extrinsics is not None:
            raise BadInputError(
                "camera poses need intrinsics too: pass intrinsics (N,3,3) in pixels of the original images"
            )
        return None
    k = _float_array(intrinsics, "intrinsics")
    if k.ndim == 2 and n == 1:
        k = k[None]
    if k.ndim != 3 or k.shape[1:] != (3, 3):
        raise BadInputError(f"intrinsics have shape {k.shape}: pass (N,3,3) pixel intrinsics")
    if k.shape[0] != n:
        extra = "" if extrinsics is None else f" and {len(extrinsics)} extrinsics"
        raise BadInputError(f"got {k.shape[0]} intrinsics for {n} images{extra}: pass one 3x3 matrix per image")
    if not np.all(np.isfinite(k)) or np.any(k[:, 0, 0] <= 0) or np.any(k[:, 1, 1] <= 0):
        raise BadInputError("intrinsics must be finite with positive focal lengths fx, fy")
    return k
