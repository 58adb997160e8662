"""Place recognition for the camera solve: which frames far apart in time see the same place.

Each frame gets a global descriptor: a bag of visual words built from the shot's own SIFT descriptors
(k-means vocabulary of :data:`WORDS` words on a sample of them), weighted by tf-idf and L2-normalised, so
that the cosine similarity of two frames is high when they share distinctive features. For each frame
the :data:`TOP_K` most similar frames at least :data:`MIN_GAP` frames away that score at least
:data:`MIN_SCORE_RATIO` times the shot's typical score between frames :data:`REFERENCE_GAP` apart
(frames that do overlap) are loop candidates; :mod:`.loops` verifies them. Numpy only.

Why not the DA3 backbone's pooled tokens (the official streaming's retrieval): the solve runs on the
source frames after the network, from the prediction alone (the backbone tokens are not one of the
official outputs the project reads), and the words from the shot's own descriptors find the same
keypoints the verification then matches.
"""

from __future__ import annotations

import numpy as np

WORDS = 256  # vocabulary size
SAMPLE_PER_FRAME = 512  # descriptors per frame that train the vocabulary
WORDS_PER_FRAME = 1536  # descriptors per frame that vote (the first, i.e. the largest-scale, ones)
KMEANS_ITERATIONS = 12
TOP_K = 5  # candidates per frame
MIN_GAP = 10  # frames: closer ones are the sequential matcher's
REFERENCE_GAP = 3  # the typical score of frames this far apart (which overlap) sets the bar ...
MIN_SCORE_RATIO = 0.25  # ... a candidate needs this share of it
CHUNK = 8192  # descriptors per assignment product


def _assign(desc: np.ndarray, centres: np.ndarray, check=None) -> np.ndarray:
    out = np.empty(len(desc), dtype=np.int64)
    for a in range(0, len(desc), CHUNK):
        if check is not None:  # a cancel is never more than one product (~20 ms) away
            check()
        out[a:a + CHUNK] = np.argmax(desc[a:a + CHUNK] @ centres.T, axis=1)
    return out


def vocabulary(descriptors: list, seed: int = 0, check=None) -> np.ndarray:
    """(WORDS,128) unit word centres: spherical k-means on a sample of every frame's descriptors."""
    rng = np.random.default_rng(seed)
    sample = [d[rng.choice(len(d), min(len(d), SAMPLE_PER_FRAME), replace=False)] for d in descriptors if len(d)]
    data = np.concatenate(sample).astype(np.float32) if sample else np.zeros((0, 128), np.float32)
    k = min(WORDS, len(data))
    if k == 0:
        return np.zeros((0, 128), np.float32)
    centres = data[rng.choice(len(data), k, replace=False)].copy()
    for _ in range(KMEANS_ITERATIONS):
        if check is not None:
            check()
        label = _assign(data, centres, check)
        sums = np.zeros_like(centres)
        np.add.at(sums, label, data)
        norm = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norm[:, 0] < 1e-12
        centres = np.where(empty[:, None], centres, sums / np.maximum(norm, 1e-12))
    return centres


def descriptors_tfidf(descriptors: list, centres: np.ndarray, check=None) -> np.ndarray:
    """(N,WORDS) L2-normalised tf-idf bag-of-words vectors, one per frame."""
    n, k = len(descriptors), len(centres)
    counts = np.zeros((n, k))
    for i, d in enumerate(descriptors):
        if check is not None:
            check()
        if len(d) and k:
            counts[i] = np.bincount(_assign(d[:WORDS_PER_FRAME], centres), minlength=k)
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    idf = np.log(n / np.maximum((counts > 0).sum(axis=0), 1))
    v = tf * idf[None, :]
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def similarity(descriptors: list, check=None) -> np.ndarray:
    """(N,N) cosine similarity of the frames' bag-of-words vectors."""
    bow = descriptors_tfidf(descriptors, vocabulary(descriptors, check=check), check)
    return bow @ bow.T


def candidates(sim: np.ndarray, exclude=frozenset(), min_gap: int = MIN_GAP, top_k: int = TOP_K,
               plausible: np.ndarray | None = None) -> list:
    """Loop candidate pairs ``(i, j)``, i < j, best first: per frame its ``top_k`` best frames at least
    ``min_gap`` away scoring over the bar (see the module doc), less the pairs in ``exclude``; only
    pairs where ``plausible`` (N,N) bool is True compete (the input cameras' prior, see :mod:`.loops`)."""
    n = len(sim)
    gap = REFERENCE_GAP if n > REFERENCE_GAP else 1
    reference = float(np.median(np.diagonal(sim, offset=gap))) if n > 1 else 0.0
    bar = MIN_SCORE_RATIO * reference
    idx = np.arange(n)
    found = {}
    for i in range(n):
        far = np.abs(idx - i) >= min_gap
        if plausible is not None:
            far &= plausible[i]
        order = np.argsort(-np.where(far, sim[i], -np.inf), kind="stable")[:top_k]
        for j in order:
            pair = (min(i, int(j)), max(i, int(j)))
            if far[j] and sim[i, j] >= bar and pair not in exclude:
                found[pair] = float(sim[i, j])
    return sorted(found, key=lambda p: -found[p])
