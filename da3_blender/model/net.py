"""The DA3 networks: ``DepthAnything3Net`` (any-view / mono / metric) and ``NestedDepthAnything3Net``.

Outputs (dict): ``depth``, and by model ``depth_conf``, ``extrinsics`` (B,S,3,4 w2c), ``intrinsics``
(B,S,3,3 pixels of the model input), ``sky`` (mono/metric), ``is_metric``/``scale_factor`` (nested),
``gaussians`` (giant with ``infer_gs``: see ``model.gs_adapter``; as officially, in the frame of the
*un-scaled* any-view prediction, also inside the nested model).
The backbone runs under the chosen autocast dtype (or with its block weights converted to bf16 on a
CPU, see ``model.precision``); camera encoder, heads and pose decoding in fp32.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import BadInputError, ModelLoadError
from .camera import CameraDec, CameraEnc
from .config import MODEL_CONFIGS, NestedConfig, NetConfig
from .dinov2 import PATCH, DinoV2, check_ref_view_strategy
from .dpt import DPT, GSDPT, DualDPT
from .gs_adapter import GaussianAdapter
from .precision import autocast

SKY_THRESHOLD = 0.3  # sky map values below this are "not sky"
QUANTILE_SAMPLES = 100_000  # torch.quantile fails on very large inputs


def _sample(values: torch.Tensor, generator: torch.Generator, replacement: bool = True) -> torch.Tensor:
    """At most QUANTILE_SAMPLES of ``values`` (drawn with a CPU generator, so runs are reproducible)."""
    n = values.numel()
    if n <= QUANTILE_SAMPLES:
        return values
    if replacement:
        idx = torch.randint(0, n, (QUANTILE_SAMPLES,), generator=generator)
    else:
        idx = torch.randperm(n, generator=generator)[:QUANTILE_SAMPLES]
    return values.reshape(-1)[idx.to(values.device)]


class _Steps:
    """Counts forward stages and reports ``progress(fraction)``; an exception from it aborts the forward."""

    def __init__(self, progress: Callable[[float], None] | None, total: int):
        self.progress, self.total, self.done = progress, max(total, 1), 0

    def __call__(self):
        self.done += 1
        self.beat()

    def beat(self):
        """Report the current fraction again (between head chunks): a chance to cancel."""
        if self.progress is not None:
            self.progress(min(self.done / self.total, 1.0))


def check_images(x: torch.Tensor):
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[2] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BadInputError(f"image must be a (B, N, 3, H, W) tensor, got {shape}")
    if x.shape[-1] % PATCH or x.shape[-2] % PATCH:
        raise BadInputError(f"image height and width must be multiples of {PATCH}, got {x.shape[-2]}x{x.shape[-1]}; preprocess first")


class DepthAnything3Net(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        dim_in = 2 * c if cfg.cat_token else c
        self.backbone = DinoV2(cfg.vit, cfg.out_layers, cfg.alt_start, cfg.cat_token)
        if cfg.head == "dualdpt":
            self.head = DualDPT(dim_in, cfg.features, cfg.out_channels)
        else:
            self.head = DPT(dim_in, cfg.features, cfg.out_channels)
        self.cam_dec = CameraDec(dim_in) if cfg.any_view else None
        self.cam_enc = CameraEnc(c) if cfg.any_view else None
        self.gs_head = GSDPT(dim_in, cfg.features, cfg.out_channels) if cfg.gs_head else None
        self.gs_adapter = GaussianAdapter() if cfg.gs_head else None

    deferred = None  # a loading.DeferredWeights (the camera encoder, read at the first posed forward)

    def defer_weights(self, pending, prefix: str = "") -> None:
        """Keep ``pending`` (tensors named ``prefix`` + this net's names) to read when first needed:
        at the first forward with poses, or before a ``state_dict()``."""
        pending.groups = [(key, [n[len(prefix):] for n in names]) for key, names in pending.groups]
        self.deferred = pending
        self.register_state_dict_pre_hook(lambda module, *args: module.load_deferred())

    def load_deferred(self) -> None:
        if self.deferred is not None:
            self.deferred.load_into(self)
            self.deferred = None

    def num_steps(self, posed: bool = False, infer_gs: bool = False) -> int:
        return self.backbone.depth + 2 + int(posed) + int(infer_gs)

    def set_backbone_dtype(self, dtype: torch.dtype) -> None:
        """The transformer blocks' weights in ``dtype`` (bf16 on a CPU; see ``model.precision``)."""
        self.backbone.pretrained.set_block_dtype(dtype)

    @property
    def backbone_weight_dtype(self) -> torch.dtype:
        return self.backbone.pretrained.block_dtype

    def check_gaussians(self, name: str = "this model") -> None:
        """One-line error unless ``infer_gs`` can run (a GS head with loaded weights)."""
        if not self.cfg.gs_head:
            raise BadInputError(f"{name} has no 3D-Gaussian head: Gaussians (infer_gs, gs_ply) need DA3-GIANT or "
                                "DA3NESTED-GIANT-LARGE")
        if self.gs_head is None:
            raise BadInputError(f"{name}: its checkpoint has no 3D-Gaussian head weights (gs_head.*), so Gaussians "
                                "(infer_gs, gs_ply) cannot be computed; use the official DA3-GIANT/NESTED checkpoint")

    def forward(self, x: torch.Tensor, extrinsics: torch.Tensor | None = None, intrinsics: torch.Tensor | None = None,
                use_ray_pose: bool = False, ref_view_strategy: str = "saddle_balanced",
                autocast_dtype: torch.dtype | None = None, progress=None, keep_ray: bool = False,
                ray_pose_generator: torch.Generator | None = None,
                sample_generator: torch.Generator | None = None, infer_gs: bool = False) -> dict:
        """x (B,S,3,H,W) ImageNet-normalised; extrinsics (B,S,4,4 normalised w2c) + intrinsics (B,S,3,3 px).

        ``keep_ray`` also returns the raw ``ray``/``ray_conf`` maps (8h x 8w); without it (and without
        ``use_ray_pose``) the ray branch is not computed at all. ``infer_gs`` adds ``gaussians``.
        """
        check_images(x)
        check_ref_view_strategy(ref_view_strategy)
        if infer_gs:
            self.check_gaussians()
        x = x.float()
        height, width = x.shape[-2:]
        posed = extrinsics is not None
        step = progress if isinstance(progress, _Steps) else _Steps(progress, self.num_steps(posed, infer_gs))
        cam_token = None
        if posed:
            if self.cam_enc is None:
                raise BadInputError("this model does not take camera poses; use an any-view DA3 model or drop extrinsics")
            if intrinsics is None:
                raise BadInputError("camera-pose conditioning needs intrinsics together with extrinsics")
            self.load_deferred()
            with autocast(x.device, None):
                cam_token = self.cam_enc(extrinsics.float(), intrinsics.float(), (height, width))
            step()

        with autocast(x.device, autocast_dtype):
            feats = self.backbone(x, cam_token, ref_view_strategy, step)

        with autocast(x.device, None):
            feats = [(f.float(), t.float()) for f, t in feats]
            with_ray = isinstance(self.head, DualDPT) and (use_ray_pose or keep_ray)
            kwargs = {"with_ray": with_ray} if isinstance(self.head, DualDPT) else {}
            out = self.head([f for f, _ in feats], height, width, on_chunk=step.beat, **kwargs)
            step()
            if use_ray_pose and "ray" in out:
                from .ray_pose import solve_ray_pose

                out["extrinsics"], out["intrinsics"] = solve_ray_pose(
                    out["ray"], out["ray_conf"], int(height), int(width), generator=ray_pose_generator)
            elif self.cam_dec is not None:
                out["extrinsics"], out["intrinsics"] = self.cam_dec.decode(self.cam_dec(feats[-1][1]), (height, width))
            if not keep_ray:
                out.pop("ray", None)
                out.pop("ray_conf", None)
            step()
            if infer_gs:  # with the predicted cameras (the depth lives in their frame), as officially
                gs = self.gs_head([f for f, _ in feats], height, width, x, on_chunk=step.beat)
                out["gaussians"] = self.gs_adapter(out["extrinsics"], out["intrinsics"], out["depth"], gs["raw_gs_conf"],
                                                   gs["raw_gs"], (height, width), extrinsics)
                step()

        if "sky" in out:
            self._fill_sky(out, sample_generator or torch.Generator().manual_seed(0))
        return out

    @staticmethod
    def _fill_sky(out: dict, generator: torch.Generator):
        """Mono/metric: set sky pixels to the 99th percentile of the non-sky depth (all views together)."""
        non_sky = out["sky"] < SKY_THRESHOLD
        if non_sky.sum() <= 10 or (~non_sky).sum() <= 10:
            return
        far = torch.quantile(_sample(out["depth"][non_sky], generator), 0.99)
        out["depth"] = torch.where(non_sky, out["depth"], far)


class NestedDepthAnything3Net(nn.Module):
    """Any-view giant (``da3``) scaled to metres by the metric large model (``da3_metric``); sky filled."""

    def __init__(self, cfg: NestedConfig):
        super().__init__()
        self.cfg = cfg
        self.da3 = DepthAnything3Net(MODEL_CONFIGS[cfg.anyview])
        self.da3_metric = DepthAnything3Net(MODEL_CONFIGS[cfg.metric])

    def num_steps(self, posed: bool = False, infer_gs: bool = False) -> int:
        return self.da3.num_steps(posed, infer_gs) + self.da3_metric.num_steps() + 1

    def check_gaussians(self, name: str = "this model") -> None:
        self.da3.check_gaussians(name)

    def set_backbone_dtype(self, dtype: torch.dtype) -> None:
        self.da3.set_backbone_dtype(dtype)
        self.da3_metric.set_backbone_dtype(dtype)

    @property
    def backbone_weight_dtype(self) -> torch.dtype:
        return self.da3.backbone_weight_dtype

    def forward(self, x, extrinsics=None, intrinsics=None, use_ray_pose=False, ref_view_strategy="saddle_balanced",
                autocast_dtype=None, progress=None, keep_ray=False, ray_pose_generator=None, sample_generator=None,
                infer_gs=False):
        if infer_gs:
            self.check_gaussians()
        step = _Steps(progress, self.num_steps(extrinsics is not None, infer_gs))
        gen = sample_generator or torch.Generator().manual_seed(0)
        out = self.da3(x, extrinsics, intrinsics, use_ray_pose, ref_view_strategy, autocast_dtype, step, keep_ray,
                       ray_pose_generator, gen, infer_gs)
        met = self.da3_metric(x, autocast_dtype=autocast_dtype, progress=step, sample_generator=gen)
        k = out["intrinsics"]
        metric_depth = met["depth"] * ((k[:, :, 0, 0] + k[:, :, 1, 1]) / 2)[:, :, None, None] / 300.0

        non_sky = met["sky"] < SKY_THRESHOLD
        if non_sky.sum() <= 10:
            raise BadInputError("the images are almost all sky: the metric scale cannot be estimated; use a non-nested DA3 model")
        depth, conf = out["depth"], out["depth_conf"]
        median_conf = torch.quantile(_sample(conf[non_sky], gen, replacement=False), 0.5)
        mask = (conf >= median_conf) & non_sky & (metric_depth > 1e-2) & (depth > 1e-3)
        a, b = metric_depth[mask], depth[mask]
        scale = torch.dot(a, b) / torch.dot(b, b).clamp_min(1e-12)
        depth = depth * scale
        extr = out["extrinsics"].clone()
        extr[..., :3, 3] *= scale

        far = torch.clamp(torch.quantile(_sample(depth[non_sky], gen), 0.99), max=200.0)
        out["depth"] = torch.where(non_sky, depth, far)
        out["depth_conf"] = torch.where(non_sky, conf, torch.ones_like(conf))
        out["extrinsics"] = extr
        out["is_metric"] = True
        out["scale_factor"] = float(scale)
        step()
        return out


def defer_camera_encoder(root: nn.Module, pending) -> None:
    """Hand ``pending`` (a ``loading.DeferredWeights`` of ``root``'s camera encoder) to the any-view
    net inside ``root`` that owns it; its names must all lie under that net."""
    for name, net in root.named_modules():
        if isinstance(net, DepthAnything3Net) and net.cam_enc is not None:
            prefix = f"{name}." if name else ""
            if all(n.startswith(prefix) for _, names in pending.groups for n in names):
                net.defer_weights(pending, prefix)
                return
    raise ModelLoadError("internal: deferred camera-encoder tensors without an any-view net to hold them")


def build_network(model_name: str) -> nn.Module:
    cfg = MODEL_CONFIGS[model_name]
    return NestedDepthAnything3Net(cfg) if isinstance(cfg, NestedConfig) else DepthAnything3Net(cfg)
