"""Transformer pieces shared by the DINOv2 backbone and the camera encoder (timm/DINOv2 names)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_attention


def rotate_halves(t: torch.Tensor) -> torch.Tensor:
    """2D-RoPE "rotate-half" on each 32-channel half (row half, column half): [a, b] -> [-b, a]."""
    t = t.unflatten(-1, (2, 2, t.shape[-1] // 4))
    return torch.cat((-t[..., 1, :], t[..., 0, :]), dim=-1).flatten(-2)


class Attention(nn.Module):
    """Multi-head self-attention with optional qk-LayerNorm and 2D RoPE, via torch SDPA."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        if qk_norm:
            self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-5)
            self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-5)
        self.qk_norm = qk_norm
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``rope`` = (cos, sin), each broadcastable to (B, heads, N, head_dim)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = (t.to(q.dtype) for t in rope)
            q = q * cos + rotate_halves(q) * sin
            k = k * cos + rotate_halves(k) * sin
        if cpu_attention.wants_bf16_cpu_attention(q, self.qkv.weight.dtype):
            x = cpu_attention.attention(q, k, v)  # bf16 products: SDPA is no faster than fp32 there
        else:
            x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """DINOv2 fused SwiGLU (ViT-g): ``w12`` -> [a | b] -> silu(a) * b -> ``w3``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Block(nn.Module):
    """Pre-norm residual block: x + ls1(attn(norm1 x)), then x + ls2(ffn(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, *, norm_eps: float, qk_norm: bool = False,
                 ffn: str = "mlp", init_value: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, 4 * dim) if ffn == "swiglu" else Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim, init_value)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the attention and MLP weights (bf16 after ``set_block_dtype`` on a CPU)."""
        return self.attn.qkv.weight.dtype

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        """The residual stream ``x`` stays in its dtype (fp32); LayerNorms run on it, attention and MLP
        in the weights' dtype, LayerScale (fp32) brings their output back to the stream's dtype."""
        dt = self.compute_dtype
        x = x + self.ls1(self.attn(self.norm1(x).to(dt), rope))
        return x + self.ls2(self.mlp(self.norm2(x).to(dt)))
