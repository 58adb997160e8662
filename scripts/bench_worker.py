"""Worker overhead: the same job in-process, through a warm local worker, and (``--ssh``) through SSH.

    python scripts/bench_worker.py [--model DIR] [--images A B | --video [PATH]] [--process-res 504] [--repeat 3]
    python scripts/bench_worker.py --video --ssh         # the example video, local worker vs ssh to 127.0.0.1

In-process = read the inputs, ``DepthAnything3.inference``, ``save_result`` (what the worker does).
Worker = ``WorkerClient.submit`` until the ``result`` event (model already loaded). The target is an
overhead of at most 10 %. ``--ssh`` starts a throwaway sshd on 127.0.0.1 (scripts/loopback_sshd.py;
needs openssh-server) and runs the job through ``WorkerClient(remote=...)`` with its own remote job
folder: the difference to the local worker is the link's cost (sending the inputs, fetching the result,
protocol over ssh), split into upload / run / download from the events' arrival times. ``--remote
HOST`` measures a real host instead (``--remote-python``, ``--remote-dir``).
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
sys.path.insert(0, str(ROOT / "scripts"))

from da3_blender.worker_client import WorkerClient  # noqa: E402

SHARED = Path(os.environ.get("DA3_SHARED", ROOT.parent / "shared"))
EXAMPLE_VIDEO = SHARED / "da3" / "examples" / "robot_unitree.mp4"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "da3" / "fixtures" / "da3-small-random"))
    parser.add_argument("--images", nargs="+", default=[str(SHARED / "da3" / "examples" / "SOH" / f"{i}.png")
                                                        for i in ("000", "010")])
    parser.add_argument("--video", nargs="?", const=str(EXAMPLE_VIDEO), default=None,
                        help="a video instead of the images (no path: the example video)")
    parser.add_argument("--fps", type=float, default=1.0, help="video: frames per second sampled")
    parser.add_argument("--max-frames", type=int, default=None, help="video: at most this many frames")
    parser.add_argument("--process-res", type=int, default=504)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ssh", action="store_true", help="also through SSH to a throwaway sshd on 127.0.0.1")
    parser.add_argument("--remote", help="also through SSH to this host (an ~/.ssh/config alias or user@host)")
    parser.add_argument("--remote-python", default=None, help="with --remote: the Python there (default python3)")
    parser.add_argument("--remote-dir", default=None, help="with --remote: its cache folder")
    args = parser.parse_args()

    import torch

    from da3_blender.api import DepthAnything3
    from da3_blender.devices import resolve_device
    from da3_blender.inputs import collect_inputs
    from da3_blender.prediction import save_result

    device = resolve_device(args.device)
    out_dir = tempfile.mkdtemp(prefix="da3-bench-")
    options = {"process_res": args.process_res}
    inputs = [args.video] if args.video else args.images
    video = {"fps": args.fps, "max_frames": args.max_frames} if args.video else {}

    model = DepthAnything3.from_pretrained(args.model, device=device)
    inproc = []
    for i in range(args.repeat + 1):  # the first run warms up
        t0 = time.perf_counter()
        pred = model.inference(collect_inputs(inputs, **video), **options)
        save_result(os.path.join(out_dir, "inproc.npz"), pred)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            inproc.append(time.perf_counter() - t0)
    views = pred.num_views
    del model, pred

    job = {"inputs": inputs, "output": os.path.join(out_dir, "worker.npz"), "model": args.model,
           "device": device, "options": options}
    if video:
        job["video"] = video
    with WorkerClient() as client:
        t0 = time.perf_counter()
        hello = client.hello(timeout=120)
        start_s = time.perf_counter() - t0
        worker, loads = timed_runs(client, job, args.repeat)

    a, b = statistics.median(inproc), statistics.median([r["total"] for r in worker])
    what = f"{os.path.basename(args.video)} ({views} frames at {args.fps} fps)" if args.video else f"{views} images"
    print(f"device {device}, torch {hello['torch']}, {what} at process_res {args.process_res}, median of {args.repeat}")
    print(f"{'in-process API':>22}: {a * 1000:8.1f} ms")
    print(f"{'worker (warm)':>22}: {b * 1000:8.1f} ms   (model loads: {loads}, worker start + hello: {start_s:.2f} s)")
    print(f"{'overhead':>22}: {(b - a) * 1000:+8.1f} ms   ratio {b / a:.3f} ({(b / a - 1) * 100:+.1f} %, target <= +10 %)")
    if args.ssh or args.remote:
        link(args, job, b, out_dir)
    return 0


def timed_runs(client: WorkerClient, job: dict, repeat: int) -> tuple[list[dict], int]:
    """``repeat`` warm runs after one that loads the model (and, remote, sends it); per run the total and
    the seconds until the first non-upload event (upload) and from the first download event (download)."""
    runs = []
    end = None
    for i in range(repeat + 1):
        marks: dict[str, float] = {}

        def seen(e, marks=marks):
            now = time.perf_counter()
            stage = e.get("stage")
            if e["event"] != "progress" or stage != "upload":
                marks.setdefault("uploaded", now)
            if stage == "download":
                marks.setdefault("download", now)

        t0 = time.perf_counter()
        job_id = client.submit(job)
        end = client.wait_job(job_id, timeout=900, on_event=seen)
        t1 = time.perf_counter()
        if end is None or end["event"] != "result":
            raise SystemExit(f"worker job failed: {end}")
        if i:
            runs.append({"total": t1 - t0, "upload": marks.get("uploaded", t1) - t0,
                         "download": t1 - marks.get("download", t1)})
    return runs, end["summary"]["model_loads"]


def link(args, job: dict, local_s: float, out_dir: str) -> None:
    """The same job through SSH: its total against the local worker's, split into upload/run/download."""
    from da3_blender.remote import RemoteSpec

    sshd = None
    if args.remote:
        spec = RemoteSpec(args.remote, python=args.remote_python or "python3",
                          cache_dir=args.remote_dir or "~/.cache/da3-blender")
        where = args.remote
    else:
        from loopback_sshd import LoopbackSSHD

        sshd = LoopbackSSHD(tempfile.mkdtemp(prefix="da3-bench-sshd-")).start()
        spec = sshd.spec(python=sys.executable, cache_dir=os.path.join(out_dir, "remote-cache"))
        where = "ssh to 127.0.0.1"
    try:
        remote_job = dict(job, output=os.path.join(out_dir, "fetched", "remote.npz"))
        with WorkerClient(remote=spec) as client:
            t0 = time.perf_counter()
            client.hello(timeout=120)
            connect_s = time.perf_counter() - t0
            runs, loads = timed_runs(client, remote_job, args.repeat)
    finally:
        if sshd is not None:
            sshd.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in ("total", "upload", "download")}
    sent = sum(os.path.getsize(p) for p in job["inputs"] if os.path.isfile(p)) / 1e6
    fetched = os.path.getsize(remote_job["output"]) / 1e6
    run_s = med["total"] - med["upload"] - med["download"]
    print(f"{where + ' (warm)':>22}: {med['total'] * 1000:8.1f} ms   (connect + hello {connect_s:.2f} s, model loads: "
          f"{loads}; upload {med['upload'] * 1000:.0f} ms for {sent:.1f} MB, run {run_s * 1000:.0f} ms, "
          f"download {med['download'] * 1000:.0f} ms for {fetched:.1f} MB)")
    d = med["total"] - local_s
    print(f"{'link overhead':>22}: {d * 1000:+8.1f} ms   ratio to the local worker {med['total'] / local_s:.3f} "
          f"({(med['total'] / local_s - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    sys.exit(main())
