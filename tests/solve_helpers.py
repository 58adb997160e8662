"""Ground-truth shots for the camera-solve tests: render (bpy), perturb, compare after a gauge fit."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import render_solve_shot  # noqa: E402

from da3_blender.prediction import Prediction  # noqa: E402

FRAMES = 48
PROC = (54, 96)  # processed (H, W): the depth the tests carry; the solve works on the source frames


def load_shot(folder) -> dict:
    with open(os.path.join(folder, "cameras.json")) as fh:
        info = json.load(fh)
    return {k: np.asarray(v, dtype=np.float64) if k in ("extrinsics", "intrinsics") else v for k, v in info.items()}


def path_length(extrinsics: np.ndarray) -> float:
    centres = -np.einsum("nji,nj->ni", extrinsics[:, :, :3], extrinsics[:, :, 3])
    return float(np.sum(np.linalg.norm(np.diff(centres, axis=0), axis=1)))


def _axis_angle(axis, angle):
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def perturb(extrinsics, intrinsics, seed=0, rot_deg=1.0, pos_frac=0.03, focal_frac=0.05):
    """Feed-forward-like cameras: every view rotated by rot_deg, moved by pos_frac of the path, focal off by focal_frac."""
    rng = np.random.default_rng(seed)
    length = path_length(extrinsics)
    out_e, out_k = extrinsics.copy(), intrinsics.copy()
    for i in range(len(extrinsics)):
        rot, t = extrinsics[i, :, :3], extrinsics[i, :, 3]
        centre = -rot.T @ t
        rot = _axis_angle(rng.normal(size=3), np.radians(rot_deg)) @ rot
        step = rng.normal(size=3)
        centre = centre + pos_frac * length * step / np.linalg.norm(step)
        out_e[i, :, :3], out_e[i, :, 3] = rot, -rot @ centre
        out_k[i, :2, :2] *= 1 + focal_frac * rng.choice([-1.0, 1.0])
    return out_e, out_k


def prediction(extrinsics, intrinsics_orig, size, depth=None, paths=None) -> Prediction:
    """A Prediction with these cameras (intrinsics given in source pixels) at a small processed size."""
    n = len(extrinsics)
    w, h = size
    to_orig = np.diag([w / PROC[1], h / PROC[0], 1.0])
    k_proc = np.linalg.inv(to_orig) @ intrinsics_orig
    if depth is None:
        depth = np.full((n, *PROC), 3.0, dtype=np.float32)
    return Prediction(depth=depth, extrinsics=extrinsics.astype(np.float32), intrinsics=k_proc.astype(np.float32),
                      orig_size=np.tile([w, h], (n, 1)), proc_to_orig=np.tile(to_orig, (n, 1, 1)),
                      source_paths=list(paths) if paths else None)


def gauge_errors(est_extr, gt_extr) -> tuple[np.ndarray, np.ndarray]:
    """Per-view rotation error (degrees) and position error (fraction of the path length) after aligning
    the gauge: orientation from all cameras, then scale and offset from their centres."""
    est_extr, gt_extr = np.asarray(est_extr, np.float64), np.asarray(gt_extr, np.float64)
    m = np.sum(np.einsum("nji,njk->nik", gt_extr[:, :, :3], est_extr[:, :, :3]), axis=0)
    u, _, vt = np.linalg.svd(m)
    q = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt  # est world -> gt world rotation
    rel = np.einsum("nij,nkj->nik", est_extr[:, :, :3] @ q.T, gt_extr[:, :, :3])
    rot_err = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    c_est = -np.einsum("nji,nj->ni", est_extr[:, :, :3], est_extr[:, :, 3]) @ q.T
    c_gt = -np.einsum("nji,nj->ni", gt_extr[:, :, :3], gt_extr[:, :, 3])
    ye, yg = c_est - c_est.mean(0), c_gt - c_gt.mean(0)
    s = np.sum(ye * yg) / np.sum(ye * ye)
    pos_err = np.linalg.norm(s * ye - yg, axis=1) / path_length(gt_extr)
    return rot_err, pos_err


def radial_frames(folder, shot, k1, k2=0.0) -> list[np.ndarray]:
    from PIL import Image

    frames = []
    size = tuple(shot["size"])
    for i, k in enumerate(shot["intrinsics"]):
        over = np.asarray(Image.open(os.path.join(folder, "overscan", f"frame_{i:04d}.png")).convert("RGB"))
        frames.append(render_solve_shot.warp_radial(over, k, k1, k2, size))
    return frames


CACHE_ENV = "DA3_TEST_CACHE"  # where rendered shots are kept between runs; "off": render into this run's tmp


def rendered_shot(tmp_path_factory, name: str, **kwargs) -> Path:
    """The folder of ``render_solve_shot.render_shot(**kwargs)``, rendered once per machine (issue 26, CI time).

    The render is deterministic (a fixed scene, Cycles at fixed samples and seed), so it is kept, read-only, in
    ``$DA3_TEST_CACHE`` (default ``~/.cache/da3-tests``) under a key of the render script's bytes, the
    arguments and the Blender version: any change to one renders again. Rendered into this run's tmp first and
    moved into place in one rename, so a crash or a concurrent run never leaves half a shot there.
    """
    pytest.importorskip("bpy")
    import hashlib
    import shutil
    import tempfile

    import bpy

    cache = os.environ.get(CACHE_ENV, "").strip() or str(Path.home() / ".cache" / "da3-tests")
    recipe = Path(render_solve_shot.__file__).read_bytes() + json.dumps([kwargs, bpy.app.version_string],
                                                                         sort_keys=True).encode()
    final = Path(cache) / f"{name}-{hashlib.sha256(recipe).hexdigest()[:16]}"
    if cache.lower() != "off" and (final / "cameras.json").is_file():
        return final
    folder = tmp_path_factory.mktemp(name)
    render_solve_shot.render_shot(str(folder), **kwargs)
    if cache.lower() == "off":
        return folder
    staging = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
        shutil.copytree(folder, staging / "shot")
        os.rename(staging / "shot", final)  # atomic; fails if another run got there first (the same bytes)
    except OSError:
        pass  # a read-only or full cache: this run's render serves
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return final if (final / "cameras.json").is_file() else folder


@pytest.fixture(scope="session")
def shot(tmp_path_factory):
    folder = os.environ.get("DA3_SOLVE_SHOT")  # a shot rendered before (scripts/render_solve_shot.py), to rerun faster
    if not folder:
        folder = rendered_shot(tmp_path_factory, "solve_shot", frames=FRAMES, width=960, height=540)
    info = load_shot(folder)
    info["folder"] = str(folder)
    info["paths"] = render_solve_shot.frame_paths(folder, FRAMES)
    return info




NODAL_FRAMES = 40


@pytest.fixture(scope="session")
def nodal_shot(tmp_path_factory):
    """A tripod pan (scripts/render_solve_shot.py --path nodal): one camera position, 40 frames of 960x540."""
    folder = os.environ.get("DA3_SOLVE_NODAL_SHOT")
    if not folder:
        folder = rendered_shot(tmp_path_factory, "solve_nodal_shot", frames=NODAL_FRAMES, width=960, height=540,
                               path="nodal")
    info = load_shot(folder)
    info["folder"] = str(folder)
    info["paths"] = render_solve_shot.frame_paths(folder, NODAL_FRAMES)
    return info


def solve_figures(out, shot) -> dict:
    """What a solve reached on a ground-truth shot: RMS, worst rotation (degrees) and position (fraction of the
    path) after the gauge fit, worst focal error (fraction), tracks (the benchmarks' columns)."""
    s = out.meta["solve"]
    rot, pos = gauge_errors(out.extrinsics, shot["extrinsics"])
    focal = np.abs(np.asarray(s["focal_px"]) / shot["intrinsics"][:, 0, 0] - 1).max()
    return {"rms": s["rms_px"], "rot": float(rot.max()), "pos": float(pos.max()), "focal": float(focal),
            "tracks": s["tracks"]}


def hide_pycolmap(monkeypatch) -> None:
    """Make ``import pycolmap`` fail as on a Python without it."""
    import builtins

    real_import = builtins.__import__

    def no_pycolmap(name, *args, **kwargs):
        if name == "pycolmap":
            raise ImportError("No module named 'pycolmap'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycolmap)


def refine_cancelled_at(pred, paths, when: str) -> float:
    """``solve.refine`` cancelled as the worker cancels a job (its check raises at the next cancel point)
    once a progress message starts with ``when``: the seconds from that request to the CancelledError."""
    import threading
    import time

    from da3_blender import solve
    from da3_blender.cancel import cancellable
    from da3_blender.errors import CancelledError

    flag = threading.Event()
    asked = []

    def check():
        if flag.is_set():
            raise CancelledError()

    def progress(stage, fraction, message):
        if message.startswith(when) and not flag.is_set():
            asked.append(time.monotonic())
            flag.set()

    with cancellable(check), pytest.raises(CancelledError):
        solve.refine(pred, paths, progress=progress)
    assert asked, f"no progress message started with {when!r}"
    return time.monotonic() - asked[0]
