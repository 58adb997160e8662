"""A cancel during one long bundle-adjustment round (issue 25, item 15): pycolmap holds Python while Ceres
runs, so a long round runs in a child process (da3_blender/solve/isolate.py) that a cancel kills. The
child gives the in-process answer, imports no torch, and a cancel in the middle of a round of several
seconds ends it within 2 s in the process that asked, with no child left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from da3_blender.cancel import cancellable  # noqa: E402
from da3_blender.errors import CancelledError  # noqa: E402
from da3_blender.solve import isolate  # noqa: E402
from da3_blender.solve.bundle import Rig, adjust, residuals, triangulate  # noqa: E402
from da3_blender.solve.features import TrackSet  # noqa: E402

SIZE = (640, 480)


def synthetic(n, per_view, window=6, seed=0):
    """A dolly with a slow turn, ``per_view`` points 3-6 m in front of each view seen by the next ``window``
    views (0.3 px noise); returns the true rig, a start (focal +3 %, positions off by ~1 cm) and the tracks."""
    rng = np.random.default_rng(seed)
    f = 500.0
    a = np.radians(np.arange(n, dtype=float))
    R = np.zeros((n, 3, 3))
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = np.cos(a), -np.sin(a), 1, np.sin(a), np.cos(a)
    centres = np.stack([0.2 * np.arange(n), 0.01 * np.arange(n), np.zeros(n)], 1)
    truth = Rig(R=R, t=-np.einsum("nij,nj->ni", R, centres), f=np.full((n, 2), f),
                c=np.tile([SIZE[0] / 2, SIZE[1] / 2], (n, 1)), k=np.zeros((n, 2)))
    src = np.repeat(np.arange(n), per_view)
    uv = rng.uniform([40, 40], [SIZE[0] - 40, SIZE[1] - 40], (len(src), 2))
    z = rng.uniform(3, 6, len(src))
    cam = np.concatenate([(uv - truth.c[src]) / f * z[:, None], z[:, None]], 1)
    world = np.einsum("nji,nj->ni", R[src], cam - truth.t[src])
    views = src[:, None] + np.arange(window)[None, :]
    ok = views < n
    obs_track, obs_view = np.broadcast_to(np.arange(len(src))[:, None], views.shape)[ok], views[ok]
    c = np.einsum("oij,oj->oi", R[obs_view], world[obs_track]) + truth.t[obs_view]
    xy = c[:, :2] / c[:, 2:3] * f + truth.c[obs_view]
    seen = (c[:, 2] > 0) & np.all((xy >= 0) & (xy < SIZE), axis=1)
    xy = xy[seen] + rng.normal(0, 0.3, (int(seen.sum()), 2))
    tracks = TrackSet(obs_track[seen].astype(np.int64), obs_view[seen].astype(np.int64), xy, np.arange(len(xy)))
    tracks = tracks.subset(np.ones(len(xy), bool))
    start = truth.copy()
    start.f *= 1.03
    start.t[1:] += rng.normal(0, 0.01, start.t[1:].shape)
    return truth, start, tracks


def _options(n):
    return dict(camera_of_view=np.zeros(n, np.int64), model="SIMPLE_PINHOLE", sizes=np.tile(SIZE, (n, 1)),
                constant_views=(3,), loss_scale=1.0)


def test_the_child_process_gives_the_in_process_answer(monkeypatch, tmp_path):
    """Forced into a child (threshold 0), a round returns the cameras and points the in-process round
    returns, and it did solve (the error drops to the noise); the child imports no torch."""
    n = 12
    _, start, tracks = synthetic(n, 60)
    points = triangulate(start, tracks)
    here = adjust(pycolmap, start, points, tracks, **_options(n))
    monkeypatch.setenv(isolate.CHILD_MIN_ENV, "0")
    child = isolate.adjust(pycolmap, start, points, tracks, **_options(n))
    for name in ("R", "t", "f", "c", "k"):
        np.testing.assert_allclose(getattr(child[0], name), getattr(here[0], name), rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(child[1], here[1], rtol=1e-9, atol=1e-9)
    before, after = residuals(start, points, tracks)[0], residuals(*child, tracks)[0]
    assert np.sqrt(np.mean(after ** 2)) < 0.6 < np.sqrt(np.mean(before ** 2))

    isolate.write_problem(tmp_path / "problem.npz", start, points, tracks, **_options(n))
    argv, env = isolate._child_command(tmp_path)
    run = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "pycolmap" in imported and not {m for m in imported if m.split(".")[0] == "torch"}
    assert np.load(tmp_path / "result.npz", allow_pickle=False)["points"].shape == points.shape


def _children(pattern: str) -> list[int]:
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if pattern in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the child processes from /proc")
def test_a_cancel_during_a_long_round_ends_it_within_two_seconds():
    """A round of ~100k observations (several seconds of Ceres on 2 cores) started in a job thread as the
    worker runs a solve; the user cancels 1 s into it, while Ceres runs: CancelledError within 2 s, the
    asking process alive and well, and no child process left."""
    n = 100
    _, start, tracks = synthetic(n, 400)  # ~210k observations: ~4.7 s of Ceres on a quiet 2-core machine (200: 1.2 s, too
    # close to the cancel at 1 s: the round could end in the same poll, as it did once in CI)
    assert len(tracks.obs_track) >= isolate.child_min_observations()  # the default threshold sends it to a child
    points = triangulate(start, tracks)
    flag, outcome = threading.Event(), []

    def check():
        if flag.is_set():
            raise CancelledError()

    def job():
        with cancellable(check):
            try:
                outcome.append(isolate.adjust(pycolmap, start, points, tracks, **_options(n)))
            except BaseException as exc:  # noqa: BLE001 - the test reads what ended the round
                outcome.append(exc)

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (pids := _children("bundle_child")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pids, "the long round did not start a child process"
    time.sleep(1.0)  # the child has read the problem and Ceres runs
    assert thread.is_alive() and not outcome, "the round ended before the cancel: make the problem bigger"
    asked = time.monotonic()
    flag.set()
    thread.join(10)
    waited = time.monotonic() - asked
    assert not thread.is_alive() and isinstance(outcome[0], CancelledError), outcome
    assert waited < 2.0, f"the cancel took {waited:.2f} s"
    assert not _children("bundle_child") and not Path(f"/proc/{pids[0]}").exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the child processes from /proc")
def test_a_worker_cancelled_during_the_bundle_adjustment_answers_and_keeps_its_model(fixture_dir, shot, tmp_path):
    """The whole path as Blender drives it: a solve job (the rendered shot, known cameras off by 1 degree)
    in a real worker with every round in a child (threshold 0), cancelled once the bundle adjustment
    runs: the worker answers ``cancelled`` within 2 s, leaves no child behind, and the next job runs on
    the model it had loaded (no second load)."""
    from da3_blender.runtime.client import WorkerClient

    import solve_helpers as H

    n = 8
    e, k = H.perturb(shot["extrinsics"][:n], shot["intrinsics"][:n], seed=2)
    job = {"inputs": [str(p) for p in shot["paths"][:n]], "output": str(tmp_path / "solve.npz"), "model": str(fixture_dir),
           "device": "cpu", "options": {"process_res": 140, "refine": "fixed", "refine_motion": "free",
                                        "extrinsics": e.tolist(), "intrinsics": k.tolist()}}
    client = WorkerClient(python=sys.executable, env={isolate.CHILD_MIN_ENV: "0"})
    try:
        job_id = client.submit(job)

        def in_bundle(event):
            assert event.get("event") not in ("result", "error"), f"the job ended before the cancel: {event}"
            return event.get("event") == "progress" and event.get("stage") == "solve" and event.get("fraction", 0) >= 0.7

        assert client.wait_for(in_bundle, 180) is not None, "the solve never reached its bundle adjustment"
        asked = time.monotonic()
        client.cancel(job_id)
        end = client.wait_job(job_id, 10)
        waited = time.monotonic() - asked
        assert end is not None and end["event"] == "error" and end["kind"] == "cancelled", end
        assert waited < 2.0, f"the worker answered the cancel after {waited:.2f} s"
        worker = client._proc.pid
        children = Path(f"/proc/{worker}/task")
        left = [pid for task in children.iterdir() for pid in (task / "children").read_text().split()]
        assert not left, f"the worker left child processes {left}"

        again = {**job, "output": str(tmp_path / "again.npz"), "inputs": job["inputs"][:2],
                 "options": {"process_res": 140}}
        end = client.wait_job(client.submit(again), 120)
        assert end is not None and end["event"] == "result" and end["summary"]["model_loads"] == 1, end
    finally:
        client.shutdown()
