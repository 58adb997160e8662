"""The fused proxy mesh (issue 27): time and peak memory of ``matchmove.fusion.fuse_mesh`` on the analytic set of
tests/matchmove_scene.py (a floor, two boxes and a sphere, ray-cast depth), side by side with the targets of
issue 27 (48 views of 480x270 in <= 10 s; 300 views in <= 1.5 GB peak on the 2-core CPU).

    python scripts/bench_mesh.py [--threads 2] [--views 48 300] [--device cpu|cuda]

Each case runs in its own child process (peak RSS = that process's high-water mark, the shot's arrays
included); the shot is written to a temporary .npz first so the child's peak is the load and the fusion only.
``cpu s`` is the child's CPU time in the fusion (all threads): on a busy shared box it shows the work done, which
wall-clock time does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGETS = {48: ("seconds", 10.0), 300: ("peak MiB", 1536.0)}


def make_shot(views: int, path: str) -> None:
    import numpy as np

    from matchmove_scene import cameras, make_result

    w2c = cameras(views, radius=3.6)
    pred, _, _ = make_result(count=views, width=480, height=270, w2c=w2c)
    np.savez(path, depth=pred.depth, conf=pred.conf, sky=pred.sky, image=pred.processed_images,
             intrinsics=pred.intrinsics, extrinsics=pred.extrinsics)


def _hwm_mib() -> float:
    """This process's peak resident memory since it started (VmHWM: unlike ru_maxrss, not inherited over fork+exec
    from the parent, which held the generated shot)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def child(path: str, device: str, threads: int) -> dict:
    import numpy as np
    import torch

    from da3_blender.matchmove.fusion import fuse_mesh

    torch.set_num_threads(threads)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    loaded = _hwm_mib()
    start, cpu = time.perf_counter(), time.process_time()
    mesh = fuse_mesh(arrays["depth"], arrays["intrinsics"], arrays["extrinsics"], arrays["conf"], arrays["sky"],
                     arrays["image"], device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _hwm_mib()
    return {"seconds": seconds, "cpu s": cpu, "loaded MiB": loaded, "peak MiB": peak, "faces": int(len(mesh.faces))}


def floor_timing(views: int = 1000) -> None:
    """``find_floor`` on a long shot (issue 27: a 1,000-frame shot in under 2 s): 1,000 views of 480x270 (the
    48-view arc repeated; the fit samples at most 48 views whatever the length)."""
    import numpy as np

    from da3_blender.matchmove.floor import find_floor
    from da3_blender.prediction import Prediction
    from matchmove_scene import cameras, make_result

    pred, _, _ = make_result(count=48, width=480, height=270, w2c=cameras(48))
    reps = -(-views // 48)
    long = Prediction(depth=np.tile(pred.depth, (reps, 1, 1))[:views], conf=np.tile(pred.conf, (reps, 1, 1))[:views],
                      sky=np.tile(pred.sky, (reps, 1, 1))[:views],
                      extrinsics=np.tile(pred.extrinsics, (reps, 1, 1))[:views],
                      intrinsics=np.tile(pred.intrinsics, (reps, 1, 1))[:views])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        floor = find_floor(long)
        times.append(time.perf_counter() - start)
    print(f"find_floor, {views} views of 480x270: best {min(times):.2f} s, median {sorted(times)[1]:.2f} s "
          f"(target < 2 s: measured/target {min(times) / 2:.2f}); inlier share {floor['inlier_share']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--views", type=int, nargs="+", default=[48, 300])
    p.add_argument("--device", default="cpu")
    p.add_argument("--floor", action="store_true", help="time the floor fit on a 1,000-view shot instead")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor:
        floor_timing()
        return
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    import torch

    print(f"fuse_mesh, 480x270 views, device {args.device}, torch {torch.__version__}, threads {args.threads}")
    print(f"{'views':>5} {'seconds':>8} {'cpu s':>7} {'s/view':>7} {'loaded MiB':>10} {'peak MiB':>9} {'faces':>8}  target")
    with tempfile.TemporaryDirectory() as tmp:
        for views in args.views:
            path = os.path.join(tmp, f"shot{views}.npz")
            make_shot(views, path)
            out = subprocess.run([sys.executable, __file__, "--child", path, args.device, str(args.threads)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            target = TARGETS.get(views)
            note = f"{target[0]} <= {target[1]:g}: measured/target {r[target[0]] / target[1]:.2f}" if target else ""
            print(f"{views:>5} {r['seconds']:>8.2f} {r['cpu s']:>7.1f} {r['seconds'] / views:>7.3f} {r['loaded MiB']:>10.0f} "
                  f"{r['peak MiB']:>9.0f} {r['faces']:>8}  {note}", flush=True)
            os.unlink(path)


if __name__ == "__main__":
    main()
