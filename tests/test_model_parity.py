"""The network reproduces the official DA3 code's outputs on the DA3-SMALL random-weight fixture.

The fixture arrays come from the official code in fp32 on CPU, fed ``input_tensor``. Raw arrays are
captured with forward hooks (the official fixture used hooks on the same modules).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from da3_blender.api import DepthAnything3  # noqa: E402
from da3_blender.errors import BadInputError, CancelledError  # noqa: E402
from da3_blender.model import dinov2, dpt  # noqa: E402
from da3_blender.model.precision import backbone_dtype  # noqa: E402

CASES = ["single_000", "pair_000_010", "triple_robot_f030_f090_f150_posed"]
RTOL = 1e-4  # depth, conf, intrinsics (relative)
ATOL = 1e-4  # backbone features, camera tokens, ray, pose encoding, extrinsics (absolute)


def max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.fixture(scope="module")
def model(fixture_dir):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return DepthAnything3.from_pretrained(fixture_dir, device="cpu", compute_dtype="fp32")  # parity is for fp32


class Capture:
    """Forward hooks on backbone, cam_dec and cam_enc (read only)."""

    def __init__(self, model):
        self.out = {}
        net = model.model
        self.handles = [getattr(net, name).register_forward_hook(self._hook(name)) for name in ("backbone", "cam_dec", "cam_enc")]

    def _hook(self, name):
        def hook(_module, _inputs, output):
            self.out[name] = output
        return hook

    def __enter__(self):
        return self.out

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module", params=CASES)
def case(request, model, fixture_dir):
    ref = dict(np.load(fixture_dir / f"{request.param}.npz"))
    kwargs = {}
    if "raw_cam_enc_in_extrinsics_norm" in ref:
        kwargs = dict(extrinsics=torch.from_numpy(ref["raw_cam_enc_in_extrinsics_norm"]),
                      intrinsics=torch.from_numpy(ref["raw_cam_enc_in_intrinsics"]))
    fractions = []
    with Capture(model) as cap:
        out = model(torch.from_numpy(ref["input_tensor"]), keep_ray=True, progress=fractions.append, **kwargs)
    return request.param, ref, {k: v.numpy() if torch.is_tensor(v) else v for k, v in out.items()}, cap, fractions


def test_backbone_features_and_camera_tokens(case):
    name, ref, _, cap, _ = case
    feats = cap["backbone"]
    assert len(feats) == 4
    for i, (feat, tok) in enumerate(feats):
        if f"raw_backbone_feat{i}" in ref:  # not stored for the posed case
            assert feat.shape == ref[f"raw_backbone_feat{i}"].shape
            assert max_abs(feat, ref[f"raw_backbone_feat{i}"]) <= ATOL, (name, i)
        assert max_abs(tok, ref[f"raw_backbone_camtok{i}"]) <= ATOL, (name, i)


def test_head_outputs(case):
    name, ref, out, _, _ = case
    assert out["depth"].shape == ref["raw_head_depth"].shape
    assert out["ray"].shape == ref["raw_head_ray"].shape  # 8h x 8w, channel-last
    assert max_rel(out["depth"], ref["raw_head_depth"]) <= RTOL
    assert max_rel(out["depth_conf"], ref["raw_head_depth_conf"]) <= RTOL
    assert max_abs(out["ray"], ref["raw_head_ray"]) <= ATOL
    assert max_rel(out["ray_conf"], ref["raw_head_ray_conf"]) <= RTOL


def test_pose_encoding_and_cameras(case):
    name, ref, out, cap, _ = case
    assert max_abs(cap["cam_dec"], ref["raw_pose_enc"]) <= ATOL
    if "raw_cam_enc_tokens" in ref:
        assert max_abs(cap["cam_enc"], ref["raw_cam_enc_tokens"]) <= ATOL
        return  # the posed case's final cameras are the user's (inference.py aligns them)
    assert "cam_enc" not in cap
    assert max_rel(out["depth"][0], ref["depth"]) <= RTOL
    assert max_rel(out["depth_conf"][0], ref["conf"]) <= RTOL
    assert out["extrinsics"].shape[-2:] == (3, 4)
    assert max_abs(out["extrinsics"][0], ref["extrinsics"]) <= ATOL
    k, k_ref = out["intrinsics"][0], ref["intrinsics"]
    nonzero = k_ref != 0  # fx, fy, cx, cy, 1
    assert np.array_equal(k != 0, nonzero)
    assert max_rel(k[nonzero], k_ref[nonzero]) <= RTOL


def test_progress_reaches_one_in_order(case):
    *_, fractions = case
    assert len(fractions) >= 12 and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_default_forward_drops_ray_and_matches(model, fixture_dir):
    ref = np.load(fixture_dir / "single_000.npz")
    out = model(torch.from_numpy(ref["input_tensor"]))
    assert set(out) == {"depth", "depth_conf", "extrinsics", "intrinsics"}
    assert max_rel(out["depth"][0].numpy(), ref["depth"]) <= RTOL


def test_progress_exception_cancels(model, fixture_dir):
    x = torch.from_numpy(np.load(fixture_dir / "single_000.npz")["input_tensor"])
    calls = []

    def cancel(fraction):
        calls.append(fraction)
        raise CancelledError()

    with pytest.raises(CancelledError):
        model(x, progress=cancel)
    assert len(calls) == 1


def test_head_reports_between_view_chunks_so_cancel_is_prompt(model, monkeypatch):
    """The head is the longest stretch without a progress call; it must report after every chunk of views."""
    monkeypatch.setattr(dpt, "CHUNK", 1)
    calls = []
    model(torch.zeros(1, 3, 3, 28, 42), progress=calls.append)
    backbone_and_cameras = model.model.num_steps()
    assert len(calls) == backbone_and_cameras + 3  # one extra report after each of the 3 single-view chunks


@pytest.fixture(scope="module")
def unposed_triple(fixture_dir):
    """Three views (the robot frames) without their cameras."""
    return torch.from_numpy(np.load(fixture_dir / "triple_robot_f030_f090_f150_posed.npz")["input_tensor"])


def test_reference_view_reorder_is_restored(model, unposed_triple, monkeypatch):
    picked = []
    select = dinov2.select_reference_view

    def spy(tokens, strategy):
        picked.append(int(select(tokens, strategy)[0]))
        return select(tokens, strategy)

    monkeypatch.setattr(dinov2, "select_reference_view", spy)
    x = unposed_triple
    with Capture(model) as cap:
        out = model(x, keep_ray=True)
    if picked[-1] == 0:  # saddle_balanced is order-equivariant: move the chosen view off the front
        x = x[:, [1, 2, 0]]
        with Capture(model) as cap:
            out = model(x, keep_ray=True)
    b = picked[-1]
    assert 0 < b < 3
    tokens_a = cap["backbone"]

    order = [b] + [v for v in range(3) if v != b]
    with Capture(model) as cap:
        ref = model(x[:, order], keep_ray=True, ref_view_strategy="first")
    assert picked[-1] == 0
    inverse = np.argsort(order)
    for key in ("depth", "depth_conf", "ray", "ray_conf", "extrinsics", "intrinsics"):
        got, want = out[key].numpy(), ref[key][:, inverse].numpy()
        assert max_abs(got, want) <= ATOL * max(1.0, np.abs(want).max()), key
    for (fa, ta), (fb, tb) in zip(tokens_a, cap["backbone"]):
        assert max_abs(fa, fb[:, inverse]) <= ATOL and max_abs(ta, tb[:, inverse]) <= ATOL


@pytest.mark.parametrize(
    "strategy, tokens, expected",
    [
        ("first", [[1, 0], [0, 1], [1, 1]], 0),
        ("middle", [[1, 0], [0, 1], [1, 1], [2, 1]], 2),
        # same direction: only the norm differs, the view with the middle norm is the most balanced
        ("saddle_balanced", [[1, 0], [3, 0], [2, 0]], 2),
        # similarity ranges (diagonal included): e2 .71, (e1+e2) 1.41, e1 1.71, -e1 1.0
        ("saddle_sim_range", [[0, 1], [0.7071, 0.7071], [1, 0], [-1, 0]], 2),
    ],
)
def test_reference_view_strategies(strategy, tokens, expected):
    t = torch.tensor(tokens, dtype=torch.float32)[None]
    assert int(dinov2.select_reference_view(t, strategy)[0]) == expected


def test_unknown_strategy_is_a_clear_error(model, unposed_triple):
    with pytest.raises(BadInputError, match="unknown ref_view_strategy 'empty'; use one of: saddle_balanced"):
        model(unposed_triple, ref_view_strategy="empty")


def test_bad_inputs_are_clear_errors(model):
    with pytest.raises(BadInputError, match="multiples of 14"):
        model(torch.zeros(1, 1, 3, 30, 28))
    with pytest.raises(BadInputError, match=r"\(B, N, 3, H, W\)"):
        model(torch.zeros(1, 3, 28, 28))
    with pytest.raises(BadInputError, match="intrinsics"):
        model(torch.zeros(1, 2, 3, 28, 28), extrinsics=torch.eye(4).expand(1, 2, 4, 4))


def test_precision_policy():
    assert backbone_dtype(torch.device("cpu"), "fp32") is None
    assert backbone_dtype(torch.device("cpu"), "fp16") is None  # never fp16 on a CPU
    assert backbone_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    assert backbone_dtype(torch.device("cuda"), "fp16") is torch.float16
    with pytest.raises(BadInputError, match="compute_dtype"):
        backbone_dtype(torch.device("cpu"), "int8")


def test_ray_pose_is_seedable(model, fixture_dir):
    pytest.importorskip("da3_blender.model.ray_pose")
    x = torch.from_numpy(np.load(fixture_dir / "pair_000_010.npz")["input_tensor"])
    a = model(x, use_ray_pose=True, ray_pose_seed=3)
    b = model(x, use_ray_pose=True, ray_pose_seed=3)
    assert a["extrinsics"].shape == (1, 2, 3, 4) and a["intrinsics"].shape == (1, 2, 3, 3)
    assert "ray" not in a
    assert torch.equal(a["extrinsics"], b["extrinsics"]) and torch.equal(a["intrinsics"], b["intrinsics"])


def test_nested_model_scales_depth_and_translations_together(model, fixture_dir, monkeypatch):
    """Nested = any-view net scaled to metres by a metric net; tested with small stand-in branches."""
    from da3_blender.model import config, net

    tiny_metric = config.NetConfig("vits", (4, 7, 9, 11), -1, False, "dpt", 64, (48, 96, 192, 384))
    monkeypatch.setitem(config.MODEL_CONFIGS, "test-metric-vits", tiny_metric)
    torch.manual_seed(0)
    nested = net.NestedDepthAnything3Net(config.NestedConfig("da3-small", "test-metric-vits")).eval()
    nested.da3.load_state_dict(model.model.state_dict())
    with torch.no_grad():  # a metric branch that sees sky (relu output >= 0.3) in part of the image
        nested.da3_metric.head.scratch.sky_output_conv2[2].bias.fill_(0.3)

    x = torch.from_numpy(np.load(fixture_dir / "pair_000_010.npz")["input_tensor"])
    seen = {}
    nested.da3_metric.register_forward_hook(lambda m, i, o: seen.update(o))
    with torch.inference_mode():
        out = nested(x)
        plain = model.model(x)
    non_sky = seen["sky"] < net.SKY_THRESHOLD
    assert 10 < int(non_sky.sum()) < non_sky.numel() - 10, "the stand-in should see sky and non-sky"
    s = out["scale_factor"]
    assert out["is_metric"] is True and s > 0
    torch.testing.assert_close(out["depth"][non_sky], plain["depth"][non_sky] * s, rtol=1e-5, atol=0)
    torch.testing.assert_close(out["extrinsics"][..., :3, 3], plain["extrinsics"][..., :3, 3] * s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["extrinsics"][..., :3, :3], plain["extrinsics"][..., :3, :3])
    far = out["depth"][~non_sky]
    assert torch.all(far == far[0]) and float(far[0]) <= 200.0
    assert torch.all(out["depth_conf"][~non_sky] == 1.0)
    # the scale is the least-squares fit of the focal-scaled metric depth (focal / 300) on confident non-sky pixels
    k = plain["intrinsics"]
    metric = seen["depth"] * ((k[:, :, 0, 0] + k[:, :, 1, 1]) / 2)[:, :, None, None] / 300
    conf = plain["depth_conf"]
    mask = non_sky & (conf >= torch.quantile(conf[non_sky], 0.5)) & (metric > 1e-2) & (plain["depth"] > 1e-3)
    d = plain["depth"][mask].double()
    assert s == pytest.approx(float((metric[mask].double() * d).sum() / (d * d).sum()), rel=1e-4)
