"""Dense heads: DualDPT (any-view: depth + conf, and the aux "ray" map), DPT (mono/metric: depth + sky),
GSDPT (giant: raw per-pixel 3D-Gaussian parameters).

Module names mirror the official checkpoint (``head.scratch.refinenet1.resConfUnit2.conv1``...).
All heads run in fp32 and process views in chunks of CHUNK (results do not depend on the chunking).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 14
CHUNK = 2  # views per head pass: bounds memory and lets a cancel land within ~1 s (official: 8)


def interpolate(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(int(v) for v in size), mode="bilinear", align_corners=True)


def add_uv_embedding(x: torch.Tensor, width: int, height: int, ratio: float = 0.1,
                     rows: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Add the sin/cos embedding of an aspect-aware UV grid (channels: u half, then v half).

    In place: ``x`` must be a fresh intermediate (every caller passes a conv or resize output).
    ``rows`` = (first, end, full height): ``x`` holds only those rows of a map ``full height`` tall.
    The embedding is separable (the u half varies along columns only, the v half along rows only), so
    it is added as two broadcast tables, never materialised at full resolution.
    """
    n, c, ph, pw = x.shape
    first, end, full = rows if rows is not None else (0, ph, ph)
    u, v = uv_tables(c, full, pw, width, height, ratio, x.dtype, x.device)
    x[:, : c // 2].add_(u)
    x[:, c // 2:].add_(v[:, :, first:end])
    return x


@functools.lru_cache(maxsize=16)
def uv_tables(c: int, ph: int, pw: int, width: int, height: int, ratio: float, dtype: torch.dtype,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The u half (1, c/2, 1, pw) and the v half (1, c/2, ph, 1) of the embedding, once per shape.

    Element for element the official full grid: sincos of the same linspace values times ``ratio``.
    """
    with torch.inference_mode(False), torch.no_grad():
        aspect = width / height
        diag = (aspect**2 + 1.0) ** 0.5
        sx, sy = aspect / diag, 1.0 / diag
        u = torch.linspace(-sx * (pw - 1) / pw, sx * (pw - 1) / pw, steps=pw, dtype=dtype, device=device)
        v = torch.linspace(-sy * (ph - 1) / ph, sy * (ph - 1) / ph, steps=ph, dtype=dtype, device=device)

        def sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
            omega = torch.arange(dim // 2, dtype=torch.float32, device=device) / (dim / 2.0)
            out = pos[:, None] * (1.0 / 100**omega)[None]
            return torch.cat((out.sin(), out.cos()), dim=1) * ratio  # (len, dim)

        return (sincos(u, c // 2).t()[None, :, None, :].contiguous(),
                sincos(v, c // 2).t()[None, :, :, None].contiguous())


def upsample_rows(x: torch.Tensor, size, first: int, end: int) -> torch.Tensor:
    """Rows ``first:end`` of ``interpolate(x, size)`` (bilinear, align_corners=True), from the two
    source rows each needs: a row lerp, then torch's resize along the width alone."""
    hin, win = x.shape[-2:]
    hout, wout = (int(v) for v in size)
    scale = torch.tensor((hin - 1) / (hout - 1) if hout > 1 else 0.0, dtype=torch.float32)
    ys = torch.arange(first, end, dtype=torch.float32) * scale
    y0 = ys.floor().long().clamp_(max=hin - 1)
    y1 = (y0 + 1).clamp_(max=hin - 1)
    top = x.index_select(2, y0)  # index_select: ~4x faster than x[:, :, y0] here
    lerped = torch.lerp(top, x.index_select(2, y1), (ys - y0).to(x.dtype).view(1, 1, -1, 1))
    return F.interpolate(lerped, size=(end - first, wout), mode="bilinear", align_corners=True)


STRIP_ROWS = 40  # full-resolution rows per pass of the output convolutions (memory: see full_resolution)


def full_resolution(x: torch.Tensor, height: int, width: int, convs, uv_size: tuple[int, int] | None) -> list:
    """``[conv(upsample(x) (+ UV)) for conv in convs]`` at ``height`` x ``width``, in strips of rows.

    Each conv is a 3x3 convolution followed by per-pixel layers (``_out_conv2``), so a strip needs one
    row above and below it. Only the outputs (a few channels) exist at full resolution, not the 32- or
    64-channel maps in between: the peak memory of a 504x280 view drops by ~50 MiB. ``uv_size`` =
    (width, height) of the image for the UV embedding, or None for no embedding.
    """
    outs = [None] * len(convs)
    for first in range(0, height, STRIP_ROWS):
        end = min(height, first + STRIP_ROWS)
        a, b = max(0, first - 1), min(height, end + 1)
        t = upsample_rows(x, (height, width), a, b)
        if uv_size is not None:
            add_uv_embedding(t, *uv_size, rows=(a, b, height))
        for i, conv in enumerate(convs):
            y = conv(t)[:, :, first - a:first - a + end - first]
            if outs[i] is None:
                outs[i] = y.new_empty(y.shape[:2] + (height, width))
            outs[i][:, :, first:end] = y
    return outs


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu_(self.conv1(F.relu(x)))).add_(x)


class FeatureFusionBlock(nn.Module):
    """(top + RCU1(lateral)) -> RCU2 -> bilinear resize (to ``size``, or x2) -> 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, lateral: torch.Tensor | None = None, size=None,
                resize: bool = True) -> torch.Tensor:
        """``resize=False``: the map before its x2 resize (the caller resizes it in strips)."""
        if lateral is not None:
            x = x + self.resConfUnit1(lateral)
        x = self.resConfUnit2(x)
        # out_conv (1x1) before the resize, not after as officially: a 1x1 convolution and a bilinear
        # resize (weights summing to 1) commute, so the result is the same up to rounding (~1e-7),
        # at a quarter of the convolution's work and without its buffers at the larger size
        x = self.out_conv(x)
        return interpolate(x, size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)) if resize else x


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def _out_conv2(features: int, out: int, shared_ln: nn.LayerNorm | None = None) -> nn.Sequential:
    mid = [Permute(0, 2, 3, 1), shared_ln, Permute(0, 3, 1, 2)] if shared_ln is not None else []
    return nn.Sequential(nn.Conv2d(features // 2, 32, 3, 1, 1), *mid, nn.ReLU(inplace=True), nn.Conv2d(32, out, 1))


class _DPTBase(nn.Module):
    """Projections, resizers, scratch adapters and a main fusion chain (shared by all heads)."""

    use_uv = True

    def __init__(self, dim_in: int, features: int, out_channels):
        super().__init__()
        oc = list(out_channels)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], 4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], 3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for k, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{k}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        self._fusion_chain("")
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, 1, 1)

    def _fusion_chain(self, suffix: str):
        f = self.scratch.layer1_rn.out_channels
        for k in (1, 2, 3, 4):
            setattr(self.scratch, f"refinenet{k}{suffix}", FeatureFusionBlock(f, has_residual=k != 4))

    def pyramid(self, feats: list[torch.Tensor], h: int, w: int, height: int, width: int) -> list[torch.Tensor]:
        """Token features (n,P,C) x4 -> the four ``layerK_rn`` maps at 4x, 2x, 1x, 1/2x the patch grid."""
        maps = []
        for k, x in enumerate(feats):
            x = self.norm(x)
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], h, w)
            x = self.projects[k](x)
            if self.use_uv:
                x = add_uv_embedding(x, width, height)
            x = self.resize_layers[k](x)
            maps.append(getattr(self.scratch, f"layer{k + 1}_rn")(x))
        return maps

    def fuse(self, maps: list[torch.Tensor], suffix: str = "", resize_last: bool = True) -> torch.Tensor:
        """Top-down fusion 4 -> 1; ends at 8x the patch grid (``resize_last=False``: at 4x, before
        refinenet1's x2 resize, which the caller then does in strips)."""
        l1, l2, l3, l4 = maps
        rn = lambda k: getattr(self.scratch, f"refinenet{k}{suffix}")  # noqa: E731
        x = rn(4)(l4, size=l3.shape[2:])
        x = rn(3)(x, l3, size=l2.shape[2:])
        x = rn(2)(x, l2, size=l1.shape[2:])
        return rn(1)(x, l1, resize=resize_last)

    def fused_conv1(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """``output_conv1(fuse(maps))``, refinenet1's x2 resize done in strips of rows with the 3x3
        convolution (:func:`full_resolution`): the 2x map with all the features never exists whole."""
        x = self.fuse(maps, resize_last=False)
        out, = full_resolution(x, x.shape[-2] * 2, x.shape[-1] * 2, [self.scratch.output_conv1], None)
        return out

    def forward(self, feats, height: int, width: int, on_chunk=None, **kwargs) -> dict[str, torch.Tensor]:
        """feats: 4 x (B,S,P,C) -> dict of (B,S,...) maps; views run in chunks of CHUNK.

        ``on_chunk()`` is called after each chunk (the worker cancels from there).
        """
        b, s, p, c = feats[0].shape
        flat = [f.reshape(b * s, p, c) for f in feats]
        outs = []
        for i in range(0, b * s, CHUNK):
            outs.append(self.forward_views([f[i:i + CHUNK] for f in flat], height, width, **kwargs))
            if on_chunk is not None:
                on_chunk()
        return {k: torch.cat([o[k] for o in outs]).unflatten(0, (b, s)) for k in outs[0]}


class DualDPT(_DPTBase):
    """Any-view head: depth (exp) + conf (exp+1) at H x W, and ray (linear, 6) + ray_conf at 8h x 8w.

    The four aux levels share ONE LayerNorm(32) module (``output_conv2_aux.{0..3}.2``), as officially;
    only level 3 is used. The ray branch (a second fusion chain) is skipped unless ``with_ray``.
    """

    def __init__(self, dim_in: int, features: int, out_channels):
        super().__init__(dim_in, features, out_channels)
        self.norm = nn.LayerNorm(dim_in, eps=1e-5)
        self.scratch.output_conv2 = _out_conv2(features, 2)
        self._fusion_chain("_aux")
        f, g = features, features // 2
        self.scratch.output_conv1_aux = nn.ModuleList(
            nn.Sequential(*(nn.Conv2d(a, o, 3, 1, 1) for a, o in ((f, g), (g, f), (f, g), (g, f), (f, g))))
            for _ in range(4)
        )
        shared_ln = nn.LayerNorm(32, eps=1e-5)
        self.scratch.output_conv2_aux = nn.ModuleList(_out_conv2(features, 7, shared_ln) for _ in range(4))

    def forward_views(self, feats, height, width, with_ray: bool = True):
        h, w = height // PATCH, width // PATCH
        maps = self.pyramid(feats, h, w, height, width)
        main = self.fused_conv1(maps)
        logits, = full_resolution(main, h * PATCH, w * PATCH, [self.scratch.output_conv2], (width, height))
        out = {"depth": torch.exp(logits[:, 0]), "depth_conf": torch.exp(logits[:, 1]) + 1}
        if with_ray:  # only the finest aux level feeds the output
            aux = self.scratch.output_conv1_aux[3](self.fuse(maps, "_aux"))
            aux = self.scratch.output_conv2_aux[3](add_uv_embedding(aux, width, height))
            out["ray"] = aux[:, :6].permute(0, 2, 3, 1)
            out["ray_conf"] = torch.exp(aux[:, 6]) + 1
        return out


class DPT(_DPTBase):
    """Mono/metric head: depth (exp) and sky (relu) at H x W; no token norm, no UV embedding."""

    use_uv = False

    def __init__(self, dim_in: int, features: int, out_channels, sky: bool = True, out_dim: int = 1):
        super().__init__(dim_in, features, out_channels)
        self.norm = nn.Identity()
        self.scratch.output_conv2 = _out_conv2(features, out_dim)
        if sky:
            self.scratch.sky_output_conv2 = _out_conv2(features, 1)

    def forward_views(self, feats, height, width):
        h, w = height // PATCH, width // PATCH
        x = self.fused_conv1(self.pyramid(feats, h, w, height, width))
        sky = hasattr(self.scratch, "sky_output_conv2")
        convs = [self.scratch.output_conv2] + ([self.scratch.sky_output_conv2] if sky else [])
        maps = full_resolution(x, h * PATCH, w * PATCH, convs, None)
        out = {"depth": torch.exp(maps[0][:, 0])}
        if sky:
            out["sky"] = torch.relu(maps[1][:, 0])
        return out


class GSDPT(DPT):
    """Giant's 3D-Gaussian head: a DPT with the UV embedding, plus the input images merged in at full
    resolution. Returns ``raw_gs`` (B,S,H,W,37) linear channels (channel-last) and ``raw_gs_conf``
    (B,S,H,W) = sigmoid(channel 37); :class:`.gs_adapter.GaussianAdapter` turns them into Gaussians."""

    use_uv = True

    def __init__(self, dim_in: int, features: int, out_channels, out_dim: int = 38):
        super().__init__(dim_in, features, out_channels, sky=False, out_dim=out_dim)
        m = features // 2
        self.images_merger = nn.Sequential(
            nn.Conv2d(3, m // 4, 3, 1, 1), nn.GELU(), nn.Conv2d(m // 4, m // 2, 3, 1, 1), nn.GELU(),
            nn.Conv2d(m // 2, m, 3, 1, 1), nn.GELU(),
        )

    def forward(self, feats, height: int, width: int, images: torch.Tensor, on_chunk=None) -> dict[str, torch.Tensor]:
        """feats: 4 x (B,S,P,C); images (B,S,3,H,W) ImageNet-normalised model input."""
        b, s = feats[0].shape[:2]
        flat = [f.reshape(b * s, *f.shape[2:]) for f in feats]
        imgs = images.reshape(b * s, *images.shape[2:]).float()
        outs = []
        for i in range(0, b * s, CHUNK):
            outs.append(self.forward_views([f[i:i + CHUNK] for f in flat], height, width, imgs[i:i + CHUNK]))
            if on_chunk is not None:
                on_chunk()
        return {k: torch.cat([o[k] for o in outs]).unflatten(0, (b, s)) for k in outs[0]}

    def forward_views(self, feats, height, width, images):
        h, w = height // PATCH, width // PATCH
        x = self.fused_conv1(self.pyramid(feats, h, w, height, width))
        x = interpolate(x, (h * PATCH, w * PATCH)) + self.images_merger(images)
        logits = self.scratch.output_conv2(add_uv_embedding(x, width, height)).permute(0, 2, 3, 1)
        return {"raw_gs": logits[..., :-1], "raw_gs_conf": torch.sigmoid(logits[..., -1])}
