"""DA3's DINOv2 backbone: alternating per-view / cross-view attention, camera tokens, 2D RoPE.

Module names mirror the official checkpoint (``backbone.pretrained.blocks.{i}...``). Token 0 of
each view is the cls token, replaced by a camera token at block ``alt_start``. From then on odd
blocks attend over all views ("global"), even blocks within a view ("local"). Each output layer
returns ``cat(last local output, global output)`` (2C channels) with view order restored.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from ..options import REF_VIEW_STRATEGIES as _STRATEGY_TABLE, choice_ids
from .blocks import Block
from .config import VIT_SIZES

PATCH = 14
REF_VIEW_STRATEGIES = choice_ids(_STRATEGY_TABLE)  # defined in options
MIN_VIEWS_FOR_REF_SELECTION = 3
ROPE_BASE = 100.0


def check_ref_view_strategy(strategy: str) -> str:
    if strategy not in REF_VIEW_STRATEGIES:
        raise BadInputError(
            f"unknown ref_view_strategy {strategy!r}; use one of: {', '.join(REF_VIEW_STRATEGIES)}"
        )
    return strategy


def select_reference_view(cls_tokens: torch.Tensor, strategy: str) -> torch.Tensor:
    """Index (B,) of the reference view from the un-normalised cls tokens (B,S,C)."""
    b, s, _ = cls_tokens.shape
    check_ref_view_strategy(strategy)
    if strategy == "first" or s <= 1:
        return torch.zeros(b, dtype=torch.long, device=cls_tokens.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=cls_tokens.device)
    unit = cls_tokens / cls_tokens.norm(dim=-1, keepdim=True)
    sim = torch.matmul(unit, unit.transpose(1, 2)) - torch.eye(s, device=unit.device)[None]
    if strategy == "saddle_sim_range":
        return (sim.max(dim=-1).values - sim.min(dim=-1).values).argmax(dim=1)

    def unit_range(m):
        lo, hi = m.min(dim=1, keepdim=True).values, m.max(dim=1, keepdim=True).values
        return (m - lo) / (hi - lo + 1e-8)

    metrics = (sim.sum(dim=-1) / (s - 1), cls_tokens.norm(dim=-1), unit.var(dim=-1))
    score = sum((unit_range(m) - 0.5).abs() for m in metrics)
    return score.argmin(dim=1)


def reference_first_order(ref: torch.Tensor, s: int) -> torch.Tensor:
    """(B,S) view order [ref, the others in their order]."""
    pos = torch.arange(s, device=ref.device).expand(ref.shape[0], s)
    order = torch.where((pos > 0) & (pos <= ref[:, None]), pos - 1, pos)
    order[:, 0] = ref
    return order


def take_views(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x[b, order[b]] along the view axis (dim 1)."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], order]


def rope_tables(rows: torch.Tensor, cols: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (N, head_dim) for integer token positions: first half rows, second half columns."""
    d = head_dim // 2
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, d, 2, device=rows.device).float() / d))
    n_pos = int(max(rows.max(), cols.max())) + 1
    angles = torch.arange(n_pos, device=rows.device, dtype=torch.float32)[:, None] * inv_freq[None]
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos[rows], cos[cols]), -1), torch.cat((sin[rows], sin[cols]), -1)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """The ViT itself (checkpoint prefix ``backbone.pretrained.``)."""

    def __init__(self, vit: str, alt_start: int = -1):
        super().__init__()
        dim, depth, heads, ffn = VIT_SIZES[vit]
        self.embed_dim, self.num_heads, self.alt_start = dim, heads, alt_start
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if alt_start != -1:
            # [reference view, other views]: randn as officially (a model built in memory keeps the
            # official init), but not on the meta device, where randn/normal_ go through torch._refs,
            # which imports sympy (33 MiB of peak RSS); the checkpoint fills it there
            token = torch.empty(1, 2, dim)
            self.camera_token = nn.Parameter(token if token.is_meta else token.normal_())
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 37 * 37, dim))  # 518 px / 14
        # qk-norm and RoPE start with the alternating schedule (true for every released config)
        self.blocks = nn.ModuleList(
            Block(dim, heads, norm_eps=1e-6, ffn=ffn, qk_norm=alt_start != -1 and i >= alt_start)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def set_block_dtype(self, dtype: torch.dtype) -> None:
        """Store the blocks' attention and MLP weights (and qk-norms) in ``dtype``, once, in place.

        The LayerNorms on the residual stream, LayerScale, patch embedding, tokens and final norm
        keep their fp32 weights (see ``Block.forward``).
        """
        with torch.inference_mode(False), torch.no_grad():
            for blk in self.blocks:
                blk.attn.to(dtype)
                blk.mlp.to(dtype)

    @property
    def block_dtype(self) -> torch.dtype:
        return self.blocks[0].compute_dtype

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """pos_embed (1,1+h*w,C) bicubically resampled in fp32 with the DINOv2 +0.1 scale factor."""
        pos = self.pos_embed.float()
        m = 37
        if h * w == m * m and h == w:
            return pos
        grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic",
                             antialias=False, align_corners=False)
        return torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)), dim=1)

    def rope(self, h: int, w: int, views: int, device) -> tuple[tuple, tuple]:
        """(local, global) RoPE tables: real (row+1, col+1) grid per view; flat (1,1) across views."""
        r, c = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        zero = torch.zeros(1, dtype=torch.long, device=device)
        head_dim = self.embed_dim // self.num_heads
        local = rope_tables(torch.cat((zero, r.flatten() + 1)), torch.cat((zero, c.flatten() + 1)), head_dim)
        flat = torch.cat((zero, torch.ones(h * w, dtype=torch.long, device=device))).repeat(views)
        glob = rope_tables(flat, flat, head_dim)
        return local, glob

    def forward(self, x: torch.Tensor, cam_token: torch.Tensor | None, out_layers, cat_token: bool,
                ref_view_strategy: str = "saddle_balanced",
                step: Callable[[], None] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """x (B,S,3,H,W) -> [(patch features (B,S,P,2C or C), camera token (B,S,2C or C))] per out layer."""
        b, s, _, hh, ww = x.shape
        h, w = hh // PATCH, ww // PATCH
        t = self.patch_embed(x.flatten(0, 1))
        t = torch.cat((self.cls_token.expand(b * s, 1, -1), t), dim=1)
        t = t + self.pos_embed_for(h, w).to(t.dtype)
        x = t.unflatten(0, (b, s))
        n = x.shape[2]
        any_view = self.alt_start != -1
        rope_local, rope_global = self.rope(h, w, s, x.device) if any_view else (None, None)

        order = None
        local_x = x
        outputs = []
        for i, blk in enumerate(self.blocks):
            if any_view and i == self.alt_start - 1 and s >= MIN_VIEWS_FOR_REF_SELECTION and cam_token is None:
                order = reference_first_order(select_reference_view(x[:, :, 0], ref_view_strategy), s)
                x, local_x = take_views(x, order), take_views(local_x, order)
            if any_view and i == self.alt_start:
                if cam_token is None:
                    tok = self.camera_token
                    cam_token = torch.cat((tok[:, :1].expand(b, 1, -1), tok[:, 1:].expand(b, s - 1, -1)), dim=1)
                x = x.clone()  # local_x may alias x
                x[:, :, 0] = cam_token.to(x.dtype)
            use_rope = any_view and i >= self.alt_start
            if any_view and i >= self.alt_start and i % 2 == 1:  # global: all views of a sample
                x = blk(x.reshape(b, s * n, -1), rope_global if use_rope else None).reshape(b, s, n, -1)
            else:  # local: each view alone
                x = blk(x.reshape(b * s, n, -1), rope_local if use_rope else None).reshape(b, s, n, -1)
                local_x = x
            if i in out_layers:
                out = torch.cat((local_x, x), dim=-1) if cat_token else x
                if order is not None:
                    out = take_views(out, torch.argsort(order, dim=1))
                outputs.append(out)
            if step is not None:
                step()

        c = self.embed_dim
        result = []
        for out in outputs:
            if out.shape[-1] == 2 * c:
                feat = torch.cat((out[..., :c], self.norm(out[..., c:])), dim=-1)
            else:
                feat = self.norm(out)
            result.append((feat[:, :, 1:], out[:, :, 0]))
        return result


class DinoV2(nn.Module):
    """``backbone``: the ViT (``.pretrained``) plus which layers feed the heads."""

    def __init__(self, vit: str, out_layers, alt_start: int = -1, cat_token: bool = True):
        super().__init__()
        self.out_layers = tuple(out_layers)
        self.cat_token = cat_token
        self.pretrained = DinoVisionTransformer(vit, alt_start)

    @property
    def depth(self) -> int:
        return len(self.pretrained.blocks)

    def forward(self, x, cam_token=None, ref_view_strategy="saddle_balanced", step=None):
        return self.pretrained(x, cam_token, self.out_layers, self.cat_token, ref_view_strategy, step)
