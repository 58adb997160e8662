"""GPU check, ready for the first machine with CUDA: precision parity, then speed and memory per model size.

    python scripts/check_gpu.py                         # CUDA: about 5-8 minutes on one GPU
    python scripts/check_gpu.py --device cpu --quick    # the same code on a CPU, tiny sizes (CI runs this)

1. **Parity**: the DA3-SMALL fixture checkpoint (random weights, ``../shared/da3/fixtures``) on two example
   images, fp32 against the autocast dtype the device uses by default (bf16, fp16 where bf16 is
   unsupported; bf16 on a CPU): the worst relative depth difference, the worst camera rotation (degrees)
   and position (relative to the camera spread) and focal length differences.
2. **Speed and memory**: SMALL, BASE, LARGE and GIANT shapes (random weights, no download) at 504x280
   for 1, 8 and 32 views and at the streaming chunk sizes (16 = the CPU chunk, 64, 120 = the largest
   automatic chunk): seconds per forward and per view (best of the timed runs, synchronised), peak GPU
   memory (peak RSS on a CPU) and memory per view, beside the seed's 0.12 s/view for DA3-SMALL.

It prints one table. A row that runs out of memory says ``OOM``; rows past ``--budget`` seconds are
listed as skipped, so the check always ends in time. Copy the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("DA3_SHARED", ROOT.parent / "shared"))

MODELS = ("da3-small", "da3-base", "da3-large", "da3-giant")
VIEWS = (1, 8, 32)
CHUNK_VIEWS = (16, 64, 120)  # streaming chunks: CPU_CHUNK_SIZE, a middle one, MAX_AUTO_CHUNK
SEED_S_PER_VIEW = 0.12  # DA3-SMALL, the seed's figure


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one run each (CI: --device cpu --quick)")
    p.add_argument("--models", nargs="+", default=None, choices=MODELS)
    p.add_argument("--views", type=int, nargs="+", default=None, help="view counts (default 1 8 32 + chunk sizes)")
    p.add_argument("--height", type=int, default=None, help="default 280 (quick: 70)")
    p.add_argument("--width", type=int, default=None, help="default 504 (quick: 126)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per row (default 2; quick: 1)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining rows are skipped")
    p.add_argument("--fixture", default=str(SHARED / "da3" / "fixtures" / "da3-small-random"))
    p.add_argument("--images", nargs=2, default=[str(SHARED / "da3" / "examples" / "SOH" / f"{i}.png")
                                                 for i in ("000", "010")])
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or ["da3-small"]
        args.views = args.views or [1, 2]
        args.height, args.width = args.height or 70, args.width or 126
        args.runs = args.runs or 1
        args.parity_res = 70
    else:
        args.models = args.models or list(MODELS)
        args.views = args.views or sorted(set(VIEWS + CHUNK_VIEWS))
        args.height, args.width = args.height or 280, args.width or 504
        args.runs = args.runs or 2
        args.parity_res = 504
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from da3_blender.devices import resolve_device

    device = resolve_device(args.device)
    started = time.perf_counter()
    cuda = device.startswith("cuda")
    if cuda:
        props = torch.cuda.get_device_properties(torch.device(device))
        where = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
                 f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    print(f"check_gpu: torch {torch.__version__}, device {device} ({where})")
    parity = check_parity(args, device)
    print(parity)
    rows = []
    for name in args.models:
        rows += speed_rows(args, device, name, started)
    print_table(rows, args, device)
    print(f"check_gpu: done in {time.perf_counter() - started:.0f} s")
    return 0


# -- parity -------------------------------------------------------------------------------------------
def check_parity(args, device: str) -> str:
    import numpy as np

    from da3_blender.api import DepthAnything3
    from da3_blender.model.precision import backbone_dtype

    fixture = Path(args.fixture)
    if not (fixture / "model.safetensors").is_file() or not all(os.path.isfile(p) for p in args.images):
        return f"parity: skipped (no fixture checkpoint at {fixture} or example images)"
    import torch

    model = DepthAnything3.from_pretrained(fixture, device=device, compute_dtype="fp32")
    auto = backbone_dtype(torch.device(device), "auto") or torch.bfloat16  # a CPU computes fp32: compare bf16
    low = {torch.bfloat16: "bf16", torch.float16: "fp16"}[auto]
    preds = {}
    for dtype in ("fp32", low):
        model.compute_dtype = dtype
        preds[dtype] = model.inference(list(args.images), process_res=args.parity_res)
    a, b = preds["fp32"], preds[low]
    depth = float(np.max(np.abs(b.depth - a.depth) / np.maximum(np.abs(a.depth), 1e-6)))
    rot, pos = 0.0, 0.0
    centres = []
    for ea, eb in zip(a.extrinsics, b.extrinsics):
        r = ea[:3, :3].T @ eb[:3, :3]
        rot = max(rot, math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(r)) - 1) / 2)))))
        ca, cb = -ea[:3, :3].T @ ea[:3, 3], -eb[:3, :3].T @ eb[:3, 3]
        centres.append(ca)
        pos = max(pos, float(np.linalg.norm(ca - cb)))
    spread = max(float(np.linalg.norm(centres[0] - centres[-1])), 1e-6)
    focal = float(np.max(np.abs(b.intrinsics[:, [0, 1], [0, 1]] - a.intrinsics[:, [0, 1], [0, 1]])
                         / a.intrinsics[:, [0, 1], [0, 1]]))
    del model
    return (f"parity fp32 vs {low} autocast (DA3-SMALL fixture, 2 views, process_res {args.parity_res}): "
            f"worst depth {depth:.2e} (relative), rotation {rot:.3f} deg, camera position {pos / spread:.2e} "
            f"(of the camera spread), focal {focal:.2e} (relative)")


# -- speed and memory -----------------------------------------------------------------------------------
def _peak_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_model import peak_rss_mib

    return peak_rss_mib()


def speed_rows(args, device: str, name: str, started: float) -> list[dict]:
    import torch

    from da3_blender.api import DepthAnything3

    cuda = device.startswith("cuda")
    rows = []
    if time.perf_counter() - started > args.budget:
        return [dict(model=name, views=v, note="skipped (time budget)") for v in args.views]
    torch.manual_seed(0)
    try:
        model = DepthAnything3(name, device=device)  # random weights, built on the device
    except torch.OutOfMemoryError:
        return [dict(model=name, views=v, note="OOM (weights)") for v in args.views]
    weights_mib = sum(t.numel() * t.element_size() for t in model.parameters()) / 2**20
    from da3_blender.model.precision import backbone_dtype

    dtype = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[backbone_dtype(torch.device(device), "auto")]
    for views in args.views:
        if time.perf_counter() - started > args.budget:
            rows.append(dict(model=name, views=views, note="skipped (time budget)"))
            continue
        try:
            x = torch.randn(1, views, 3, args.height, args.width, device=device)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(torch.device(device))
            if not args.quick:
                model(x)  # warm-up (kernels, allocator)
            times = []
            for _ in range(args.runs):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            peak = _peak_mib(device)
            best = min(times)
            rows.append(dict(model=name, views=views, dtype=dtype, seconds=best, per_view=best / views, peak=peak,
                             per_view_mib=(peak - weights_mib) / views if cuda else None))
        except torch.OutOfMemoryError:
            rows.append(dict(model=name, views=views, note="OOM"))
        finally:
            x = None
    del model
    if cuda:
        torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict], args, device: str) -> None:
    mem = "peak GPU MiB" if device.startswith("cuda") else "peak RSS MiB"
    print(f"\n| model | dtype | views | HxW | s/forward | s/view | seed 0.12 s/view ÷ this | {mem} | MiB/view |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "note" in r:
            print(f"| {r['model']} | | {r['views']} | {args.height}x{args.width} | {r['note']} | | | | |")
            continue
        ratio = f"{SEED_S_PER_VIEW / r['per_view']:.1f}x" if r["model"] == "da3-small" else ""
        per_view_mib = f"{r['per_view_mib']:.0f}" if r["per_view_mib"] is not None else ""
        print(f"| {r['model']} | {r['dtype']} | {r['views']} | {args.height}x{args.width} | {r['seconds']:.3f} | "
              f"{r['per_view']:.4f} | {ratio} | {r['peak']:.0f} | {per_view_mib} |")
    print("s/forward: best of the timed runs of model(x) (backbone + heads + camera, no pre/post-processing); "
          "MiB/view: (peak - weights) / views, to check streaming.GPU_MIB_PER_VIEW_504")


def _main() -> int:
    from da3_blender.errors import DA3Error

    try:
        return main()
    except DA3Error as exc:  # e.g. --device cuda without a usable GPU
        print(f"check_gpu: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_main())
