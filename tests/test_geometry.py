"""Pixel convention round trip, Umeyama Sim3 and alignment to user poses (spec §7.2)."""

from __future__ import annotations

import numpy as np
import pytest

from da3_blender.geometry import (
    affine_inverse,
    align_prediction_to_input_poses,
    align_to_input_poses,
    apply_sim3_to_extrinsics,
    camera_centers,
    project_points,
    umeyama_sim3,
    unproject_depth,
)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_w2c(rng, n) -> np.ndarray:
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = random_rotation(rng)
    c2w[:, :3, 3] = rng.normal(size=(n, 3)) * 3
    return affine_inverse(c2w)


def sim3_of_cameras(w2c, s, rot, t) -> np.ndarray:
    """The same cameras seen in a world scaled by s, rotated by rot and shifted by t (4x4 w2c)."""
    c2w = affine_inverse(w2c)
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ rot.T + t
    return affine_inverse(out)


# ---- pixel convention ------------------------------------------------------------------------


def test_unproject_then_project_lands_on_pixel_centres():
    rng = np.random.default_rng(0)
    h, w = 6, 9
    k = np.array([[7.0, 0, w / 2 + 0.3], [0, 8.0, h / 2 - 0.2], [0, 0, 1]])
    w2c = random_w2c(rng, 1)
    depth = rng.uniform(1, 5, size=(1, h, w))
    pts = unproject_depth(depth, k[None], w2c)
    uv, z = project_points(pts[0], k, w2c[0])
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    np.testing.assert_allclose(uv[..., 0], jj + 0.5, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], ii + 0.5, atol=1e-9)
    np.testing.assert_allclose(z, depth[0], atol=1e-9)


# ---- Umeyama -----------------------------------------------------------------------------------


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(12, 3))
    rot, s, t = random_rotation(rng), 2.3, rng.normal(size=3)
    s_est, r_est, t_est = umeyama_sim3(src, s * src @ rot.T + t)
    assert s_est == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(r_est, rot, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-12)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(10, 3))
    mirror = np.diag([1.0, 1.0, -1.0])
    _, r_est, _ = umeyama_sim3(src, 1.7 * src @ (random_rotation(rng) @ mirror).T)
    assert np.linalg.det(r_est) == pytest.approx(1.0)
    np.testing.assert_allclose(r_est @ r_est.T, np.eye(3), atol=1e-12)
    # a mirror-symmetric case (planar points) is fitted exactly by a proper rotation
    planar = src.copy()
    planar[:, 2] = 0
    s_est, r_est, t_est = umeyama_sim3(planar, planar @ mirror.T)
    assert np.linalg.det(r_est) == pytest.approx(1.0)
    np.testing.assert_allclose(s_est * planar @ r_est.T + t_est, planar, atol=1e-12)


def test_umeyama_one_point_does_not_raise():
    s, rot, t = umeyama_sim3(np.array([[1.0, 2, 3]]), np.array([[-1.0, 0, 5]]))
    assert s == 1.0
    np.testing.assert_array_equal(rot, np.eye(3))
    np.testing.assert_allclose(t, [-2, -2, 2])


def test_umeyama_two_points_scale_is_the_distance_ratio():
    src = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    dst = np.array([[1.0, 1, 1], [1.0, 4, 1]])
    s, rot, t = umeyama_sim3(src, dst)
    assert s == pytest.approx(3.0)
    np.testing.assert_allclose(s * src @ rot.T + t, dst, atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_umeyama_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        umeyama_sim3(np.zeros((3, 3)), np.zeros((2, 3)))


# ---- alignment to user poses -------------------------------------------------------------------


def test_align_recovers_the_similarity_between_trajectories():
    rng = np.random.default_rng(3)
    user = random_w2c(rng, 6)
    rot, s, t = random_rotation(rng), 0.37, rng.normal(size=3)
    pred = sim3_of_cameras(user, s, rot, t)[:, :3, :]
    fit = align_to_input_poses(pred, user)
    assert fit.scale == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(fit.rotation, rot, atol=1e-10)
    np.testing.assert_allclose(fit.translation, t, atol=1e-10)
    assert fit.inliers.all()
    np.testing.assert_allclose(apply_sim3_to_extrinsics(user, fit), pred, atol=1e-10)


def test_ransac_ignores_outlier_views():
    rng = np.random.default_rng(4)
    user = random_w2c(rng, 12)
    rot, s, t = random_rotation(rng), 1.8, rng.normal(size=3)
    pred = sim3_of_cameras(user, s, rot, t)
    bad = [3, 8]
    c2w = affine_inverse(pred)
    c2w[bad, :3, 3] += np.array([[20.0, -5, 3], [-8.0, 15, 2]])  # the network got two views wrong
    pred = affine_inverse(c2w)

    plain = align_to_input_poses(pred, user, ransac_min_views=100)
    assert abs(plain.scale - s) > 1e-2  # a plain fit is pulled off by the outliers
    fit = align_to_input_poses(pred, user)
    assert fit.scale == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(fit.rotation, rot, atol=1e-9)
    np.testing.assert_allclose(fit.translation, t, atol=1e-8)
    assert not fit.inliers[bad].any() and fit.inliers.sum() == 10
    again = align_to_input_poses(pred, user)
    assert again.scale == fit.scale  # seeded


@pytest.mark.parametrize("n", [1, 2, 4])
def test_degenerate_view_sets_do_not_raise(n):
    """1 view, 2 views or collinear centres (the official API raises for these)."""
    rng = np.random.default_rng(5 + n)
    user = random_w2c(rng, n)
    if n > 2:  # cameras on a line, as on a dolly track
        c2w = affine_inverse(user)
        c2w[:, :3, 3] = np.array([1.0, 2, 3]) + np.arange(n)[:, None] * np.array([0.5, 0.1, -0.2])
        user = affine_inverse(c2w)
    rot, s, t = random_rotation(rng), 2.5, rng.normal(size=3)
    pred = sim3_of_cameras(user, s, rot, t)[:, :3, :]
    fit = align_to_input_poses(pred, user)
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)
    if n == 1:
        assert fit.scale == 1.0  # unknowable from one camera: depth stays as predicted
    else:
        assert fit.scale == pytest.approx(s, rel=1e-10)
    mapped = apply_sim3_to_extrinsics(user, fit)
    np.testing.assert_allclose(camera_centers(mapped), camera_centers(pred), atol=1e-9)
    np.testing.assert_allclose(mapped[:, :3, :3], pred[:, :3, :3], atol=1e-9)


def test_prediction_alignment_matches_the_official_output(fixture_dir):
    """Depth and cameras of the official posed run, from its raw network outputs and the user poses."""
    data = np.load(fixture_dir / "triple_robot_f030_f090_f150_posed.npz")
    centres = data["raw_pose_enc"][0, :, :3].astype(np.float64)  # c2w translation = camera centre
    pred_w2c = np.zeros((len(centres), 3, 4), dtype=np.float32)
    pred_w2c[:, :, :3] = np.eye(3)  # only the centres enter the fit
    pred_w2c[:, :, 3] = -centres
    pred = {"depth": data["raw_head_depth"][0], "extrinsics": pred_w2c, "conf": data["conf"]}
    out = align_prediction_to_input_poses(pred, data["input_extrinsics"], data["raw_cam_enc_in_intrinsics"][0])
    np.testing.assert_allclose(out["depth"], data["depth"], rtol=1e-5)
    np.testing.assert_array_equal(out["extrinsics"], data["extrinsics"])
    np.testing.assert_array_equal(out["intrinsics"], data["intrinsics"])
    assert out["depth"].dtype == np.float32 and out["extrinsics"].shape == (3, 3, 4)
    assert out["conf"] is pred["conf"] and out["sim3"].inliers.all()


def test_prediction_alignment_without_rescaling_keeps_model_units():
    rng = np.random.default_rng(9)
    user = random_w2c(rng, 4)
    rot, s, t = random_rotation(rng), 3.0, rng.normal(size=3)
    pred_w2c = sim3_of_cameras(user, s, rot, t)[:, :3, :].astype(np.float32)
    depth = rng.uniform(1, 2, size=(4, 5, 6)).astype(np.float32)
    pred = {"depth": depth, "extrinsics": pred_w2c}

    scaled = align_prediction_to_input_poses(pred, user.astype(np.float32))
    np.testing.assert_allclose(scaled["depth"], depth / s, rtol=1e-5)
    np.testing.assert_allclose(scaled["extrinsics"], user[:, :3, :], atol=1e-6)

    kept = align_prediction_to_input_poses(pred, user.astype(np.float32), align_to_input_ext_scale=False)
    assert kept["extrinsics"].shape == (4, 3, 4) and kept["extrinsics"].dtype == np.float32
    np.testing.assert_array_equal(kept["depth"], depth)
    np.testing.assert_allclose(kept["extrinsics"], pred_w2c, atol=1e-4)
    assert kept["sim3"].scale == pytest.approx(s, rel=1e-5)


def test_quaternions_round_trip_with_w_non_negative():
    """Shared by the COLMAP export (qvec) and the Blender camera keys; 180-degree turns included."""
    from da3_blender.geometry import quaternion_to_rotation, rotation_to_quaternion

    rng = np.random.default_rng(3)
    rots = [np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(50)]
    rots = [r * np.linalg.det(r) for r in rots] + [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, -1.0, 1.0]), np.eye(3)]
    rots = np.stack(rots)
    q = rotation_to_quaternion(rots)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotation(q), rots, atol=1e-7)
    np.testing.assert_allclose(rotation_to_quaternion(rots[0]), q[0])
