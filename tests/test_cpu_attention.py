"""The bf16 CPU attention (two bf16 products with the row maximum subtracted inside) and the head's
full-resolution stage in strips: each against the plain computation it replaces."""

import pytest
import torch
import torch.nn.functional as F

from da3_blender.model import cpu_attention, dpt


def _qkv(b, n, sharpness, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, 6, n, 64, generator=g) for _ in range(3))
    return q * sharpness, k, v


def _rel(a, ref):
    return ((a.float() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("sharpness", [1.0, 8.0])
@pytest.mark.parametrize("b,n", [(1, 721), (2, 300)])
def test_bf16_attention_is_as_close_to_fp32_as_torchs_bf16_sdpa(b, n, sharpness):
    """Sharp attention (logits up to ~±60) is where rounding the logits to bf16 would show: the
    maximum subtracted inside the product keeps the error at the bf16 SDPA kernel's."""
    q, k, v = _qkv(b, n, sharpness)
    ref = F.scaled_dot_product_attention(q, k, v)
    q16, k16, v16 = (t.bfloat16() for t in (q, k, v))
    ours = cpu_attention.attention(q16, k16, v16)
    sdpa16 = F.scaled_dot_product_attention(q16, k16, v16)
    assert ours.dtype == torch.bfloat16 and ours.shape == ref.shape
    assert _rel(ours, ref) <= 1.25 * _rel(sdpa16, ref) + 1e-4, (_rel(ours, ref), _rel(sdpa16, ref))


def test_bf16_attention_without_the_shift_would_be_worse():
    """The test above can fail: rounding the unshifted logits doubles the error on sharp attention."""
    q, k, v = _qkv(1, 721, 8.0)
    ref = F.scaled_dot_product_attention(q, k, v)
    q16, k16, v16 = (t.bfloat16() for t in (q, k, v))
    plain = torch.softmax(q16 @ (k16 * 0.125).transpose(-1, -2), -1) @ v16
    sdpa16 = F.scaled_dot_product_attention(q16, k16, v16)
    assert _rel(plain, ref) > 1.5 * _rel(sdpa16, ref)


def test_bf16_attention_in_chunks_equals_one_chunk(monkeypatch):
    q, k, v = (t.bfloat16() for t in _qkv(1, 500, 2.0))
    whole = cpu_attention.attention(q, k, v)
    monkeypatch.setattr(cpu_attention, "CHUNK_BYTES", 6 * 500 * 2 * 64)  # 64-row chunks
    assert cpu_attention.chunk_rows(6, 500) == 64
    torch.testing.assert_close(cpu_attention.attention(q, k, v), whole, rtol=0, atol=0)


def test_only_the_bf16_weight_path_on_a_cpu_takes_it():
    """Our CPU bf16 path (weights stored in bf16) takes it; autocast over fp32 weights (the official
    GPU policy, which check_precision.py emulates on a CPU as the yardstick) and fp32 keep SDPA."""
    bf16 = torch.zeros(1, dtype=torch.bfloat16)
    assert cpu_attention.wants_bf16_cpu_attention(bf16, torch.bfloat16)
    assert not cpu_attention.wants_bf16_cpu_attention(bf16, torch.float32)
    assert not cpu_attention.wants_bf16_cpu_attention(torch.zeros(1), torch.float32)


def test_full_resolution_strips_equal_the_whole_map():
    """Upsample + UV + output convolutions in strips of rows (with their one-row halo) give the map
    computed at once, at every strip boundary and at the image border."""
    torch.manual_seed(0)
    conv = dpt._out_conv2(64, 2)
    x = torch.randn(2, 32, 40, 72)
    height, width = 98, 182  # strips of 40: boundaries at 40 and 80, a short last strip
    with torch.inference_mode():
        whole = conv(dpt.add_uv_embedding(dpt.interpolate(x, (height, width)), width, height))
        strips, = dpt.full_resolution(x, height, width, [conv], (width, height))
    torch.testing.assert_close(strips, whole, rtol=1e-5, atol=1e-5)


def test_uv_embedding_rows_are_the_full_grids_rows():
    x = torch.randn(1, 64, 30, 50)
    full = dpt.add_uv_embedding(x.clone(), 700, 420)
    part = dpt.add_uv_embedding(x[:, :, 7:19].clone(), 700, 420, rows=(7, 19, 30))
    torch.testing.assert_close(part, full[:, :, 7:19], rtol=0, atol=0)


def test_row_max_is_amax_exactly():
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(3, 50, 77, generator=g) * 4).bfloat16()
    s[0, :10] = -s[0, :10].abs() - 0.5  # rows with no positive value
    s[1, 3] = -0.0
    s[1, 4] = 0.0
    s[1, 5, :] = -s[1, 5, :].abs()
    s[1, 5, 7] = -0.0
    torch.testing.assert_close(cpu_attention.row_max(s), s.amax(-1, keepdim=True), rtol=0, atol=0)
