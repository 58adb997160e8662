"""Benchmark the camera solve (``da3_blender.solve.refine``) beside DA3 inference of the same shot, CPU.

The shot is our textured ground-truth render (scripts/render_solve_shot.py, bpy; rendered once into
``--shot-root`` and reused). ``refine`` gets the ground-truth cameras perturbed as feed-forward ones are
(1 degree, 3 % of the path, 5 % focal) and also reports its accuracy; inference is the DA3-SMALL
architecture with random weights (speed does not depend on the values) at 504 px, streamed in chunks
of 16 (overlap 4) as a video is. Each measurement runs in its own child process, so each peak RSS
(Linux VmHWM) is its own. Prints one row per (size, frames) with the ratio refine / inference::

    python scripts/bench_solve.py --threads 2                       # 50/100/300 frames at 960x540 and 1920x1080
    python scripts/bench_solve.py --frames 48 --sizes 960x540       # a reduced run
    python scripts/bench_solve.py --quick                           # smoke: 8 frames at 480x270
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


def shot_dir(root: Path, frames: int, width: int, height: int) -> Path:
    folder = root / f"shot_{frames}_{width}x{height}"
    if not (folder / "cameras.json").is_file():
        import render_solve_shot

        render_solve_shot.render_shot(str(folder), frames=frames, width=width, height=height)
    return folder


def child_refine(folder: str, lens: str) -> dict:
    import solve_helpers as H

    from da3_blender import solve

    shot = H.load_shot(folder)
    n = len(shot["extrinsics"])
    e, k = H.perturb(shot["extrinsics"], shot["intrinsics"], seed=1)
    pred = H.prediction(e, k, shot["size"])
    start = time.perf_counter()
    out = solve.refine(pred, H.render_solve_shot.frame_paths(folder, n), lens=lens)
    seconds = time.perf_counter() - start
    s = out.meta["solve"]
    return {"seconds": seconds, **H.solve_figures(out, shot), "before": s["rms_px_before"], "motion": s["motion"]}


def child_infer(folder: str) -> dict:
    import torch

    from da3_blender.api import DepthAnything3
    from da3_blender.inputs.collect import collect_inputs

    torch.manual_seed(0)
    model = DepthAnything3("da3-small", device="cpu")
    frames = collect_inputs([folder])
    start = time.perf_counter()
    model.inference(frames, chunk_size=16, chunk_overlap=4)
    return {"seconds": time.perf_counter() - start}


def run_child(what: str, folder: Path, threads: int, lens: str) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--shot", str(folder), "--lens", lens]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{what} on {folder} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[50, 100, 300])
    p.add_argument("--sizes", nargs="+", default=["960x540", "1920x1080"])
    p.add_argument("--lens", default="fixed")
    p.add_argument("--threads", type=int, default=0, help="OMP threads for the children (0: default)")
    p.add_argument("--shot-root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "da3-bench-solve"))
    p.add_argument("--no-inference", action="store_true", help="time the solve only")
    p.add_argument("--quick", action="store_true", help="a smoke run: 8 frames at 480x270")
    p.add_argument("--child", choices=["refine", "infer"], help=argparse.SUPPRESS)
    p.add_argument("--shot", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = child_refine(args.shot, args.lens) if args.child == "refine" else child_infer(args.shot)
        result["peak_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return 0
    if args.quick:
        args.frames, args.sizes = [8], ["480x270"]
    root = Path(args.shot_root)
    print(f"{'size':>10} {'frames':>6} {'refine s':>9} {'s/frame':>8} {'peak MiB':>9} {'infer s':>8} {'infer MiB':>9} "
          f"{'ratio':>6} {'rms px':>7} {'before':>7} {'rot deg':>8} {'pos %':>6} {'focal %':>8} {'tracks':>7} motion")
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        for frames in args.frames:
            folder = shot_dir(root, frames, width, height)
            r = run_child("refine", folder, args.threads, args.lens)
            i = {"seconds": float("nan"), "peak_mib": float("nan")} if args.no_inference else run_child("infer", folder, args.threads, args.lens)
            print(f"{size:>10} {frames:>6} {r['seconds']:>9.1f} {r['seconds'] / frames:>8.2f} {r['peak_mib']:>9.0f} "
                  f"{i['seconds']:>8.1f} {i['peak_mib']:>9.0f} {r['seconds'] / i['seconds']:>6.2f} {r['rms']:>7.3f} "
                  f"{r['before']:>7.2f} {r['rot']:>8.3f} {100 * r['pos']:>6.3f} {100 * r['focal']:>8.3f} {r['tracks']:>7} {r['motion']}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
