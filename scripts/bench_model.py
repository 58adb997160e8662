"""Benchmark the DA3 network: per-view forward time and peak memory (RSS) at 504x280.

Random weights in the DA3-SMALL shape by default (no download), 1 and 4 views, warm-up then timed
runs. Prints RSS after ``import torch`` and after importing the model code, and a table. Example::

    python scripts/bench_model.py --threads 2 --views 1 4 --runs 3

``--official`` (only where the official ``depth_anything_3`` package is importable, see
``scripts/check_official_parity.py``) also times the official network side by side, each
implementation in its own child process (so one's memory does not inflate the other's), with the same
weights: a random DA3 net built by the official code is saved in the HF layout and loaded by both.
Official "fp32" is its network with autocast off (as the parity fixtures); official "shipped" is what
its ``DepthAnything3.forward`` does on a CPU (fp16 autocast, as ``torch.cuda.is_bf16_supported()`` is
False there). "ours" is ``DepthAnything3.forward`` with its defaults (``compute_dtype="auto"``: bf16
backbone on a CPU with native bf16 where it measures faster, else fp32; ray branch skipped),
"ours-fp32" the same with ``compute_dtype="fp32"``.

On a shared machine the rows are interleaved: ``--rounds`` rounds, each running every implementation
once in a rotated order, so a change of load hits all of them alike. Printed per implementation: the
best wall time over all rounds, the best CPU time of the process (user+sys, less sensitive to other
jobs), and the median over rounds of its time divided by official-fp32's in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from da3_blender.options import COMPUTE_DTYPES, DEFAULT_COMPUTE_DTYPE  # noqa: E402  (no torch import)

IMPLS = ("ours", "ours-fp32", "official-fp32", "official-shipped")
REFERENCE = "official-fp32"  # the ratios' denominator


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Current resident set size (Linux /proc), else the peak."""
    return _proc_status_mib("VmRSS") or peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak RSS: Linux VmHWM (ru_maxrss would carry the parent's peak over into a child process)."""
    hwm = _proc_status_mib("VmHWM")
    if hwm:
        return hwm
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
    p.add_argument("--compute-dtype", default=DEFAULT_COMPUTE_DTYPE, choices=COMPUTE_DTYPES)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--gs", action="store_true", help="time with and without the 3D-Gaussian head (infer_gs; giant "
                   "models) instead of with and without the ray branch")
    p.add_argument("--gs-head-only", action="store_true", help="time only the 3D-Gaussian head + adapter of --model's "
                   "config on random backbone features (no backbone: quick, and steadier on a busy machine)")
    p.add_argument("--official", action="store_true", help="also time the official network side by side (child processes)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS, help="the --official rows (official-fp32 always)")
    p.add_argument("--rounds", type=int, default=3, help="--official: interleaved rounds per view count")
    p.add_argument("--no-table", action="store_true", help="--official: skip the in-process table of ours")
    p.add_argument("--child", choices=("save",) + IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.official and not official_available():
        print("--official: the official depth_anything_3 package is not importable here; timing ours only")
        args.official = False
    if args.official and args.device != "cpu":
        print("--official: the side-by-side runs on the CPU only; timing ours only")
        args.official = False

    if args.gs_head_only:
        bench_gs_head(args)
        return 0
    if not (args.official and args.no_table):
        bench_ours(args)
    if args.official:
        side_by_side(args)
    return 0


def bench_ours(args):
    """Ours in this process: RSS after each import, then the table (with and without the ray branch)."""
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
    extra = "gs" if args.gs else "ray"  # the optional part timed without and with
    print(f"{'views':>5} {'HxW':>9} {extra:>4} {'s/forward':>10} {'s/view':>8} {'peak RSS MiB':>13}")
    for views in args.views:
        x = torch.randn(1, views, 3, args.height, args.width, device=args.device)
        for with_extra in (False, True):
            kwargs = {"infer_gs": with_extra} if args.gs else {"keep_ray": with_extra}
            for _ in range(args.warmup):
                model(x, **kwargs)
            times = []
            for _ in range(args.runs):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x, **kwargs)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            best = min(times)
            print(f"{views:>5} {args.height:>4}x{args.width:<4} {'yes' if with_extra else 'no':>4} "
                  f"{best:>10.3f} {best / views:>8.3f} {peak_rss_mib():>13.0f}")
    print("s/forward = best of the timed runs; " + ("gs = the 3D-Gaussian head and adapter too (infer_gs)" if args.gs else
          "ray = the aux ray branch computed too (needed only for use_ray_pose)"))


def bench_gs_head(args):
    """The Gaussian head (GSDPT) + adapter alone, at the model's dims, on random features and cameras."""
    import torch

    from da3_blender.model.config import MODEL_CONFIGS, NestedConfig
    from da3_blender.model.dpt import GSDPT
    from da3_blender.model.gs_adapter import GaussianAdapter

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = MODEL_CONFIGS[args.model]
    cfg = MODEL_CONFIGS[cfg.anyview] if isinstance(cfg, NestedConfig) else cfg
    if not cfg.gs_head:
        raise SystemExit(f"{args.model} has no 3D-Gaussian head")
    dim_in = 2 * cfg.embed_dim
    torch.manual_seed(0)
    head, adapter = GSDPT(dim_in, cfg.features, cfg.out_channels).eval().to(args.device), GaussianAdapter()
    before = peak_rss_mib()
    print(f"{args.model} Gaussian head alone ({sum(t.numel() for t in head.parameters()) / 1e6:.1f} M params), "
          f"device {args.device}, threads {torch.get_num_threads()}, peak RSS before the runs {before:.0f} MiB")
    print(f"{'views':>5} {'HxW':>9} {'s/forward':>10} {'s/view':>8} {'peak RSS MiB':>13}")
    h, w = args.height, args.width
    for views in args.views:
        feats = [torch.randn(1, views, (h // 14) * (w // 14), dim_in, device=args.device) for _ in range(4)]
        x = torch.randn(1, views, 3, h, w, device=args.device)
        ext = torch.eye(4, device=args.device)[:3].expand(1, views, 3, 4)
        k = torch.tensor([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1]], device=args.device).expand(1, views, 3, 3)
        depth = torch.rand(1, views, h, w, device=args.device) + 1
        times = []
        for run in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            with torch.inference_mode():
                raw = head(feats, h, w, x)
                adapter(ext, k, depth, raw["raw_gs_conf"], raw["raw_gs"], (h, w))
            if run >= args.warmup:
                times.append(time.perf_counter() - t0)
        best = min(times)
        print(f"{views:>5} {h:>4}x{w:<4} {best:>10.3f} {best / views:>8.3f} {peak_rss_mib():>13.0f}")


# ---------------------------------------------------------------------------------------------
# --official: the same weights through both implementations, one child process per measurement


def official_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("depth_anything_3") is not None


def side_by_side(args):
    from da3_blender.model.config import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        print(f"--official: needs an architecture name ({', '.join(MODEL_NAMES)}), not {args.model!r}; skipped")
        return
    impls = [i for i in IMPLS if i in args.impls or i == REFERENCE]
    with tempfile.TemporaryDirectory(prefix="da3-bench-") as tmp:
        run_child(args, "save", tmp)
        print(f"\nside by side: {args.model} built by the official code (torch.manual_seed(0)), saved in the HF "
              f"layout and loaded by each; one child process per row, {args.rounds} interleaved rounds, "
              f"threads: {args.threads or 'default'}, load average at the start {load_text()}")
        print(f"{'views':>5} {'implementation':<17} {'s/forward':>10} {'CPU s':>8} {'/official (wall)':>16} "
              f"{'/official (CPU)':>15} {'RSS imports':>11} {'peak RSS MiB':>13} {'/official':>9} {'rel. depth diff':>15}")
        for views in args.views:
            rounds = []
            for r in range(args.rounds):
                order = impls[r % len(impls):] + impls[:r % len(impls)]
                rounds.append({impl: run_child(args, impl, tmp, views) for impl in order})
            ref_depth = rounds[0][REFERENCE]["depth"]
            for impl in impls:
                runs = [rd[impl] for rd in rounds]
                ratio = lambda key: statistics.median(rd[impl][key] / rd[REFERENCE][key] for rd in rounds)  # noqa: E731
                peak = max(r["peak"] for r in runs)
                ref_peak = max(rd[REFERENCE]["peak"] for rd in rounds)
                print(f"{views:>5} {impl:<17} {min(r['best'] for r in runs):>10.3f} {min(r['cpu'] for r in runs):>8.3f} "
                      f"{ratio('best'):>16.2f} {ratio('cpu'):>15.2f} {runs[0]['rss_import']:>11.0f} {peak:>13.0f} "
                      f"{peak / ref_peak:>9.2f} {rel_diff(runs[0]['depth'], ref_depth):>15.1e}")
    print("s/forward, CPU s = best of all runs (CPU s: user+sys of the process); /official = median over the rounds of "
          "the ratio to official-fp32 in the same round; RSS imports = MiB after importing torch and the "
          "implementation; peak RSS = the child's own maximum (VmHWM); rel. depth diff = max |depth - official-fp32| "
          f"/ max |official-fp32|. Load average at the end {load_text()}")


def load_text() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def rel_diff(path_a: str, path_b: str) -> float:
    import numpy as np

    a, b = np.load(path_a).astype(np.float64), np.load(path_b).astype(np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def run_child(args, what: str, weights: str, views: int = 1) -> dict:
    """One child process: ``what`` with ``views`` views; its RESULT (depth saved next to the weights)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", what, "--weights", weights, "--model", args.model,
           "--views", str(views), "--height", str(args.height), "--width", str(args.width),
           "--warmup", str(args.warmup), "--runs", str(args.runs)] + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not results:
        raise SystemExit(f"child {what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(results[-1])


def child(args) -> int:
    """One measurement in a fresh process; prints ``RESULT {json}`` (best time, RSS, depth file)."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.weights)
    if args.child == "save":
        from check_official_parity import official_network, save_hf_folder

        save_hf_folder(official_network(args.model), args.model, folder)
        print("RESULT {}")
        return 0
    if args.child in ("ours", "ours-fp32"):
        from da3_blender.api import DepthAnything3

        rss_import = rss_mib()
        model = DepthAnything3.from_pretrained(folder, device="cpu", compute_dtype="fp32" if args.child == "ours-fp32" else "auto")
        forward = lambda x: model(x)["depth"]  # noqa: E731
    else:
        from safetensors.torch import load_model

        import depth_anything_3.model.da3  # noqa: F401  (the official network's imports, measured here)
        from check_official_parity import official_network

        rss_import = rss_mib()
        wrapper = official_network(args.model)
        load_model(wrapper, str(folder / "model.safetensors"), strict=False)  # as its from_pretrained
        shipped = args.child == "official-shipped"
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

        def forward(x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=shipped):
                return wrapper.model(x, None, None, [], False, False, "saddle_balanced")["depth"]

    x = torch.randn(1, args.views[0], 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    for _ in range(args.warmup):
        forward(x)
    times, cpu = [], []
    for _ in range(args.runs):
        t0, c0 = time.perf_counter(), os.times()
        depth = forward(x)
        c1 = os.times()
        times.append(time.perf_counter() - t0)
        cpu.append(c1.user + c1.system - c0.user - c0.system)
    out = folder / f"depth-{args.child}-{args.views[0]}.npy"
    np.save(out, depth.float().numpy())
    print("RESULT " + json.dumps(dict(best=min(times), cpu=min(cpu), rss_import=rss_import, peak=peak_rss_mib(),
                                      depth=str(out))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
