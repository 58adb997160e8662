"""Benchmark loop pairs and a known lens in the camera solve on an orbit that returns to its start, CPU.

The shot is our ground-truth render (scripts/render_solve_shot.py --path orbit: a full turn in a room
whose opposite walls repeat), rendered once into ``--shot-root`` and reused. The input cameras drift as
streamed ones do (a random walk: each view's error is the previous one's plus a step about a random axis
and along the path, 0.8 degrees and 0.5 % of the path at 48 frames, scaled by sqrt(48 / frames) so that
the end is as far off at any length; the focal 3 % off), so the end is several degrees and % of the
path off the start. Each row is ``refine`` in its own child process: lens fixed and known, with loop pairs
(``on``) and without (``off``: the sequential pairs only), with the worst view's rotation and position error
after the gauge fit and the mean over the views. The ``ref`` rows (:func:`reference`) are what the images
allow: the solve's own observations in a plain bundle adjustment started from the true cameras::

    python scripts/bench_loops.py --frames 240 --size 640x360
    python scripts/bench_loops.py --frames 240 --size 960x540 --samples 8 --rows on,ref
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
    import solve_helpers as H

    from da3_blender import solve
    from da3_blender.solve import loops

    if not loops_on:
        loops.loop_pairs = lambda *a, **k: ({}, {})
    shot, e, _, pred = _shot_input(folder, lens)
    rot_in, pos_in = H.gauge_errors(e, shot["extrinsics"])
    start = time.perf_counter()
    out = solve.refine(pred, H.render_solve_shot.frame_paths(folder, len(e)), lens=lens)
    seconds = time.perf_counter() - start
    s = out.meta["solve"]
    rot, pos = H.gauge_errors(out.extrinsics, shot["extrinsics"])
    return {"seconds": seconds, **H.solve_figures(out, shot), "rot_in": float(rot_in.max()),
            "pos_in": float(pos_in.max()), "rot_mean": float(rot.mean()), "pos_mean": float(pos.mean()),
            "loop_pairs": s["loop_pairs"], "gap": s["longest_track_gap"]}


def _shot_input(folder: str, lens: str):
    """The shot, its drifted input cameras (the same walk for every row) and the Prediction of them."""
    import numpy as np
    import solve_helpers as H
    from test_solve_long import drift

    shot = H.load_shot(folder)
    n = len(shot["extrinsics"])
    walk = np.sqrt(48 / n)  # the steps of the tests' 48-frame walk, scaled so the end is as far off (~4.5 deg, 3 %)
    e, k = drift(shot["extrinsics"], shot["intrinsics"], rot_deg=0.8 * walk, pos_frac=0.005 * walk,
                 focal_frac=0.0 if lens == "known" else 0.03)
    return shot, e, k, H.prediction(e, k, shot["size"])


def reference(folder: str, lens: str) -> list:
    """What the images allow: the solve's own observations (its features, sequential tracks and loop pairs,
    every track: no cap), a plain bundle adjustment started from the TRUE cameras (and points triangulated
    from them), outliers decided by the true cameras (observations further than each of ``REF_OUTLIER_PX``
    from their projection), then least squares to convergence; ``known``: the true intrinsics held,
    ``fixed``: one focal length refined from the true one. Its errors after the gauge fit are the images'
    share of what the solve leaves (one result per threshold)."""
    import numpy as np
    import solve_helpers as H

    from da3_blender.solve import bundle, loops, motion, pipeline
    from da3_blender.solve.bundle import Rig

    pycolmap = pipeline.require_pycolmap()
    shot, e, k, pred = _shot_input(folder, lens)
    n = len(e)
    rig_in = pipeline.input_rig(pred)
    features = pipeline._features(pycolmap, H.render_solve_shot.frame_paths(folder, n), pred, None)
    sequential = pipeline._tracks(pycolmap, features, rig_in, None)
    found, _ = loops.loop_pairs(pycolmap, features, rig_in, pred, None, sequential)
    every = loops.merge(features, sequential, found)
    gt, kt = shot["extrinsics"], shot["intrinsics"]
    truth = Rig(R=gt[:, :, :3].copy(), t=gt[:, :, 3].copy(), f=np.stack([kt[:, 0, 0], kt[:, 1, 1]], 1),
                c=kt[:, :2, 2].copy(), k=np.zeros((n, 2)))
    points, every = motion._initial_points(truth, every)  # triangulated from the truth, wide-enough rays only
    err, front = bundle.residuals(truth, points, every)
    if lens == "known":
        camera_of_view, model = np.arange(n), bundle.HELD_LENS_MODEL
    else:
        camera_of_view, model = np.zeros(n, np.int64), "SIMPLE_PINHOLE"
    rows = []
    for threshold in REF_OUTLIER_PX:
        points, tracks = motion.retriangulate(truth, every.subset((err < threshold) & front))
        start = time.perf_counter()
        out, points = bundle.adjust(pycolmap, truth, points, tracks, camera_of_view=camera_of_view, model=model,
                                    sizes=np.asarray(pred.orig_size))
        seconds = time.perf_counter() - start
        rot, pos = H.gauge_errors(np.concatenate([out.R, out.t[:, :, None]], axis=2), gt)
        rows.append({"seconds": seconds, "rms": motion.rms(bundle.residuals(out, points, tracks)[0]),
                     "rot": float(rot.max()), "pos": float(pos.max()), "rot_mean": float(rot.mean()),
                     "pos_mean": float(pos.mean()), "focal": float(np.abs(out.f[:, 0] / kt[:, 0, 0] - 1).max()),
                     "tracks": tracks.num_tracks, "loop_pairs": len(found), "gap": loops.longest_gap(tracks),
                     "rot_in": 0.0, "pos_in": 0.0, "row": f"ref{threshold:g}"})
    return rows


REF_OUTLIER_PX = (1.0, 2.0)  # the reference's outliers: observations this far from the true cameras' projection


ROWS = ("on", "off", "ref")  # loop pairs on, off (the sequential pairs only), the reference bundle adjustments


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--size", default="640x360")
    p.add_argument("--samples", type=int, default=4, help="Cycles samples of the render")
    p.add_argument("--threads", type=int, default=0, help="OMP threads for the children (0: default)")
    p.add_argument("--shot-root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "da3-bench-loops"))
    p.add_argument("--quick", action="store_true", help="48 frames at 480x270")
    p.add_argument("--rows", default=",".join(ROWS), help=f"which rows, of {','.join(ROWS)}")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        folder, lens, row = args.child
        rows = reference(folder, lens) if row == "ref" else [{**child(folder, lens, row == "on"), "row": row}]
        print(json.dumps(rows))
        return 0
    if args.quick:
        args.frames, args.size = 48, "480x270"
    width, height = (int(v) for v in args.size.lower().split("x"))
    name = f"orbit_{args.frames}_{width}x{height}" + (f"_s{args.samples}" if args.samples != 4 else "")
    folder = Path(args.shot_root) / name
    if not (folder / "cameras.json").is_file():
        import render_solve_shot

        render_solve_shot.render_shot(str(folder), frames=args.frames, width=width, height=height,
                                      samples=args.samples, path="orbit")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    print(f"orbit {args.frames} frames {args.size}, {args.samples} samples ({folder})")
    print(f"{'lens':>6} {'row':>4} {'seconds':>8} {'rms px':>7} {'rot in':>7} {'pos% in':>8} {'rot deg':>8} "
          f"{'pos %':>6} {'rot mean':>8} {'pos mean':>8} {'focal %':>8} {'pairs':>6} {'gap':>5} {'tracks':>7}")
    for lens in ("known", "fixed"):
        for row in args.rows.split(","):
            done = subprocess.run([sys.executable, __file__, "--child", str(folder), lens, row],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            for r in json.loads(done.stdout.strip().splitlines()[-1]):
                print(f"{lens:>6} {r['row']:>4} {r['seconds']:>8.1f} {r['rms']:>7.3f} {r['rot_in']:>7.2f} "
                      f"{100 * r['pos_in']:>8.2f} {r['rot']:>8.3f} {100 * r['pos']:>6.3f} {r['rot_mean']:>8.3f} "
                      f"{100 * r['pos_mean']:>8.3f} {100 * r['focal']:>8.3f} {r['loop_pairs']:>6} {r['gap']:>5} "
                      f"{r['tracks']:>7}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
