"""Features, matches and tracks for the camera solve (pycolmap SIFT, numpy matching).

SIFT runs on each source frame (pycolmap, CPU), reduced by a whole factor when its long side is over
SIFT_MAX_SIDE (a 1080p frame at half size: a quarter of the pixels, about 2,500 features instead of the
4,096 kept at full size, and the matching, quadratic in them, 2.6x less work); solve/subpixel.py then
aligns the tracks' observations at the source resolution. Descriptors are matched between nearby
frames (a sequential window) and some wider pairs whose input cameras look the same way, by mutual
nearest neighbour with Lowe's ratio test (a matrix product in numpy: far faster than pycolmap's
brute-force matcher on a CPU), then verified by a fundamental matrix (pycolmap's LO-RANSAC). Verified
matches are chained into tracks (one keypoint per view; a track that reaches a view twice is dropped).
Keypoints are in COLMAP's convention (top-left corner (0, 0), the first pixel's centre (0.5, 0.5)),
the pixel-edge convention of our intrinsics.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..cancel import checkpoint

WINDOW = 5  # each frame is matched with the next WINDOW frames
WIDE_STEPS = (8, 13, 21, 34)  # and with frames this far ahead when their input cameras look alike
WIDE_MAX_ANGLE_DEG = 40.0
MAX_FEATURES = 4096
SIFT_MAX_SIDE = 1024  # SIFT runs on the frame reduced by a whole factor until its long side is at most this
RATIO = 0.8
MATCH_BLOCK = 512  # rows of the similarity product reduced at once (match_pair)
MIN_PAIR_INLIERS = 15
F_MAX_ERROR_PX = 3.0


@dataclass
class Features:
    xy: list  # per view (M,2) float64 source pixels
    desc: list  # per view (M,128) float32, L2-normalised
    rgb: list | None = None  # per view (M,3) uint8 colour under each keypoint
    shape: list | None = None  # per view (M,2) SIFT scale (source pixels) and orientation (radians)
    factor: int = 1  # the largest whole factor SIFT's frames were reduced by (sift_factor)


@dataclass
class TrackSet:
    """``obs_track[k]`` is the track of observation k, seen in view ``obs_view[k]`` at ``obs_xy[k]``."""

    obs_track: np.ndarray  # (O,) int64
    obs_view: np.ndarray  # (O,) int64
    obs_xy: np.ndarray  # (O,2) float64
    obs_feature: np.ndarray  # (O,) int64 keypoint index within its view

    @property
    def num_tracks(self) -> int:
        return int(self.obs_track.max()) + 1 if len(self.obs_track) else 0

    @property
    def starts(self) -> np.ndarray:
        """(T+1,): track t's observations are ``starts[t]:starts[t + 1]`` (they are sorted by track), so
        ``starts[:-1]`` are the tracks' first observations."""
        return np.concatenate([[0], np.cumsum(np.bincount(self.obs_track, minlength=self.num_tracks))]).astype(np.int64)

    def subset(self, keep: np.ndarray) -> "TrackSet":
        """The observations in ``keep`` (bool mask), tracks with fewer than 2 dropped and renumbered."""
        t, v, xy, f = self.obs_track[keep], self.obs_view[keep], self.obs_xy[keep], self.obs_feature[keep]
        counts = np.bincount(t, minlength=self.num_tracks)
        ok = counts[t] >= 2
        t, v, xy, f = t[ok], v[ok], xy[ok], f[ok]
        _, t = np.unique(t, return_inverse=True)
        order = np.lexsort((v, t))
        return TrackSet(t[order].astype(np.int64), v[order], xy[order], f[order])


def colours_at(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    col = np.clip(xy[:, 0].astype(int), 0, img.shape[1] - 1)
    row = np.clip(xy[:, 1].astype(int), 0, img.shape[0] - 1)
    return np.asarray(img[row, col, :3], dtype=np.uint8).reshape(-1, 3)


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """float32 luminance (0-255) of an RGB(A) or grey frame."""
    img = np.asarray(image)
    if img.ndim == 3:
        return img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return img.astype(np.float32)


def to_gray(image: np.ndarray, factor: int = 1) -> np.ndarray:
    """uint8 luminance, reduced by the whole ``factor`` (the mean of each factor x factor block; the
    rows and columns past the last whole block are left out)."""
    img = to_gray_float(image)
    if factor > 1:
        h, w = img.shape[0] // factor, img.shape[1] // factor
        img = img[:h * factor, :w * factor].astype(np.float32).reshape(h, factor, w, factor).mean(axis=(1, 3))
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def sift_factor(width: int, height: int) -> int:
    """The whole factor the frame is reduced by for SIFT: its long side at most SIFT_MAX_SIDE."""
    return max(1, -(-max(int(width), int(height)) // SIFT_MAX_SIDE))


def make_extractor(pycolmap, threads: int = -1):
    opt = pycolmap.FeatureExtractionOptions()
    opt.num_threads = threads
    opt.sift.max_num_features = MAX_FEATURES
    opt.sift.first_octave = 0  # no upsampled octave: 3-4x faster, plenty of features at frame size
    return pycolmap.FeatureExtractor.create(opt, device=pycolmap.Device.cpu)


def extract(pycolmap, extractor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xy (M,2) float64, descriptors (M,128) float32 unit length) of one frame."""
    kp, desc = extract_keypoints(pycolmap, extractor, image)
    return kp[:, :2], desc


def extract_keypoints(pycolmap, extractor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (M,4) float64: x, y, scale in source pixels and orientation, descriptors (M,128) float32
    unit length) of one frame, SIFT run on it reduced by :func:`sift_factor`."""
    img = np.asarray(image)
    factor = sift_factor(img.shape[1], img.shape[0])
    kp, desc = extract_gray(pycolmap, extractor, to_gray(img, factor))
    return to_source(kp, factor), desc


def extract_gray(pycolmap, extractor, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extract_keypoints` of a uint8 grey frame as given, keypoints in its own pixels."""
    keypoints, descriptors = extractor.extract_from_uint8_array(gray)
    if len(keypoints) == 0:
        return np.zeros((0, 4)), np.zeros((0, 128), dtype=np.float32)
    kp = pycolmap.keypoints_to_matrix(keypoints).astype(np.float64)  # x, y, scale, orientation
    desc = np.asarray(descriptors.data, dtype=np.float32)
    if len(kp) > MAX_FEATURES:  # pycolmap's CPU SIFT does not cap (8,000+ at 1080p): keep the largest scales, as COLMAP does
        keep = np.sort(np.argsort(-kp[:, 2], kind="stable")[:MAX_FEATURES])
        kp, desc = kp[keep], desc[keep]
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    return kp, desc


def to_source(kp: np.ndarray, factor: int) -> np.ndarray:
    """Keypoints of a frame reduced by ``factor`` in source pixels (pixel-edge convention: a reduced
    pixel's centre i + 0.5 is factor * (i + 0.5) there); scales too, orientations as they are."""
    kp = np.array(kp, dtype=np.float64)
    kp[:, :3] *= factor
    return kp


def select_pairs(extrinsics: np.ndarray) -> list[tuple[int, int]]:
    """Sequential neighbours plus wider pairs whose viewing directions differ by < WIDE_MAX_ANGLE_DEG."""
    n = len(extrinsics)
    axes = extrinsics[:, 2, :3]  # camera z axis in world (rows of w2c rotation)
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    cos_max = np.cos(np.radians(WIDE_MAX_ANGLE_DEG))
    pairs = []
    for i in range(n):
        pairs += [(i, j) for j in range(i + 1, min(i + WINDOW + 1, n))]
        pairs += [(i, i + s) for s in WIDE_STEPS if i + s < n and axes[i] @ axes[i + s] > cos_max]
    return pairs


def match_pair(desc1: np.ndarray, desc2: np.ndarray) -> np.ndarray:
    """Mutual nearest neighbours passing the ratio test, (K,2) feature indices.

    The similarity product runs in blocks of :data:`MATCH_BLOCK` rows, each reduced while it is in the
    cache (row best, second best, running column best): the whole 2,500 x 2,500 product of a 1080p pair
    was written to memory and read three times, which took longer than the product (1.6x faster)."""
    n1 = len(desc1)
    if n1 < 2 or len(desc2) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    best12 = np.empty(n1, np.int64)
    first, second = np.empty(n1, np.float32), np.empty(n1, np.float32)
    column_best = np.full(len(desc2), -np.inf, np.float32)
    for a in range(0, n1, MATCH_BLOCK):
        sim = desc1[a:a + MATCH_BLOCK] @ desc2.T
        rows = np.arange(len(sim))
        best = np.argmax(sim, axis=1)
        best12[a:a + MATCH_BLOCK], first[a:a + MATCH_BLOCK] = best, sim[rows, best]
        np.maximum(column_best, sim.max(axis=0), out=column_best)  # mutual: i is its best's best (max, not argmax: ~7x faster)
        sim[rows, best] = -np.inf  # the second best is the best of the rest (faster than a partition)
        second[a:a + MATCH_BLOCK] = sim.max(axis=1)
    d1, d2 = np.sqrt(np.maximum(2 - 2 * first, 0)), np.sqrt(np.maximum(2 - 2 * second, 0))
    ok = (first >= column_best[best12]) & (d1 < RATIO * d2)
    idx = np.arange(n1)
    return np.stack([idx[ok], best12[ok]], axis=1)


def verify_pair(pycolmap, xy1: np.ndarray, xy2: np.ndarray, matches: np.ndarray) -> np.ndarray:
    """The matches consistent with one fundamental matrix (LO-RANSAC), or none if too few."""
    if len(matches) < MIN_PAIR_INLIERS:
        return matches[:0]
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = F_MAX_ERROR_PX
    ransac.random_seed = 0
    ransac.min_num_trials = 200
    result = pycolmap.estimate_fundamental_matrix(xy1[matches[:, 0]], xy2[matches[:, 1]], ransac)
    if not result:
        return matches[:0]
    inliers = matches[np.asarray(result["inlier_mask"], dtype=bool)]
    return inliers if len(inliers) >= MIN_PAIR_INLIERS else matches[:0]


def verified_matches(pycolmap, features: Features, pairs: list, progress=None) -> dict:
    """``{(i, j): verified matches}`` of the ``pairs`` that keep some (:func:`match_pair`, then
    :func:`verify_pair`). The descriptors of a pair are matched while the pair before it is verified in a
    thread (pycolmap's RANSAC releases the GIL; the matching's product runs on both cores meanwhile): a
    third less time than one after the other. ``progress(k)`` after each pair; a cancel point there too."""
    verified = {}

    def collect(pair, future):
        m = future.result()
        if len(m):
            verified[pair] = m

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="da3-verify") as pool:
        pending = None
        try:
            for k, (i, j) in enumerate(pairs):
                checkpoint()
                future = pool.submit(verify_pair, pycolmap, features.xy[i], features.xy[j],
                                     match_pair(features.desc[i], features.desc[j]))
                if pending is not None:
                    collect(*pending)
                pending = ((i, j), future)
                if progress is not None:
                    progress(k)
            if pending is not None:
                collect(*pending)
        finally:
            if pending is not None:
                pending[1].cancel()
    return verified


def build_tracks(features: Features, pair_matches: dict) -> TrackSet:
    """Chain pairwise matches into tracks (union-find on keypoints); conflicting tracks dropped."""
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in features.xy])]).astype(np.int64)
    parent = np.arange(offsets[-1])

    def find(a):
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    for (i, j), m in pair_matches.items():
        for a, b in zip((m[:, 0] + offsets[i]).tolist(), (m[:, 1] + offsets[j]).tolist()):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    nodes = np.unique(np.concatenate([np.concatenate([m[:, 0] + offsets[i], m[:, 1] + offsets[j]])
                                      for (i, j), m in pair_matches.items()] or [np.zeros(0, np.int64)]))
    if len(nodes) == 0:
        return TrackSet(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64))
    roots = np.array([find(int(a)) for a in nodes])
    views = np.searchsorted(offsets, nodes, side="right") - 1
    _, track = np.unique(roots, return_inverse=True)
    # a track seen twice in one view is ambiguous: drop it
    key = track * (len(offsets) + 1) + views
    dup = np.zeros(track.max() + 1, dtype=bool)
    uniq, counts = np.unique(key, return_counts=True)
    dup[uniq[counts > 1] // (len(offsets) + 1)] = True
    keep = ~dup[track]
    feat = nodes - offsets[views]
    xy = np.concatenate(features.xy)[nodes] if len(nodes) else np.zeros((0, 2))
    full = TrackSet(track.astype(np.int64), views.astype(np.int64), xy, feat.astype(np.int64))
    return full.subset(keep)


def strongest_tracks(tracks: TrackSet, max_tracks: int, min_per_view: int = 150) -> TrackSet:
    """At most about ``max_tracks`` tracks for the bundle adjustment: the longest first (the most views tied
    together), then for any view left with fewer than ``min_per_view`` observations its longest others."""
    n_tracks = tracks.num_tracks
    if n_tracks <= max_tracks:
        return tracks
    length = np.bincount(tracks.obs_track, minlength=n_tracks)
    keep = np.zeros(n_tracks, dtype=bool)
    keep[np.argsort(-length, kind="stable")[:max_tracks]] = True
    n_views = int(tracks.obs_view.max()) + 1
    counts = np.bincount(tracks.obs_view[keep[tracks.obs_track]], minlength=n_views)
    for v in np.nonzero(counts < min_per_view)[0]:
        spare = np.unique(tracks.obs_track[(tracks.obs_view == v) & ~keep[tracks.obs_track]])
        keep[spare[np.argsort(-length[spare], kind="stable")][:min_per_view - counts[v]]] = True
    return tracks.subset(keep[tracks.obs_track])
