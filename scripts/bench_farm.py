"""Benchmark farm jobs: forward per chunk, align per chunk, a farm task's start-up, and the wall time of a
1,000-frame shot on 1, 2, 4 and 8 workers predicted from them; checked at small scale by ``openjd run``
with one worker against two local workers in parallel.

DA3-SMALL architecture (the random-weight fixture of ../shared, or ``--model``), PNG frames written here,
the CPU unless ``--device``. Example::

    python scripts/bench_farm.py --threads 1                  # 24 frames at 504x280, chunk 8 overlap 2, openjd check
    python scripts/bench_farm.py --quick                      # a smoke run at 112x70, no openjd
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_streaming import write_frames  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "da3" / "fixtures" / "da3-small-random"
TEMPLATE = ROOT / "farm" / "openjd" / "da3-shot.yaml"
WORKERS = (1, 2, 4, 8)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--width", type=int, default=504)
    p.add_argument("--height", type=int, default=280)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps: where the chunks run")
    p.add_argument("--model", default=str(FIXTURE), help="a DA3 model folder (default: the random DA3-SMALL fixture)")
    p.add_argument("--shot-frames", type=int, default=1000, help="the shot the wall times are predicted for")
    p.add_argument("--quick", action="store_true", help="12 frames at 112x70, chunk 4 overlap 1, no openjd")
    p.add_argument("--no-openjd", action="store_true", help="skip the openjd run check")
    args = p.parse_args()
    if args.quick:
        args.frames, args.width, args.height, args.chunk, args.overlap, args.no_openjd = 12, 112, 70, 4, 1, True
    return args


def _env(threads: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def measure(args, work: Path) -> dict:
    """Forward and align per chunk in this process (model loaded once), and one farm task as its own process."""
    import torch

    from da3_blender.farm import tasks as farm
    from da3_blender.api import DepthAnything3
    from da3_blender.job import build_job

    if args.threads:
        torch.set_num_threads(args.threads)
    frames = work / "frames"
    frames.mkdir()
    write_frames(frames, args.frames, args.width, args.height)
    plan_dir = work / "plan"
    job = build_job([str(frames)], model=args.model, device=args.device,
                    options={"process_res": max(args.width, args.height), "chunk_size": args.chunk,
                             "chunk_overlap": args.overlap})
    plan = farm.plan_shot(job, plan_dir)
    count = len(plan["chunks"])
    started = time.perf_counter()
    model = DepthAnything3.from_pretrained(args.model, device=args.device)
    load_s = time.perf_counter() - started
    forward = []
    for k in range(count):
        started = time.perf_counter()
        farm.forward_chunk(plan_dir, k, model=model, force=True)
        forward.append(time.perf_counter() - started)
    started = time.perf_counter()
    farm.stitch(plan_dir)
    stitch_s = time.perf_counter() - started
    started = time.perf_counter()
    farm.align_shot(plan_dir)
    align_s = time.perf_counter() - started
    started = time.perf_counter()  # a farm task: a new process, torch import, model load, the chunk, the write
    subprocess.run([sys.executable, str(ROOT / "scripts" / "da3_farm.py"), "forward", str(plan_dir), "--chunk", "0",
                    "--force", "--device", args.device, "-q"], check=True, env=_env(args.threads), capture_output=True)
    task_s = time.perf_counter() - started
    median = sorted(forward)[len(forward) // 2]
    return {"plan_dir": plan_dir, "chunks": count, "views": plan["views"]["count"], "load_s": load_s,
            "forward_s": median, "stitch_s": stitch_s, "align_s": align_s,
            "task_s": task_s, "task_overhead_s": max(0.0, task_s - median)}


def predict(m: dict, args) -> list[tuple[int, float, float]]:
    """(workers, forward wall, total wall) in seconds for a ``--shot-frames`` shot with the same chunks."""
    from da3_blender.pipeline.streaming import plan_chunks

    chunks = len(plan_chunks(args.shot_frames, args.chunk, args.overlap))
    per_task = m["forward_s"] + m["task_overhead_s"]
    align = m["align_s"] / m["chunks"] * chunks  # sequential: linear in the chunk count
    rows = []
    for workers in WORKERS:
        forward_wall = math.ceil(chunks / workers) * per_task
        rows.append((workers, forward_wall, forward_wall + align))
    return rows


def openjd_check(args, plan_dir: Path) -> dict:
    """Forward of every chunk by one local worker, then by two in parallel (two openjd sessions); then Align."""
    params = f"file://{plan_dir / 'openjd-params.json'}"
    base = [sys.executable, "-m", "openjd", "run", str(TEMPLATE), "-p", params]
    count = len(json.loads((plan_dir / "plan.json").read_text())["chunks"])
    env = _env(args.threads)

    def run(extra):
        subprocess.run(base + extra, check=True, capture_output=True, env=env, cwd=plan_dir.parent)

    shutil.rmtree(plan_dir / "chunks")  # computed chunks would be skipped
    started = time.perf_counter()
    run(["--step", "Forward"])
    one = time.perf_counter() - started
    shutil.rmtree(plan_dir / "chunks")
    halves = [list(range(count))[i::2] for i in range(2)]
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda ks: run(["--step", "Forward", "--tasks", json.dumps([{"Chunk": k} for k in ks])]), halves))
    two = time.perf_counter() - started
    started = time.perf_counter()
    run(["--step", "Align", "--no-run-dependencies"])
    align = time.perf_counter() - started
    return {"chunks": count, "one_s": one, "two_s": two, "align_s": align,
            "predicted": count / math.ceil(count / 2)}


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="da3-bench-farm-") as tmp:
        m = measure(args, Path(tmp))
        print(f"{m['views']} frames at {args.width}x{args.height}, chunk {args.chunk} overlap {args.overlap}: "
              f"{m['chunks']} chunks; torch threads {args.threads or 'default'}")
        print(f"forward per chunk   {m['forward_s']:8.3f} s   (model loaded once: {m['load_s']:.2f} s)")
        print(f"align per chunk     {m['align_s'] / m['chunks']:8.3f} s   (stitch alone {m['stitch_s'] / m['chunks']:.3f} s; "
              f"the rest: result.npz)")
        print(f"farm task start-up  {m['task_overhead_s']:8.3f} s   (process, torch, model load; one task "
              f"{m['task_s']:.2f} s)")
        from da3_blender.pipeline.streaming import plan_chunks

        print(f"\n{args.shot_frames} frames -> {len(plan_chunks(args.shot_frames, args.chunk, args.overlap))} chunks")
        print(f"{'workers':>8} {'forward wall s':>15} {'total wall s':>13} {'speed-up':>9}")
        rows = predict(m, args)
        for workers, forward_wall, total in rows:
            print(f"{workers:>8} {forward_wall:>15.1f} {total:>13.1f} {rows[0][2] / total:>9.2f}")
        if not args.no_openjd:
            o = openjd_check(args, m["plan_dir"])
            print(f"\nopenjd run, Forward of {o['chunks']} chunks: one worker {o['one_s']:.1f} s, two local workers in "
                  f"parallel {o['two_s']:.1f} s: speed-up {o['one_s'] / o['two_s']:.2f} (predicted {o['predicted']:.2f} "
                  f"with a core each); Align {o['align_s']:.1f} s (a process: start-up + stitch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
