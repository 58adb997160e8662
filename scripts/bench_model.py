"""Benchmark the DA3 network: per-view forward time and peak memory (RSS) at 504x280.

Random weights in the DA3-SMALL shape by default (no download), 1 and 4 views, warm-up then timed
runs. Prints RSS after ``import torch`` and after importing the model code (the official package's
imports alone take ~470 MiB), and a table. Example::

    python scripts/bench_model.py --threads 2 --views 1 4 --runs 3
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path


def rss_mib() -> float:
    """Current resident set size (Linux /proc), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="da3-small", help="architecture (random weights) or a model folder / hub id")
    p.add_argument("--views", type=int, nargs="+", default=[1, 4])
    p.add_argument("--height", type=int, default=280)
    p.add_argument("--width", type=int, default=504)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compute-dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)

    base = rss_mib()
    import torch

    after_torch = rss_mib()
    from da3_blender.api import DepthAnything3
    from da3_blender.model.config import MODEL_NAMES

    after_import = rss_mib()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model in MODEL_NAMES:
        model = DepthAnything3(args.model, compute_dtype=args.compute_dtype).to(args.device)
    else:
        model = DepthAnything3.from_pretrained(args.model, device=args.device, compute_dtype=args.compute_dtype)
    after_load = rss_mib()
    n_params = sum(t.numel() for t in model.parameters())

    print(f"model {model.model_name} ({n_params / 1e6:.1f} M params), device {args.device}, "
          f"compute_dtype {args.compute_dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"RSS: start {base:.0f} MiB, after import torch {after_torch:.0f} MiB, "
          f"after import da3_blender.api {after_import:.0f} MiB, after building the model {after_load:.0f} MiB")
    print(f"{'views':>5} {'HxW':>9} {'ray':>4} {'s/forward':>10} {'s/view':>8} {'peak RSS MiB':>13}")
    for views in args.views:
        x = torch.randn(1, views, 3, args.height, args.width, device=args.device)
        for keep_ray in (False, True):
            for _ in range(args.warmup):
                model(x, keep_ray=keep_ray)
            times = []
            for _ in range(args.runs):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x, keep_ray=keep_ray)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            best = min(times)
            print(f"{views:>5} {args.height:>4}x{args.width:<4} {'yes' if keep_ray else 'no':>4} "
                  f"{best:>10.3f} {best / views:>8.3f} {peak_rss_mib():>13.0f}")
    print("s/forward = best of the timed runs; ray = the aux ray branch computed too (needed only for use_ray_pose)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
