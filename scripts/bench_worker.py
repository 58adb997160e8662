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

from da3_blender.runtime.client import WorkerClient  # noqa: E402

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
    parser.add_argument("--remote-python", default=None, help="with --remote: the Python there (default: python3)")
    parser.add_argument("--remote-dir", default=None, help="with --remote: its cache folder")
    args = parser.parse_args()

    import torch

    from da3_blender.api import DepthAnything3
    from da3_blender.devices import resolve_device
    from da3_blender.inputs.collect import collect_inputs
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
    remote = remote_client(args, out_dir) if (args.ssh or args.remote) else None
    try:
        with WorkerClient() as client:
            t0 = time.perf_counter()
            hello = client.hello(timeout=120)
            start_s = time.perf_counter() - t0
            connect_s = None
            if remote is not None:
                t0 = time.perf_counter()
                remote[0].hello(timeout=120)
                connect_s = time.perf_counter() - t0
            remote_job = dict(job, output=os.path.join(out_dir, "fetched", "remote.npz"))
            worker, link_runs = [], []
            for i in range(args.repeat + 1):  # the first run loads the model (remote: and sends it)
                w, loads = one_run(client, job)
                if remote is not None:
                    r, remote_loads = one_run(remote[0], remote_job)
                if i:  # local and remote alternate, so a change in machine load hits both alike
                    worker.append(w)
                    if remote is not None:
                        link_runs.append(r)
    finally:
        if remote is not None:
            remote[0].shutdown()
            if remote[1] is not None:
                remote[1].stop()

    a, b = statistics.median(inproc), statistics.median([r["total"] for r in worker])
    what = f"{os.path.basename(args.video)} ({views} frames at {args.fps} fps)" if args.video else f"{views} images"
    print(f"device {device}, torch {hello['torch']}, {what} at process_res {args.process_res}, median of {args.repeat}")
    print(f"{'in-process API':>22}: {a * 1000:8.1f} ms")
    print(f"{'worker (warm)':>22}: {b * 1000:8.1f} ms   (model loads: {loads}, worker start + hello: {start_s:.2f} s)")
    print(f"{'overhead':>22}: {(b - a) * 1000:+8.1f} ms   ratio {b / a:.3f} ({(b / a - 1) * 100:+.1f} %, target <= +10 %)")
    if remote is not None:
        med = {k: statistics.median(r[k] for r in link_runs) for k in ("total", "upload", "download")}
        sent = sum(os.path.getsize(p) for p in inputs if os.path.isfile(p)) / 1e6
        fetched = os.path.getsize(remote_job["output"]) / 1e6
        run_s = med["total"] - med["upload"] - med["download"]
        print(f"{remote[2] + ' (warm)':>22}: {med['total'] * 1000:8.1f} ms   (connect + hello {connect_s:.2f} s, model "
              f"loads: {remote_loads}; upload {med['upload'] * 1000:.0f} ms for {sent:.1f} MB, run {run_s * 1000:.0f} ms, "
              f"download {med['download'] * 1000:.0f} ms for {fetched:.1f} MB)")
        d = med["total"] - b
        print(f"{'link overhead':>22}: {d * 1000:+8.1f} ms   ratio to the local worker {med['total'] / b:.3f} "
              f"({(med['total'] / b - 1) * 100:+.1f} %); transfers alone {(med['upload'] + med['download']) * 1000:.0f} ms")
    return 0


def one_run(client: WorkerClient, job: dict) -> tuple[dict, int]:
    """One job until its result: the total, the seconds until its first non-upload event (upload) and from
    its first download event to the end (download)."""
    marks: dict[str, float] = {}

    def seen(e):
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
    return ({"total": t1 - t0, "upload": marks.get("uploaded", t1) - t0, "download": t1 - marks.get("download", t1)},
            end["summary"]["model_loads"])


def remote_client(args, out_dir: str):
    """(client, the loopback sshd or None, label) for --ssh / --remote."""
    from da3_blender.runtime.ssh import RemoteSpec

    if args.remote:
        spec = RemoteSpec(args.remote, python=args.remote_python, cache_dir=args.remote_dir)  # None: the defaults
        return WorkerClient(remote=spec), None, args.remote
    from loopback_sshd import LoopbackSSHD

    sshd = LoopbackSSHD(tempfile.mkdtemp(prefix="da3-bench-sshd-")).start()
    spec = sshd.spec(python=sys.executable, cache_dir=os.path.join(out_dir, "remote-cache"))
    return WorkerClient(remote=spec), sshd, "ssh to 127.0.0.1"


if __name__ == "__main__":
    sys.exit(main())
