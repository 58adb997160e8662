"""Model-input preparation: parity with the official InputProcessor and the camera bookkeeping."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from da3_blender.errors import BadInputError
from da3_blender.pipeline.preprocess import METHODS, bound_size, denormalize_to_uint8, preprocess_images, processed_size, resize_area

CASES = {
    "single_000": lambda soh, robot: [soh[0]],
    "pair_000_010": lambda soh, robot: soh,
    "triple_robot_f030_f090_f150_posed": lambda soh, robot: robot,
}


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))  # the official loader: no EXIF handling


@functools.lru_cache(maxsize=None)
def _image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth content plus noise, so resampling mistakes show up (read-only, cached)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x * (255 / width), y * (255 / height), 128 + 100 * np.sin(x / 17 + y / 23)], -1)
    img = np.clip(base + rng.integers(-30, 31, base.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    img.flags.writeable = False
    return img


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Invert the normalisation with rounding (exact for our own tensors)."""
    x = tensor.double().numpy().transpose(0, 2, 3, 1) * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])
    return np.rint(x * 255).astype(np.int64)


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """Exact area-overlap weights (dst, src) in float64: the definition of INTER_AREA."""
    m = np.zeros((dst, src))
    s = src / dst
    for i in range(dst):
        lo, hi = i * s, (i + 1) * s
        for j in range(int(np.floor(lo)), min(src, int(np.ceil(hi)))):
            m[i, j] = max(0.0, min(hi, j + 1) - max(lo, j)) / s
    return m


def _cubic_matrix(src: int, dst: int, a: float = -0.75) -> np.ndarray:
    """Keys cubic (a=-0.75), half-pixel centres, replicated borders: the definition of INTER_CUBIC."""

    def kern(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    m = np.zeros((dst, src))
    for i in range(dst):
        f = (i + 0.5) * src / dst - 0.5
        base = int(np.floor(f))
        for k in range(base - 1, base + 3):
            m[i, min(max(k, 0), src - 1)] += kern(f - k)
    return m


# ---------------------------------------------------------------- parity with the official fixtures


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_tensor_matches_official(case, fixture_dir, soh_images, robot_frames):
    ref = np.load(fixture_dir / f"{case}.npz")["input_tensor"][0]
    out = preprocess_images([_rgb(p) for p in CASES[case](soh_images, robot_frames)], 504)
    assert out.tensor.dtype == torch.float32 and tuple(out.tensor.shape) == ref.shape
    err = np.abs(out.tensor.numpy() - ref)
    bad = err > 1e-6
    print(f"{case}: {bad.mean():.3e} of values off by > 1e-6, max abs error {err.max():.3e}")
    assert 1.0 - bad.mean() >= 0.999


def test_posed_intrinsics_follow_the_resize(fixture_dir, robot_frames):
    z = np.load(fixture_dir / "triple_robot_f030_f090_f150_posed.npz")
    out = preprocess_images([_rgb(p) for p in robot_frames], 504, intrinsics=z["input_intrinsics"])
    np.testing.assert_allclose(out.intrinsics, z["raw_cam_enc_in_intrinsics"][0], rtol=1e-6)
    np.testing.assert_allclose(out.proc_to_orig @ out.intrinsics, z["input_intrinsics"], rtol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_denormalize_matches_official_processed_images(case, fixture_dir):
    z = np.load(fixture_dir / f"{case}.npz")
    got = denormalize_to_uint8(torch.from_numpy(z["input_tensor"][0]))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, z["processed_images"])


# ---------------------------------------------------------------- sizes


def test_worked_examples_from_the_spec():
    assert bound_size(1920, 1080, 504, "upper_bound_resize") == (504, 284)
    assert processed_size(1920, 1080) == (504, 280)
    assert processed_size(640, 480) == (504, 378)
    assert processed_size(1080, 1920) == (280, 504)
    assert bound_size(1024, 576, 504, "upper_bound_resize") == (504, 284)  # 283.5 -> 284
    assert bound_size(2016, 1130, 504, "upper_bound_resize") == (504, 282)  # 282.5 -> 282: half to even
    assert bound_size(518, 300, 518, "upper_bound_resize") == (518, 300)  # side already at process_res
    assert processed_size(518, 518, 518) == (518, 518)
    out = preprocess_images([_image(1920, 1080)])
    assert tuple(out.tensor.shape) == (1, 3, 280, 504)
    np.testing.assert_array_equal(out.orig_size, [[1920, 1080]])


def test_nearest_multiple_ties_go_up():
    # bound 504x7: 7 is halfway between 0 and 14 -> 14
    assert processed_size(2016, 28, 504) == (504, 14)
    assert processed_size(1000, 500, 504, "upper_bound_resize") == (504, 252)  # 252 = 18*14


def test_lower_bound_methods():
    assert bound_size(1000, 700, 504, "lower_bound_resize") == (720, 504)
    assert processed_size(1000, 700, 504, "lower_bound_resize") == (714, 504)
    assert processed_size(1000, 700, 504, "lower_bound_crop") == (714, 504)
    assert processed_size(1000, 700, 504, "upper_bound_crop") == (504, 350)


# ---------------------------------------------------------------- crop methods and intrinsics


def _k(fx, fy, cx, cy, skew=0.0):
    return np.array([[fx, skew, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def test_upper_bound_crop_image_and_intrinsics():
    img = _image(1920, 1080)
    K = _k(1500.0, 1400.0, 960.0, 540.0)
    out = preprocess_images([img], 504, "upper_bound_crop", intrinsics=K[None])
    assert tuple(out.tensor.shape) == (1, 3, 280, 504)
    # 504x284 then a centre crop of (284 - 280) // 2 = 2 rows from the top
    np.testing.assert_array_equal(_to_uint8(out.tensor)[0], resize_area(img, 504, 284)[2:282])
    sx, sy = 504 / 1920, 284 / 1080
    np.testing.assert_allclose(out.intrinsics[0], _k(1500 * sx, 1400 * sy, 960 * sx, 540 * sy - 2), rtol=1e-12)


def test_lower_bound_crop_shifts_cx():
    img = _image(1000, 700)
    K = _k(800.0, 800.0, 500.0, 350.0)
    out = preprocess_images([img], 504, "lower_bound_crop", intrinsics=K[None])
    assert tuple(out.tensor.shape) == (1, 3, 504, 714)
    s = 504 / 700  # 720/1000 == 504/700
    expected = _k(800 * 720 / 1000, 800 * s, 500 * 720 / 1000 - 3, 350 * s)  # left = (720 - 714) // 2
    np.testing.assert_allclose(out.intrinsics[0], expected, rtol=1e-12)


def test_resize_methods_scale_intrinsics_per_axis():
    K = _k(1000.0, 1000.0, 320.0, 240.0, skew=2.0)
    out = preprocess_images([_image(640, 480)], 504, "upper_bound_resize", intrinsics=K[None])
    sx, sy = 504 / 640, 378 / 480
    np.testing.assert_allclose(out.intrinsics[0], np.diag([sx, sy, 1.0]) @ K, rtol=1e-12)


# ---------------------------------------------------------------- resampling


def test_area_shrink_is_the_area_average():
    img = _image(640, 480, seed=1)
    got = resize_area(img, 504, 378).astype(np.int64)
    ref = np.einsum("ij,jkc->ikc", _area_matrix(480, 378), img.astype(np.float64))
    ref = np.einsum("lk,ikc->ilc", _area_matrix(640, 504), ref)
    diff = np.abs(got - np.rint(ref))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    # OpenCV (float32, tiny slivers dropped) only disagrees with exact maths on near-ties
    frac = ref[diff != 0] % 1.0
    assert np.all(np.abs(frac - 0.5) < 0.01)


def test_area_integer_factor_is_a_box_mean():
    img = _image(1008, 560, seed=2)
    got = resize_area(img, 504, 280).astype(np.int64)
    sums = img.reshape(280, 2, 504, 2, 3).astype(np.int64).sum(axis=(1, 3))
    np.testing.assert_array_equal(got, (sums + 2) // 4)  # OpenCV's 2x2 path rounds halves up
    got4 = resize_area(img, 252, 140).astype(np.int64)
    mean4 = img.reshape(140, 4, 252, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(got4 - mean4).max() <= 0.5 + 1e-9


def test_upscale_uses_bicubic():
    img = _image(200, 150, seed=3)
    out = preprocess_images([img], 1008)
    assert tuple(out.tensor.shape) == (1, 3, 756, 1008)
    ref = np.einsum("ij,jkc->ikc", _cubic_matrix(150, 756), img.astype(np.float64))
    ref = np.clip(np.rint(np.einsum("lk,ikc->ilc", _cubic_matrix(200, 1008), ref)), 0, 255)
    diff = np.abs(_to_uint8(out.tensor)[0] - ref)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    # and it is not an area/box filter: an upscaled step edge overshoots (cubic ringing)
    step = np.zeros((20, 20, 3), np.uint8)
    step[:, 10:] = 200
    up = _to_uint8(preprocess_images([step], 56).tensor)[0]
    assert up.max() > 200


# ---------------------------------------------------------------- batches and coordinate maps


def test_mixed_sizes_are_centre_cropped_with_a_warning(caplog):
    wide, classic = _image(1920, 1080, 4), _image(640, 480, 5)
    K = np.stack([_k(1500, 1500, 960, 540), _k(600, 600, 320, 240)])
    with caplog.at_level(logging.WARNING, logger="da3_blender"):
        out = preprocess_images([wide, classic], 504, intrinsics=K)
    assert any("different" in r.getMessage() for r in caplog.records)
    assert tuple(out.tensor.shape) == (2, 3, 280, 504)
    alone = preprocess_images([classic], 504, intrinsics=K[1:])
    top = (378 - 280) // 2
    torch.testing.assert_close(out.tensor[1], alone.tensor[0, :, top : top + 280], rtol=0, atol=0)
    expected = alone.intrinsics[0].copy()
    expected[1, 2] -= top
    np.testing.assert_allclose(out.intrinsics[1], expected, rtol=1e-12)
    np.testing.assert_allclose(out.proc_to_orig @ out.intrinsics, K, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_proc_to_orig_maps_pixels_back(method):
    out = preprocess_images([_image(1920, 1080)], 504, method)
    h, w = out.tensor.shape[-2:]
    m = out.proc_to_orig[0]

    def back(u, v):
        p = m @ np.array([u, v, 1.0])
        return p[:2] / p[2]

    if method.endswith("resize"):  # the whole frame survives: corners and centre map to the original's
        np.testing.assert_allclose(back(0, 0), [0, 0], atol=1e-9)
        np.testing.assert_allclose(back(w, h), [1920, 1080], atol=1e-9)
        np.testing.assert_allclose(back(w / 2, h / 2), [960, 540], atol=1e-9)
    else:  # a centre crop: the centre stays within a crop pixel of the original centre
        np.testing.assert_allclose(back(w / 2, h / 2), [960, 540], atol=1080 / 284)
        bw, bh = bound_size(1920, 1080, 504, method)
        left, top = (bw - w) // 2, (bh - h) // 2
        np.testing.assert_allclose(back(0, 0), [left * 1920 / bw, top * 1080 / bh], atol=1e-9)
    K = _k(1234.0, 1200.0, 950.0, 530.0, skew=1.5)
    res = preprocess_images([_image(1920, 1080)], 504, method, intrinsics=K[None])
    np.testing.assert_allclose(res.proc_to_orig[0] @ res.intrinsics[0], K, rtol=1e-12, atol=1e-9)


def test_grey_and_rgba_arrays_become_rgb():
    rgb = _image(100, 80)
    rgba = np.concatenate([rgb, np.full((80, 100, 1), 7, np.uint8)], -1)
    a = preprocess_images([rgb], 56).tensor
    torch.testing.assert_close(preprocess_images([rgba], 56).tensor, a, rtol=0, atol=0)
    grey = preprocess_images([rgb[:, :, 0]], 56).tensor
    torch.testing.assert_close(grey[:, 1:2] * 0.224 + 0.456, grey[:, 0:1] * 0.229 + 0.485, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- bad options and inputs


def test_bad_options_say_what_is_valid():
    img = _image(64, 48)
    with pytest.raises(BadInputError, match="upper_bound_resize.*lower_bound_crop"):
        preprocess_images([img], 504, "bilinear")
    with pytest.raises(BadInputError, match="at least 14"):
        preprocess_images([img], 13)
    with pytest.raises(BadInputError, match="whole number"):
        preprocess_images([img], 504.5)
    with pytest.raises(BadInputError, match="at least one"):
        preprocess_images([], 504)
    with pytest.raises(BadInputError, match="intrinsics"):
        preprocess_images([img], 504, intrinsics=np.eye(3)[None].repeat(2, 0))
    with pytest.raises(BadInputError, match="uint8"):
        preprocess_images([img.astype(np.float32)], 504)
    with pytest.raises(BadInputError, match="too thin"):
        preprocess_images([np.zeros((3, 2000, 3), np.uint8)], 504)
    assert tuple(preprocess_images([img], 14).tensor.shape) == (1, 3, 14, 14)
