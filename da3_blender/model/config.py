"""The seven DA3 architectures, the HF repo -> ``model_name`` table, and what each model can do.

Values follow the official ``depth_anything_3/configs/<model_name>.yaml`` files. Only ``model_name``
selects an architecture; every other key a ``config.json`` may carry is ignored (as officially).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelLoadError

# name: (embed_dim, depth, num_heads, ffn)
VIT_SIZES = {
    "vits": (384, 12, 6, "mlp"),
    "vitb": (768, 12, 12, "mlp"),
    "vitl": (1024, 24, 16, "mlp"),
    "vitg": (1536, 40, 24, "swiglu"),
}


@dataclass(frozen=True)
class NetConfig:
    """One ``DepthAnything3Net``: a DINOv2 backbone, a dense head and (any-view) camera modules."""

    vit: str  # vits / vitb / vitl / vitg
    out_layers: tuple[int, int, int, int]
    alt_start: int  # first block of the local/global schedule; -1 = plain DINOv2 (mono/metric)
    cat_token: bool  # features = cat(local, global) (2C channels) or just the last block (C)
    head: str  # "dualdpt" (depth + conf + ray) or "dpt" (depth + sky)
    features: int
    out_channels: tuple[int, int, int, int]
    gs_head: bool = False  # giant: GSDPT weights for 3D Gaussians

    @property
    def embed_dim(self) -> int:
        return VIT_SIZES[self.vit][0]

    @property
    def any_view(self) -> bool:
        return self.alt_start != -1


@dataclass(frozen=True)
class NestedConfig:
    """``NestedDepthAnything3Net``: an any-view net (``da3``) plus a metric net (``da3_metric``)."""

    anyview: str
    metric: str


_DPT_L = dict(features=256, out_channels=(256, 512, 1024, 1024))
_METRIC_L = NetConfig("vitl", (4, 11, 17, 23), -1, False, "dpt", **_DPT_L)

MODEL_CONFIGS: dict[str, NetConfig | NestedConfig] = {
    "da3-small": NetConfig("vits", (5, 7, 9, 11), 4, True, "dualdpt", 64, (48, 96, 192, 384)),
    "da3-base": NetConfig("vitb", (5, 7, 9, 11), 4, True, "dualdpt", 128, (96, 192, 384, 768)),
    "da3-large": NetConfig("vitl", (11, 15, 19, 23), 8, True, "dualdpt", **_DPT_L),
    "da3-giant": NetConfig("vitg", (19, 27, 33, 39), 13, True, "dualdpt", gs_head=True, **_DPT_L),
    "da3metric-large": _METRIC_L,
    "da3mono-large": _METRIC_L,
    "da3nested-giant-large": NestedConfig("da3-giant", "da3metric-large"),
}

MODEL_NAMES = tuple(MODEL_CONFIGS)

# Fallback when a config.json lacks "model_name" (README model table; -1.1 = retrained, same net).
REPO_MODEL_NAMES = {
    "depth-anything/DA3-SMALL": "da3-small",
    "depth-anything/DA3-BASE": "da3-base",
    "depth-anything/DA3-LARGE": "da3-large",
    "depth-anything/DA3-LARGE-1.1": "da3-large",
    "depth-anything/DA3-GIANT": "da3-giant",
    "depth-anything/DA3-GIANT-1.1": "da3-giant",
    "depth-anything/DA3METRIC-LARGE": "da3metric-large",
    "depth-anything/DA3MONO-LARGE": "da3mono-large",
    "depth-anything/DA3NESTED-GIANT-LARGE": "da3nested-giant-large",
    "depth-anything/DA3NESTED-GIANT-LARGE-1.1": "da3nested-giant-large",
}


def check_model_name(name: str) -> str:
    """Return ``name`` normalised (lower case), or raise a one-line error listing the valid names."""
    key = str(name).strip().lower()
    if key not in MODEL_CONFIGS:
        raise ModelLoadError(f"unknown DA3 model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return key


def model_name_for_repo(repo_id: str) -> str | None:
    """The ``model_name`` of a known hub repo id (case-insensitive), else None."""
    table = {k.lower(): v for k, v in REPO_MODEL_NAMES.items()}
    return table.get(str(repo_id).strip().strip("/").lower())


def capabilities(name: str) -> dict[str, bool]:
    """What a model's ``forward`` returns.

    ``pose``: predicted extrinsics/intrinsics; ``conf``: depth confidence; ``sky``: sky map;
    ``metric``: depth in metres (for ``da3metric-large`` only after ``depth * focal_px / 300``,
    which the caller applies); ``pose_conditioning``: accepts input extrinsics/intrinsics;
    ``gaussians``: has the 3D-Gaussian head (``infer_gs``).
    """
    key = check_model_name(name)
    cfg = MODEL_CONFIGS[key]
    if isinstance(cfg, NestedConfig):
        return dict(pose=True, conf=True, sky=False, metric=True, pose_conditioning=True, gaussians=True)
    anyv = cfg.any_view
    return dict(pose=anyv, conf=anyv, sky=not anyv, metric=key.startswith("da3metric"), pose_conditioning=anyv,
                gaussians=cfg.gs_head)
