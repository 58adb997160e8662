"""Long shots in chunks (da3_blender.pipeline.streaming through run_inference), on a synthetic stand-in network.

The stand-in sees a camera moving inside a box room. Every test image carries its frame number in its
pixels, so the stand-in knows which frames a forward got; it returns their ray-cast ground-truth depth
and cameras, each chunk in its own gauge (the chunk's first camera at the origin, a random scale), with
or without noise. The stitched result must be the ground truth up to one global Sim(3).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from da3_blender import geometry, options
from da3_blender.pipeline import streaming
from da3_blender.errors import BadInputError, CancelledError, DA3Error, OutOfMemoryError
from da3_blender.inference import run_inference
from da3_blender.pipeline.preprocess import IMAGENET_MEAN, IMAGENET_STD

H, W = 28, 42  # processed size: process_res 42 leaves 42x28 images as they are
K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
ROOM_LO, ROOM_HI = np.array([-4.0, -1.5, -5.0]), np.array([4.0, 1.5, 5.0])


# ------------------------------------------------------------------------------------------------
# the synthetic scene


def _look_at(position, target, roll):
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, -1.0, 0.0])  # OpenCV: y down, so world "up" is -y
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward], axis=1)  # camera axes in world coordinates (c2w rotation)
    c, s = np.cos(roll), np.sin(roll)
    return rot @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def room_trajectory(n: int) -> np.ndarray:
    """(n,4,4) camera-to-world: three quarters of an ellipse inside the room, bobbing, looking ahead and in."""
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        a = 1.5 * np.pi * i / max(n - 1, 1)
        position = np.array([2.5 * np.cos(a), 0.4 * np.sin(3 * a), 3.0 * np.sin(a)])
        target = np.array([-1.0 * np.sin(a), 0.2, 1.5 * np.cos(a)])
        c2w[i, :3, :3] = _look_at(position, target, 0.1 * np.sin(2 * a))
        c2w[i, :3, 3] = position
    return c2w


def ray_cast_depth(c2w: np.ndarray) -> np.ndarray:
    """z-depth (H,W) of the room's walls seen from one camera (pixel centres)."""
    u, v = geometry.pixel_grid(H, W)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # z = 1 in the camera
    dirs = rays @ c2w[:3, :3].T
    centre = c2w[:3, 3]
    with np.errstate(divide="ignore"):
        t = np.where(dirs > 0, (ROOM_HI - centre) / dirs, (ROOM_LO - centre) / dirs)
    return t.min(axis=-1)  # along a ray with z = 1 in the camera, t is the z-depth


def path_length(c2w: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum())


def frame_images(n: int) -> list[np.ndarray]:
    """Test images carrying their frame number in the red and green channels."""
    images = []
    for i in range(n):
        img = np.full((H, W, 3), 128, np.uint8)
        img[..., 0], img[..., 1] = i % 256, i // 256
        images.append(img)
    return images


def decode_frames(image: torch.Tensor) -> list[int]:
    """Frame numbers back from a normalised (1,n,3,H,W) batch."""
    px = image[0, :, :2, 0, 0].numpy().astype(np.float64)
    rgb = np.rint((px * np.array(IMAGENET_STD[:2]) + np.array(IMAGENET_MEAN[:2])) * 255).astype(int)
    return [int(r + 256 * g) for r, g in rgb]


def _small_rotation(rng, degrees):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(degrees) * rng.normal()
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


class RoomModel:
    """Stand-in for DepthAnything3: ground truth of the frames it is given, in the chunk's own gauge.

    ``metric``: scale 1 in every gauge (a metric model); ``depth_noise``: relative per-pixel noise;
    ``pose_noise``: (degrees, fraction of the room size) per camera; ``blank``: frames whose depth is
    invalid (0), e.g. a lens cap; ``fail``: {call number: exception}.
    """

    def __init__(self, n, metric=False, depth_noise=0.0, pose_noise=(0.0, 0.0), blank=(), fail=None, seed=0):
        self.c2w = room_trajectory(n)
        self.depth = np.stack([ray_cast_depth(c) for c in self.c2w])
        self.model_name = "da3nested-giant-large" if metric else "da3-small"
        self.capabilities = {"pose": True, "conf": True, "sky": False, "metric": metric, "pose_conditioning": True}
        self.device = torch.device("cpu")
        self.metric, self.depth_noise, self.pose_noise = metric, depth_noise, pose_noise
        self.blank, self.fail = set(blank), dict(fail or {})
        self.rng = np.random.default_rng(seed)
        self.calls: list[list[int]] = []
        self.scales: list[float] = []

    def forward(self, image, extrinsics=None, intrinsics=None, use_ray_pose=False, ref_view_strategy="saddle_balanced",
                progress=None, **kwargs):
        frames = decode_frames(image)
        self.calls.append(frames)
        for step in range(4):
            if progress is not None:
                progress(step / 4)
            if step == 1 and len(self.calls) in self.fail:
                raise self.fail[len(self.calls)]
        scale = 1.0 if self.metric else float(np.exp(self.rng.uniform(np.log(0.2), np.log(5.0))))
        self.scales.append(scale)
        gauge = np.linalg.inv(self.c2w[frames[0]])  # the chunk's first camera is its world origin
        w2c, depth = [], []
        for f in frames:
            c2w = gauge @ self.c2w[f]
            c2w[:3, 3] *= scale
            rot_deg, shift = self.pose_noise
            if rot_deg or shift:
                c2w[:3, :3] = _small_rotation(self.rng, rot_deg) @ c2w[:3, :3]
                c2w[:3, 3] += self.rng.normal(size=3) * shift * 8.0 * scale
            w2c.append(np.linalg.inv(c2w)[:3])
            d = self.depth[f] * scale
            if self.depth_noise:
                d = d * (1 + self.depth_noise * self.rng.normal(size=d.shape))
            depth.append(np.zeros_like(d) if f in self.blank else d)
        depth = np.stack(depth)
        conf = 1.0 + 4.0 * self.rng.random(depth.shape)
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
        return {"depth": t(depth), "depth_conf": t(conf), "extrinsics": t(w2c), "intrinsics": t(np.tile(K, (len(frames), 1, 1)))}


def run(model, n, **kwargs):
    return run_inference(model, frame_images(n), process_res=W, **kwargs)


def global_fit(pred, model):
    """One Sim(3) from the ground truth to the result (camera centres); returns (scale, rms / path length)."""
    gt = model.c2w[:, :3, 3]
    est = geometry.camera_centers(pred.extrinsics)
    s, rot, t = geometry.umeyama_sim3(gt, est)
    err = np.linalg.norm((est - t) @ rot / s - gt, axis=1)  # back in ground-truth units
    return s, float(np.sqrt(np.mean(err**2))) / path_length(model.c2w)


# ------------------------------------------------------------------------------------------------
# the stitched result is the ground truth up to one Sim(3)


@pytest.mark.parametrize("n, size, overlap", [(120, 8, 2), (110, 12, 4), (104, 16, 8)])
def test_noiseless_chunks_give_the_ground_truth_track_and_depth(n, size, overlap):
    model = RoomModel(n)
    pred = run(model, n, chunk_size=size, chunk_overlap=overlap)
    plan = streaming.plan_chunks(n, size, overlap)
    assert len(plan) > 5 and [c[0] for c in model.calls] == [start for start, _ in plan]
    assert sorted(set(sum(model.calls, []))) == list(range(n))  # every frame went through the network
    assert all(len(c) == size for c in model.calls)
    assert pred.depth.shape == (n, H, W) and pred.extrinsics.shape == (n, 3, 4)

    scale, rms = global_fit(pred, model)
    assert rms <= 1e-4
    np.testing.assert_allclose(pred.depth, model.depth * scale, rtol=1e-4)  # every view: one global scale
    np.testing.assert_allclose(geometry.camera_centers(pred.extrinsics[:1]), 0, atol=1e-6)  # first camera at the origin
    chunks = pred.meta["chunks"]
    assert [(c["start"], c["end"]) for c in chunks] == plan
    assert chunks[0]["scale"] == 1.0 and not any(c["fallback"] for c in chunks)
    # each chunk's fitted scale undoes its random gauge scale relative to the first chunk's
    for chunk, gauge in zip(chunks[1:], model.scales[1:]):
        assert chunk["scale"] == pytest.approx(model.scales[0] / gauge, rel=1e-5)
        assert chunk["residual"] < 1e-5
    assert pred.meta["streaming"].pop("loop_closure")["loops"] == []  # a walk that never comes back: no loop
    assert pred.meta["streaming"] == {"chunk_size": size, "chunk_overlap": overlap, "chunk_align": "sim3"}


@pytest.mark.parametrize("size, overlap", [(10, 3), (16, 2)])
def test_noisy_chunks_stay_within_one_percent_of_the_path(size, overlap):
    n = 110
    model = RoomModel(n, depth_noise=0.01, pose_noise=(0.1, 0.001), seed=3)
    pred = run(model, n, chunk_size=size, chunk_overlap=overlap)
    scale, rms = global_fit(pred, model)
    assert rms <= 0.01
    ratio = np.median(pred.depth / model.depth, axis=(1, 2)) / scale  # per view, after the one global scale
    assert np.abs(ratio - 1).max() < 0.03


def test_se3_keeps_the_metric_scale():
    n = 100
    model = RoomModel(n, metric=True, depth_noise=0.01, seed=5)
    pred = run(model, n, chunk_size=12, chunk_overlap=3)  # "auto" -> se3 for a metric model
    assert pred.meta["streaming"]["chunk_align"] == "se3"
    assert all(c["scale"] == 1.0 for c in pred.meta["chunks"])
    scale, rms = global_fit(pred, model)
    assert scale == pytest.approx(1.0, abs=2e-3) and rms <= 0.01
    assert np.median(pred.depth / model.depth) == pytest.approx(1.0, abs=2e-3)  # metres stay metres
    # the same noisy chunks fitted with a free scale let it wander from chunk to chunk
    free = run(RoomModel(n, metric=True, depth_noise=0.01, seed=5), n, chunk_size=12, chunk_overlap=3, chunk_align="sim3")
    assert any(c["scale"] != 1.0 for c in free.meta["chunks"])


def test_degenerate_overlap_falls_back_to_camera_centres(caplog):
    n, size, overlap = 38, 10, 3
    blank = set(range(7, 10))  # the whole overlap of chunk 2 has no valid depth
    model = RoomModel(n, blank=blank)
    with caplog.at_level(logging.WARNING, logger="da3_blender"):
        pred = run(model, n, chunk_size=size, chunk_overlap=overlap)
    chunks = pred.meta["chunks"]
    assert [c["fallback"] for c in chunks] == [False, True, False, False, False]
    assert "chunk 2/5 (frames 8-17)" in caplog.text and "camera centres" in caplog.text
    scale, rms = global_fit(pred, model)
    assert rms <= 1e-4
    keep = [i for i in range(n) if i not in blank]
    np.testing.assert_allclose(pred.depth[keep], model.depth[keep] * scale, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# known poses: every chunk in the user's frame


def test_known_poses_keep_the_users_frame_and_units():
    n = 30
    model = RoomModel(n)
    user_w2c = np.linalg.inv(model.c2w)
    user_w2c[:, :3, 3] *= 2.0  # the user's units: twice the room's
    k = np.tile(K, (n, 1, 1))
    pred = run(model, n, extrinsics=user_w2c, intrinsics=k, chunk_size=8, chunk_overlap=2)
    assert len(model.calls) == len(pred.meta["chunks"]) == 5
    np.testing.assert_allclose(pred.extrinsics, user_w2c[:, :3], atol=1e-6)
    np.testing.assert_allclose(pred.depth, 2.0 * model.depth, rtol=1e-4)
    mapped = run(RoomModel(n), n, extrinsics=user_w2c, intrinsics=k, chunk_size=8, chunk_overlap=2,
                 align_to_input_ext_scale=False)
    scale, rms = global_fit(mapped, model)  # the user's cameras in the first chunk's frame, one scale
    assert rms <= 1e-4
    np.testing.assert_allclose(mapped.depth, model.depth * scale, rtol=1e-4)


def test_known_poses_need_no_overlap():
    n = 20
    model = RoomModel(n)
    w2c = np.linalg.inv(model.c2w)
    pred = run(model, n, extrinsics=w2c, intrinsics=np.tile(K, (n, 1, 1)), chunk_size=5, chunk_overlap=0)
    assert [c for c in model.calls] == [list(range(i, i + 5)) for i in range(0, 20, 5)]
    np.testing.assert_allclose(pred.depth, model.depth, rtol=1e-4)


class MonoRoomModel(RoomModel):
    """A mono/metric-style stand-in: depth (and sky) per view, no cameras; views are independent."""

    def __init__(self, n, **kwargs):
        super().__init__(n, **kwargs)
        self.model_name = "da3mono-large"
        self.capabilities = {"pose": False, "conf": False, "sky": True, "metric": False, "pose_conditioning": False}

    def forward(self, image, **kwargs):
        frames = decode_frames(image)
        self.calls.append(frames)
        depth = torch.as_tensor(self.depth[frames], dtype=torch.float32)[None]
        return {"depth": depth, "sky": (depth > 6).float()}


def test_models_without_cameras_are_chunked_without_alignment():
    n = 20
    single = run(MonoRoomModel(n), n)
    model = MonoRoomModel(n)
    chunked = run(model, n, chunk_size=6, chunk_overlap=0)  # nothing to align: no overlap needed
    assert len(model.calls) == 4 and chunked.extrinsics is None
    np.testing.assert_array_equal(chunked.depth, single.depth)
    np.testing.assert_array_equal(chunked.sky, single.sky)
    assert all(c["scale"] == 1.0 for c in chunked.meta["chunks"])


# ------------------------------------------------------------------------------------------------
# one pass when the shot fits


def test_chunk_size_at_least_the_view_count_is_the_single_pass():
    n = streaming.CPU_CHUNK_SIZE
    single = run(RoomModel(n, seed=1), n)
    for size in (n, n + 5, options.AUTO_CHUNK):  # auto: the CPU chunk holds them all
        model = RoomModel(n, seed=1)
        pred = run(model, n, chunk_size=size)
        assert model.calls == [list(range(n))]
        for key in ("depth", "conf", "extrinsics", "intrinsics", "processed_images"):
            np.testing.assert_array_equal(getattr(pred, key), getattr(single, key))
        assert "chunks" not in pred.meta and pred.meta == single.meta


@pytest.fixture(scope="module")
def small_net():
    from da3_blender.api import DepthAnything3

    torch.manual_seed(0)
    return DepthAnything3("da3-small", device="cpu")


def test_the_real_network_single_pass_and_chunked(small_net):
    """DA3-SMALL with random weights: chunk_size >= N is bit-identical to one pass; a chunked run gives
    every view once, with the processed images a single pass gives."""
    model = small_net
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(5)]
    single = run_inference(model, images, process_res=56)
    same = model.inference(images, process_res=56, chunk_size=5)
    for key in ("depth", "conf", "extrinsics", "intrinsics", "processed_images"):
        np.testing.assert_array_equal(getattr(same, key), getattr(single, key))
    chunked = model.inference(images, process_res=56, chunk_size=3, chunk_overlap=1)
    assert [(c["start"], c["end"]) for c in chunked.meta["chunks"]] == [(0, 3), (2, 5)]
    assert chunked.depth.shape == single.depth.shape and np.isfinite(chunked.depth).all()
    np.testing.assert_array_equal(chunked.processed_images, single.processed_images)
    assert np.isfinite(chunked.extrinsics).all() and chunked.meta["chunks"][1]["scale"] > 0


def test_a_video_streams_frame_by_frame(small_net, robot_video, monkeypatch):
    """The sampled frames are decoded one at a time during the run (never held as a list of full-size
    frames) and give the same processed images as the frames read up front."""
    from da3_blender.inputs.collect import VideoFrames, collect_inputs

    frames = collect_inputs([robot_video], fps=4, max_frames=7)
    upfront = [np.array(f) for f in frames.images]  # iterating: one decode pass

    def no_indexing(self, item):
        raise AssertionError("run_inference must not hold every full-size frame")

    monkeypatch.setattr(VideoFrames, "__getitem__", no_indexing)
    pred = small_net.inference(frames, process_res=56, chunk_size=4, chunk_overlap=1)
    assert pred.num_views == 7 and len(pred.meta["chunks"]) == 2
    np.testing.assert_array_equal(pred.frame_numbers, frames.frame_numbers)
    assert pred.meta["input_kind"] == "video" and list(pred.orig_size[0]) == [1024, 576]
    reference = run_inference(small_net, upfront, process_res=56)
    np.testing.assert_array_equal(pred.processed_images, reference.processed_images)


# ------------------------------------------------------------------------------------------------
# bad input, progress, cancel, failures


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"chunk_size": 8, "chunk_overlap": 8}, "smaller than the chunk size"),
        ({"chunk_size": 4, "chunk_overlap": 6}, "smaller than the chunk size"),
        ({"chunk_size": 1}, ">= 2"),
        ({"chunk_size": 0}, ">= 2"),
        ({"chunk_size": 2.5}, "whole number"),
        ({"chunk_size": "big"}, "whole number"),
        ({"chunk_size": 8, "chunk_overlap": -1}, ">= 0"),
        ({"chunk_size": 8, "chunk_overlap": 0}, "no shared view"),
        ({"chunk_size": 8, "chunk_overlap": 0, "chunk_align": "sim3"}, "nothing to align"),
        ({"chunk_size": 8, "chunk_align": "affine"}, "affine"),
    ],
)
def test_bad_chunk_options_are_one_line_errors_before_any_work(tmp_path, kwargs, text):
    model = RoomModel(20)
    with pytest.raises(BadInputError) as err:
        run(model, 20, export_dir=str(tmp_path / "out"), **kwargs)
    assert text in str(err.value) and "\n" not in str(err.value)
    assert model.calls == [] and not (tmp_path / "out").exists()


def test_progress_names_the_chunk_and_gives_an_eta():
    seen = []
    run(RoomModel(30), 30, chunk_size=10, chunk_overlap=2,
        progress=lambda stage, fraction, message="": seen.append((stage, fraction, message)))
    forward = [(f, m) for s, f, m in seen if s == "forward"]
    fractions = [f for f, _ in forward]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = list(dict.fromkeys(m for _, m in forward if m.startswith("chunk")))
    assert messages[0] == "chunk 1/4 (frames 1-10)"
    assert messages[1].startswith("chunk 2/4 (frames 9-18), ~") and messages[1].endswith("left")
    assert messages[-1].startswith("chunk 4/4 (frames 21-30)")


def test_cancel_inside_a_chunk_stops_the_run():
    model = RoomModel(30)

    def cancel(stage, fraction, message=""):
        if message.startswith("chunk 2/"):
            raise CancelledError()

    with pytest.raises(CancelledError):
        run(model, 30, chunk_size=10, chunk_overlap=2, progress=cancel)
    assert len(model.calls) == 1  # stopped at the first report inside chunk 2


@pytest.mark.parametrize(
    "error, kind",
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), OutOfMemoryError),
        (BadInputError("image height and width must be multiples of 14"), BadInputError),
        (RuntimeError("shape mismatch"), DA3Error),
    ],
)
def test_a_failing_chunk_is_named(error, kind):
    with pytest.raises(kind) as err:
        run(RoomModel(30, fail={3: error}), 30, chunk_size=10, chunk_overlap=2)
    text = str(err.value)
    assert text.startswith("chunk 3/4 (frames 17-26)") and "\n" not in text
    assert str(error).split(".")[0] in text
    if kind is DA3Error:
        assert err.value.kind == "internal"


def test_plan_chunks_covers_every_view_with_full_chunks():
    for n, size, overlap in [(100, 16, 4), (17, 16, 4), (16, 16, 4), (10, 16, 2), (33, 8, 1), (50, 7, 6)]:
        plan = streaming.plan_chunks(n, size, overlap)
        assert plan[0][0] == 0 and plan[-1][1] == n
        assert all(end - start == min(size, n) for start, end in plan)
        assert all(b_start <= a_end - overlap for (_, a_end), (b_start, _) in zip(plan, plan[1:]))
        assert all(b_start > a_start for (a_start, _), (b_start, _) in zip(plan, plan[1:]))


def test_the_smallest_chunk_with_the_default_overlap():
    n = 12
    model = RoomModel(n)
    pred = run(model, n, chunk_size=options.MIN_CHUNK_SIZE)  # default overlap: one view less than the chunk
    assert pred.meta["streaming"]["chunk_overlap"] == 1 and len(model.calls) == n - 1
    assert global_fit(pred, model)[1] <= 1e-4


def test_auto_chunk_size_rule():
    assert streaming.auto_chunk_size("cpu", 500, (280, 504), "da3-small") == streaming.CPU_CHUNK_SIZE
    assert streaming.auto_chunk_size("cpu", 6, (280, 504), "da3-small") == 6  # the whole shot fits
    assert streaming.auto_chunk_size("cpu", 12, (280, 504), "da3-small") == 12  # two chunks would cost more
    assert options.default_chunk_overlap(16) < 16


def test_robust_fit_ignores_outliers():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(2000, 3)) * [3, 1, 5]
    rot = geometry.quaternion_to_rotation(np.array([0.9, 0.1, -0.3, 0.2]))
    dst = 1.7 * src @ rot.T + [0.5, -2, 1]
    dst[:200] += rng.normal(size=(200, 3)) * 3  # 10 % gross outliers (occlusion edges, sky)
    s, r, t, _ = streaming.robust_fit(src, dst, np.ones(len(src)))
    assert s == pytest.approx(1.7, rel=1e-6)
    np.testing.assert_allclose(r, rot, atol=1e-6)
    s_plain, _, _ = geometry.umeyama_sim3(src, dst)
    assert abs(s_plain - 1.7) > 1e-3  # least squares alone is pulled off
    s_rigid, _, _, _ = streaming.robust_fit(src, dst, np.ones(len(src)), with_scale=False)
    assert s_rigid == 1.0


def test_gaussians_run_in_one_pass_and_refuse_an_explicit_chunk_size():
    model = RoomModel(20)
    model.capabilities = {**model.capabilities, "gaussians": True}  # as DA3-GIANT
    with pytest.raises(BadInputError, match="one pass, not in chunks") as err:
        run(model, 20, chunk_size=8, infer_gs=True)
    assert "\n" not in str(err.value) and model.calls == []  # refused before any work
