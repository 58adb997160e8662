"""Benchmark the undistorted-plate export: row strips against the whole frame at once, time and peak memory.

A 4K float plate (4096x2160 RGBA float32, a barrel lens k1 -0.08, k2 0.01) is undistorted into its
overscan frame by ``exports.undistort.undistort_image`` with its strips (:data:`STRIP_ROWS`) and with one
strip the height of the frame (what a whole-frame map would cost). Each run is in its own child process so
each peak RSS (Linux VmHWM) is its own; prints time, peak RSS above the plate and output, and the ratios::

    python scripts/bench_undistort.py                 # 4096x2160
    python scripts/bench_undistort.py --size 1920 1080
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _vmhwm_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(width: int, height: int, strip: int) -> dict:
    import numpy as np

    from da3_blender.exports import undistort
    from da3_blender.exports.lens import Lens, fit_overscan

    k = np.array([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1.0]])
    lens = fit_overscan(Lens(k, -0.08, 0.01, width, height))
    plate = np.random.default_rng(0).random((height, width, 4), dtype=np.float32)
    ow, oh = lens.overscan_size
    base = _vmhwm_mib()
    undistort.STRIP_ROWS = strip
    started = time.perf_counter()
    out = undistort.undistort_image(plate, lens)
    seconds = time.perf_counter() - started
    frame_mib = out.nbytes / 2 ** 20
    return {"seconds": seconds, "peak_above_mib": _vmhwm_mib() - base - frame_mib, "overscan": [ow, oh],
            "frame_mib": frame_mib}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4096, 2160), metavar=("W", "H"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = args.size
    if args.child is not None:
        print(json.dumps(child(width, height, args.child)))
        return 0
    from da3_blender.exports.undistort import STRIP_ROWS

    rows = {}
    for name, strip in (("strips", STRIP_ROWS), ("whole frame", 1 << 20)):
        proc = subprocess.run([sys.executable, __file__, "--size", str(width), str(height), "--child", str(strip)],
                              capture_output=True, text=True, check=True)
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    ow, oh = rows["strips"]["overscan"]
    print(f"{width}x{height} RGBA float32 -> {ow}x{oh} overscan (output {rows['strips']['frame_mib']:.0f} MiB)")
    print(f"{'':12s} {'seconds':>8s} {'peak above plate+output (MiB)':>30s}")
    for name, r in rows.items():
        print(f"{name:12s} {r['seconds']:8.2f} {r['peak_above_mib']:30.0f}")
    s, w = rows["strips"], rows["whole frame"]
    print(f"ratio strips/whole: time {s['seconds'] / w['seconds']:.2f}, extra memory "
          f"{max(s['peak_above_mib'], 1) / max(w['peak_above_mib'], 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
