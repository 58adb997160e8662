"""Worker overhead: the same 2-view job in-process and through a warm worker, side by side.

    python scripts/bench_worker.py [--model DIR] [--images A B] [--process-res 504] [--repeat 3]

In-process = read the images, ``DepthAnything3.inference``, ``save_result`` (what the worker does).
Worker = ``WorkerClient.submit`` until the ``result`` event (model already loaded). The target is an
overhead of at most 10 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from da3_blender.worker_client import WorkerClient  # noqa: E402

SHARED = Path(os.environ.get("DA3_SHARED", ROOT.parent / "shared"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "da3" / "fixtures" / "da3-small-random"))
    parser.add_argument("--images", nargs="+", default=[str(SHARED / "da3" / "examples" / "SOH" / f"{i}.png")
                                                        for i in ("000", "010")])
    parser.add_argument("--process-res", type=int, default=504)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    from da3_blender.api import DepthAnything3
    from da3_blender.devices import resolve_device
    from da3_blender.inputs import collect_inputs
    from da3_blender.prediction import save_result

    device = resolve_device(args.device)
    out_dir = tempfile.mkdtemp(prefix="da3-bench-")
    options = {"process_res": args.process_res}

    model = DepthAnything3.from_pretrained(args.model, device=device)
    inproc = []
    for i in range(args.repeat + 1):  # the first run warms up
        t0 = time.perf_counter()
        pred = model.inference(collect_inputs(args.images), **options)
        save_result(os.path.join(out_dir, "inproc.npz"), pred)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            inproc.append(time.perf_counter() - t0)
    del model, pred

    job = {"inputs": args.images, "output": os.path.join(out_dir, "worker.npz"), "model": args.model,
           "device": device, "options": options}
    worker = []
    with WorkerClient() as client:
        t0 = time.perf_counter()
        hello = client.hello(timeout=120)
        start_s = time.perf_counter() - t0
        for i in range(args.repeat + 1):  # the first run loads the model
            t0 = time.perf_counter()
            job_id = client.submit(job)
            end = client.wait_job(job_id, timeout=600)
            if end is None or end["event"] != "result":
                print(f"worker job failed: {end}", file=sys.stderr)
                return 1
            if i:
                worker.append(time.perf_counter() - t0)
        loads = end["summary"]["model_loads"]

    a, b = statistics.median(inproc), statistics.median(worker)
    print(f"device {device}, torch {hello['torch']}, {len(args.images)} views at process_res {args.process_res}, "
          f"median of {args.repeat}")
    print(f"{'in-process API':>16}: {a * 1000:8.1f} ms")
    print(f"{'worker (warm)':>16}: {b * 1000:8.1f} ms   (model loads: {loads}, worker start + hello: {start_s:.2f} s)")
    print(f"{'overhead':>16}: {(b - a) * 1000:+8.1f} ms   ratio {b / a:.3f} ({(b / a - 1) * 100:+.1f} %, target <= +10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
