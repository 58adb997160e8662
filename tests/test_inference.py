"""run_inference: parity with the official DA3 pipeline on the random-weight fixture, posed runs with
1-3 views, input checks, metric scaling, progress/cancel and out-of-memory reporting."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from da3_blender import geometry
from da3_blender.pipeline import preprocess
from da3_blender.errors import BadInputError, CancelledError, OutOfMemoryError
from da3_blender.inference import run_inference

CASES = {
    "single_000": ["SOH/000.png"],
    "pair_000_010": ["SOH/000.png", "SOH/010.png"],
    "triple_robot_f030_f090_f150_posed": [f"robot_frames/robot_unitree_f{i:03d}.png" for i in (30, 90, 150)],
}


@pytest.fixture(scope="module")
def model(fixture_dir):
    from da3_blender.api import DepthAnything3

    return DepthAnything3.from_pretrained(str(fixture_dir), device="cpu")


def _reference(fixture_dir, case):
    with np.load(fixture_dir / f"{case}.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if not k.startswith("raw_")}


def _run_case(model, examples_dir, ref, case, **kwargs):
    paths = [str(examples_dir / p) for p in CASES[case]]
    if "input_extrinsics" in ref:
        kwargs.update(extrinsics=ref["input_extrinsics"], intrinsics=ref["input_intrinsics"])
    return run_inference(model, paths, process_res=504, **kwargs)


def _assert_matches_reference(pred, ref, rtol=1e-4):
    assert pred.depth.shape == ref["depth"].shape and pred.depth.dtype == np.float32
    np.testing.assert_allclose(pred.depth, ref["depth"], rtol=rtol, atol=0)
    np.testing.assert_allclose(pred.conf, ref["conf"], rtol=rtol, atol=0)
    assert pred.extrinsics.shape == ref["extrinsics"].shape  # (N,3,4)
    np.testing.assert_allclose(pred.extrinsics, ref["extrinsics"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(pred.intrinsics, ref["intrinsics"], rtol=1e-4, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_official_outputs_from_the_image_files(model, fixture_dir, examples_dir, case):
    """PNG files in, the official Prediction arrays out (resize, network, poses, alignment)."""
    ref = _reference(fixture_dir, case)
    pred = _run_case(model, examples_dir, ref, case)
    _assert_matches_reference(pred, ref)
    np.testing.assert_array_equal(pred.processed_images, ref["processed_images"])
    assert pred.source_paths == [str(examples_dir / p) for p in CASES[case]]
    assert list(pred.orig_size[0]) == ([1208, 680] if case.startswith(("single", "pair")) else [1024, 576])
    if "input_extrinsics" in ref:
        _check_posed_case(pred, ref, fixture_dir, case)


@pytest.mark.slow
def test_official_outputs_from_the_fixture_input_tensor(model, fixture_dir, examples_dir, monkeypatch):
    """Everything after preprocessing (forward, Prediction, processed_images) on the official input
    tensor itself, so a change in the resize cannot hide or cause a difference here."""
    case = "single_000"
    ref = _reference(fixture_dir, case)
    real = preprocess.preprocess_images

    def official_tensor(*args, **kwargs):
        result = real(*args, **kwargs)
        assert tuple(result.tensor.shape) == ref["input_tensor"].shape[1:]
        result.tensor = torch.from_numpy(ref["input_tensor"][0].copy())
        return result

    monkeypatch.setattr(preprocess, "preprocess_images", official_tensor)
    pred = _run_case(model, examples_dir, ref, case)
    _assert_matches_reference(pred, ref)
    np.testing.assert_array_equal(pred.processed_images, ref["processed_images"])


def _check_posed_case(pred, ref, fixture_dir, case):
    """Pose-conditioned run: the user's cameras come back, depth is in the user's units."""
    np.testing.assert_array_equal(pred.extrinsics, ref["input_extrinsics"][:, :3, :])
    # 1024x576 -> 504x280: K follows the resize
    k = ref["input_intrinsics"].astype(np.float64)
    sx, sy = 504 / 1024, 280 / 576
    np.testing.assert_allclose(pred.intrinsics, k * np.array([[sx], [sy], [1]]), rtol=1e-6)
    with np.load(fixture_dir / f"{case}.npz") as npz:
        raw_depth = npz["raw_head_depth"][0]
    ratio = raw_depth / pred.depth  # the network depth divided by one number: the Umeyama scale
    assert np.ptp(ratio) <= 1e-4 * ratio.mean()
    assert pred.meta["alignment_scale"] == pytest.approx(float(ratio.mean()), rel=1e-4)


def _synthetic_rig(n, width, height):
    """w2c poses: camera i turned 5*i degrees about y, centre (0.3 i, 0.05 i, 0); K fx = fy = 0.8 W."""
    ext, k = [], []
    for i in range(n):
        a = np.deg2rad(5.0 * i)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        centre = np.array([0.3 * i, 0.05 * i, 0.0])
        e = np.eye(4)
        e[:3, :3] = rot
        e[:3, 3] = -rot @ centre
        ext.append(e)
        k.append([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1]])
    return np.array(ext), np.array(k, dtype=np.float64)


@pytest.fixture(scope="module")
def soh_arrays(soh_images):
    from da3_blender.inputs.images import load_image

    return [load_image(p) for p in soh_images]


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_posed_one_and_two_views(model, soh_arrays, n):
    """The official API throws here (degenerate Umeyama); we align with a consistent scale."""
    images = soh_arrays[:n]
    ext, k = _synthetic_rig(n, 1208, 680)
    kept = run_inference(model, images, extrinsics=ext, intrinsics=k, process_res=140)
    mapped = run_inference(model, images, extrinsics=ext[:, :3, :], intrinsics=k, process_res=140,
                           align_to_input_ext_scale=False)
    np.testing.assert_allclose(kept.extrinsics, ext[:, :3, :], atol=1e-7)
    assert mapped.extrinsics.shape == (n, 3, 4)
    assert np.all(np.isfinite(kept.depth)) and np.all(kept.depth > 0)
    ratio = mapped.depth / kept.depth  # model units / user units: one scale for all pixels
    scale = float(ratio.mean())
    assert np.ptp(ratio) <= 1e-5 * scale
    assert scale == pytest.approx(kept.meta["alignment_scale"], rel=1e-5)
    # the user's cameras, mapped into the prediction frame, keep their rotations relative to each other
    rel_in = ext[-1, :3, :3] @ ext[0, :3, :3].T
    rel_out = mapped.extrinsics[-1, :, :3] @ mapped.extrinsics[0, :, :3].T
    np.testing.assert_allclose(rel_out, rel_in, atol=1e-5)
    if n == 2:  # camera distance is multiplied by the same scale the depth was divided by
        d_in = np.linalg.norm(np.diff(geometry.camera_centers(ext), axis=0))
        d_out = np.linalg.norm(np.diff(geometry.camera_centers(mapped.extrinsics), axis=0))
        assert d_out / d_in == pytest.approx(scale, rel=1e-4)


def test_user_intrinsics_without_poses_become_the_output_intrinsics(model, soh_arrays):
    k = np.array([[1000.0, 0, 600], [0, 1000.0, 340], [0, 0, 1]])
    pred = run_inference(model, soh_arrays[:1], intrinsics=k[None], process_res=140)
    np.testing.assert_allclose(pred.original_intrinsics()[0], k, rtol=1e-6)
    assert pred.extrinsics.shape == (1, 3, 4)


def test_in_memory_inputs_and_provenance(model, soh_images):
    from PIL import Image

    arr = np.asarray(Image.open(soh_images[0]).convert("RGB"))[::4, ::4].copy()
    pil = Image.fromarray(arr)
    pred = run_inference(model, [arr, pil], process_res=112)
    assert pred.num_views == 2
    assert pred.depth.shape == (2, 70, 112)  # 302x170 -> 112x63 (63.05) -> 112x70 (4.5 patches: ties go up)
    assert list(pred.orig_size[0]) == [arr.shape[1], arr.shape[0]]
    assert pred.source_paths == ["", ""]
    one = run_inference(model, str(soh_images[0]), process_res=112)  # a single path is fine
    assert one.source_paths == [str(soh_images[0])]
    assert one.is_metric is False and one.sky is None


def test_video_frames_keep_their_provenance(model, robot_video):
    from da3_blender.inputs.collect import collect_inputs

    frames = collect_inputs([robot_video], fps=2, max_frames=2)
    pred = run_inference(model, frames, process_res=70)
    assert pred.num_views == 2
    np.testing.assert_array_equal(pred.frame_numbers, frames.frame_numbers)
    np.testing.assert_array_equal(pred.timestamps, frames.timestamps)
    assert pred.frame_numbers[1] > pred.frame_numbers[0] >= 0 and np.all(np.isfinite(pred.timestamps))
    assert pred.source_paths == [str(robot_video)] * 2
    assert pred.meta["input_kind"] == "video" and pred.meta["video"]["fps"] == pytest.approx(frames.video["fps"])
    assert list(pred.orig_size[0]) == [1024, 576]


@pytest.mark.parametrize(
    "ext_n, k_n, words",
    [(3, 2, ["3 extrinsics", "2 images"]), (2, 3, ["3 intrinsics", "2 images"]), (1, 1, ["1 extrinsics", "2 images"])],
)
def test_count_mismatch_names_the_counts(model, ext_n, k_n, words):
    images = [np.zeros((56, 56, 3), np.uint8)] * 2
    ext, k = _synthetic_rig(max(ext_n, k_n), 56, 56)
    with pytest.raises(BadInputError) as err:
        run_inference(model, images, extrinsics=ext[:ext_n], intrinsics=k[:k_n], process_res=56)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"extrinsics": np.zeros((2, 2, 2))}, "shape"),
        ({"extrinsics": np.tile(np.diag([2.0, 2, 2, 1]), (2, 1, 1)), "intrinsics": np.tile(np.eye(3), (2, 1, 1))}, "rigid"),
        ({"extrinsics": [["a"]]}, "numbers"),
        ({"extrinsics": np.tile(np.eye(4), (2, 1, 1))}, "intrinsics"),  # poses without K
        ({"intrinsics": np.full((2, 3, 3), np.nan)}, "finite"),
        ({"export_dir": "x", "export_format": "glb-obj"}, "obj"),
        ({"process_res_method": "stretch"}, "stretch"),
    ],
)
def test_bad_arguments_are_one_line_errors(model, tmp_path, kwargs, text):
    images = [np.zeros((56, 56, 3), np.uint8)] * 2
    if "export_dir" in kwargs:
        kwargs = dict(kwargs, export_dir=str(tmp_path / "out"))
    with pytest.raises(BadInputError) as err:
        run_inference(model, images, process_res=56, **kwargs)
    assert text in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_no_images_is_a_bad_input(model):
    with pytest.raises(BadInputError):
        run_inference(model, [])
    with pytest.raises(BadInputError):
        run_inference(model, [np.zeros((32, 32, 3), np.float32)])


def test_progress_stages_and_cancel(model, tmp_path):
    images = [np.full((56, 84, 3), 100, np.uint8), np.full((56, 84, 3), 150, np.uint8)]
    seen = []
    run_inference(model, images, process_res=84, export_dir=str(tmp_path), export_format="mini_npz",
                  progress=lambda stage, fraction, message="": seen.append((stage, fraction)))
    stages = list(dict.fromkeys(s for s, _ in seen))
    assert stages == ["load", "preprocess", "forward", "postprocess", "export"]
    forward = [f for s, f in seen if s == "forward"]
    assert len(forward) > 3 and forward == sorted(forward) and forward[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for _, f in seen)

    def cancel(stage, fraction, message=""):
        if stage == "forward" and 0.0 < fraction < 1.0:
            raise CancelledError()

    with pytest.raises(CancelledError):
        run_inference(model, images, process_res=84, progress=cancel)


# ------------------------------------------------------------------------------------------------
# models we have no weights for: stand-ins with the DepthAnything3 interface


class _FakeModel(torch.nn.Module):
    """Returns depth 1.0 (and a sky probability) like a mono/metric model, or raises ``error``."""

    def __init__(self, model_name="da3metric-large", error=None):
        super().__init__()
        self.model_name = model_name
        self.capabilities = {"pose": False, "conf": False, "sky": True, "metric": "metric" in model_name,
                             "pose_conditioning": False}
        self.device = torch.device("cpu")
        self.error = error

    def forward(self, image, extrinsics=None, intrinsics=None, use_ray_pose=False,
                ref_view_strategy="saddle_balanced", progress=None):
        if self.error is not None:
            raise self.error
        b, n, _, h, w = image.shape
        sky = torch.zeros(b, n, h, w)
        sky[..., : h // 4, :] = 0.9
        return {"depth": torch.ones(b, n, h, w), "sky": sky}


def test_metric_large_depth_in_metres_with_intrinsics():
    k = np.array([[[600.0, 0, 56], [0, 500.0, 28], [0, 0, 1]]])  # 112x56 -> no resize at 112
    pred = run_inference(_FakeModel(), [np.zeros((56, 112, 3), np.uint8)], intrinsics=k, process_res=112)
    assert pred.is_metric is True
    np.testing.assert_allclose(pred.depth, 550.0 / 300.0, rtol=1e-6)  # focal = mean(fx, fy)
    np.testing.assert_allclose(pred.intrinsics[0], k[0], rtol=1e-6)
    assert pred.sky.dtype == bool and pred.sky[0, :14].all() and not pred.sky[0, 14:].any()


def test_metric_large_without_intrinsics_warns(caplog):
    with caplog.at_level(logging.WARNING):
        pred = run_inference(_FakeModel(), [np.zeros((56, 112, 3), np.uint8)], process_res=112)
    assert pred.is_metric is False
    np.testing.assert_allclose(pred.depth, 1.0)
    assert "intrinsics" in caplog.text and "300" in caplog.text
    raw = run_inference(_FakeModel(), [np.zeros((56, 112, 3), np.uint8)], process_res=112, metric_units=False,
                        intrinsics=np.eye(3)[None] * [[100], [100], [1]])
    assert raw.is_metric is False
    np.testing.assert_allclose(raw.depth, 1.0)


@pytest.mark.parametrize("name", ["da3metric-large", "da3mono-large"])
def test_poses_with_a_mono_or_metric_model_are_refused(name):
    ext, k = _synthetic_rig(1, 56, 56)
    with pytest.raises(BadInputError, match="does not take camera poses"):
        run_inference(_FakeModel(name), [np.zeros((56, 56, 3), np.uint8)], extrinsics=ext, intrinsics=k,
                      process_res=56)


@pytest.mark.parametrize(
    "error",
    [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), torch.cuda.OutOfMemoryError("CUDA out of memory")],
)
def test_out_of_memory_becomes_a_da3_error(error):
    with pytest.raises(OutOfMemoryError) as err:
        run_inference(_FakeModel(error=error), [np.zeros((56, 56, 3), np.uint8)], process_res=56)
    assert "fewer frames" in str(err.value)


def test_other_errors_are_not_disguised():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_inference(_FakeModel(error=RuntimeError("shape mismatch")), [np.zeros((56, 56, 3), np.uint8)],
                      process_res=56)
