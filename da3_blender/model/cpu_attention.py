"""Attention for the bf16 backbone on a CPU: two bf16 matrix products per query chunk, softmax between.

Why not ``scaled_dot_product_attention`` here: torch 2.13's CPU flash kernel is no faster in bf16 than
in fp32 (it runs its small blocked products at fp32 speed), while a plain bf16 batched product runs
at ~400 GFLOP/s per core against ~90 in fp32 on AVX-512 BF16. Measured on DA3-SMALL's shapes (one
thread, BENCHMARKS.md "CPU bf16 backbone"): 721 tokens 9.5 -> ~6.5 ms, 2,884 tokens (4 views, the
cross-view blocks) 143 -> ~105 ms, at the rounding error of the bf16 flash kernel.

The one numerical trap: a bf16 product *rounds its output* to bf16, i.e. each attention logit ``s``
to 2^-9 of its size. A logit of 20 would move by 0.04, its weight by 4 %. Softmax does not change
when a constant is subtracted from a row, so the row's maximum is subtracted *inside* the product,
before the rounding: ``q`` gets an extra column ``-max`` and ``k`` a column of ones, and the product
accumulates ``q.k - max`` in fp32 before it rounds. The logits that matter (near the maximum) are
then small and keep their precision; only negligible weights (far below the maximum) are rounded
coarsely. The maximum itself comes from a first, plain bf16 product (its rounding only shifts the
row by a constant, which softmax ignores).
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 16 << 20  # bf16 scores of one query chunk (all heads): bounds the extra memory
MIN_ROWS = 64


def wants_bf16_cpu_attention(q: torch.Tensor, weight_dtype: torch.dtype = torch.bfloat16) -> bool:
    """True where :func:`attention` replaces SDPA: bf16 tensors on a CPU from a block whose weights are
    stored in bf16 (our CPU path). Autocast over fp32 weights (the official policy) keeps SDPA."""
    return q.dtype == torch.bfloat16 and weight_dtype == torch.bfloat16 and q.device.type == "cpu"


def chunk_rows(batch_heads: int, tokens: int) -> int:
    """Query rows per chunk: the chunk's bf16 scores stay under ``CHUNK_BYTES`` (at least ``MIN_ROWS``)."""
    rows = CHUNK_BYTES // max(1, 2 * batch_heads * tokens)
    return int(min(tokens, max(MIN_ROWS, rows // 32 * 32)))


def row_max(s: torch.Tensor) -> torch.Tensor:
    """``s.amax(-1, keepdim=True)`` of a bf16 tensor, exactly, from its bit patterns as int16 (torch's
    bf16 reductions are ~6x slower than int16 ones here). Non-negative bf16 values order like their
    patterns and lie above every negative one; a row with none is ordered by the smallest pattern."""
    bits = s.view(torch.int16)
    hi = bits.amax(-1, keepdim=True)
    return torch.where(hi >= 0, hi, bits.amin(-1, keepdim=True)).view(torch.bfloat16)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, heads, N, d) bf16 tensors; returns (B, heads, N, d) bf16."""
    b, h, n, d = q.shape
    bh = b * h
    q = q.reshape(bh, n, d)
    v = v.reshape(bh, n, d)
    # k scaled by 1/sqrt(d) (a power of two for d = 64: exact), then a column of ones and one of zeros
    # (an even inner size keeps the bf16 pair instructions on their fast path)
    ka = torch.zeros(bh, d + 2, n, dtype=q.dtype)
    ka[:, :d] = (k.reshape(bh, n, d) * d ** -0.5).transpose(1, 2)
    ka[:, d] = 1
    kt = ka[:, :d]
    out = torch.empty_like(q)
    rows = chunk_rows(bh, n)
    qa = torch.zeros(bh, rows, d + 2, dtype=q.dtype)
    for start in range(0, n, rows):
        qc = q[:, start:start + rows]
        m = qc.shape[1]
        qa[:, :m, :d] = qc
        qa[:, :m, d:d + 1] = row_max(torch.bmm(qc, kt)).neg_()
        scores = torch.bmm(qa[:, :m], ka)  # q.k/sqrt(d) - row max, accumulated in fp32, then rounded
        torch.bmm(torch.softmax(scores, -1), v, out=out[:, start:start + m])
    return out.reshape(b, h, n, d)
