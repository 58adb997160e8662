"""The tracks' patch check: each observation aligned with its track's reference patch, dropped where it does
not align, and moved into place at the source resolution where SIFT ran on a reduced frame.

A source frame larger than ``features.SIFT_MAX_SIDE`` goes to SIFT reduced by a whole factor
(``features.sift_factor``: 2 at 1080p, a quarter of the pixels), which localises its keypoints on the
reduced grid. Once the tracks are known, each track's observations are aligned here at the source
resolution to the one in its middle view (its reference): a patch of ``2 * RADIUS + 1`` source pixels
square around each keypoint, turned and scaled as the two views' keypoints are (the median of the
SIFT orientation and scale differences of the tracks the two views share, so a camera that rolls or
moves in still compares like with like), aligned by Lucas-Kanade (inverse compositional, translation;
each patch normalised to zero mean and unit variance, so exposure changes do not matter). The
observations of a track then agree to a fraction of a source pixel; the reference keeps its SIFT
position (the track's point is wherever that patch's centre is). An observation that cannot be placed
there, because its reference has too little texture or its alignment does not converge or runs out of its
window (it lies over ``MARGIN - 1`` patch pixels from where SIFT put it), is dropped (its track keeps the
others): SIFT localised it wrongly, and such observations are what bends a weakly seen view. On the
240-frame 640x360 orbit about 2 % of the observations are dropped, and the worst view goes from 0.106 to
0.075 degrees (0.130 to 0.094 % of the path); on the tests' 48-frame 960x540 shot the worst position error
halves (0.074 to 0.040 %) (issue 30, BENCHMARKS.md). One that aligns but correlates less than
:data:`MIN_NCC` with its reference afterwards keeps its SIFT position: dropping those too made the tests'
short clean shots worse. One that aligns but would move further than the reduction factor
keeps its SIFT position too. Frames SIFT saw at full size get the check only (``max_shift_px=0``): nothing
moves. Observations whose window reaches past the frame are neither checked nor moved.

The frames are read once more, in view order (a video decodes again, frame by frame), and only the
patches are kept, never the frames: about 1 KB an observation (float16), 100 MB for the 97,000
observations of a 50-frame 1080p shot. Numpy only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..cancel import checkpoint
from .features import TrackSet, to_gray_float

RADIUS = 8  # the aligned patch: 17 x 17 source pixels
MARGIN = 3  # samples kept around it for the shifts (a shift past MARGIN - 1 fails)
ITERATIONS = 12
CONVERGED = 0.02  # patch pixels: the last step was smaller than this
MIN_NCC = 0.6  # the aligned patch's correlation with the reference's
MIN_TEXTURE = 0.01  # the smaller eigenvalue of the normalised patch's mean gradient outer product
CHUNK = 4096  # observations aligned at once (a cancel is never more than one chunk away)
THREADS = 2  # chunks aligned side by side (numpy releases the GIL in its array loops)


def _offsets(half: int) -> np.ndarray:
    u = np.arange(-half, half + 1, dtype=np.float64)
    gx, gy = np.meshgrid(u, u)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)  # (S*S, 2) x, y; row-major over the patch


def _bilinear(gray: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples of ``gray`` at source pixels ``x``, ``y`` (P,K) (pixel-edge convention: pixel i's centre is
    i + 0.5), and whether every sample of each patch (row) lay inside the frame."""
    h, w = gray.shape
    x, y = x - 0.5, y - 0.5
    inside = np.all((x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1), axis=1)
    x, y = np.clip(x, 0, w - 1.001), np.clip(y, 0, h - 1.001)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    flat = gray.ravel()
    i = y0 * w + x0
    top = flat[i] * (1 - fx) + flat[i + 1] * fx
    bottom = flat[i + w] * (1 - fx) + flat[i + w + 1] * fx
    return top * (1 - fy) + bottom * fy, inside


def _pair_similarity(tracks: TrackSet, ref_obs: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per observation, the rotation (radians) and scale from its reference's patch to its own: the median
    over the tracks its view shares with the reference's view."""
    d_angle = shape[:, 1] - shape[ref_obs, 1]
    d_angle = np.angle(np.exp(1j * d_angle))
    d_log_scale = np.log(np.maximum(shape[:, 0], 1e-6) / np.maximum(shape[ref_obs, 0], 1e-6))
    n = int(tracks.obs_view.max()) + 1
    key = tracks.obs_view[ref_obs] * n + tracks.obs_view
    groups, inverse = np.unique(key, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(groups)))])
    angle, log_scale = np.zeros(len(groups)), np.zeros(len(groups))
    for g in range(len(groups)):
        members = order[bounds[g]:bounds[g + 1]]
        angle[g] = np.median(d_angle[members])
        log_scale[g] = np.median(d_log_scale[members])
    angle, scale = angle[inverse], np.exp(log_scale[inverse])
    same = ref_obs == np.arange(len(ref_obs))
    angle[same], scale[same] = 0.0, 1.0
    return angle, scale


def _windows(tracks: TrackSet, images, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(O, S, S) float16 patches (S = 2 * (RADIUS + MARGIN) + 1) around every observation, sampled along
    its ``axes`` (O,2,2) (columns: the patch's x and y steps in source pixels), and which lay inside."""
    half = RADIUS + MARGIN
    size = 2 * half + 1
    offsets = _offsets(half)
    out = np.zeros((len(tracks.obs_view), size, size), np.float16)  # 0-255 to 1/8 of a level: half the memory
    inside = np.zeros(len(tracks.obs_view), bool)
    order = np.argsort(tracks.obs_view, kind="stable")
    bounds = np.searchsorted(tracks.obs_view[order], np.arange(int(tracks.obs_view.max()) + 2))
    for v, image in enumerate(images):
        checkpoint()
        if v + 1 >= len(bounds):
            break
        sel = order[bounds[v]:bounds[v + 1]]
        if not len(sel):
            continue
        gray = to_gray_float(image)
        steps = axes[sel] @ offsets.T  # (P,2,K): each sample's offset in source pixels
        xy = tracks.obs_xy[sel]
        samples, ok = _bilinear(gray, xy[:, 0:1] + steps[:, 0], xy[:, 1:2] + steps[:, 1])
        out[sel] = samples.reshape(len(sel), size, size)
        inside[sel] = ok
    return out, inside


def _normalise(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = p.mean(axis=1, keepdims=True)
    std = p.std(axis=1, keepdims=True)
    return (p - mean) / np.maximum(std, 1e-6), std[:, 0]


def _align(template: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lucas-Kanade (inverse compositional, translation) of each ``target`` window (P,S,S) onto its
    ``template`` window: the shift (P,2) in patch pixels (x, y), whether it is trustworthy (the template
    has texture, the alignment stayed in the window, converged and correlates at least :data:`MIN_NCC`),
    and whether the observation cannot be placed: all that but the correlation failed."""
    p, r, m, size = len(template), RADIUS, MARGIN, template.shape[1]
    k = 2 * r + 1
    inner = template[:, m:m + k, m:m + k].reshape(p, -1)
    gx = 0.5 * (template[:, m:m + k, m + 1:m + k + 1] - template[:, m:m + k, m - 1:m + k - 1]).reshape(p, -1)
    gy = 0.5 * (template[:, m + 1:m + k + 1, m:m + k] - template[:, m - 1:m + k - 1, m:m + k]).reshape(p, -1)
    t_norm, t_std = _normalise(inner)
    scale = (1.0 / np.maximum(t_std, 1e-6))[:, None]
    gx, gy = gx * scale, gy * scale
    hxx, hxy, hyy = (gx * gx).sum(1, dtype=np.float64), (gx * gy).sum(1, dtype=np.float64), (gy * gy).sum(1, dtype=np.float64)
    det = hxx * hyy - hxy * hxy
    trace_half = 0.5 * (hxx + hyy)
    smallest = trace_half - np.sqrt(np.maximum(trace_half ** 2 - det, 0.0))
    ok = (smallest / (k * k) >= MIN_TEXTURE) & (t_std > 1e-3)
    det = np.where(ok, det, 1.0)
    flat = target.reshape(p, -1)
    block_at = (np.arange(k + 1)[:, None] * size + np.arange(k + 1)[None, :]).ravel()  # a (k+1)^2 block, row-major
    shift, step, ncc = np.zeros((p, 2)), np.full(p, np.inf), np.zeros(p)
    active = np.nonzero(ok)[0]
    for _ in range(ITERATIONS):
        base = np.floor(shift[active]).astype(np.int64)
        inside = np.all((base >= -m) & (base <= m - 1), axis=1)
        ok[active[~inside]] = False
        active, base = active[inside], base[inside]
        if not len(active):
            break
        frac = (shift[active] - base).astype(np.float32)
        fx, fy = frac[:, 0:1], frac[:, 1:2]
        corner = (m + base[:, 1]) * size + m + base[:, 0]
        block = np.take_along_axis(flat[active], corner[:, None] + block_at[None, :], axis=1)
        block = block.reshape(len(active), k + 1, k + 1)
        top = block[:, :-1, :-1].reshape(len(active), -1) * (1 - fx) + block[:, :-1, 1:].reshape(len(active), -1) * fx
        bottom = block[:, 1:, :-1].reshape(len(active), -1) * (1 - fx) + block[:, 1:, 1:].reshape(len(active), -1) * fx
        i_norm, _ = _normalise(top * (1 - fy) + bottom * fy)
        err = i_norm - t_norm[active]
        ncc[active] = 1.0 - 0.5 * (err * err).mean(axis=1)  # both unit variance: the correlation
        bx = (gx[active] * err).sum(1, dtype=np.float64)
        by = (gy[active] * err).sum(1, dtype=np.float64)
        a_xx, a_xy, a_yy, a_det = hxx[active], hxy[active], hyy[active], det[active]
        delta = np.stack([a_yy * bx - a_xy * by, a_xx * by - a_xy * bx], axis=1) / a_det[:, None]
        shift[active] -= delta
        step[active] = np.linalg.norm(delta, axis=1)
        active = active[step[active] >= CONVERGED]
    placed = ok & (step < CONVERGED)
    return shift, placed & (ncc >= MIN_NCC), ~placed


def refine(tracks: TrackSet, shape: list, images, max_shift_px: float, drop: bool = True) -> tuple[TrackSet, int, int]:
    """``tracks`` checked against their references (see the module doc): each observation whose patch aligns
    with its track's reference's within ``max_shift_px`` moves there (0: none moves, only the check), one
    whose patch does not align is dropped (``drop=False``: stays where it is); -> (tracks, how many moved,
    how many failed the check). ``shape``: per
    view (M,2) SIFT scale and orientation (radians) of its keypoints; ``images``: the source frames in view
    order (an iterable, read once)."""
    if not len(tracks.obs_track):
        return tracks, 0, 0
    starts = tracks.starts
    length = np.diff(starts)
    ref_obs = (starts[:-1] + length // 2)[tracks.obs_track]  # observations are sorted by track, then view
    kp_shape = np.array([shape[v][f] for v, f in zip(tracks.obs_view.tolist(), tracks.obs_feature.tolist())],
                        np.float64).reshape(-1, 2)
    angle, scale = _pair_similarity(tracks, ref_obs, kp_shape)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale  # a reference's patch is axis-aligned, unscaled
    axes = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)  # columns: patch x, y in source px
    windows, inside = _windows(tracks, images, axes)
    targets = np.nonzero((ref_obs != np.arange(len(ref_obs))) & inside & inside[ref_obs])[0]
    new_xy = tracks.obs_xy.copy()
    failed = np.zeros(len(new_xy), bool)
    moved = 0

    def align(sel):
        return _align(windows[ref_obs[sel]].astype(np.float32), windows[sel].astype(np.float32))

    chunks = [targets[a:a + CHUNK] for a in range(0, len(targets), CHUNK)]
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="da3-align") as pool:  # numpy frees the GIL
        futures = [pool.submit(align, sel) for sel in chunks]
        try:
            for sel, future in zip(chunks, futures):
                checkpoint()
                shift, ok, lost = future.result()
                failed[sel[lost]] = True
                delta = np.einsum("oij,oj->oi", axes[sel], shift)
                ok &= np.linalg.norm(delta, axis=1) <= max_shift_px
                new_xy[sel[ok]] += delta[ok]
                moved += int(ok.sum())
        finally:
            for future in futures:
                future.cancel()
    out = TrackSet(tracks.obs_track, tracks.obs_view, new_xy, tracks.obs_feature)
    return (out.subset(~failed) if drop and failed.any() else out), moved, int(failed.sum())
