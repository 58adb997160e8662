"""Which precision the backbone computes in (heads and camera modules always run in fp32).

``compute_dtype``:

* ``"auto"`` (default):
  - CPU: **fp32**. The official code asks for fp16 autocast on CPU (its bf16 test only looks at
    CUDA), which is 2.7-3.2x slower on CPU and lossier; we do not.
  - CUDA: bf16 autocast if the GPU supports bf16, else fp16 autocast (the official policy).
  - MPS (Apple): fp16 autocast, as the official code requests there; it halves attention memory.
    Pass ``"fp32"`` if a model misbehaves on an older macOS/torch.
* ``"fp32"``: no autocast anywhere.
* ``"bf16"`` / ``"fp16"``: autocast the backbone in that dtype. fp16 is never computed on a CPU:
  there it falls back to fp32.

Weights always stay fp32; autocast casts per operation like the official ``DepthAnything3.forward``.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import BadInputError
from ..options import COMPUTE_DTYPES  # defined in options

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
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that autocasts to ``dtype`` on ``device`` (or disables autocast when None)."""
    kind = torch.device(device).type
    if dtype is None:
        return torch.autocast(device_type=kind, enabled=False) if kind in ("cpu", "cuda", "mps") else contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=dtype)
