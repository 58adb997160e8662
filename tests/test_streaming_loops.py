"""Loop closure in streaming (da3_blender.pipeline.streaming_loops) against ground truth.

The shot: a camera on a circle of 1 m inside a textured cylinder (radius 5 m) looking outwards, ray
cast in numpy (colour and exact depth). The stand-in model returns the ground-truth cameras and depth
of the views it is given, each chunk in its own gauge and scale, and for a run of consecutive views (a
streaming chunk) its first views (the overlap the next alignment uses) seen a little off: every
alignment is off by a small rigid move (a steady yaw bias and a random part), so the stitched path
drifts as streaming's does. The
loop chunk (views from two places) is seen right.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from da3_blender.errors import CancelledError
from da3_blender.inference import run_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solve_helpers as H  # noqa: E402

H_PX, W_PX, FOCAL, RADIUS, WALL = 84, 112, 80.0, 1.0, 5.0
CHUNK, OVERLAP = 8, 2


def _texture(phi, z, rng_seed=3):
    rng = np.random.default_rng(rng_seed)
    out = np.zeros(phi.shape + (3,))
    for c in range(3):
        for _ in range(14):
            n, m, ph, a = rng.integers(2, 40), rng.normal(0, 3), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1)
            out[..., c] += a * np.sin(n * phi + m * z + ph)
    return np.clip(128 + 28 * out, 0, 255).astype(np.uint8)


def circle_shot(n: int, turn_deg: float):
    """Ground-truth w2c (N,3,4), K (3,3), images (N,H,W,3) and depth (N,H,W) for ``n`` views over ``turn_deg``."""
    k = np.array([[FOCAL, 0, W_PX / 2], [0, FOCAL, H_PX / 2], [0, 0, 1.0]])
    v, u = np.mgrid[0:H_PX, 0:W_PX] + 0.5
    rays = np.stack([(u - W_PX / 2) / FOCAL, (v - H_PX / 2) / FOCAL, np.ones_like(u)], -1)
    extr, images, depth = [], [], []
    for i in range(n):
        a = np.radians(turn_deg) * i / n
        centre = RADIUS * np.array([np.cos(a), np.sin(a), 0.1 * np.sin(3 * a)])
        look = a + 0.3
        fwd = np.array([np.cos(look), np.sin(look), 0.0])
        right = np.array([np.sin(look), -np.cos(look), 0.0])
        c2w = np.stack([right, np.cross(fwd, right), fwd], 1)  # OpenCV: x right, y down, z forward
        d = rays @ c2w.T
        # |c_xy + l d_xy| = WALL
        qa = d[..., 0] ** 2 + d[..., 1] ** 2
        qb = 2 * (centre[0] * d[..., 0] + centre[1] * d[..., 1])
        qc = centre[0] ** 2 + centre[1] ** 2 - WALL ** 2
        lam = (-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
        hit = centre + lam[..., None] * d
        images.append(_texture(np.arctan2(hit[..., 1], hit[..., 0]), hit[..., 2]))
        depth.append(lam)
        extr.append(np.concatenate([c2w.T, (-c2w.T @ centre)[:, None]], 1))
    return np.array(extr), k, np.array(images), np.array(depth)


class DriftingModel:
    """Ground truth per call, its own gauge and scale; a consecutive run's first OVERLAP views a bit off."""

    def __init__(self, extr, k, images, depth):
        import torch

        from da3_blender.pipeline.preprocess import normalize

        self.extr, self.k, self.depth = extr, k, depth
        self.frames = normalize(images).reshape(len(images), -1)
        self.model_name, self.device = "da3-small", torch.device("cpu")
        self.capabilities = {"pose": True, "conf": True, "sky": False, "metric": False, "pose_conditioning": True}
        self.calls = []

    def forward(self, image, extrinsics=None, intrinsics=None, progress=None, **kwargs):
        import torch

        x = image[0].reshape(image.shape[1], -1)
        frames = [int(torch.argmin((self.frames - row).abs().mean(dim=1))) for row in x]
        self.calls.append(frames)
        rng = np.random.default_rng(frames[0])
        consecutive = frames == list(range(frames[0], frames[0] + len(frames)))
        off = np.eye(4)
        if consecutive and frames[0] > 0:  # this chunk's overlap views seen off: its alignment is off
            # a steady bias (a yaw of 2 degrees per alignment) and a random part, as streaming drifts
            off[:3, :3] = H._axis_angle([0, 1, 0], np.radians(2.0)) @ H._axis_angle(rng.normal(size=3), np.radians(0.2))
            step = rng.normal(size=3)
            off[:3, 3] = 0.01 * step / np.linalg.norm(step)
        gauge = np.vstack([self.extr[frames[0]], [0, 0, 0, 1]])
        scale = 0.5 + len(self.calls) % 3
        w2c = []
        for p, f in enumerate(frames):
            m = np.vstack([self.extr[f], [0, 0, 0, 1]])
            if p < OVERLAP:
                m = m @ off
            m = m @ np.linalg.inv(gauge)
            m[:3, 3] *= scale
            w2c.append(m[:3])
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
        n = len(frames)
        return {"depth": t(self.depth[frames] * scale), "depth_conf": t(np.ones((n, H_PX, W_PX))),
                "extrinsics": t(w2c), "intrinsics": t(np.tile(self.k, (n, 1, 1)))}


def _run(n, turn, **kwargs):
    extr, k, images, depth = circle_shot(n, turn)
    model = DriftingModel(extr, k, images, depth)
    pred = run_inference(model, list(images), process_res=W_PX, chunk_size=CHUNK, chunk_overlap=OVERLAP, **kwargs)
    return pred, extr, model


def _trajectory_error(pred, extr) -> float:
    rot, pos = H.gauge_errors(pred.extrinsics, extr)
    return float(np.sqrt(np.mean(pos ** 2)))


def test_loop_closure_closes_a_drifting_orbit():
    n, turn = 48, 400.0  # a full turn and a bit: the last chunk sees the first one's place again
    closed, extr, model = _run(n, turn)
    drifted, _, _ = _run(n, turn, loop_closure=False)
    figures = closed.meta["streaming"]["loop_closure"]
    assert figures["loops"] and all(b - a >= 2 for a, b in (lp["chunks"] for lp in figures["loops"]))
    assert any(c != list(range(c[0], c[0] + len(c))) for c in model.calls)  # a loop chunk ran (two places)
    err_closed, err_drifted = _trajectory_error(closed, extr), _trajectory_error(drifted, extr)
    assert err_drifted > 0.005, err_drifted  # the stitched path really drifted (RMS over 0.5 % of the path)
    assert err_closed * 5 <= err_drifted, (err_closed, err_drifted)
    assert "loop_closure" not in drifted.meta["streaming"]


def test_no_loop_changes_nothing():
    n, turn = 48, 150.0  # never comes back
    with_loops, _, model = _run(n, turn)
    without, _, _ = _run(n, turn, loop_closure=False)
    assert with_loops.meta["streaming"]["loop_closure"]["loops"] == []
    np.testing.assert_array_equal(with_loops.extrinsics, without.extrinsics)
    np.testing.assert_array_equal(with_loops.depth, without.depth)


def test_cancel_inside_loop_closure_is_quick():
    seen = []

    def progress(stage, fraction, message=""):
        if message.startswith("loop closure"):
            seen.append(time.monotonic())
            if len(seen) >= 2:
                raise CancelledError("cancelled")

    started = None
    with pytest.raises(CancelledError):
        started = time.monotonic()
        _run(48, 400.0, progress=progress)
    assert len(seen) >= 2 and seen[1] - seen[0] < 2.0 and started is not None


def test_known_poses_need_no_loop_closure():
    extr, k, images, depth = circle_shot(48, 400.0)
    model = DriftingModel(extr, k, images, depth)
    pred = run_inference(model, list(images), extrinsics=extr, intrinsics=np.tile(k, (48, 1, 1)), process_res=W_PX,
                         chunk_size=CHUNK, chunk_overlap=OVERLAP)
    assert "loop_closure" not in pred.meta["streaming"]
    assert all(c == list(range(c[0], c[0] + len(c))) for c in model.calls)  # no loop chunk ran


def test_loop_closure_option_on_every_surface(tmp_path):
    import importlib.util

    from da3_blender import options as opt
    from da3_blender.commands.common import job_from_args
    from da3_blender.commands.main import build_parser
    from da3_blender.errors import BadInputError
    from da3_blender.job import build_job, inference_kwargs

    assert opt.DEFAULT_LOOP_CLOSURE is True and opt.LOOP_MIN_FRAMES == 32
    assert inference_kwargs(build_job(["a.mp4"], options={"loop_closure": False}))["loop_closure"] is False
    with pytest.raises(BadInputError, match="option loop_closure must be bool"):
        build_job(["a.png"], options={"loop_closure": "yes"})
    parser = build_parser()
    assert job_from_args(parser.parse_args(["auto", "x.mp4", "--no-loop-closure"]))["options"]["loop_closure"] is False
    assert "loop_closure" not in job_from_args(parser.parse_args(["auto", "x.mp4"]))["options"]  # the default: on

    spec = importlib.util.spec_from_file_location("reconstruct_script", H.ROOT / "scripts" / "reconstruct.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    video = tmp_path / "x.mp4"
    video.write_bytes(b"")
    args = script.parse_args([str(video), "-o", str(tmp_path / "out.blend"), "--no-loop-closure"])
    assert script.job_from_args(args)["options"]["loop_closure"] is False
    assert script.scene_settings(args)["loop_closure"] is False
