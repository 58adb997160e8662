"""Which precision the backbone computes in (heads and camera modules always run in fp32).

``compute_dtype``:

* ``"auto"`` (default):
  - CPU: **bf16** where the processor computes it natively and a one-time micro-benchmark shows it
    faster (:mod:`.cpu_bf16`), else **fp32**. The official code asks for fp16 autocast on CPU (its
    bf16 test only looks at CUDA), which is slower than fp32 on CPU and lossier; we do not.
  - CUDA: bf16 autocast if the GPU supports bf16, else fp16 autocast (the official policy).
  - MPS (Apple): fp16 autocast, as the official code requests there; it halves attention memory.
    Pass ``"fp32"`` if a model misbehaves on an older macOS/torch.
* ``"fp32"``: no autocast anywhere.
* ``"bf16"`` / ``"fp16"``: the backbone in that dtype. fp16 is never computed on a CPU:
  there it falls back to fp32.

On CUDA/MPS the weights stay fp32 and autocast casts per operation, like the official
``DepthAnything3.forward``. On a CPU, bf16 is not autocast (which re-casts every weight on every
call and leaves much in fp32): the transformer blocks' matrix weights are converted to bf16 once
(:meth:`.dinov2.DinoVisionTransformer.set_block_dtype`), the residual stream, the block LayerNorms,
LayerScale, patch embedding and final norm stay fp32, the heads and camera modules stay fp32.
See ``docs/precision.md`` for the measured error and its limits.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import BadInputError
from ..options import COMPUTE_DTYPES  # defined in options
from .cpu_bf16 import cpu_bf16_pays_off

log = logging.getLogger(__name__)


def backbone_dtype(device: torch.device, compute_dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for the backbone on ``device``, or None for plain fp32."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise BadInputError(f"unknown compute_dtype {compute_dtype!r}; use one of: {', '.join(COMPUTE_DTYPES)}")
    kind = torch.device(device).type
    if compute_dtype == "fp32":
        return None
    if compute_dtype == "bf16":
        return torch.bfloat16
    if compute_dtype == "fp16":
        if kind == "cpu":
            log.warning("fp16 is not computed on a CPU; using fp32")
            return None
        return torch.float16
    if kind == "cpu":
        return torch.bfloat16 if cpu_bf16_pays_off() else None
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return None


def uses_weight_cast(device: torch.device, dtype: torch.dtype | None) -> bool:
    """True where ``dtype`` is computed with converted backbone weights (bf16 on a CPU), not autocast."""
    return dtype == torch.bfloat16 and torch.device(device).type == "cpu"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that autocasts to ``dtype`` on ``device`` (or disables autocast when None)."""
    kind = torch.device(device).type
    if dtype is None:
        return torch.autocast(device_type=kind, enabled=False) if kind in ("cpu", "cuda", "mps") else contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=dtype)
