"""``DepthAnything3``: the DA3 network behind a small API (load, forward, inference).

The network is ``self.model``, so state-dict keys are the official ``model.`` ones and the official
``model.safetensors`` files load unchanged::

    model = DepthAnything3.from_pretrained("depth-anything/DA3-LARGE-1.1")   # or a local folder
    out = model(images)          # images (B,N,3,H,W), ImageNet-normalised, H and W multiples of 14
    pred = model.inference(["a.png", "b.png"])   # numpy Prediction, see da3_blender.inference
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from .devices import resolve_device
from .model.config import capabilities, check_model_name
from .model.loading import load_safetensors_into, locate, read_model_name
from .model.net import build_network, defer_camera_encoder
from .errors import BadInputError
from .model.precision import COMPUTE_DTYPES, backbone_dtype, uses_weight_cast


class DepthAnything3(nn.Module):
    """A DA3 model by ``model_name`` (see ``model.config.MODEL_NAMES``), random weights unless loaded.

    ``device="meta"`` builds without memory (for checking key layouts). ``compute_dtype`` picks the
    backbone precision: "auto" (bf16 on a CPU that computes it natively and faster, else fp32; bf16/fp16
    autocast on CUDA, fp16 on MPS), "fp32",
    "bf16" or "fp16" (see ``model.precision``).
    """

    def __init__(self, model_name: str = "da3-large", device: str | torch.device | None = None,
                 compute_dtype: str = "auto"):
        super().__init__()
        self.model_name = check_model_name(model_name)
        if compute_dtype not in COMPUTE_DTYPES:
            backbone_dtype("cpu", compute_dtype)  # raises the one-line error
        self.compute_dtype = compute_dtype
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.model = build_network(self.model_name)
        self.eval()

    @property
    def capabilities(self) -> dict[str, bool]:
        return capabilities(self.model_name)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def from_pretrained(cls, repo_id_or_dir: str | os.PathLike, device: str | torch.device | None = None,
                        compute_dtype: str = "auto") -> "DepthAnything3":
        """Load a local folder (config.json + model.safetensors) or a hub repo id; strict keys.

        ``device`` None picks CUDA, then MPS, then CPU. Errors are ``ModelLoadError`` (one line).
        """
        config, weights, repo_id = locate(repo_id_or_dir)
        name = read_model_name(config, repo_id)
        device = torch.device(device if device is not None else resolve_device("auto"))
        model = cls(name, device="meta", compute_dtype=compute_dtype)
        cast = uses_weight_cast(device, backbone_dtype(device, compute_dtype))
        pending = load_safetensors_into(model, weights, device, label=name, from_hub=repo_id is not None,
                                        block_dtype=torch.bfloat16 if cast else None, defer=True)
        if pending is not None:  # the camera encoder: read at the first run with known poses
            defer_camera_encoder(model, pending)
        return model.eval()

    @torch.inference_mode()
    def forward(self, image: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, use_ray_pose: bool = False,
                ref_view_strategy: str = "saddle_balanced", progress=None, ray_pose_seed: int | None = None,
                compute_dtype: str | None = None, keep_ray: bool = False, infer_gs: bool = False) -> dict:
        """image (B,N,3,H,W) ImageNet-normalised -> dict of tensors (see ``model.net``).

        ``extrinsics`` (B,N,4,4) normalised w2c and ``intrinsics`` (B,N,3,3, processed pixels)
        condition the poses (any-view models). ``progress(fraction)`` is called between backbone
        blocks and head stages; an exception raised by it aborts the forward. ``ray_pose_seed``
        makes ``use_ray_pose`` reproducible (the official solver is unseeded). ``infer_gs`` adds
        ``gaussians`` (DA3-GIANT / NESTED only; see ``model.gs_adapter``).
        """
        device = self.device
        dtype = self.prepare_backbone(compute_dtype)
        move = lambda t: None if t is None else torch.as_tensor(t).to(device)  # noqa: E731
        generator = torch.Generator().manual_seed(int(ray_pose_seed)) if ray_pose_seed is not None else None
        return self.model(move(image), move(extrinsics), move(intrinsics), use_ray_pose=use_ray_pose,
                          ref_view_strategy=ref_view_strategy, autocast_dtype=dtype, progress=progress,
                          keep_ray=keep_ray, ray_pose_generator=generator, infer_gs=infer_gs)

    def prepare_backbone(self, compute_dtype: str | None = None) -> torch.dtype | None:
        """The autocast dtype of a forward with ``compute_dtype`` (None: this model's). bf16 on a CPU
        converts the backbone's block weights to bf16 once (and returns None: no autocast)."""
        choice = compute_dtype or self.compute_dtype
        device = self.device
        dtype = backbone_dtype(device, choice)
        converted = self.model.backbone_weight_dtype != torch.float32
        if uses_weight_cast(device, dtype):
            if not converted:
                self.model.set_backbone_dtype(torch.bfloat16)
            return None
        if converted:
            raise BadInputError(f"this {self.model_name} already computes its backbone in bf16 on the CPU, so "
                                f"compute_dtype={choice!r} cannot be honoured: load the model again with "
                                "compute_dtype='fp32'")
        return dtype

    def check_gaussians(self) -> None:
        """A one-line ``BadInputError`` unless this model can compute 3D Gaussians (``infer_gs``)."""
        self.model.check_gaussians(self.model_name)

    def inference(self, image, *, chunk_size: int | str | None = None, chunk_overlap: int | None = None,
                  chunk_align: str = "auto", **kwargs):
        """Images (paths or arrays) -> ``Prediction``; see ``da3_blender.inference.run_inference``.

        ``chunk_size`` / ``chunk_overlap`` / ``chunk_align``: long shots in aligned chunks (None: one pass).
        """
        from .inference import run_inference

        return run_inference(self, image, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                             chunk_align=chunk_align, **kwargs)
