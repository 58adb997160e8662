"""scripts/check_gpu.py (written for a CUDA machine) runs end to end on a CPU with tiny sizes, so it cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_check_gpu_quick_on_cpu(fixture_dir, soh_images):
    env = {**os.environ, "DA3_SHARED": str(fixture_dir.parents[2])}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_gpu.py"), "--device", "cpu", "--quick",
                           "--views", "1", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    parity = re.search(r"parity fp32 vs bf16 autocast .*worst depth ([0-9.e+-]+) \(relative\), rotation ([0-9.]+) deg", out)
    assert parity, out
    assert 0 < float(parity.group(1)) < 1e-2  # bf16 moves depth a little, never a lot
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| da3-small")]
    assert [int(r[2]) for r in rows] == [1, 2], out
    import torch

    from da3_blender.model.precision import backbone_dtype

    auto = {None: "fp32", torch.bfloat16: "bf16"}[backbone_dtype(torch.device("cpu"), "auto")]  # bf16 on a native-bf16 CPU
    for r in rows:
        assert r[1].strip() == auto and float(r[4]) > 0 and float(r[5]) > 0 and float(r[7]) > 100, r
