"""Camera solve (da3_blender.solve) against ground truth: our own textured render with a known camera path.

The shot (48 frames, 960x540, rendered once per session with bpy/Cycles by scripts/render_solve_shot.py)
gets feed-forward-like cameras: every view rotated by 1 degree, moved by 3 % of the path length and its
focal length off by 5 %. After ``refine`` the cameras are compared with the ground truth after aligning
the gauge (orientation from all cameras, scale and offset from their centres).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from da3_blender import solve  # noqa: E402
from da3_blender.errors import BadInputError, CancelledError, MissingDependencyError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solve_helpers as H  # noqa: E402
from solve_helpers import FRAMES  # noqa: E402 (the shot fixture is in conftest.py)



def _perturbed(shot, seed=1, frames=None):
    sl = slice(0, frames)
    e, k = H.perturb(shot["extrinsics"][sl], shot["intrinsics"][sl], seed=seed)
    return H.prediction(e, k, shot["size"], paths=shot["paths"][sl]), e


def _check_solution(out, shot, e_in):
    s = out.meta["solve"]
    gt = shot["extrinsics"]
    rot, pos = H.gauge_errors(out.extrinsics, gt)
    rot_in, pos_in = H.gauge_errors(e_in, gt)
    focal = np.asarray(s["focal_px"]) / shot["intrinsics"][:, 0, 0] - 1
    assert s["reason"] is None and s["motion"] == "free"  # 3 m of travel: not a pan about one point
    assert s["rms_px"] <= 0.5, s["rms_px"]
    assert s["rms_px_before"] >= 3.0, s["rms_px_before"]  # the perturbed cameras are several px off
    assert rot.max() <= 0.1 and pos.max() <= 0.002, (rot.max(), pos.max())
    assert rot_in.max() > 0.5 and pos_in.max() > 0.02  # the input really was off
    assert np.abs(focal).max() <= 0.003, focal
    # processed-pixel intrinsics agree with the source-pixel focal lengths
    k_orig = np.asarray(out.proc_to_orig) @ out.intrinsics.astype(np.float64)
    np.testing.assert_allclose(k_orig[:, 0, 0], s["focal_px"], rtol=1e-5)
    assert len(s["per_view_rms_px"]) == FRAMES and s["tracks"] > 500 and s["observations"] > 3 * s["tracks"]
    return s


@pytest.mark.slow
def test_refine_fixed_lens_reaches_subpixel_ground_truth(shot):
    pred, e_in = _perturbed(shot)
    fractions = []
    out = solve.refine(pred, shot["paths"], lens="fixed", progress=lambda stage, f, msg: fractions.append(f))
    s = _check_solution(out, shot, e_in)
    assert s["distortion"] is None and len(set(s["focal_px"])) == 1  # one focal length for the shot
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    np.testing.assert_array_equal(out.depth, pred.depth)  # depth untouched: same frame and scale
    np.testing.assert_allclose(out.extrinsics[0], pred.extrinsics[0], atol=1e-5)  # view 0 keeps its pose
    np.testing.assert_array_equal(pred.extrinsics, e_in.astype(np.float32))  # the input is not modified


@pytest.mark.slow
def test_refine_radial_recovers_barrel_distortion(shot):
    pred, e_in = _perturbed(shot, seed=2)
    frames = H.radial_frames(shot["folder"], shot, k1=-0.05)
    out = solve.refine(pred, frames, lens="radial")
    s = _check_solution(out, shot, e_in)
    assert s["distortion"]["model"] == "radial"
    assert abs(s["distortion"]["k1"] - -0.05) <= 0.01, s["distortion"]


@pytest.mark.slow
def test_solve_ignores_depth_and_measure_matches_refine(shot):
    """Depth from a model that knows nothing of the scene (random) gives the same cameras; measure()
    reports the input cameras' error as refine does, and changes nothing."""
    n = 8
    pred, _ = _perturbed(shot, seed=3, frames=n)
    out = solve.refine(pred, shot["paths"][:n])
    rng = np.random.default_rng(0)
    pred.depth = rng.uniform(0.1, 50.0, pred.depth.shape).astype(np.float32)
    out_random = solve.refine(pred, shot["paths"][:n])
    np.testing.assert_allclose(out_random.extrinsics, out.extrinsics, atol=1e-6)
    assert out.meta["solve"]["rms_px"] < 0.6 < 3.0 < out.meta["solve"]["rms_px_before"]
    before = pred.extrinsics.copy()
    m = solve.measure(pred, shot["paths"][:n])
    np.testing.assert_array_equal(pred.extrinsics, before)
    assert m["rms_px"] > 3.0 and m["refinable_to_px"] < 0.6 and m["tracks"] > 100


def test_refine_keeps_cameras_that_are_already_right(shot):
    """Never worse: ground-truth cameras either improve within noise or come back unchanged."""
    n = 8
    pred = H.prediction(shot["extrinsics"][:n], shot["intrinsics"][:n], shot["size"], paths=shot["paths"][:n])
    out = solve.refine(pred, shot["paths"][:n], lens="zoom")
    s = out.meta["solve"]
    assert s["rms_px"] <= s["rms_px_before"] < 1.0
    rot, pos = H.gauge_errors(out.extrinsics, shot["extrinsics"][:n])
    assert rot.max() < 0.1 and pos.max() < 0.005


@pytest.mark.slow
def test_a_view_without_tracks_keeps_its_input_pose(shot):
    n, blank = 9, 4
    pred, e_in = _perturbed(shot, seed=6, frames=n)
    frames = list(shot["paths"][:n])
    frames[blank] = np.full((540, 960, 3), 90, np.uint8)  # a lens cap: nothing to track
    out = solve.refine(pred, frames)
    s = out.meta["solve"]
    assert s["reason"] is None and s["kept_input_pose"] == [blank] and s["per_view_rms_px"][blank] is None
    np.testing.assert_allclose(out.extrinsics[blank], pred.extrinsics[blank], atol=1e-6)
    rot, _ = H.gauge_errors(np.delete(out.extrinsics, blank, 0), np.delete(shot["extrinsics"][:n], blank, 0))
    assert rot.max() < 0.1


def test_bad_input_one_line_errors(shot, tmp_path):
    pred, _ = _perturbed(shot, frames=4)
    with pytest.raises(BadInputError, match="at least 2 views"):
        one = H.prediction(shot["extrinsics"][:1], shot["intrinsics"][:1], shot["size"])
        solve.refine(one, shot["paths"][:1])
    with pytest.raises(BadInputError, match="3 images for a prediction of 4 views"):
        solve.refine(pred, shot["paths"][:3])
    small = [np.zeros((270, 480, 3), np.uint8)] * 4
    with pytest.raises(BadInputError, match="480x270 but view 0"):
        solve.refine(pred, small)
    flat = [np.full((540, 960, 3), 128, np.uint8)] * 4  # textureless: no tracks
    with pytest.raises(BadInputError, match="textureless") as err:
        solve.refine(pred, flat)
    assert "\n" not in str(err.value)
    rng = np.random.default_rng(0)
    unrelated = [rng.integers(0, 255, (540, 960, 3), dtype=np.uint8) for _ in range(4)]  # not this shot's frames
    with pytest.raises(BadInputError, match="not this prediction's frames"):
        solve.refine(pred, unrelated)
    with pytest.raises(BadInputError, match="unknown lens model"):
        solve.refine(pred, shot["paths"][:4], lens="fisheye")
    with pytest.raises(CancelledError):
        solve.refine(pred, shot["paths"][:4], progress=lambda *a: (_ for _ in ()).throw(CancelledError()))


def test_missing_pycolmap_is_one_line_before_any_work(monkeypatch):
    H.hide_pycolmap(monkeypatch)
    pred = H.prediction(np.tile(np.eye(4)[:3], (2, 1, 1)), np.tile(np.diag([500.0, 500.0, 1.0]), (2, 1, 1)), (64, 48))
    with pytest.raises(MissingDependencyError, match=r"pip install pycolmap==4\.2\.1") as err:
        solve.refine(pred, ["/nonexistent/a.png", "/nonexistent/b.png"])  # fails before reading the images
    assert "\n" not in str(err.value)


class ShotModel:
    """Stand-in for DepthAnything3 on the rendered shot: feed-forward-like cameras (perturbed ground
    truth) for the views it is given, each chunk in its own gauge and scale; flat depth."""

    def __init__(self, shot, n, seed=4):
        self.extr, self.k_orig = H.perturb(shot["extrinsics"][:n], shot["intrinsics"][:n], seed=seed)
        self.size = shot["size"]
        self.model_name, self.device = "da3-small", __import__("torch").device("cpu")
        self.capabilities = {"pose": True, "conf": True, "sky": False, "metric": False, "pose_conditioning": True}
        self.means = None
        self.calls = 0

    def forward(self, image, extrinsics=None, intrinsics=None, progress=None, **kwargs):
        import torch

        views = image[0].float().mean(dim=(1, 2, 3)).numpy()
        frames = [int(np.argmin(np.abs(self.means - v))) for v in views]  # which frames this chunk holds
        self.calls += 1
        h, w = image.shape[-2:]
        gauge = np.linalg.inv(np.vstack([self.extr[frames[0]], [0, 0, 0, 1]]))
        scale = 0.5 + self.calls
        w2c = []
        for f in frames:
            m = np.vstack([self.extr[f], [0, 0, 0, 1]]) @ np.linalg.inv(gauge)
            m[:3, 3] *= scale
            w2c.append(m[:3])
        k = np.diag([w / self.size[0], h / self.size[1], 1.0]) @ self.k_orig[frames]
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
        n = len(frames)
        return {"depth": t(np.full((n, h, w), 3.0 * scale)), "depth_conf": t(np.ones((n, h, w))),
                "extrinsics": t(w2c), "intrinsics": t(k)}


@pytest.mark.slow
def test_inference_refines_the_stitched_shot_and_exports_its_tracks(shot, tmp_path):
    from da3_blender.inference import run_inference
    from da3_blender.inputs.images import load_image
    from da3_blender.pipeline.preprocess import normalize, prepare_images

    n = 12
    model = ShotModel(shot, n)
    pre = prepare_images([load_image(p) for p in shot["paths"][:n]], process_res=112, method="upper_bound_resize")
    model.means = normalize(pre.images).float().mean(dim=(1, 2, 3)).numpy()  # what forward() sees, per view
    stages = []
    pred = run_inference(model, shot["paths"][:n], process_res=112, chunk_size=6, chunk_overlap=3, refine=True,
                         export_dir=str(tmp_path), export_format="colmap", progress=lambda s, f, m: stages.append(s))
    s = pred.meta["solve"]
    assert model.calls > 1 and "solve" in stages and stages.index("solve") < stages.index("export")
    assert s["reason"] is None and s["rms_px"] < 0.6 and s["rms_px_before"] > 3.0
    rot, pos = H.gauge_errors(pred.extrinsics, shot["extrinsics"][:n])
    assert rot.max() < 0.1 and pos.max() < 0.005
    points = (tmp_path / "colmap" / "sparse" / "0" / "points3D.txt").read_text().splitlines()
    assert sum(1 for line in points if not line.startswith("#")) == s["tracks"]


def test_refine_option_on_every_surface(tmp_path):
    from da3_blender.commands.main import build_parser
    from da3_blender.commands.common import job_from_args
    from da3_blender.job import build_job
    from da3_blender.inference import run_inference

    assert build_job(["a.png"], options={"refine": "radial"})["options"]["refine"] == "radial"
    assert build_job(["a.png"], options={"refine": True})["options"]["refine"] is True
    with pytest.raises(BadInputError, match="unknown refine lens 'fish'"):
        build_job(["a.png"], options={"refine": "fish"})
    assert build_job(["a.png"], options={"refine": True, "refine_motion": "nodal"})["options"]["refine_motion"] == "nodal"
    with pytest.raises(BadInputError, match="unknown refine motion 'dolly'"):
        build_job(["a.png"], options={"refine": True, "refine_motion": "dolly"})
    parser = build_parser()
    for argv, want in (([], None), (["--refine"], "fixed"), (["--refine", "zoom"], "zoom")):
        args = parser.parse_args(["auto", "x.png", *argv])
        assert args.refine == want
        assert job_from_args(args)["options"].get("refine") == want
        assert "refine_motion" not in job_from_args(args)["options"]  # not given: the solve's default (auto)
    args = parser.parse_args(["auto", "x.png", "--refine", "--refine-motion", "nodal"])
    assert job_from_args(args)["options"]["refine_motion"] == "nodal"

    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_script", H.ROOT / "scripts" / "reconstruct.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for argv, want in (([], None), (["--refine"], "fixed"), (["--refine", "radial"], "radial")):
        image = tmp_path / "x.png"
        image.write_bytes(b"")
        args = script.parse_args([str(image), "-o", str(tmp_path / "out.blend"), *argv])
        assert script.job_from_args(args)["options"].get("refine") == want
        settings = script.scene_settings(args)
        assert settings["refine_cameras"] == (want is not None) and settings.get("refine_lens") == want
    args = script.parse_args([str(image), "-o", str(tmp_path / "out.blend"), "--refine", "--refine-motion", "free"])
    assert script.job_from_args(args)["options"]["refine_motion"] == "free"
    assert script.scene_settings(args)["refine_motion"] == "free"

    class NeverRun:
        model_name, capabilities = "da3-small", {}

        def forward(self, *a, **k):
            raise AssertionError("the network ran before the option was checked")

    with pytest.raises(BadInputError, match="unknown refine lens"):
        run_inference(NeverRun(), [np.zeros((28, 28, 3), np.uint8)] * 2, refine="fisheye")
    with pytest.raises(BadInputError, match="unknown refine motion 'dolly'; use one of: auto, free, nodal"):
        run_inference(NeverRun(), [np.zeros((28, 28, 3), np.uint8)] * 2, refine=True, refine_motion="dolly")

