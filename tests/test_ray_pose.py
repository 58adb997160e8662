"""Ray-map pose solver (spec §3.4) and pose normalisation (§6.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from da3_blender.model.ray_pose import solve_ray_pose
from da3_blender.model.transforms import affine_inverse, as_4x4, normalize_extrinsics

H_IMG, W_IMG = 192, 320  # model input size
H_MAP, W_MAP = 24, 40  # ray map


def rotation(axis, angle_deg) -> np.ndarray:
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.deg2rad(angle_deg)
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def synth_rays(rot_c2w, centre, fx, fy, cx=None, cy=None, seed=0):
    """Ray map of a pinhole camera (intrinsics in model-input pixels) at the ray-map resolution."""
    cx = W_IMG / 2 if cx is None else cx
    cy = H_IMG / 2 if cy is None else cy
    # pixel centres of the ray map, expressed in model-input pixels (pixel-edge coordinates)
    u = (np.arange(W_MAP) + 0.5) * W_IMG / W_MAP
    v = (np.arange(H_MAP) + 0.5) * H_IMG / H_MAP
    uu, vv = np.meshgrid(u, v)
    cam = np.stack([(uu - cx) / fx, (vv - cy) / fy, np.ones_like(uu)], axis=-1)
    scale = np.random.default_rng(seed).uniform(0.3, 3.0, size=uu.shape + (1,))  # directions have no scale
    d = cam @ np.asarray(rot_c2w).T * scale
    origin = np.broadcast_to(np.asarray(centre, dtype=np.float64), d.shape)
    return np.concatenate([d, origin], axis=-1)


CAMERAS = [  # (rotation c2w, centre, fx, fy)
    (rotation([0, 1, 0], 0.0), [0.0, 0.0, 0.0], 280.0, 280.0),
    (rotation([0.3, 1, 0.1], 25.0), [1.5, -0.2, 0.7], 350.0, 330.0),
    (rotation([1, -0.4, 0.2], -35.0), [-2.0, 0.4, 3.0], 200.0, 210.0),
    (rotation([0.1, 0.2, 1], 60.0), [0.3, 5.0, -1.0], 500.0, 500.0),
]


def _batch(cams, seed=0):
    ray = np.stack([synth_rays(*c, seed=seed + i) for i, c in enumerate(cams)])[None]
    conf = np.random.default_rng(seed).uniform(1.0, 3.0, size=ray.shape[:-1])
    return torch.from_numpy(ray).float(), torch.from_numpy(conf).float()


@pytest.mark.parametrize("pair", [(0, 1), (2, 3)])
def test_recovers_known_cameras(pair):
    cams = [CAMERAS[i] for i in pair]
    ray, conf = _batch(cams)
    w2c, k = solve_ray_pose(ray, conf, H_IMG, W_IMG, generator=torch.Generator().manual_seed(1))
    assert w2c.shape == (1, 2, 3, 4) and k.shape == (1, 2, 3, 3)
    assert w2c.dtype == torch.float32 and k.dtype == torch.float32
    c2w = affine_inverse(w2c[0].double()).numpy()
    for v, (rot, centre, fx, fy) in enumerate(cams):
        np.testing.assert_allclose(c2w[v, :3, :3], rot, atol=1e-4)
        np.testing.assert_allclose(c2w[v, :3, 3], centre, atol=1e-4)
        np.testing.assert_allclose(k[0, v, 0, 0].item() / fx, 1.0, atol=1e-4)
        np.testing.assert_allclose(k[0, v, 1, 1].item() / fy, 1.0, atol=1e-4)
        np.testing.assert_allclose(k[0, v, :2, 2].numpy(), [W_IMG / 2, H_IMG / 2], atol=1e-2)
        assert k[0, v, 2, 2] == 1 and k[0, v, 0, 1] == 0 and k[0, v, 1, 0] == 0


def test_same_seed_same_cameras():
    ray, conf = _batch(CAMERAS[1:3])
    ray = ray + 0.05 * torch.randn(ray.shape, generator=torch.Generator().manual_seed(3))  # noisy: RANSAC matters
    a = solve_ray_pose(ray, conf, H_IMG, W_IMG, generator=torch.Generator().manual_seed(7))
    b = solve_ray_pose(ray, conf, H_IMG, W_IMG, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_inputs_are_not_modified():
    ray, conf = _batch(CAMERAS[:2])
    ray[0, 0, :3, :, 2] = 0.0
    ray0, conf0 = ray.clone(), conf.clone()
    solve_ray_pose(ray, conf, H_IMG, W_IMG, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ray, ray0) and torch.equal(conf, conf0)


def test_pixels_with_flat_directions_are_ignored():
    cams = CAMERAS[1:3]
    ray, conf = _batch(cams)
    # a band of confident garbage: directions with z = 0 and far-away camera centres
    ray[0, :, 5:12, :, 0:3] = torch.tensor([5.0, -3.0, 0.0])
    ray[0, :, 5:12, :, 3:6] = 100.0
    conf[0, :, 5:12, :] = 1000.0
    w2c, k = solve_ray_pose(ray, conf, H_IMG, W_IMG, generator=torch.Generator().manual_seed(2))
    c2w = affine_inverse(w2c[0].double()).numpy()
    for v, (rot, centre, fx, fy) in enumerate(cams):
        np.testing.assert_allclose(c2w[v, :3, :3], rot, atol=1e-4)
        np.testing.assert_allclose(c2w[v, :3, 3], centre, atol=1e-4)
        np.testing.assert_allclose(k[0, v, 0, 0].item() / fx, 1.0, atol=1e-4)


def test_off_centre_principal_point_follows_the_official_ql_bias():
    """Off-centre c: the output is the QL split of the true homography (biased), as the official code gives."""
    rot, centre, fx, fy = CAMERAS[1]
    cx, cy = 0.6 * W_IMG, 0.45 * H_IMG
    ray = torch.from_numpy(synth_rays(rot, centre, fx, fy, cx, cy)[None, None]).float()
    conf = torch.ones(ray.shape[:-1])
    w2c, k = solve_ray_pose(ray, conf, H_IMG, W_IMG, generator=torch.Generator().manual_seed(0))
    # the homography from the [-1,1] plane to direction x/z, y/z, in float64, split as Q @ L by numpy
    k2 = np.array([[fx * 2 / W_IMG, 0, cx * 2 / W_IMG], [0, fy * 2 / H_IMG, cy * 2 / H_IMG], [0, 0, 1]])
    hom = rot @ np.linalg.inv(k2) @ np.array([[1.0, 0, 1], [0, 1, 1], [0, 0, 1]])
    q_t, r_t = np.linalg.qr(hom[:, ::-1])
    q, low = q_t[:, ::-1], r_t[::-1, ::-1]
    sign = np.sign(np.diag(low))
    q, low = q * sign, low * sign[:, None]
    low = low / low[2, 2]
    c2w = affine_inverse(w2c[0].double()).numpy()
    np.testing.assert_allclose(c2w[0, :3, :3], q, atol=1e-4)
    np.testing.assert_allclose(k[0, 0, 0, 0].item(), W_IMG / 2 / low[0, 0], rtol=1e-4)
    np.testing.assert_allclose(k[0, 0, 0, 2].item(), (low[2, 0] + 1) * W_IMG / 2, atol=1e-2)
    assert np.abs(q - rot).max() > 1e-3  # the bias is real: the true rotation is not returned


def test_fixture_ray_map_gives_finite_cameras(fixture_dir):
    data = np.load(fixture_dir / "single_000.npz")
    ray, conf = torch.from_numpy(data["raw_head_ray"]), torch.from_numpy(data["raw_head_ray_conf"])
    _, _, height, width = data["input_tensor"].shape[1:]
    assert ray.shape[2:4] == (height // 14 * 8, width // 14 * 8)
    w2c, k = solve_ray_pose(ray, conf, height, width, generator=torch.Generator().manual_seed(0))
    assert w2c.shape == (1, 1, 3, 4) and k.shape == (1, 1, 3, 3)
    assert torch.isfinite(w2c).all() and torch.isfinite(k).all()
    r = w2c[0, 0, :, :3].double()
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.det(r) > 0
    assert k[0, 0, 0, 0] > 0 and k[0, 0, 1, 1] > 0 and k[0, 0, 2, 2] == 1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        solve_ray_pose(torch.zeros(1, 2, 4, 4, 6), torch.zeros(1, 2, 4, 5), 32, 32)


# ---- transforms ------------------------------------------------------------------------------


def test_normalize_extrinsics_matches_the_official(fixture_dir):
    data = np.load(fixture_dir / "triple_robot_f030_f090_f150_posed.npz")
    out = normalize_extrinsics(torch.from_numpy(data["input_extrinsics"])[None])
    np.testing.assert_allclose(out.numpy(), data["raw_cam_enc_in_extrinsics_norm"], atol=1e-5, rtol=0)


def _w2c_at(centres, rots=None):
    n = len(centres)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, 3] = centres
    if rots is not None:
        c2w[:, :3, :3] = rots
    return affine_inverse(torch.from_numpy(c2w))


def test_normalize_extrinsics_uses_the_lower_median_and_view_0_as_origin():
    rots = np.stack([rotation([0, 1, 0], a) for a in (10, -20, 30, 5)])
    base = np.array([1.0, 2.0, 3.0])
    # distances from camera 0: 0, 2, 3, 8 -> lower median 2 (the mean of the middle two would be 2.5)
    offsets = np.array([[0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [0, 0, 8.0]])
    w2c = _w2c_at(base + offsets @ rots[0].T, rots)[None]
    out = normalize_extrinsics(w2c).double()
    torch.testing.assert_close(out[0, 0], torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    dists = affine_inverse(out[0])[:, :3, 3].norm(dim=-1)
    torch.testing.assert_close(dists, torch.tensor([0.0, 1.0, 1.5, 4.0], dtype=torch.float64), atol=1e-12, rtol=0)
    # rotations are untouched: relative rotation of view v to view 0
    torch.testing.assert_close(out[0, 2, :3, :3], torch.from_numpy(rots[2].T @ rots[0]), atol=1e-12, rtol=0)


def test_normalize_extrinsics_clamps_tiny_baselines():
    w2c = _w2c_at(np.array([[0, 0, 0], [0.01, 0, 0], [0.02, 0, 0]]))[None]
    out = normalize_extrinsics(w2c)
    np.testing.assert_allclose(affine_inverse(out[0])[:, 0, 3].numpy(), [0, 0.1, 0.2], atol=1e-12)


def test_as_4x4():
    m = torch.arange(12.0).reshape(1, 3, 4)
    out = as_4x4(m)
    assert out.shape == (1, 4, 4) and torch.equal(out[0, :3], m[0])
    assert torch.equal(out[0, 3], torch.tensor([0.0, 0, 0, 1]))
    assert as_4x4(out) is out
