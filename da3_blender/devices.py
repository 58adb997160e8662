"""Which device DA3 runs on: choice (auto = CUDA, then MPS, then CPU), names, free memory, OOM errors.

torch is imported inside the functions, so this module loads in a Python without torch (the worker
must still answer ``hello`` there to say torch is missing).
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

from .errors import BadInputError, MissingDependencyError, OutOfMemoryError

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"torch is not installed in this Python ({exc}): set up the DA3 environment or pip install torch"
        ) from None
    except Exception as exc:  # e.g. OSError: a CUDA library of a broken torch install is missing
        raise MissingDependencyError(
            f"torch is installed but does not import ({type(exc).__name__}: {exc}): set up the DA3 environment again"
        ) from None
    return torch


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | None = "auto") -> str:
    """``"auto"|"cpu"|"cuda"|"cuda:N"|"mps"`` -> a torch device string that works here.

    Raises :class:`BadInputError` saying why a requested device is unusable and what to do.
    """
    name = (name or "auto").strip().lower()
    match = _DEVICE_RE.match(name)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise BadInputError(f"unknown device {name!r}: choose auto, cpu, cuda, cuda:N or mps")
    torch = _torch()
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available(torch) else "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "mps":
        if not _mps_available(torch):
            raise BadInputError(
                "MPS (Apple GPU) was asked for but is not available here (needs Apple silicon, macOS 12.3+ "
                "and an MPS-enabled torch): choose auto or cpu"
            )
        return "mps"
    if torch.version.cuda is None:
        raise BadInputError(
            f"CUDA was asked for but this torch ({torch.__version__}) has no CUDA (CPU build): "
            "set up the environment with a CUDA torch, or choose cpu"
        )
    if not torch.cuda.is_available():
        raise BadInputError(
            f"CUDA was asked for but no CUDA GPU is usable (torch {torch.__version__} is built for CUDA "
            f"{torch.version.cuda}; is the NVIDIA driver installed and up to date?): fix the driver, or choose cpu"
        )
    if index is not None:
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise BadInputError(f"{name} was asked for but there are only {count} CUDA device(s): choose cuda:0..cuda:{count - 1}")
    return name


def torch_info() -> dict[str, Any]:
    """torch version, CUDA build and availability, MPS availability (torch None when missing)."""
    try:
        torch = _torch()
    except MissingDependencyError as exc:
        return {"torch": None, "error": str(exc), "cuda_build": None, "cuda_available": False, "mps_available": False}
    cuda_ok = False
    try:
        cuda_ok = bool(torch.cuda.is_available())
    except Exception:  # a broken driver can raise here
        pass
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda_ok,
        "mps_available": _mps_available(torch),
    }


def system_memory() -> tuple[int | None, int | None]:
    """(free, total) bytes of RAM, or None where unknown."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
    except (AttributeError, ValueError, OSError):
        return None, None


def describe_devices() -> list[dict[str, Any]]:
    """Every usable device: ``{"id", "kind", "name", "free_memory", "total_memory"}`` (bytes or None)."""
    free, total = system_memory()
    cpu_name = platform.processor() or platform.machine() or "CPU"
    devices = [{"id": "cpu", "kind": "cpu", "name": f"CPU ({cpu_name}, {os.cpu_count()} cores)",
                "free_memory": free, "total_memory": total}]
    try:
        torch = _torch()
    except MissingDependencyError:
        return devices
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        count = 0
    for i in range(count):
        entry = {"id": f"cuda:{i}", "kind": "cuda", "name": torch.cuda.get_device_name(i),
                 "free_memory": None, "total_memory": None}
        try:
            entry["free_memory"], entry["total_memory"] = (int(v) for v in torch.cuda.mem_get_info(i))
        except Exception:
            entry["total_memory"] = int(torch.cuda.get_device_properties(i).total_memory)
        devices.append(entry)
    if _mps_available(torch):
        total_mps = None
        try:
            total_mps = int(torch.mps.recommended_max_memory())
        except Exception:
            pass
        devices.append({"id": "mps", "kind": "mps", "name": "Apple GPU (MPS)", "free_memory": None,
                        "total_memory": total_mps})
    return devices


def describe(device: str) -> str:
    """A short human name for a resolved device string, e.g. ``"cuda:0 (NVIDIA H100)"``."""
    for entry in describe_devices():
        if entry["id"] == device or (device == "cuda" and entry["id"] == "cuda:0"):
            return f"{device} ({entry['name']})"
    return device


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch/CUDA/MPS/host out-of-memory errors."""
    if isinstance(exc, (MemoryError, OutOfMemoryError)):
        return True
    torch_oom = None
    try:
        import torch

        torch_oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    except ImportError:
        pass
    if torch_oom is not None and isinstance(exc, torch_oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "failed to allocate" in text)


def out_of_memory_error(exc: BaseException, device: str | None = None) -> OutOfMemoryError:
    """The user-facing error for an out-of-memory ``exc``."""
    if isinstance(exc, OutOfMemoryError):
        return exc
    where = f" on {device}" if device else ""
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return OutOfMemoryError(
        f"out of memory{where} ({first}): choose a smaller model, a lower processing resolution "
        "or fewer frames"
    )
