"""3D Gaussians (``infer_gs``): the head against the official code, the network and pipeline wiring,
the world frame of ``pred.gaussians``, the result file, and the one-line errors.

``tests/fixtures/gs_head_official.npz`` was made by ``scripts/make_gs_fixture.py`` with the OFFICIAL
``depth-anything-3==0.1.1`` GSDPT + GaussianAdapter (small dims, random weights, 42x70 px).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from da3_blender import geometry  # noqa: E402
from da3_blender.errors import BadInputError, ModelLoadError  # noqa: E402
from da3_blender.results.gaussians import Gaussians  # noqa: E402
from da3_blender.model.config import NetConfig  # noqa: E402
from da3_blender.model.dpt import GSDPT  # noqa: E402
from da3_blender.model.gs_adapter import GaussianAdapter, similarity_transform  # noqa: E402
from da3_blender.model.net import DepthAnything3Net  # noqa: E402
from da3_blender.model.sh_rotation import rotate_sh  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "gs_head_official.npz"
FIELDS = ("means", "scales", "rotations", "harmonics", "opacities")
RTOL = 1e-4  # max |ours - official| / max |official|, per field (and per SH band)
# a "giant" with a SMALL backbone: the same code paths (GS head + adapter), CI-sized
SMALL_GS = NetConfig("vits", (5, 7, 9, 11), 4, True, "dualdpt", 64, (48, 96, 192, 384), gs_head=True)


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


@pytest.fixture(scope="module")
def official():
    with np.load(FIXTURE, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _run_head(official, case):
    head = GSDPT(64, 32, (8, 16, 32, 32)).eval()
    head.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in official.items() if k.startswith("w/")}, strict=True)
    get = lambda k: torch.from_numpy(official[f"{case}/{k}"])  # noqa: E731
    height, width = official[f"{case}/in/depth"].shape[-2:]
    posed = f"{case}/in/input_extrinsics" in official
    with torch.no_grad():
        raw = head(list(get("in/feats")), height, width, get("in/images"))
        out = GaussianAdapter()(get("in/extrinsics"), get("in/intrinsics"), get("in/depth"), raw["raw_gs_conf"],
                                raw["raw_gs"], (height, width), get("in/input_extrinsics") if posed else None)
    return raw, out


@pytest.mark.parametrize("case", ["unposed", "posed"])
def test_gs_head_matches_the_official_code(official, case):
    raw, out = _run_head(official, case)
    worst = {"raw_gs_conf": _rel(raw["raw_gs_conf"], official[f"{case}/out/raw_gs_conf"])}
    for key in FIELDS:
        ref = official[f"{case}/out/{key}"]
        assert tuple(out[key].shape) == ref.shape, key
        worst[key] = _rel(out[key], ref)
    for band, sel in (("sh band 1", slice(1, 4)), ("sh band 2", slice(4, 9))):  # small: checked on their own
        worst[band] = _rel(out["harmonics"][..., sel], official[f"{case}/out/harmonics"][..., sel])
    print(f"{case}: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert max(worst.values()) <= RTOL, worst
    assert (float(out["pose_scale"][0]) != 1.0) == (case == "posed")  # the Umeyama scale step ran


def test_sh_rotation_is_a_representation():
    """Rotating by R1 then R2 equals rotating by R2 R1 (so moving Gaussians moves their colours consistently)."""
    g = torch.Generator().manual_seed(0)
    sh = torch.randn(5, 3, 9, generator=g)
    r1, r2 = (torch.as_tensor(geometry.quaternion_to_rotation(q), dtype=torch.float32)
              for q in (np.array([0.9, 0.2, -0.3, 0.1]), np.array([0.5, -0.5, 0.4, 0.6])))
    both = rotate_sh(rotate_sh(sh, r1), r2)
    np.testing.assert_allclose(both, rotate_sh(sh, r2 @ r1), atol=2e-5)
    np.testing.assert_allclose(rotate_sh(sh, torch.eye(3)), sh, atol=1e-6)
    assert not np.allclose(rotate_sh(sh, r1)[..., 1:], sh[..., 1:], atol=1e-2)


def _covariances(gs) -> np.ndarray:
    rot = geometry.quaternion_to_rotation(np.asarray(gs["rotations"], np.float64))  # read as w x y z
    scale = np.asarray(gs["scales"], np.float64)
    return np.einsum("...ij,...j,...kj->...ik", rot, scale**2, rot)


def test_similarity_transform_moves_centres_and_ellipsoids():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 6, 4, generator=g)
    gs = {"means": torch.randn(1, 6, 3, generator=g), "scales": torch.rand(1, 6, 3, generator=g) + 0.1,
          "rotations": q / q.norm(dim=-1, keepdim=True), "harmonics": torch.randn(1, 6, 3, 9, generator=g),
          "opacities": torch.rand(1, 6, generator=g)}
    rot = geometry.quaternion_to_rotation(np.array([0.8, -0.1, 0.5, 0.3]))
    t = np.array([1.0, -2.0, 0.5])
    out = similarity_transform(gs, 2.5, rot, t)
    np.testing.assert_allclose(out["means"][0], 2.5 * gs["means"][0].numpy() @ rot.T + t, atol=1e-5)
    np.testing.assert_allclose(_covariances({k: v[0] for k, v in out.items()}),
                               6.25 * rot @ _covariances({k: v[0] for k, v in gs.items()}) @ rot.T, atol=1e-4)
    np.testing.assert_array_equal(out["opacities"], gs["opacities"])


# -- the network and the pipeline ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gs_model():
    """A DepthAnything3 whose network is a giant-shaped net with a small backbone (random weights)."""
    from da3_blender.api import DepthAnything3

    torch.manual_seed(0)
    model = DepthAnything3("da3-small", device="cpu")
    model.model = DepthAnything3Net(SMALL_GS).eval()
    last = model.model.gs_head.scratch.output_conv2[-1]
    with torch.no_grad():  # no xy/depth offsets: centres lie exactly on the pixel rays at the depth
        last.weight[:2].zero_(), last.bias[:2].zero_(), last.weight[36].zero_(), last.bias[36].zero_()
    return model


def _images(n=2, h=42, w=56, seed=0):
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(n, 3, 4, 3))
    return [np.kron(im, np.ones((h // 3, w // 4, 1))).astype(np.uint8) for im in low]


def test_forward_gives_gaussians_only_when_asked(small_gs_model):
    x = torch.randn(1, 2, 3, 28, 42)
    plain = small_gs_model(x)
    assert "gaussians" not in plain
    out = small_gs_model(x, infer_gs=True)
    gs = out["gaussians"]
    m = 2 * 28 * 42
    assert tuple(gs["means"].shape) == (1, m, 3) and tuple(gs["harmonics"].shape) == (1, m, 3, 9)
    assert tuple(gs["rotations"].shape) == (1, m, 4) and tuple(gs["opacities"].shape) == (1, m)
    torch.testing.assert_close(out["depth"], plain["depth"])  # the head does not change the rest


def _distances(pred):
    """|mean - camera centre| per Gaussian and the prediction's depth, per view."""
    n, h, w = pred.depth.shape
    centres = geometry.camera_centers(pred.extrinsics)
    means = pred.gaussians.means.reshape(n, h * w, 3).astype(np.float64)
    return np.linalg.norm(means - centres[:, None], axis=-1).reshape(n, h, w), pred.depth


def test_inference_gaussians_in_the_prediction_frame(small_gs_model, tmp_path):
    from da3_blender.inference import run_inference
    from da3_blender.prediction import load_result, save_result

    pred = run_inference(small_gs_model, _images(), process_res=56, infer_gs=True)
    n, h, w = pred.depth.shape
    assert len(pred.gaussians) == n * h * w and pred.gaussians.check() is None
    dist, depth = _distances(pred)
    np.testing.assert_allclose(dist, depth, rtol=1e-4)  # depth is the distance along the unit ray
    for i in range(n):  # and the rays go through the pixel centres of the predicted cameras
        uv, z = geometry.project_points(pred.gaussians.means.reshape(n, h * w, 3)[i].astype(np.float64),
                                        pred.intrinsics[i], pred.extrinsics[i])
        u, v = geometry.pixel_grid(h, w)
        np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], -1), atol=2e-3)
        assert np.all(z > 0)
    path = save_result(tmp_path / "r.npz", pred)
    back = load_result(path)
    for key in FIELDS:
        np.testing.assert_array_equal(getattr(back.gaussians, key), getattr(pred.gaussians, key))
    with np.load(path, allow_pickle=False) as npz:
        assert {f"gs_{k}" for k in FIELDS} <= set(npz.files)
    assert load_result(save_result(tmp_path / "plain.npz", run_inference(small_gs_model, _images(), process_res=56))).gaussians is None


def test_posed_inference_gaussians_follow_the_users_frame(small_gs_model, monkeypatch):
    """With poses the prediction is moved onto the user's cameras (scale 7, rotated): the Gaussians too,
    by the same Sim(3) (and without the adapter's own pose scale)."""
    from da3_blender.inference import run_inference

    n, h, w = 3, 42, 56
    rot0 = geometry.quaternion_to_rotation(np.array([0.9, 0.1, 0.3, -0.2]))
    ext = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3, :3] = rot0 @ geometry.quaternion_to_rotation(np.array([1.0, 0.0, 0.05 * i, 0.0]))
        c2w[:3, 3] = 7.0 * np.array([0.3 * i, 0.05 * i * i, 0.02 * i]) + np.array([4.0, -1.0, 2.0])
        ext[i] = np.linalg.inv(c2w)
    k = np.tile(np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]), (n, 1, 1))
    raw = {}
    forward = small_gs_model.forward
    monkeypatch.setattr(small_gs_model, "forward", lambda *a, **kw: raw.setdefault("out", forward(*a, **kw)))
    pred = run_inference(small_gs_model, _images(n), extrinsics=ext, intrinsics=k, process_res=56, infer_gs=True)
    np.testing.assert_allclose(pred.extrinsics, ext[:, :3], atol=1e-5)
    assert float(raw["out"]["gaussians"]["pose_scale"][0]) != 1.0
    predicted = raw["out"]["extrinsics"][0].numpy()
    fit = geometry.align_to_input_poses(predicted, ext)
    centres = (geometry.camera_centers(predicted) - fit.translation) @ fit.rotation / fit.scale  # in the user's frame
    means = pred.gaussians.means.reshape(n, h * w, 3).astype(np.float64)
    dist = np.linalg.norm(means - centres[:, None], axis=-1).reshape(n, h, w)
    np.testing.assert_allclose(dist, pred.depth, rtol=1e-4)
    assert not np.allclose(dist, np.linalg.norm(means - geometry.camera_centers(ext)[:, None], axis=-1).reshape(n, h, w),
                           rtol=1e-4)  # (the fit is not exact, so the test can tell the frames apart)


def test_nested_gaussians_take_the_metric_scale(monkeypatch):
    """NESTED: depth and cameras are scaled to metres after the head ran; the Gaussians follow."""
    from da3_blender.api import DepthAnything3
    from da3_blender.inference import run_inference
    from da3_blender.model import config
    from da3_blender.model.net import NestedDepthAnything3Net

    tiny_metric = NetConfig("vits", (5, 7, 9, 11), -1, False, "dpt", 64, (48, 96, 192, 384))
    monkeypatch.setitem(config.MODEL_CONFIGS, "tiny-gs", SMALL_GS)
    monkeypatch.setitem(config.MODEL_CONFIGS, "tiny-metric", tiny_metric)
    torch.manual_seed(0)
    model = DepthAnything3("da3-small", device="cpu")
    model.model = NestedDepthAnything3Net(config.NestedConfig("tiny-gs", "tiny-metric")).eval()
    sky = model.model.da3_metric.head.scratch.sky_output_conv2[-1]
    last = model.model.da3.gs_head.scratch.output_conv2[-1]
    with torch.no_grad():  # no sky; no xy/depth offsets
        sky.weight.zero_(), sky.bias.fill_(-1.0)
        last.weight[:2].zero_(), last.bias[:2].zero_(), last.weight[36].zero_(), last.bias[36].zero_()
    pred = run_inference(model, _images(2), process_res=56, infer_gs=True)
    assert pred.is_metric and abs(pred.scale_factor - 1.0) > 0.01
    dist, depth = _distances(pred)
    np.testing.assert_allclose(dist, depth, rtol=1e-4)


def test_gs_ply_export_turns_the_head_on(small_gs_model, tmp_path):
    """``export_format="gs_ply"`` alone is enough (as the CLI's ``--export-format gs_ply``)."""
    from da3_blender.results.gaussians import per_pixel_mask
    from da3_blender.inference import run_inference

    pred = run_inference(small_gs_model, _images(2), process_res=56, export_dir=tmp_path, export_format="gs_ply")
    assert pred.gaussians is not None
    data = (tmp_path / "gs_ply" / "0000.ply").read_bytes()
    assert f"element vertex {int(per_pixel_mask(pred.depth).sum())}\n".encode() in data[:200]


def test_models_without_the_head_refuse_before_any_work(monkeypatch):
    from da3_blender.pipeline import preprocess
    from da3_blender.api import DepthAnything3
    from da3_blender.inference import run_inference

    small = DepthAnything3("da3-small", device="meta")
    assert small.capabilities["gaussians"] is False
    assert DepthAnything3("da3-giant", device="meta").capabilities["gaussians"] is True
    monkeypatch.setattr(preprocess, "preprocess_images", lambda *a, **k: pytest.fail("preprocessed"))
    for kwargs in ({"infer_gs": True}, {"export_dir": "/nonexistent/x", "export_format": "gs_ply"}):
        with pytest.raises(BadInputError) as err:
            run_inference(small, _images(1), **kwargs)
        assert "\n" not in str(err.value) and "DA3-GIANT" in str(err.value)


def test_checkpoint_without_gs_head_weights(tmp_path):
    """Loads without the head; infer_gs then says the weights are missing. Partial heads stay errors."""
    from safetensors.torch import save_file

    from da3_blender.model.loading import load_safetensors_into

    def wrapped():
        torch.manual_seed(0)
        holder = torch.nn.Module()
        holder.model = DepthAnything3Net(SMALL_GS)
        return holder

    shared_ln_copies = re.compile(r"output_conv2_aux\.[123]\.2\.")  # one LayerNorm stored under 4 names
    state = {k: v.contiguous() for k, v in wrapped().state_dict().items() if not shared_ln_copies.search(k)}
    no_head = {k: v for k, v in state.items() if not k.startswith("model.gs_head.")}
    save_file(no_head, str(tmp_path / "nohead.safetensors"))
    holder = wrapped()
    load_safetensors_into(holder, tmp_path / "nohead.safetensors", torch.device("cpu"))
    assert holder.model.gs_head is None
    x = torch.randn(1, 1, 3, 28, 28)
    holder.model(x)  # depth and poses still work
    with pytest.raises(BadInputError, match="no 3D-Gaussian head weights"):
        holder.model(x, infer_gs=True)
    partial = dict(no_head, **{k: v for k, v in state.items() if k.startswith("model.gs_head.projects")})
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelLoadError, match="missing key"):
        load_safetensors_into(wrapped(), tmp_path / "partial.safetensors", torch.device("cpu"))


def test_gaussians_from_arrays_rejects_incomplete_sets():
    g = Gaussians(np.zeros((2, 3)), np.ones((2, 3)), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3, 9)), np.ones(2))
    assert Gaussians.from_arrays({}) is None
    arrays = g.to_arrays()
    del arrays["gs_scales"]
    with pytest.raises(ValueError, match="gs_scales"):
        Gaussians.from_arrays(arrays)
    assert g.check(3) is not None and g.check(2) is None
