"""Benchmark loop pairs and a known lens in the camera solve on an orbit that returns to its start, CPU.

The shot is our ground-truth render (scripts/render_solve_shot.py --path orbit: a full turn in a room
whose opposite walls repeat), rendered once into ``--shot-root`` and reused. The input cameras drift as
streamed ones do (a random walk: each view's error is the previous one's plus a step about a random axis
and along the path, 0.8 degrees and 0.5 % of the path at 48 frames, scaled by sqrt(48 / frames) so that
the end is as far off at any length; the focal 3 % off), so the end is several degrees and % of the
path off the start. Each row is ``refine`` in its own child process: lens fixed and known, with loop pairs and without
(the sequential pairs only), with the worst view's rotation and position error after the gauge fit::

    python scripts/bench_loops.py --frames 240 --size 640x360
    python scripts/bench_loops.py --quick                      # 48 frames at 480x270
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


def child(folder: str, lens: str, loops_on: bool) -> dict:
    import numpy as np
    import solve_helpers as H
    from test_solve_long import drift

    from da3_blender import solve
    from da3_blender.solve import loops

    if not loops_on:
        loops.loop_pairs = lambda *a, **k: ({}, {})
    shot = H.load_shot(folder)
    n = len(shot["extrinsics"])
    walk = np.sqrt(48 / n)  # the steps of the tests' 48-frame walk, scaled so the end is as far off (~4.5 deg, 3 %)
    e, k = drift(shot["extrinsics"], shot["intrinsics"], rot_deg=0.8 * walk, pos_frac=0.005 * walk,
                 focal_frac=0.0 if lens == "known" else 0.03)
    rot_in, pos_in = H.gauge_errors(e, shot["extrinsics"])
    pred = H.prediction(e, k, shot["size"])
    start = time.perf_counter()
    out = solve.refine(pred, H.render_solve_shot.frame_paths(folder, n), lens=lens)
    seconds = time.perf_counter() - start
    s = out.meta["solve"]
    return {"seconds": seconds, **H.solve_figures(out, shot), "rot_in": float(rot_in.max()),
            "pos_in": float(pos_in.max()), "loop_pairs": s["loop_pairs"], "gap": s["longest_track_gap"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--size", default="640x360")
    p.add_argument("--threads", type=int, default=0, help="OMP threads for the children (0: default)")
    p.add_argument("--shot-root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "da3-bench-loops"))
    p.add_argument("--quick", action="store_true", help="48 frames at 480x270")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2] == "on")))
        return 0
    if args.quick:
        args.frames, args.size = 48, "480x270"
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = Path(args.shot_root) / f"orbit_{args.frames}_{width}x{height}"
    if not (folder / "cameras.json").is_file():
        import render_solve_shot

        render_solve_shot.render_shot(str(folder), frames=args.frames, width=width, height=height, path="orbit")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    print(f"orbit {args.frames} frames {args.size}")
    print(f"{'lens':>6} {'loops':>5} {'seconds':>8} {'rms px':>7} {'rot in':>7} {'pos% in':>8} {'rot deg':>8} "
          f"{'pos %':>6} {'focal %':>8} {'pairs':>6} {'gap':>5} {'tracks':>7}")
    for lens in ("known", "fixed"):
        for loops_on in ("on", "off"):
            done = subprocess.run([sys.executable, __file__, "--child", str(folder), lens, loops_on],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{lens:>6} {loops_on:>5} {r['seconds']:>8.1f} {r['rms']:>7.3f} {r['rot_in']:>7.2f} "
                  f"{100 * r['pos_in']:>8.2f} {r['rot']:>8.3f} {100 * r['pos']:>6.3f} {100 * r['focal']:>8.3f} "
                  f"{r['loop_pairs']:>6} {r['gap']:>5} {r['tracks']:>7}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
