"""What the warm model of ``da3 backend`` saves: the same request sent N times, timed end to end
(POST /inference -> completed, through HTTP), side by side with the same job as a fresh ``da3``
process each time (model loaded every run).

    python scripts/bench_backend.py --model ../shared/da3/fixtures/da3-small-random --images A.png B.png

Prints per-run seconds and the ratio fresh-process / warm-backend (median of runs 2..N).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from da3_blender.web.backend import make_server  # noqa: E402


def post_and_wait(port: int, body: dict) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/inference", json.dumps(body), {"Content-Type": "application/json"})
    task_id = json.loads(conn.getresponse().read())["task_id"]
    while True:
        conn.request("GET", f"/task/{task_id}")
        task = json.loads(conn.getresponse().read())
        if task["status"] in ("completed", "failed", "cancelled"):
            assert task["status"] == "completed", task
            return time.perf_counter() - started
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("DA3_MODEL", "depth-anything/DA3-SMALL"))
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--process-res", type=int, default=280)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    images = [os.path.abspath(p) for p in args.images]
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(args.model, device=args.device, port=0, allow_roots=[tmp, *map(os.path.dirname, images)],
                             work_dir=os.path.join(tmp, "work"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        warm, fresh = [], []
        for i in range(args.runs):
            body = {"image_paths": images, "export_dir": os.path.join(tmp, f"b{i}"), "export_format": "mini_npz",
                    "process_res": args.process_res}
            warm.append(post_and_wait(port, body))
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "da3_blender", "auto" if len(images) == 1 else "images",
                            images[0] if len(images) == 1 else os.path.dirname(images[0]), "--model", args.model,
                            "--device", args.device, "--process-res", str(args.process_res), "--export-format",
                            "mini_npz", "--export-dir", os.path.join(tmp, f"p{i}"), "--quiet"],
                           check=True, cwd=ROOT, capture_output=True)
            fresh.append(time.perf_counter() - started)
        server.shutdown()
        server.queue.stop()
    print("run  backend_s  fresh_process_s")
    for i, (w, f) in enumerate(zip(warm, fresh), 1):
        print(f"{i:3d}  {w:9.2f}  {f:15.2f}")
    later_w, later_f = statistics.median(warm[1:]), statistics.median(fresh[1:])
    print(f"first backend request (cold) {warm[0]:.2f} s; later (warm) median {later_w:.2f} s; "
          f"fresh process median {later_f:.2f} s; fresh/warm = {later_f / later_w:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
