"""Benchmark long shots: chunked (streaming) inference against the single pass, time and peak memory.

DA3-SMALL architecture with random weights (speed and memory do not depend on the values), 504x280
frames written as PNG files and read through ``inputs.collect_inputs`` (so frames are loaded one at a
time, as a user's image sequence is), CPU. Every configuration runs in its own child process, so each
peak RSS (Linux VmHWM) is its own. Prints one table with s/frame, peak RSS, the outputs' size, and the
ratios to the single pass at the same frame count. Example::

    python scripts/bench_streaming.py --threads 2                 # 32/64/128/256 frames, chunk 8, overlap 2
    python scripts/bench_streaming.py --quick                     # a smoke run at 112x70
    python scripts/bench_streaming.py --accuracy                  # drift vs chunk/overlap, synthetic room
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import peak_rss_mib, rss_mib  # noqa: E402


def write_frames(folder: Path, count: int, width: int, height: int) -> None:
    """``count`` PNG frames: a gradient drifting sideways plus noise (content does not change the speed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    x = np.arange(width)[None, :, None]
    y = np.arange(height)[:, None, None]
    for i in range(count):
        base = (x * 2 + y + 3 * i + np.array([0, 60, 120])) % 256
        img = np.clip(base + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"frame_{i:04d}.png", compress_level=1)


def child(args) -> int:
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from da3_blender.api import DepthAnything3
    from da3_blender.inputs.collect import collect_inputs

    torch.manual_seed(0)
    model = DepthAnything3(args.model, device="cpu")
    frames = collect_inputs([args.frames_dir])
    frames.images.paths = frames.images.paths[: args.count]  # the first COUNT frames of the folder
    frames.source_paths = frames.source_paths[: args.count]
    frames.frame_numbers, frames.timestamps = frames.frame_numbers[: args.count], frames.timestamps[: args.count]
    rss_ready = rss_mib()
    chunk = None if args.chunk == 0 else args.chunk
    t0, cpu0 = time.perf_counter(), time.process_time()
    pred = model.inference(frames, process_res=max(args.width, args.height), chunk_size=chunk,
                           chunk_overlap=None if chunk is None else args.overlap)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    outputs = sum(a.nbytes for a in (pred.depth, pred.conf, pred.processed_images, pred.extrinsics, pred.intrinsics)
                  if a is not None)
    print("RESULT " + json.dumps(dict(seconds=seconds, cpu_seconds=cpu_seconds, rss_ready=rss_ready, peak=peak_rss_mib(),
                                      outputs_mib=outputs / 2**20, chunks=len(pred.meta.get("chunks", [])) or 1,
                                      finite=bool(np.isfinite(pred.depth).all()))))
    return 0


def accuracy(frames: int = 120) -> None:
    """Drift against chunk size and overlap on the synthetic room of tests/test_streaming.py (1 % depth
    noise, 0.1 degree and 0.1 % pose noise per camera): RMS camera-centre error after one global Sim(3),
    as a share of the path length, mean of 3 seeds; and the network views per frame the chunking costs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import numpy as np
    from test_streaming import RoomModel, global_fit, run

    from da3_blender.pipeline import streaming

    print(f"{'chunk':>5} {'overlap':>7} {'views/frame':>11} {'RMS/path':>9} {'worst residual':>14}")
    for size, overlap in [(8, 1), (8, 2), (8, 4), (16, 2), (16, 4), (16, 8), (32, 8)]:
        errors, residuals = [], []
        for seed in range(3):
            model = RoomModel(frames, depth_noise=0.01, pose_noise=(0.1, 0.001), seed=seed)
            pred = run(model, frames, chunk_size=size, chunk_overlap=overlap)
            errors.append(global_fit(pred, model)[1])
            residuals.append(max(c["residual"] for c in pred.meta["chunks"]))
        views = sum(e - s for s, e in streaming.plan_chunks(frames, size, overlap)) / frames
        print(f"{size:>5} {overlap:>7} {views:>11.2f} {np.mean(errors):>9.2e} {np.max(residuals):>14.2e}")


def run_child(args, folder: Path, count: int, chunk: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--frames-dir", str(folder), "--count", str(count),
           "--chunk", str(chunk), "--overlap", str(args.overlap), "--model", args.model, "--width", str(args.width),
           "--height", str(args.height)] + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not results:
        raise SystemExit(f"child failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(results[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="da3-small", help="architecture, random weights")
    p.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--single-up-to", type=int, default=64, help="also run the single pass up to this many frames")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--extra-chunks", type=int, nargs="*", default=[16],
                   help="more chunk sizes (overlap = the default for the size) at --sweep-frames frames")
    p.add_argument("--sweep-frames", type=int, default=64)
    p.add_argument("--width", type=int, default=504)
    p.add_argument("--height", type=int, default=280)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: 8 and 16 frames at 112x70, chunk 4")
    p.add_argument("--accuracy", action="store_true", help="drift vs chunk size/overlap on the synthetic room (seconds)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--frames-dir", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.accuracy:
        accuracy()
        return 0
    if args.quick:
        args.frames, args.single_up_to, args.chunk, args.overlap = [8, 16], 16, 4, 1
        args.extra_chunks, args.sweep_frames, args.width, args.height = [6], 16, 112, 70

    from da3_blender import options

    configs = []  # (frames, chunk, overlap); chunk 0 = single pass
    for n in args.frames:
        if n <= args.single_up_to:
            configs.append((n, 0, 0))
        configs.append((n, args.chunk, args.overlap))
        if n == args.sweep_frames:
            configs += [(n, c, options.default_chunk_overlap(c)) for c in args.extra_chunks if c != args.chunk]

    import torch

    print(f"model {args.model} (random weights), {args.width}x{args.height}, cpu, torch {torch.__version__}, "
          f"threads {args.threads or torch.get_num_threads()}; each row in its own child process")
    print(f"{'frames':>6} {'chunk':>9} {'chunks':>6} {'s/frame':>8} {'CPU s/frame':>11} {'single/this':>11} {'peak RSS MiB':>12} "
          f"{'RSS ready':>9} {'outputs MiB':>11} {'peak-ready':>10}", flush=True)
    single: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_frames(folder, max(args.frames), args.width, args.height)
        for n, chunk, overlap in configs:
            saved = args.overlap
            args.overlap = overlap
            r = run_child(args, folder, n, chunk)
            args.overlap = saved
            per_frame, cpu_per_frame = r["seconds"] / n, r["cpu_seconds"] / n
            if chunk == 0:
                single[n] = cpu_per_frame
            ratio = f"{single[n] / cpu_per_frame:.2f}" if n in single else "-"
            label = "single" if chunk == 0 else f"{chunk}/{overlap}"
            print(f"{n:>6} {label:>9} {r['chunks']:>6} {per_frame:>8.3f} {cpu_per_frame:>11.3f} {ratio:>11} {r['peak']:>12.0f} "
                  f"{r['rss_ready']:>9.0f} {r['outputs_mib']:>11.1f} {r['peak'] - r['rss_ready']:>10.0f}"
                  + ("" if r["finite"] else "  (non-finite depth!)"), flush=True)
    print("chunk = size/overlap; CPU s/frame = the child's CPU time (all its threads) per frame, which other jobs on a\n"
          "shared machine disturb far less than the wall-clock s/frame; single/this = single-pass CPU s/frame over this\n"
          "row's at the same frame count;\n"
          "RSS ready = after importing and building the model; outputs = depth, conf, images, cameras")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
