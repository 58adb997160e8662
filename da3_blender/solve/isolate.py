"""A long bundle-adjustment round in a child process, so that a cancel stops it within moments.

pycolmap holds Python's GIL while Ceres runs and takes no per-iteration callback, so a cancel cannot
reach a round in progress; at a few hundred frames one round takes longer than the 2 s a cancel may
take. :func:`adjust` runs a round with at least :func:`child_min_observations` observations as
``python -m da3_blender.solve.bundle_child`` (the same :func:`~da3_blender.solve.bundle.adjust`, same
options and thread count, so the same result): the problem and the answer travel as ``.npz`` files of
plain arrays (never pickles) in a temporary folder. The parent polls the child and calls the cancel
:func:`~da3_blender.cancel.checkpoint` every :data:`POLL_S`; on a cancel (or any other exception) it
kills the child and removes the folder, and the worker, with its loaded model, carries on. Smaller
rounds (about a second or less) run in this process as before. The child imports numpy and pycolmap,
never torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..cancel import checkpoint
from ..errors import DA3Error
from .bundle import Rig
from .bundle import adjust as adjust_here
from .features import TrackSet

CHILD_MIN_OBSERVATIONS = 30_000  # ~0.7 s of Ceres on 2 cores; a child adds ~0.3 s (start, pycolmap import, the .npz files)
CHILD_MIN_ENV = "DA3_BA_CHILD_MIN_OBSERVATIONS"  # tests (and a user who wants every round cancellable) lower it
POLL_S = 0.1
_RIG = ("R", "t", "f", "c", "k")
_TRACKS = ("obs_track", "obs_view", "obs_xy", "obs_feature")


def child_min_observations() -> int:
    value = os.environ.get(CHILD_MIN_ENV, "").strip()
    return int(value) if value.isascii() and value.isdigit() else CHILD_MIN_OBSERVATIONS


def adjust(pycolmap, rig: Rig, points: np.ndarray, tracks: TrackSet, **options) -> tuple[Rig, np.ndarray]:
    """:func:`da3_blender.solve.bundle.adjust`, in a child process when the round is long (see the module)."""
    if len(tracks.obs_track) < child_min_observations():
        return adjust_here(pycolmap, rig, points, tracks, **options)
    return adjust_in_child(rig, points, tracks, **options)


def write_problem(path, rig: Rig, points, tracks: TrackSet, *, camera_of_view, model, sizes, constant_views=(),
                  refine_cameras=True, loss_scale=None, threads=-1, max_iterations=100) -> None:
    arrays = {name: np.asarray(getattr(rig, name), dtype=np.float64) for name in _RIG}
    arrays.update({name: np.asarray(getattr(tracks, name)) for name in _TRACKS})
    arrays.update(points=np.asarray(points, dtype=np.float64), camera_of_view=np.asarray(camera_of_view, dtype=np.int64),
                  sizes=np.asarray(sizes), constant_views=np.asarray(sorted(int(v) for v in constant_views), dtype=np.int64),
                  model=np.array(str(model)), refine_cameras=np.array(bool(refine_cameras)),
                  loss_scale=np.array(np.nan if loss_scale is None else float(loss_scale)), threads=np.array(int(threads)),
                  max_iterations=np.array(int(max_iterations)))
    np.savez(path, **arrays)


def read_problem(path) -> tuple[Rig, np.ndarray, TrackSet, dict]:
    with np.load(path, allow_pickle=False) as z:
        rig = Rig(**{name: z[name] for name in _RIG})
        tracks = TrackSet(*(z[name] for name in _TRACKS))
        loss = float(z["loss_scale"])
        options = dict(camera_of_view=z["camera_of_view"], model=str(z["model"]), sizes=z["sizes"],
                       constant_views=tuple(int(v) for v in z["constant_views"]), refine_cameras=bool(z["refine_cameras"]),
                       loss_scale=None if np.isnan(loss) else loss, threads=int(z["threads"]),
                       max_iterations=int(z["max_iterations"]))
        return rig, z["points"], tracks, options


def write_result(path, rig: Rig, points) -> None:
    np.savez(path, points=np.asarray(points, dtype=np.float64), **{name: getattr(rig, name) for name in _RIG})


def read_result(path, rig: Rig) -> tuple[Rig, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        out = Rig(**{name: z[name] for name in _RIG})
        if any(getattr(out, name).shape != getattr(rig, name).shape for name in _RIG):
            raise DA3Error("the bundle-adjustment child returned cameras of the wrong shape: please report it")
        return out, z["points"]


def child_python(module: str, *args: str) -> tuple[list, dict]:
    """argv and environment of ``python -m da3_blender.solve.<module> args...`` in this Python (the worker's,
    never Blender's), with the package importable wherever the extension put it."""
    package = __name__.rsplit(".", 1)[0]  # da3_blender.solve, wherever the extension put it
    root = Path(__file__).resolve().parents[len(__name__.split(".")) - 1]
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONHOME", None)
    return [sys.executable, "-m", f"{package}.{module}", *args], env


NO_WINDOW = {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if os.name == "nt" else {}  # Popen options


def _child_command(folder: Path) -> tuple[list, dict]:
    return child_python("bundle_child", str(folder / "problem.npz"), str(folder / "result.npz"))


def adjust_in_child(rig: Rig, points, tracks: TrackSet, **options) -> tuple[Rig, np.ndarray]:
    """Run one round in ``python -m ...bundle_child``; a cancel (raised by :func:`checkpoint`) kills it."""
    with tempfile.TemporaryDirectory(prefix="da3-ba-") as tmp:
        folder = Path(tmp)
        write_problem(folder / "problem.npz", rig, points, tracks, **options)
        argv, env = _child_command(folder)
        with open(folder / "stderr.txt", "wb") as err:
            # never the worker's stdin/stdout: they carry its protocol
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, **NO_WINDOW)
            try:
                while True:
                    try:
                        code = proc.wait(timeout=POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        checkpoint()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        checkpoint()  # a cancel asked while the round ran wins, even when the round ended in the same poll
        if code != 0:
            lines = (folder / "stderr.txt").read_text(errors="replace").strip().splitlines() or [f"exit status {code}"]
            raise DA3Error(f"the bundle adjustment failed in its child process ({lines[-1]}): please report it")
        return read_result(folder / "result.npz", rig)
