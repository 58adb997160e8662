"""Whether this processor computes bf16 natively, and whether it pays off here: the CPU side of
``compute_dtype="auto"`` (see :mod:`.precision`).

bf16 is chosen on a CPU only when both hold:

1. the processor has bf16 instructions that torch's kernels use: AVX-512 BF16 or AMX-BF16 on x86
   (``torch._C._cpu._get_cpu_capability()``, else the ``flags`` of ``/proc/cpuinfo``), the ``bf16``
   feature on ARM (``/proc/cpuinfo``; ``hw.optional.arm.FEAT_BF16`` on macOS). Without them torch
   emulates bf16 and a bf16 forward is *slower* than fp32;
2. a micro-benchmark of the backbone's matrix product shape, fp32 and bf16 interleaved, shows bf16
   at least :data:`MIN_SPEEDUP` times faster. It runs once per process (the worker keeps the answer
   for every later job) and stops after :data:`BUDGET_S` seconds, however loaded the machine is.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time

import torch

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.25  # bf16 must beat fp32 by this much in the micro-benchmark
BUDGET_S = 0.8  # the micro-benchmark never takes longer than this (plus one last product)
SHAPE = (512, 384, 1536)  # tokens x width x MLP width: a DA3-SMALL MLP product on ~half a 504x280 view
X86_FLAGS = ("avx512_bf16", "amx_bf16")

_decision: dict[str, object] = {}  # the one measurement of this process


def _capability() -> dict:
    try:
        cap = torch._C._cpu._get_cpu_capability()
        return cap if isinstance(cap, dict) else {}
    except Exception:  # a torch without the private helper
        return {}


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def _mac_arm_bf16() -> bool:
    try:
        done = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=2)
        return done.stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        return False


def native_bf16() -> str | None:
    """The processor feature that makes bf16 native here (e.g. ``"avx512_bf16"``), or None."""
    cap = _capability()
    for flag in X86_FLAGS:
        if cap.get(flag):
            return flag
    machine = platform.machine().lower()
    flags = _cpuinfo_flags()
    for flag in X86_FLAGS:
        if flag in flags:
            return flag
    if machine in ("arm64", "aarch64"):
        if "bf16" in flags:
            return "bf16"
        if platform.system() == "Darwin" and _mac_arm_bf16():
            return "FEAT_BF16"
    return None


def _best_times(budget_s: float) -> tuple[float, float]:
    """Best fp32 and bf16 time of ``SHAPE``'s product, interleaved, within about ``budget_s``.

    One thread, timed in the CPU time of this thread: what the kernels cost, not how often other
    processes preempted us (a busy machine would otherwise decide at random).
    """
    m, k, n = SHAPE
    g = torch.Generator().manual_seed(0)
    a32, w32 = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    a16, w16 = a32.bfloat16(), w32.bfloat16()
    best = [float("inf"), float("inf")]
    threads = torch.get_num_threads()
    start = time.perf_counter()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for rep in range(10):
                for i, (a, w) in enumerate(((a32, w32), (a16, w16))):
                    t0 = time.thread_time()
                    torch.nn.functional.linear(a, w)
                    if rep:  # the first product of each dtype warms up its kernel
                        best[i] = min(best[i], time.thread_time() - t0)
                if time.perf_counter() - start > budget_s and rep >= 2:
                    break
    finally:
        torch.set_num_threads(threads)
    return best[0], best[1]


def cpu_bf16_pays_off() -> bool:
    """True when this CPU computes bf16 natively and measurably faster than fp32 (cached per process)."""
    if "bf16" in _decision:
        return bool(_decision["bf16"])
    feature = native_bf16()
    if feature is None:
        _decision.update(bf16=False, feature=None, reason="no native bf16 instructions")
    else:
        fp32, bf16 = _best_times(BUDGET_S)
        speedup = fp32 / bf16 if bf16 > 0 else 0.0
        _decision.update(bf16=speedup >= MIN_SPEEDUP, feature=feature, speedup=speedup,
                         reason=f"bf16 {speedup:.2f}x fp32 in a {SHAPE} matrix product")
    log.info("CPU backbone precision: %s (%s)", "bf16" if _decision["bf16"] else "fp32", _decision["reason"])
    return bool(_decision["bf16"])


def decision() -> dict:
    """What :func:`cpu_bf16_pays_off` decided and why (empty before it ran)."""
    return dict(_decision)
