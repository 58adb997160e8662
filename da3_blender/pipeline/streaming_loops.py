"""Loop closure for streamed shots: chunks that come back to an earlier place pull the path closed.

Streaming (:mod:`da3_blender.pipeline.streaming`) aligns each chunk to the one before only, so an orbit or a
walk around a building that returns to its start does not close: the alignment errors add up. After
the last chunk:

1. **Retrieval**: every view gets a global descriptor from its processed image (a 4x4 grid of
   gradient-orientation histograms, 8 bins, on a 48x64 thumbnail: Hellinger-normalised, the shot's
   mean removed; numpy, no extra model). Chunk b revisits chunk a (b >= a + 2) when its best view pair
   scores at least :data:`SCORE_RATIO` times the median score of neighbouring views and at least
   :data:`MIN_SCORE` (cosine similarity); each chunk keeps
   its best earlier chunk, at most :data:`MAX_LOOPS` loops (the best first).
2. **Loop chunk**: the views around the best pair (up to half a chunk from each side, each side from
   views its own chunk placed) run through the network together, as one more chunk. Fitting its views
   onto each side's stitched views (the same robust Sim(3), SE(3) for metric models, as the chunk
   alignment) gives the transform between the two chunks that the loop implies. A loop is kept only
   if both fits are on pixels (not the camera-centre fallback), their residuals stay under
   :data:`MAX_FIT_RESIDUAL`, and the correction it asks for is under :data:`MAX_LOOP_ROTATION_DEG`,
   :data:`MAX_LOOP_SHIFT` times the scene depth and a scale of :data:`MAX_LOOP_SCALE` (a place that only
   looks like an earlier one asks for more).
3. **Pose graph**: one Sim(3) correction per chunk (the first held), edges between consecutive chunks
   (the stitching as it is) and the loops; Levenberg-Marquardt on the corrections (rotation vector,
   translation / scene depth, log scale), loop edges with Cauchy weights (IRLS) so a bad loop cannot
   bend the shot. Written in numpy (a 7-parameter-per-chunk problem: no solver library needed).
4. Every view takes its chunk's correction (cameras; depth times its scale).

Known poses (the chunks are already in the user's frame) need none of this.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import geometry
from ..cancel import checkpoint
from . import streaming

log = logging.getLogger("da3_blender")

THUMB = (48, 64)  # rows, columns of the thumbnail the descriptor reads
CELLS, BINS = 4, 8
SCORE_RATIO = 0.9  # a loop's best view pair scores this share of the median neighbouring-view score,
MIN_SCORE = 0.5  # and at least this (descriptors with the shot's mean removed: unrelated views score ~0)
MAX_LOOPS = 8
MAX_FIT_RESIDUAL = 0.05  # weighted median fit residual / median depth (streaming.ChunkFit.residual)
MAX_LOOP_ROTATION_DEG = 30.0
MAX_LOOP_SHIFT = 1.0  # times the median scene depth
MAX_LOOP_SCALE = 1.5
CAUCHY = 0.05  # loop-edge residual scale (radians / depths / log scale) of the robust weights
ITERATIONS = 30


# -- retrieval --------------------------------------------------------------------------------------

def view_descriptors(images: np.ndarray, check=None) -> np.ndarray:
    """(N,128) unit descriptors of (N,H,W,3) uint8 images (see the module doc)."""
    out = []
    for img in images:
        if check is not None:
            check()
        gray = np.asarray(img, dtype=np.float64)[..., :3] @ np.array([0.299, 0.587, 0.114])
        h, w = min(THUMB[0], gray.shape[0]), min(THUMB[1], gray.shape[1])  # a smaller image: its own pixels
        rows = np.linspace(0, gray.shape[0], h + 1).astype(int)
        cols = np.linspace(0, gray.shape[1], w + 1).astype(int)
        thumb = np.add.reduceat(np.add.reduceat(gray, rows[:-1], axis=0), cols[:-1], axis=1)
        thumb /= np.outer(np.diff(rows), np.diff(cols))
        gy, gx = np.gradient(thumb) if min(h, w) > 1 else (np.zeros_like(thumb), np.zeros_like(thumb))
        mag, ang = np.hypot(gx, gy), np.arctan2(gy, gx) % (2 * np.pi)
        b = (ang / (2 * np.pi) * BINS).astype(int) % BINS
        cy = (np.arange(h) * CELLS // h)[:, None]
        cx = (np.arange(w) * CELLS // w)[None, :]
        cell = (cy * CELLS + cx) * BINS + b
        out.append(np.sqrt(np.bincount(cell.ravel(), weights=mag.ravel(), minlength=CELLS * CELLS * BINS)))
    d = np.asarray(out)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    d -= d.mean(axis=0)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def owned_ranges(chunks: list) -> list:
    """The views each chunk placed in the result (the first chunk holding a view keeps it)."""
    out, filled = [], 0
    for start, end in chunks:
        out.append((max(start, filled), end))
        filled = max(filled, end)
    return out


def find_loops(desc: np.ndarray, chunks: list) -> list:
    """``[(a, b, view_a, view_b, score)]``: chunk b revisits chunk a at views view_a, view_b (best first)."""
    sim = desc @ desc.T
    reference = float(np.median(np.diagonal(sim, offset=1))) if len(sim) > 1 else 1.0
    owned = owned_ranges(chunks)
    loops = []
    for b in range(2, len(chunks)):
        best = None
        for a in range(b - 1):
            block = sim[owned[a][0]:owned[a][1], owned[b][0]:owned[b][1]]
            if block.size == 0:
                continue
            i, j = np.unravel_index(int(np.argmax(block)), block.shape)
            if best is None or block[i, j] > best[4]:
                best = (a, b, owned[a][0] + int(i), owned[b][0] + int(j), float(block[i, j]))
        if best is not None and best[4] >= max(SCORE_RATIO * reference, MIN_SCORE):
            loops.append(best)
    return sorted(loops, key=lambda x: -x[4])[:MAX_LOOPS]


def _window(centre: int, lo: int, hi: int, width: int) -> list:
    start = min(max(lo, centre - width // 2), max(lo, hi - width))
    return list(range(start, min(hi, start + width)))


# -- Sim(3) helpers: (s, R, t) maps x -> s R x + t ---------------------------------------------------

def _exp(w: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(w)
    if angle < 1e-12:
        return np.eye(3)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / angle
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _log(r: np.ndarray) -> np.ndarray:
    angle = np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    return v * (0.5 if angle < 1e-9 else angle / (2 * np.sin(angle)))


def compose(a, b):
    return a[0] * b[0], a[1] @ b[1], a[0] * a[1] @ b[2] + a[2]


def inverse(a):
    return 1 / a[0], a[1].T, -(a[1].T @ a[2]) / a[0]


IDENTITY = (1.0, np.eye(3), np.zeros(3))


# -- pose graph --------------------------------------------------------------------------------------

def _node(p: np.ndarray, depth: float):
    return float(np.exp(p[6])), _exp(p[:3]), p[3:6] * depth


def _edge_residual(ca, cb, z, depth: float) -> np.ndarray:
    e = compose(inverse(z), compose(inverse(ca), cb))
    return np.concatenate([_log(e[1]), e[2] / depth, [np.log(e[0])]])


def optimise(n_nodes: int, edges: list, depth: float, with_scale: bool = True, check=None) -> list:
    """Corrections ``[(s, R, t)] * n_nodes`` (node 0 held at the identity) that best satisfy ``edges``
    ``[(a, b, Z, is_loop)]`` (``C_a^-1 C_b ≈ Z``); Levenberg-Marquardt with Cauchy-weighted loop edges."""
    free = 7 if with_scale else 6
    params = np.zeros((n_nodes, 7))

    def residuals(par):
        nodes = [_node(p, depth) for p in par]
        return np.array([_edge_residual(nodes[a], nodes[b], z, depth) for a, b, z, _ in edges])

    def jacobian(par, res):  # each edge moves with its two nodes only: 2 x free evaluations per edge
        nodes = [_node(p, depth) for p in par]
        jac = np.zeros((len(edges) * 7, (n_nodes - 1) * free))
        for e, (a, b, z, _) in enumerate(edges):
            for k in (a, b):
                if k == 0:
                    continue
                for q in range(free):
                    moved = par[k].copy()
                    moved[q] += 1e-6
                    pair = [_node(moved, depth) if m == k else nodes[m] for m in (a, b)]
                    jac[7 * e:7 * e + 7, (k - 1) * free + q] = (_edge_residual(*pair, z, depth) - res[e]) / 1e-6
        return jac

    def cost(res, w):
        return float(np.sum(w[:, None] * res * res))

    lam = 1e-3
    is_loop = np.array([e[3] for e in edges])
    for _ in range(ITERATIONS):
        if check is not None:
            check()
        res = residuals(params)
        norm2 = np.sum(res * res, axis=1)
        w = np.where(is_loop, 1 / (1 + norm2 / CAUCHY ** 2), 1.0)
        jac = jacobian(params, res)
        sw = np.repeat(np.sqrt(w), 7)
        jw, rw = jac * sw[:, None], res.ravel() * sw
        h, g = jw.T @ jw, jw.T @ rw
        before = cost(res, w)
        improved = False
        while lam < 1e8:
            delta = np.linalg.solve(h + lam * np.diag(np.diag(h) + 1e-9), -g)
            trial = params.copy()
            trial[1:, :free] += delta.reshape(n_nodes - 1, free)
            if cost(residuals(trial), w) < before:
                params, improved = trial, True
                lam = max(lam / 4, 1e-9)
                break
            lam *= 4
        if not improved or np.abs(delta).max() < 1e-9:
            break
    return [_node(p, depth) for p in params]


# -- the loop chunks ------------------------------------------------------------------------------

def _sides(stitcher, views: list) -> dict:
    return {k: stitcher._view(k, 0, stitcher.n)[views] if stitcher.arrays.get(k) is not None else None
            for k in ("depth", "conf", "extrinsics", "intrinsics")}


def _loop_edge(forward_views, stitcher, loop, chunks, width: int, check):
    """The loop chunk of ``loop`` through the network -> ``(Z, why not)``: Z = F_a F_b^-1."""
    a, b, view_a, view_b, _ = loop
    owned = owned_ranges(chunks)
    side_a, side_b = _window(view_a, *owned[a], width), _window(view_b, *owned[b], width)
    check()
    part = forward_views(side_a + side_b, lambda f: check())
    if part.extrinsics is None:
        return None, "no cameras"
    fits = []
    for idx, side in ((slice(0, len(side_a)), side_a), (slice(len(side_a), None), side_b)):
        chunk = {"depth": part.depth[idx], "conf": None if part.conf is None else part.conf[idx],
                 "extrinsics": part.extrinsics[idx], "intrinsics": part.intrinsics[idx]}
        fit = streaming.fit_chunk(chunk, _sides(stitcher, side), stitcher.with_scale, "loop chunk")
        if fit.fallback or fit.residual > MAX_FIT_RESIDUAL:
            return None, f"fit residual {fit.residual:.3g}"
        fits.append((fit.scale, fit.rotation, fit.translation))
    return compose(fits[0], inverse(fits[1])), ""


def _plausible(z, depth: float) -> bool:
    angle = np.degrees(np.linalg.norm(_log(z[1])))
    return (angle <= MAX_LOOP_ROTATION_DEG and np.linalg.norm(z[2]) <= MAX_LOOP_SHIFT * depth
            and 1 / MAX_LOOP_SCALE <= z[0] <= MAX_LOOP_SCALE)


def _apply(stitcher, chunks: list, corrections: list) -> None:
    extr, depth = stitcher.arrays["extrinsics"], stitcher.arrays["depth"]
    for (lo, hi), c in zip(owned_ranges(chunks), corrections):
        if hi > lo:
            extr[lo:hi] = geometry.apply_sim3_to_extrinsics(extr[lo:hi].astype(np.float64), c).astype(extr.dtype)
            depth[lo:hi] *= np.float32(c[0])


def close_loops(images: np.ndarray, stitcher, chunks: list, report, forward_views) -> dict:
    """Find, verify and close the loops of a streamed shot in ``stitcher`` (in place) -> the figures
    for ``meta["streaming"]["loop_closure"]``. ``images``: the processed (N,H,W,3) uint8 images;
    ``forward_views(views, progress)``: those views through the network together, a Prediction."""
    started = time.monotonic()
    last = [started]

    def check(fraction=1.0):  # a cancel point; the progress callback (where a cancel may be raised) every 0.2 s
        checkpoint()
        if time.monotonic() - last[0] > 0.2:
            last[0] = time.monotonic()
            report("forward", fraction, "loop closure")

    report("forward", 1.0, "loop closure: finding places seen again")
    loops = find_loops(view_descriptors(images, check), chunks)
    figures = {"candidates": len(loops), "loops": [], "rejected": 0, "seconds": 0.0}
    if not loops:
        figures["seconds"] = time.monotonic() - started
        return figures
    depth_all = stitcher.arrays["depth"]
    scene = float(np.median(depth_all[np.isfinite(depth_all) & (depth_all > 0)])) or 1.0
    width = max(2, max(e - s for s, e in chunks) // 2)  # views per side (fewer where a chunk placed fewer)
    edges = [(k - 1, k, IDENTITY, False) for k in range(1, len(chunks))]
    for loop in loops:
        report("forward", 1.0, f"loop closure: chunks {loop[0] + 1} and {loop[1] + 1}")
        z, why = _loop_edge(forward_views, stitcher, loop, chunks, width, check)
        if z is None or not _plausible(z, scene):
            figures["rejected"] += 1
            log.info("loop closure: chunks %d and %d rejected (%s)", loop[0] + 1, loop[1] + 1, why or "too far off")
            continue
        edges.append((loop[0], loop[1], z, True))
        figures["loops"].append({"chunks": [loop[0], loop[1]], "views": [loop[2], loop[3]], "score": loop[4]})
    if figures["loops"]:
        corrections = optimise(len(chunks), edges, scene, stitcher.with_scale, check)
        _apply(stitcher, chunks, corrections)
    figures["seconds"] = time.monotonic() - started
    return figures
