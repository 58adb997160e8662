"""Model input preparation: resize to the patch grid, ImageNet-normalise, keep the camera maths.

Reproduces the official ``InputProcessor`` (OpenCV resize + torchvision normalise) without OpenCV:

* bound resize: ``upper_bound_*`` scales the longest side to ``process_res``, ``lower_bound_*`` the
  shortest; ``new = max(1, round(dim * scale))`` with Python's half-to-even ``round``, skipped when
  that side already equals ``process_res``;
* then every side becomes a multiple of 14: nearest (ties up) with a second resize for
  ``*_resize``, floor with a centre crop for ``*_crop``;
* shrinking uses OpenCV's ``INTER_AREA`` (reproduced operation by operation, float32 included),
  growing uses ``INTER_CUBIC`` (torch bicubic, a = -0.75, which agrees to +-1 grey level);
* intrinsics follow the image, and a batch of mixed sizes is centre-cropped to the smallest.

Coordinates are pixel-edge (see :mod:`da3_blender.geometry`): ``K_orig = proc_to_orig @ K_proc``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BadInputError
from ..options import PROCESS_RES_METHODS, choice_ids

log = logging.getLogger("da3_blender")

PATCH_SIZE = 14
METHODS = choice_ids(PROCESS_RES_METHODS)  # defined in options
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PreprocessResult:
    tensor: torch.Tensor  # (N, 3, H, W) float32, ImageNet-normalised
    intrinsics: np.ndarray | None  # (N, 3, 3) float64 in processed pixels, or None
    proc_to_orig: np.ndarray  # (N, 3, 3) float64: K_orig = proc_to_orig @ K_proc
    orig_size: np.ndarray  # (N, 2) int64: original (W, H)


# ----------------------------------------------------------------------------------------------
# sizes


def check_options(process_res, method: str) -> int:
    """Validate ``process_res`` / ``method``; returns ``process_res`` as an int."""
    if method not in METHODS:
        raise BadInputError(f"unknown process_res_method {method!r}; use one of: {', '.join(METHODS)}")
    if isinstance(process_res, bool) or not isinstance(process_res, (int, np.integer, float)) or int(process_res) != process_res:
        raise BadInputError(f"process_res must be a whole number of pixels (got {process_res!r}); 504 is the default")
    if process_res < PATCH_SIZE:
        raise BadInputError(f"process_res {process_res} is too small: use at least {PATCH_SIZE} (504 is the default)")
    return int(process_res)


def bound_size(width: int, height: int, process_res: int, method: str) -> tuple[int, int]:
    """Size after step 1 (longest or shortest side to ``process_res``)."""
    side = max(width, height) if method.startswith("upper") else min(width, height)
    if side == process_res:
        return width, height
    scale = process_res / float(side)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def nearest_multiple(x: int, p: int = PATCH_SIZE) -> int:
    """Nearest multiple of ``p``, ties going up (official ``_make_divisible_by_resize``)."""
    down = (x // p) * p
    up = down + p
    return up if abs(up - x) <= abs(x - down) else down


def processed_size(width: int, height: int, process_res: int = 504, method: str = "upper_bound_resize") -> tuple[int, int]:
    """(W, H) the model sees for one image of ``width`` x ``height`` (before any batch crop)."""
    w, h = bound_size(width, height, process_res, method)
    if method.endswith("resize"):
        return max(1, nearest_multiple(w)), max(1, nearest_multiple(h))
    return (w // PATCH_SIZE) * PATCH_SIZE, (h // PATCH_SIZE) * PATCH_SIZE


# ----------------------------------------------------------------------------------------------
# OpenCV-equivalent resampling of HxWx3 uint8 arrays


def _area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``computeResizeAreaTab``: per output pixel, source indices and float32 weights.

    Returned padded to (dst, taps) with weight 0; slivers under 1e-3 px are dropped as OpenCV does.
    """
    scale = 1.0 / (dst / src)  # cv::resize stores inv_scale = dst/src and inverts it
    rows: list[list[tuple[int, float]]] = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s1, s2 = math.ceil(f1), math.floor(f2)
        s2 = min(s2, src - 1)
        s1 = min(s1, s2)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, s2))
        if f2 - s2 > 1e-3:
            taps.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        rows.append(taps)
    width = max(len(t) for t in rows)
    idx = np.zeros((dst, width), dtype=np.int64)
    wts = np.zeros((dst, width), dtype=np.float32)
    for d, taps in enumerate(rows):
        for k, (s, a) in enumerate(taps):
            idx[d, k] = s
            wts[d, k] = a
    return idx, wts


def resize_area(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)`` for a shrink (uint8 HxWxC)."""
    src_h, src_w = img.shape[:2]
    if (src_w, src_h) == (width, height):
        return img.copy()
    if width > src_w or height > src_h:
        raise ValueError("resize_area only shrinks")
    sx, sy = 1.0 / (width / src_w), 1.0 / (height / src_h)
    isx, isy = int(round(sx)), int(round(sy))
    if abs(sx - isx) < np.finfo(np.float64).eps and abs(sy - isy) < np.finfo(np.float64).eps:
        # integer factors: OpenCV's resizeAreaFast (integer sums)
        c = img.shape[2]
        sums = img.reshape(height, isy, width, isx, c).sum(axis=(1, 3), dtype=np.int64)
        if isx == 2 and isy == 2:
            return ((sums + 2) >> 2).astype(np.uint8)
        scaled = sums.astype(np.float32) * (np.float32(1.0) / np.float32(isx * isy))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    # separable, in OpenCV's order and float32 rounding: each source row across, then rows down,
    # adding weight * value tap after tap (zero-weight padding taps change nothing)
    xi, xw = _area_taps(src_w, width)
    yi, yw = _area_taps(src_h, height)
    rows = np.zeros((src_h, width, img.shape[2]), dtype=np.float32)
    for k in range(xi.shape[1]):
        rows += img[:, xi[:, k], :].astype(np.float32) * xw[None, :, k, None]
    out = np.zeros((height, width, img.shape[2]), dtype=np.float32)
    for k in range(yi.shape[1]):
        out += rows[yi[:, k]] * yw[:, k, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_cubic(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.INTER_CUBIC`` stand-in: bicubic a = -0.75, half-pixel centres, replicated borders."""
    t = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]  # a copy: inputs may be read-only
    out = torch.nn.functional.interpolate(t, size=(height, width), mode="bicubic", align_corners=False)
    return out.round().clamp(0, 255)[0].permute(1, 2, 0).to(torch.uint8).numpy()


def resize_uint8(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV's choice as the official uses it: cubic when either side grows, else area."""
    src_h, src_w = img.shape[:2]
    if (src_w, src_h) == (width, height):
        return img
    if width > src_w or height > src_h:
        return resize_cubic(img, width, height)
    return resize_area(img, width, height)


# ----------------------------------------------------------------------------------------------
# normalisation


def normalize(images: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32: ``ToTensor`` (/255) then ``Normalize`` in float32."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return x.sub(mean).div(std).contiguous()


def denormalize_to_uint8(tensor) -> np.ndarray:
    """(N,3,H,W) normalised -> (N,H,W,3) uint8 like the official ``processed_images``.

    float64 ``x * std + mean``, clip to [0, 1], ``* 255`` and truncate (not round).
    """
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().numpy()
    imgs = np.moveaxis(np.asarray(tensor), -3, -1)
    imgs = imgs * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return (np.clip(imgs, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# the pipeline


def _as_rgb_uint8(img, index: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise BadInputError(f"image {index} has dtype {arr.dtype}; pass HxWx3 uint8 RGB (da3_blender.inputs.images.load_image gives that)")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # alpha dropped, as the official convert("RGB")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadInputError(f"image {index} has shape {arr.shape}; pass HxWx3 uint8 RGB arrays")
    return arr


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _shift(dx: float, dy: float) -> np.ndarray:
    m = np.eye(3)
    m[0, 2], m[1, 2] = dx, dy
    return m


def _process_one(img: np.ndarray, index: int, process_res: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """One image through steps 1-2; returns the uint8 result and the orig->processed 3x3 map."""
    h, w = img.shape[:2]
    to_proc = np.eye(3)
    bw, bh = bound_size(w, h, process_res, method)
    if (bw, bh) != (w, h):
        img = resize_uint8(img, bw, bh)
        to_proc = _scale(bw / w, bh / h) @ to_proc
    if method.endswith("resize"):
        nw, nh = max(1, nearest_multiple(bw)), max(1, nearest_multiple(bh))
        if (nw, nh) != (bw, bh):
            img = resize_uint8(img, nw, nh)
            to_proc = _scale(nw / bw, nh / bh) @ to_proc
    else:
        nw, nh = (bw // PATCH_SIZE) * PATCH_SIZE, (bh // PATCH_SIZE) * PATCH_SIZE
        if nw >= PATCH_SIZE and nh >= PATCH_SIZE and (nw, nh) != (bw, bh):
            left, top = (bw - nw) // 2, (bh - nh) // 2
            img = img[top : top + nh, left : left + nw]
            to_proc = _shift(-left, -top) @ to_proc
    if nw < PATCH_SIZE or nh < PATCH_SIZE or nw % PATCH_SIZE or nh % PATCH_SIZE:
        raise BadInputError(
            f"image {index} ({w}x{h}) is too thin for process_res {process_res} with {method} "
            f"(it would become {nw}x{nh}, sides must be multiples of {PATCH_SIZE}); crop it or use a lower_bound_* method"
        )
    return img, to_proc


@dataclass
class PreparedImages:
    """Images reduced to the processed size, before normalisation (what :func:`prepare_images` returns)."""

    images: np.ndarray  # (N, H, W, 3) uint8 at the processed size
    intrinsics: np.ndarray | None  # (N, 3, 3) float64 in processed pixels, or None
    proc_to_orig: np.ndarray  # (N, 3, 3) float64
    orig_size: np.ndarray  # (N, 2) int64 (W, H)


def prepare_images(images, process_res: int = 504, method: str = "upper_bound_resize", intrinsics=None,
                   on_image=None) -> PreparedImages:
    """Steps 1-2 of :func:`preprocess_images` on an iterable of HxWx3 uint8 images, one at a time.

    Each image is reduced to the processed size as soon as it arrives, so a generator of full-size
    frames (a video) never holds more than one of them. ``on_image(i)`` is called after image ``i``
    (progress; raising from it stops the reading).
    """
    process_res = check_options(process_res, method)
    arrays, maps, orig = [], [], []
    for i, img in enumerate(images):
        img = _as_rgb_uint8(img, i)
        orig.append((img.shape[1], img.shape[0]))
        out, to_proc = _process_one(img, i, process_res, method)
        del img
        arrays.append(out.copy() if out.base is not None else out)  # never a view keeping a full-size frame
        maps.append(to_proc)
        if on_image is not None:
            on_image(i)
    if not arrays:
        raise BadInputError("no images to process; give at least one image")
    if intrinsics is not None:
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        if intrinsics.shape != (len(arrays), 3, 3):
            raise BadInputError(f"intrinsics must be (N,3,3) for N={len(arrays)} images, got {intrinsics.shape}")

    sizes = [a.shape[:2] for a in arrays]
    if len(set(sizes)) > 1:
        min_h, min_w = min(s[0] for s in sizes), min(s[1] for s in sizes)
        log.warning("images have different processed sizes %s; centre-cropping all to the smallest (%d, %d)", sorted(set(sizes)), min_h, min_w)
        for i, (h, w) in enumerate(sizes):
            top, left = (h - min_h) // 2, (w - min_w) // 2
            arrays[i] = arrays[i][top : top + min_h, left : left + min_w]
            maps[i] = _shift(-left, -top) @ maps[i]

    stacked = np.empty((len(arrays),) + arrays[0].shape, dtype=np.uint8)
    for i in range(len(arrays)):  # copied one by one and released: no second full copy at any time
        stacked[i] = arrays[i]
        arrays[i] = None
    to_proc = np.stack(maps)
    return PreparedImages(
        images=stacked,
        intrinsics=None if intrinsics is None else to_proc @ intrinsics,
        proc_to_orig=np.linalg.inv(to_proc),
        orig_size=np.array(orig, dtype=np.int64),
    )


def preprocess_images(images, process_res: int = 504, method: str = "upper_bound_resize", intrinsics=None) -> PreprocessResult:
    """Images (list of HxWx3 uint8 RGB) -> model input, as the official ``InputProcessor``.

    ``intrinsics`` (N,3,3) are in original-image pixels; the result's are in processed pixels.
    """
    prepared = prepare_images(images, process_res, method, intrinsics)
    return PreprocessResult(
        tensor=normalize(prepared.images),
        intrinsics=prepared.intrinsics,
        proc_to_orig=prepared.proc_to_orig,
        orig_size=prepared.orig_size,
    )
