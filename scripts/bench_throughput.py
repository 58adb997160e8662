"""End-to-end CPU throughput of a video shot: decode, forward, stitch, export, in frames per second.

Runs ``da3 video SHOT --fps 0`` (every frame, streamed in chunks as a video runs) once per precision,
each in its own child process, one after the other in one run, and prints frames per second and
the ratio to fp32. The shot: ``--video`` (any file ``da3 video`` reads), else a 240-frame 960x540
clip made from the repository's neighbour example video (``../shared/da3/examples/robot_unitree.mp4``,
played forwards then backwards and resized; written to a temporary folder, never into the project).
The model is DA3-SMALL's architecture with the random-weight fixture (speed does not depend on the
values)::

    python scripts/bench_throughput.py                       # 240 frames 960x540, fp32 then auto
    python scripts/bench_throughput.py --frames 24 --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "da3"
sys.path.insert(0, str(ROOT))


def make_shot(path: Path, frames: int, width: int, height: int, source: Path) -> Path:
    """``frames`` frames of ``source`` (forwards, then backwards, repeated) at width x height, H.264."""
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    reader = imageio_ffmpeg.read_frames(str(source))
    meta = next(reader)
    w, h = meta["size"]
    clip = [np.asarray(Image.frombytes("RGB", (w, h), f).resize((width, height), Image.BICUBIC)) for f in reader]
    order = clip + clip[-2:0:-1]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=24, quality=8, macro_block_size=2)
    writer.send(None)
    for i in range(frames):
        writer.send(np.ascontiguousarray(order[i % len(order)]))
    writer.close()
    return path


def run_shot(video: Path, dtype: str, model: str, out: Path, threads: int | None, chunk: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-c", "import sys; from da3_blender.commands.main import main; sys.exit(main())", "video", str(video), "--fps", "0", "--model", model,
           "--device", "cpu", "--dtype", dtype, "--chunk-size", chunk, "--export-dir", str(out),
           "--export-format", "npz-glb", "-q"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"da3 video ({dtype}) failed: {done.stderr.strip()[-1500:]}")
    return {"seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, help="a shot to run (default: a 240-frame 960x540 clip made from the example video)")
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--size", default="960x540")
    p.add_argument("--model", default=str(SHARED / "fixtures" / "da3-small-random"))
    p.add_argument("--dtypes", nargs="+", default=["fp32", "auto"])
    p.add_argument("--chunk-size", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke: 24 frames at 480x270")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.size = 24, "480x270"
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="da3-throughput-") as tmp:
        tmp = Path(tmp)
        video = args.video
        if video is None:
            source = SHARED / "examples" / "robot_unitree.mp4"
            if not source.is_file():
                raise SystemExit(f"no --video given and {source} is missing: pass --video SHOT.mp4")
            video = make_shot(tmp / "shot.mp4", args.frames, width, height, source)
        print(f"shot {video.name}: {args.frames} frames at {width}x{height}, model {Path(args.model).name}, "
              f"chunk size {args.chunk_size}, load average {os.getloadavg()[0]:.1f}")
        rows = {}
        for dtype in args.dtypes:
            rows[dtype] = run_shot(video, dtype, args.model, tmp / f"out-{dtype}", args.threads, args.chunk_size)
        base = rows.get("fp32", next(iter(rows.values())))["seconds"]
        print(f"{'dtype':6} {'seconds':>8} {'frames/s':>9} {'time / fp32':>12}")
        for dtype, r in rows.items():
            print(f"{dtype:6} {r['seconds']:8.1f} {args.frames / r['seconds']:9.2f} {r['seconds'] / base:12.2f}")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
