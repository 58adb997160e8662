"""The solve's frame reading ahead (solve/read_ahead.py) and its second SIFT process (solve/sift_child.py)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from da3_blender.errors import CancelledError, DA3Error
from da3_blender.solve import sift_child
from da3_blender.solve.read_ahead import read_ahead


def test_read_ahead_gives_every_item_in_order_and_raises_where_reading_failed():
    with read_ahead(range(6), lambda item, i: (i, item * item)) as loaded:
        assert list(loaded) == [(i, i * i) for i in range(6)]

    def load(item, i):
        if i == 3:
            raise DA3Error(f"frame {i} is unreadable")
        return item

    got = []
    with pytest.raises(DA3Error, match="frame 3 is unreadable"):
        with read_ahead("abcdef", load) as loaded:
            for value in loaded:
                got.append(value)
    assert got == ["a", "b", "c"]  # the frames before the bad one arrived, in order


def test_read_ahead_stops_reading_when_the_consumer_stops():
    """A cancel in the consumer ends the block; the reading thread stops with it (no frame read to the end
    of a long video, no thread left behind)."""
    read = []

    def frames():
        for i in range(1000):
            read.append(i)
            yield i

    before = threading.active_count()
    with pytest.raises(CancelledError):
        with read_ahead(frames(), lambda item, i: item, depth=2) as loaded:
            for value in loaded:
                if value == 5:
                    raise CancelledError("cancelled")
    assert threading.active_count() == before
    assert len(read) < 12  # at most a few frames ahead of the consumer


def test_read_ahead_reads_while_the_consumer_works():
    """Loading (here a sleep that releases the GIL, as decoding does) overlaps the consumer's work."""
    start = time.perf_counter()
    with read_ahead(range(6), lambda item, i: time.sleep(0.1) or item) as loaded:
        for _ in loaded:
            time.sleep(0.1)
    assert time.perf_counter() - start < 1.0  # serial: 1.2 s; overlapped: ~0.7 s


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.uint8).reshape(3, 4), np.zeros((0, 128), np.float32),
                                   np.random.default_rng(0).normal(size=(5, 4))])
def test_the_sift_child_framing_carries_arrays_exactly(array):
    stream = io.BytesIO()
    sift_child.write_array(stream, array)
    stream.seek(0)
    back = sift_child.read_array(stream)
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_the_sift_child_framing_refuses_a_malformed_header():
    stream = io.BytesIO(np.array([7, 2, 3, 4, 0], dtype="<i8").tobytes())
    with pytest.raises(DA3Error, match="malformed"):
        sift_child.read_array(stream)
    with pytest.raises(EOFError):
        sift_child.read_array(io.BytesIO(b"\x00" * 10))


@pytest.fixture
def sift_helpers(monkeypatch) -> list:
    """Every SiftHelper the solve starts, even on a short shot (MIN_FRAMES lowered to 2)."""
    monkeypatch.setattr(sift_child, "MIN_FRAMES", 2)
    started = []
    real = sift_child.SiftHelper

    class Spy(real):
        def __init__(self):
            super().__init__()
            started.append(self)

    monkeypatch.setattr(sift_child, "SiftHelper", Spy)
    return started


def test_features_from_two_processes_equal_one_process(shot, monkeypatch, sift_helpers):
    """Every other frame's SIFT runs in the child: the features are the ones one process finds, in view order."""
    pytest.importorskip("pycolmap")
    import solve_helpers as H

    from da3_blender.solve import pipeline

    pycolmap = pipeline.require_pycolmap()
    n = 5
    pred = H.prediction(shot["extrinsics"][:n], shot["intrinsics"][:n], shot["size"])
    paths = shot["paths"][:n]
    started = sift_helpers
    two = pipeline._features(pycolmap, paths, pred, None)
    assert len(started) == 1 and started[0].proc.poll() is not None  # the child ran and has ended
    monkeypatch.setattr(pipeline, "PARALLEL_SIFT", False)
    one = pipeline._features(pycolmap, paths, pred, None)
    assert len(started) == 1
    for name in ("xy", "desc", "rgb", "shape"):
        for a, b in zip(getattr(two, name), getattr(one, name)):
            assert np.array_equal(a, b), name
    assert all(len(x) > 100 for x in two.xy)


def test_blocked_matching_finds_the_mutual_nearest_neighbours_that_pass_the_ratio_test():
    """match_pair reduces the similarity product block by block: the matches are the ones of the whole
    product (checked here by brute force over more rows than one block)."""
    from da3_blender.solve import features as feat

    rng = np.random.default_rng(3)
    n = 2 * feat.MATCH_BLOCK + 37
    a = rng.normal(size=(n, 128)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    perm = rng.permutation(n)
    b = a[perm] + rng.normal(scale=rng.uniform(0.01, 0.2, size=(n, 1)), size=(n, 128)).astype(np.float32)
    b = np.concatenate([b, rng.normal(size=(300, 128)).astype(np.float32)])  # distractors
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    sim = a.astype(np.float64) @ b.T.astype(np.float64)
    want = []
    for i in range(n):
        order = np.argsort(-sim[i])
        j, second = order[0], sim[i, order[1]]
        d1, d2 = np.sqrt(max(2 - 2 * sim[i, j], 0)), np.sqrt(max(2 - 2 * second, 0))
        if np.argmax(sim[:, j]) == i and d1 < feat.RATIO * d2:
            want.append((i, j))
    got = feat.match_pair(a, b)
    assert sorted(map(tuple, got.tolist())) == want
    assert len(want) > n // 2 and all(perm[j] == i for i, j in want if j < n)  # the true partners


def test_a_cancel_while_the_sift_child_works_ends_the_solve_and_the_child(shot, sift_helpers):
    pytest.importorskip("pycolmap")
    import solve_helpers as H

    n = 8
    pred = H.prediction(*H.perturb(shot["extrinsics"][:n], shot["intrinsics"][:n], seed=2), shot["size"],
                        paths=shot["paths"][:n])
    started = sift_helpers
    assert H.refine_cancelled_at(pred, shot["paths"][:n], "features 3/") < 2.0
    assert len(started) == 1 and started[0].proc.poll() is not None  # the child is gone, not left running
