"""Long shots: views run in overlapping chunks, each chunk aligned to what is already stitched.

A forward pass over N views costs O(N^2) time (global attention) and memory that grows with N. For a
long shot the views are cut into consecutive chunks of ``chunk_size`` views that share
``chunk_overlap`` views with the chunk before; each chunk is one any-view forward in its own gauge
(its own origin, rotation and, for relative-depth models, scale). Chunk k is brought into the
result's frame by the transform that best maps the chunk's overlap views onto the stitched result's
estimate of the same views:

* points: every overlap pixel valid in both (finite positive depth) is back-projected at its pixel
  centre with each side's own depth, K and pose; the pairs are weighted by confidence
  (``min(conf_chunk, conf_stitched)``, the lower 30 % dropped) and fitted with a weighted Umeyama
  Sim(3), or SE(3) (scale fixed to 1) for metric models, inside IRLS with a Huber loss (delta = 1.5x
  the weighted median residual), so occlusion edges and sky do not pull the fit;
* fallback: with fewer than :data:`MIN_OVERLAP_POINTS` valid pairs the camera centres of the overlap
  views are fitted instead (rotation from the cameras' orientations when they are collinear), with a
  logged warning.

The transform is applied to the chunk's cameras (w2c) and its depth is multiplied by the scale. Views
already in the result keep the earlier chunk's estimate, so each view appears once. The world frame
is the first chunk's (the model puts the first view's camera at the origin). Alignment assumes one
continuous shot: errors add up from chunk to chunk (no loop closure).

Everything here is numpy; the network calls stay in :mod:`da3_blender.inference`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .. import geometry, options
from ..prediction import Prediction

log = logging.getLogger("da3_blender")

MIN_OVERLAP_POINTS = 64  # fewer valid overlap pixels than this: fit the camera centres instead
MAX_FIT_POINTS = 40_000  # pixels per fit (a regular subsample beyond this: the fit stays ~10 ms)
CONF_DROP_FRACTION = 0.3  # the least confident share of the overlap pixels is left out of the fit
HUBER_FACTOR = 1.5  # Huber delta = this x the weighted median residual of the previous iteration
IRLS_ITERATIONS = 8

# Peak per-view memory of one forward at 504x280, fp32 activations on the CPU or bf16 backbone on CUDA,
# in MiB, per model family. From the official reports (a 24 GB GPU stops at ~200-300 LARGE views at 504,
# i.e. ~80-100 MB per view) scaled by the backbone width; used only to pick ``chunk_size="auto"`` on a GPU.
GPU_MIB_PER_VIEW_504 = {"small": 25, "base": 35, "large": 90, "giant": 160}
GPU_MEMORY_SHARE = 0.6  # the share of the free GPU memory a chunk may take
# On a CPU the time per view grows with the chunk (attention: 0.34 s/view alone, 0.42 in 8, 0.68 in 16
# for DA3-SMALL at 504x280, issue 9) and every chunk pays again for its overlap views, so the time per
# frame, t(c) / (c - overlap), is lowest at 8 views with the default overlap of 2 (0.56 s against 0.91 at
# 16/4; scripts/bench_streaming.py, BENCHMARKS.md). Larger chunks drift less (README) but cost more.
CPU_CHUNK_SIZE = 8
MAX_AUTO_CHUNK = 120  # the official DA3-Streaming chunk


@dataclass
class ChunkOptions:
    """Validated chunk options: ``size`` None = one pass (or ``options.AUTO_CHUNK``), ``overlap`` None =
    :func:`options.default_chunk_overlap`, ``align`` one of ``options.CHUNK_ALIGN_NAMES``."""

    size: int | str | None
    overlap: int | None
    align: str


@dataclass
class ChunkFit:
    """``stitched ≈ scale * rotation @ chunk + translation``; ``residual`` is the weighted median
    distance after the fit divided by the median overlap depth (dimensionless)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    residual: float
    fallback: bool


# ---------------------------------------------------------------------------------------------------
# options


def check_options(chunk_size, chunk_overlap, chunk_align) -> ChunkOptions:
    """Validate the chunk keywords (one-line :class:`BadInputError`), before any work: the checks every
    surface shares (:func:`da3_blender.job.check_streaming`)."""
    from ..job import check_streaming

    check_streaming(chunk_size, chunk_overlap, chunk_align)
    return ChunkOptions(chunk_size, chunk_overlap, chunk_align)


def resolve_align(chunk_align: str, capabilities: dict) -> str:
    """"auto" -> "se3" for metric models (their scale must not drift), else "sim3"."""
    if chunk_align != "auto":
        return chunk_align
    return "se3" if capabilities.get("metric") else "sim3"


def resolve_overlap(chunk_size: int, chunk_overlap: int | None) -> int:
    """The overlap to use: the given one, else the default for the size (at most ``chunk_size - 1``)."""
    if chunk_overlap is not None:
        return int(chunk_overlap)
    return min(options.default_chunk_overlap(chunk_size), int(chunk_size) - 1)


def _model_family(model_name: str) -> str:
    name = model_name.lower()
    if "giant" in name or "nested" in name:
        return "giant"
    for family in ("large", "base", "small"):
        if family in name:
            return family
    return "large"


def auto_chunk_size(device, n_views: int, image_hw: tuple[int, int], model_name: str) -> int:
    """The chunk ``chunk_size="auto"`` picks: the whole shot when it fits, else

    * CUDA: as many views as fit in :data:`GPU_MEMORY_SHARE` of the free GPU memory at
      :data:`GPU_MIB_PER_VIEW_504` MiB per view (scaled by the pixel count relative to 504x280), at most
      :data:`MAX_AUTO_CHUNK`;
    * CPU (and MPS): :data:`CPU_CHUNK_SIZE`, the measured optimum of time per new view (one pass up to
      1.5 times that: two chunks would cost more).

    Never below ``4`` views, never above ``n_views``.
    """
    n_views = int(n_views)
    kind = str(getattr(device, "type", device)).split(":")[0]
    if kind == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        per_view = GPU_MIB_PER_VIEW_504[_model_family(model_name)] * 2**20
        per_view *= max(1.0, image_hw[0] * image_hw[1] / (504 * 280))
        size = min(MAX_AUTO_CHUNK, int(GPU_MEMORY_SHARE * free // per_view))
    else:
        size = CPU_CHUNK_SIZE
        if n_views <= 1.5 * size:  # two chunks (the second full, mostly overlap) would cost more than one pass
            size = n_views
    return int(max(min(4, n_views), min(size, n_views)))


# ---------------------------------------------------------------------------------------------------
# planning


def chunk_plan(n_views: int, chunk_size: int | str | None, chunk_overlap: int | None, device,
               image_hw: tuple[int, int], model_name: str) -> tuple[int, int, list[tuple[int, int]]] | None:
    """The chunks a run of ``n_views`` takes: ``(size, overlap, [(start, end), ...])``, or None for one pass.

    ``chunk_size`` "auto" is picked by :func:`auto_chunk_size` for ``device`` (never a chunk that the
    overlap fills); None or a size of at least ``n_views`` is one pass. The one planning rule of
    in-process streaming (:func:`da3_blender.inference.run_inference`) and of farm jobs
    (:mod:`da3_blender.farm`).
    """
    size = chunk_size
    if size == options.AUTO_CHUNK:
        size = auto_chunk_size(device, n_views, image_hw, model_name)
        if chunk_overlap is not None:
            size = max(size, 2 * chunk_overlap)  # never a chunk that the overlap fills
    if size is None or size >= n_views:
        return None
    overlap = resolve_overlap(size, chunk_overlap)
    return int(size), int(overlap), plan_chunks(n_views, size, overlap)


def plan_chunks(n_views: int, chunk_size: int, chunk_overlap: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` view ranges covering ``0..n_views``, each ``chunk_size`` long (the
    last one starts earlier, sharing more views, so that it is full too), each sharing at least
    ``chunk_overlap`` views with the one before. One range when the shot fits in one chunk."""
    if chunk_size >= n_views:
        return [(0, n_views)]
    step = chunk_size - chunk_overlap
    chunks = []
    start = 0
    while True:
        end = start + chunk_size
        if end >= n_views:
            chunks.append((n_views - chunk_size, n_views))
            break
        chunks.append((start, end))
        start += step
    return chunks


# ---------------------------------------------------------------------------------------------------
# alignment


def overlap_points(chunk: dict, stitched: dict, max_points: int = MAX_FIT_POINTS):
    """Back-project the overlap views' pixels on both sides.

    ``chunk`` and ``stitched`` hold ``depth`` (V,H,W), ``conf`` (V,H,W) or None, ``intrinsics`` (V,3,3)
    and ``extrinsics`` (V,3|4,4) w2c for the same V views. Returns ``(src, dst, weights, depth)``:
    (M,3) chunk points, (M,3) stitched points, (M,) weights and the stitched z-depth of each pair.
    """
    d_c = np.asarray(chunk["depth"], dtype=np.float64)
    d_s = np.asarray(stitched["depth"], dtype=np.float64)
    valid = np.isfinite(d_c) & np.isfinite(d_s) & (d_c > 0) & (d_s > 0)
    weights = None
    for side in (chunk, stitched):
        if side.get("conf") is None:
            continue
        conf = np.asarray(side["conf"], dtype=np.float64)
        valid &= np.isfinite(conf) & (conf > 0)
        weights = conf if weights is None else np.minimum(weights, conf)
    if weights is None:
        weights = np.ones(d_c.shape)
    idx = np.flatnonzero(valid)
    if len(idx) and CONF_DROP_FRACTION > 0 and np.ptp(weights.flat[idx]) > 0:
        keep = weights.flat[idx] >= np.quantile(weights.flat[idx], CONF_DROP_FRACTION)
        idx = idx[keep]
    if len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).astype(np.int64)]
    v, h, w = d_c.shape
    view, rest = np.divmod(idx, h * w)
    row, col = np.divmod(rest, w)
    pix = np.stack([col + 0.5, row + 0.5, np.ones(len(idx))], axis=-1)

    def lift(side, depth):
        k_inv = np.linalg.inv(np.asarray(side["intrinsics"], dtype=np.float64))[view]
        cam = np.einsum("mij,mj->mi", k_inv, pix) * depth.flat[idx][:, None]
        c2w = geometry.affine_inverse(np.asarray(side["extrinsics"]))[view]
        return np.einsum("mij,mj->mi", c2w[:, :3, :3], cam) + c2w[:, :3, 3]

    return lift(chunk, d_c), lift(stitched, d_s), weights.flat[idx].astype(np.float64), d_s.flat[idx]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def robust_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, with_scale: bool = True,
               iterations: int = IRLS_ITERATIONS) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Sim(3)/SE(3) ``dst ≈ s R src + t`` by IRLS with a Huber loss.

    Each iteration refits the weighted Umeyama with ``weights * huber(r)``, ``huber(r) = min(1, delta/r)``
    and ``delta`` = :data:`HUBER_FACTOR` x the weighted median residual of the previous fit. Returns
    ``(s, R, t, residuals)``.
    """
    s, rot, t = geometry.umeyama_sim3(src, dst, weights=weights, with_scale=with_scale)
    for _ in range(iterations):
        res = np.linalg.norm(s * src @ rot.T + t - dst, axis=1)
        delta = HUBER_FACTOR * _weighted_median(res, weights)
        if not delta > 0:
            break
        robust = weights * np.minimum(1.0, delta / np.maximum(res, 1e-300))
        s_new, rot_new, t_new = geometry.umeyama_sim3(src, dst, weights=robust, with_scale=with_scale)
        change = abs(s_new - s) / s + np.abs(rot_new - rot).max() + np.abs(t_new - t).max() / (np.abs(t).max() + 1e-12)
        s, rot, t = s_new, rot_new, t_new
        if change < 1e-12:
            break
    res = np.linalg.norm(s * src @ rot.T + t - dst, axis=1)
    return float(s), rot, t, res


def centre_fit(chunk_extrinsics: np.ndarray, stitched_extrinsics: np.ndarray, with_scale: bool = True):
    """Fallback: fit the overlap cameras' centres; orientation from the cameras when they are collinear.

    Returns ``(s, R, t)`` with ``stitched_centre ≈ s R chunk_centre + t``.
    """
    c2w_c = geometry.affine_inverse(chunk_extrinsics)
    c2w_s = geometry.affine_inverse(stitched_extrinsics)
    orient = geometry._nearest_rotation(np.einsum("nij,nkj->ik", c2w_s[:, :3, :3], c2w_c[:, :3, :3]))
    return geometry.umeyama_sim3(c2w_c[:, :3, 3], c2w_s[:, :3, 3], fallback_rotation=orient, with_scale=with_scale)


def fit_chunk(chunk: dict, stitched: dict, with_scale: bool = True, label: str = "chunk") -> ChunkFit:
    """The transform taking a chunk's overlap views onto the stitched result's (see the module doc)."""
    src, dst, weights, depth = overlap_points(chunk, stitched)
    if len(src) >= MIN_OVERLAP_POINTS:
        s, rot, t, res = robust_fit(src, dst, weights, with_scale)
        scale_ref = float(np.median(depth)) or 1.0
        return ChunkFit(s, rot, t, _weighted_median(res, weights) / scale_ref, False)
    log.warning(
        "%s: only %d valid overlap pixels (need %d): aligned by the camera centres of its %d overlap views instead; "
        "use a larger chunk_overlap if the track jumps there",
        label, len(src), MIN_OVERLAP_POINTS, len(chunk["depth"]),
    )
    s, rot, t = centre_fit(np.asarray(chunk["extrinsics"]), np.asarray(stitched["extrinsics"]), with_scale)
    centres_c = geometry.camera_centers(np.asarray(chunk["extrinsics"]))
    centres_s = geometry.camera_centers(np.asarray(stitched["extrinsics"]))
    err = np.linalg.norm(s * centres_c @ rot.T + t - centres_s, axis=1)
    spread = float(np.linalg.norm(np.ptp(centres_s, axis=0))) or 1.0
    return ChunkFit(float(s), rot, t, float(np.median(err)) / spread, True)


def apply_fit(extrinsics: np.ndarray, depth: np.ndarray, fit: ChunkFit) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's w2c cameras (V,3,4) and depth (V,H,W) in the stitched frame."""
    extr = geometry.apply_sim3_to_extrinsics(extrinsics, (fit.scale, fit.rotation, fit.translation))
    return extr.astype(np.float32), (np.asarray(depth) * np.float32(fit.scale)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# stitching


class Stitcher:
    """The result over all N views, filled chunk by chunk at processed resolution.

    Arrays are allocated once, at the first chunk; memory is the outputs only (see README: depth and
    confidence 8 bytes per pixel, sky 1, cameras 84 bytes per view).
    """

    def __init__(self, n_views: int, with_scale: bool):
        self.n = int(n_views)
        self.with_scale = with_scale
        self.filled = 0  # views [0, filled) are final
        self.arrays: dict[str, np.ndarray | None] = {}
        self.chunks: list[dict] = []
        self.is_metric = False
        self.scale_factor = None

    def _allocate(self, part: dict) -> None:
        for key, value in part.items():
            if value is None:
                self.arrays[key] = None
            else:
                value = np.asarray(value)
                self.arrays[key] = np.zeros((self.n,) + value.shape[1:], dtype=value.dtype)

    def _view(self, key: str, start: int, end: int):
        arr = self.arrays.get(key)
        return None if arr is None else arr[start:end]

    def add(self, start: int, end: int, part: dict, aligned: bool = False, label: str = "chunk") -> dict:
        """Add views ``start..end`` (``part``: depth, conf, extrinsics, intrinsics, sky; arrays over those
        views). ``aligned``: already in the result's frame (known poses), so no fit. Returns the chunk's
        meta entry."""
        if not self.arrays:
            self._allocate(part)
        entry = {"start": int(start), "end": int(end), "scale": 1.0, "residual": 0.0, "fallback": False}
        shared = self.filled - start
        if shared > 0 and not aligned and part.get("extrinsics") is not None:
            chunk = {k: (None if part.get(k) is None else np.asarray(part[k])[:shared])
                     for k in ("depth", "conf", "extrinsics", "intrinsics")}
            stitched = {k: self._view(k, start, self.filled) for k in ("depth", "conf", "extrinsics", "intrinsics")}
            fit = fit_chunk(chunk, stitched, self.with_scale, label)
            extr, depth = apply_fit(part["extrinsics"], part["depth"], fit)
            part = dict(part, extrinsics=extr, depth=depth)
            entry.update(scale=float(fit.scale), residual=float(fit.residual), fallback=bool(fit.fallback))
        first = max(self.filled - start, 0)
        for key, value in part.items():
            if self.arrays.get(key) is not None and value is not None:
                self.arrays[key][start + first:end] = np.asarray(value)[first:]
        self.filled = max(self.filled, end)
        self.chunks.append(entry)
        return entry

    def add_part(self, start: int, end: int, part: Prediction, aligned: bool = False, label: str = "chunk",
                 extra: dict | None = None) -> dict:
        """Add one chunk's :class:`Prediction` (views ``start..end``) through :meth:`add`.

        The result is metric only if every chunk is, with the first chunk's nested scale factor.
        ``extra``: more per-view arrays stitched alongside (each view kept once, never transformed),
        e.g. a farm chunk's processed images. Returns the chunk's meta entry.
        """
        if not self.chunks:
            self.is_metric, self.scale_factor = bool(part.is_metric), part.scale_factor
        arrays = {"depth": part.depth, "conf": part.conf, "extrinsics": part.extrinsics,
                  "intrinsics": part.intrinsics, "sky": part.sky}
        entry = self.add(start, end, {**arrays, **(extra or {})}, aligned=aligned, label=label)
        self.is_metric = self.is_metric and bool(part.is_metric)
        return entry

    def prediction(self, processed_images: np.ndarray | None) -> Prediction:
        """The stitched views as a Prediction (processed-size arrays; provenance left to the caller)."""
        arrays = self.arrays
        return Prediction(depth=arrays["depth"], processed_images=processed_images, conf=arrays.get("conf"),
                          extrinsics=arrays.get("extrinsics"), intrinsics=arrays.get("intrinsics"),
                          sky=arrays.get("sky"), is_metric=self.is_metric, scale_factor=self.scale_factor)


def chunk_residual_summary(chunks: list[dict]) -> str:
    """One line for the log: the worst chunk residual and how many chunks fell back."""
    if not chunks:
        return ""
    worst = max(chunks, key=lambda c: c["residual"])
    falls = sum(c["fallback"] for c in chunks)
    return (f"{len(chunks)} chunks, worst residual {worst['residual']:.2g} (views {worst['start'] + 1}-{worst['end']})"
            f"{f', {falls} aligned by camera centres' if falls else ''}")


def eta_text(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 90:
        return f"~{seconds:.0f} s left"
    return f"~{seconds / 60:.0f} min left"
