"""The DA3 worker process, driven through WorkerClient as Blender drives it (real model, real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from da3_blender.runtime.protocol import PROTOCOL_VERSION, decode, encode, normalize_job
from da3_blender.errors import BadInputError, ERROR_KINDS
from da3_blender.prediction import load_result
from da3_blender.runtime.client import WorkerClient

pytestmark = pytest.mark.slow

SMALL = {"process_res": 140}
JOB_TIMEOUT = 120


def job_for(fixture_dir, images, output, **options):
    return {"inputs": [str(p) for p in images], "output": str(output), "model": str(fixture_dir), "device": "cpu",
            "options": {**SMALL, **options}}


def run(client, job, timeout=JOB_TIMEOUT):
    """Submit and wait; returns (terminal event, all events of the job)."""
    seen = []
    job_id = client.submit(job)
    end = client.wait_job(job_id, timeout, on_event=seen.append)
    assert end is not None, f"job did not finish in {timeout}s; stderr: {list(client.stderr_tail)[-5:]}"
    return end, seen


def wait_forward(client, job_id, timeout=JOB_TIMEOUT):
    """Block until the job's network is running (a forward progress event); returns the events seen."""
    seen = []

    def running(e):
        if e.get("job") == job_id:
            seen.append(e)
            assert e["event"] not in ("result", "error"), f"job ended before it could be interrupted: {e}"
        return e.get("event") == "progress" and e.get("stage") == "forward" and e.get("fraction", 0) > 0

    assert client.wait_for(running, timeout) is not None, "no forward progress"
    return seen


def big_job(fixture_dir, soh_images, output):
    """About 10 s of network on 2 CPU cores, ~0.5 s per backbone block."""
    return job_for(fixture_dir, list(soh_images) * 3, output, process_res=504)


def cancel_job(fixture_dir, soh_images, output):
    """Several seconds of network, but backbone blocks of ~0.3 s: the granularity at which a cancel lands."""
    return job_for(fixture_dir, list(soh_images) * 2, output, process_res=392)


@pytest.fixture(scope="module")
def worker():
    client = WorkerClient(python=sys.executable)
    yield client
    client.shutdown()


def test_protocol_lines_round_trip():
    msg = {"event": "progress", "id": "j", "job": "j", "message": "é\nx", "fraction": float("nan")}
    line = encode(msg)
    assert line.endswith("\n") and line.count("\n") == 1
    back = decode(line)
    assert back["message"] == "é\nx" and back["fraction"] is None
    with pytest.raises(BadInputError, match="process_res"):
        normalize_job({"inputs": ["a.png"], "output": "o.npz", "options": {"process_res": "big"}})
    with pytest.raises(BadInputError, match="unknown option"):
        normalize_job({"inputs": ["a.png"], "output": "o.npz", "options": {"proces_res": 504}})


def test_worker_session(fixture_dir, soh_images, tmp_path):
    """hello, run, warm run (no second load), cancel within 1 s, run again, unload, shutdown."""
    client = WorkerClient(python=sys.executable)
    try:
        hello = client.hello(timeout=60)
        assert hello["protocol"] == PROTOCOL_VERSION
        assert hello["torch"] and hello["python"] == ".".join(map(str, sys.version_info[:3]))
        assert hello["devices"][0]["id"] == "cpu" and hello["model"] is None

        end, seen = run(client, job_for(fixture_dir, soh_images, tmp_path / "a.npz"))
        assert end["event"] == "result", end
        assert [e["loads"] for e in seen if e["event"] == "loaded"] == [1]
        assert {e["stage"] for e in seen if e["event"] == "progress"} >= {"load", "preprocess", "forward", "save"}
        assert end["summary"]["views"] == 2 and end["summary"]["model_loads"] == 1
        pred = load_result(end["path"])
        assert pred.num_views == 2 and list(pred.image_size) == end["summary"]["size"]
        assert [os.path.basename(p) for p in pred.source_paths] == ["000.png", "010.png"]

        end, seen = run(client, job_for(fixture_dir, soh_images, tmp_path / "b.npz"))
        assert end["event"] == "result" and end["summary"]["model_loads"] == 1
        assert not [e for e in seen if e["event"] == "loaded"], "the warm model was loaded again"

        job_id = client.submit(cancel_job(fixture_dir, soh_images, tmp_path / "big.npz"))
        wait_forward(client, job_id)
        t0 = time.monotonic()
        client.cancel(job_id)
        end = client.wait_job(job_id, 10)
        waited = time.monotonic() - t0
        assert end is not None and end["event"] == "error" and end["kind"] == "cancelled", end
        assert waited < 1.0, f"cancel answered after {waited:.2f}s"
        assert not (tmp_path / "big.npz").exists()

        end, _ = run(client, job_for(fixture_dir, soh_images[:1], tmp_path / "c.npz"))
        assert end["event"] == "result" and end["summary"]["model_loads"] == 1 and end["summary"]["views"] == 1

        other = {**job_for(fixture_dir, soh_images[:1], tmp_path / "d.npz"), "dtype": "fp32"}  # another model key
        end, seen = run(client, other)
        assert end["event"] == "result" and [e["loads"] for e in seen if e["event"] == "loaded"] == [2]

        rid = client.unload()
        unloaded = client.wait_for(lambda e: e.get("id") == rid, 30)
        assert unloaded["event"] == "unloaded" and unloaded["model"] == str(fixture_dir)
        assert client.hello(30)["model"] is None
        proc = client._proc
        assert client.shutdown(timeout=30) == 0
        assert proc.returncode == 0
    finally:
        client.kill()
    assert not [t for t in threading.enumerate() if t.name.startswith("da3-worker")]


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_killed_worker_reports_and_restarts(fixture_dir, soh_images, tmp_path):
    client = WorkerClient(python=sys.executable)
    try:
        job_id = client.submit(big_job(fixture_dir, soh_images, tmp_path / "big.npz"))
        wait_forward(client, job_id)
        first_pid = client.pid
        os.kill(first_pid, signal.SIGKILL)
        end = client.wait_job(job_id, 30)
        assert end is not None and end["event"] == "error" and end["kind"] == "internal", end
        assert "SIGKILL" in end["message"] and end["exit_code"] == -signal.SIGKILL

        end, _ = run(client, job_for(fixture_dir, soh_images, tmp_path / "after.npz"))
        assert end["event"] == "result", end
        assert client.pid != first_pid and load_result(tmp_path / "after.npz").num_views == 2

        # a worker that does not answer a cancel (frozen) is killed after cancel_timeout
        client.cancel_timeout = 0.5
        job_id = client.submit(big_job(fixture_dir, soh_images, tmp_path / "big.npz"))
        wait_forward(client, job_id)
        frozen = client.pid
        os.kill(frozen, signal.SIGSTOP)
        t0 = time.monotonic()
        client.cancel(job_id)
        end = client.wait_job(job_id, 10)
        assert end is not None and end["kind"] == "cancelled" and time.monotonic() - t0 < 3, end
        assert not client.is_alive()
        with pytest.raises(ProcessLookupError):
            os.kill(frozen, 0)
    finally:
        client.shutdown()


def test_death_message_names_status_and_out_of_memory():
    client = WorkerClient(python=sys.executable)
    client.stderr_tail.extend(["loading", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"])
    kind, text = client._death(1)
    assert kind == "out_of_memory" and "exit status 1" in text and "smaller model" in text
    client.stderr_tail.clear()
    client.stderr_tail.append("Segmentation fault")
    kind, text = client._death(-signal.SIGSEGV)
    assert kind == "internal" and "SIGSEGV" in text and "Segmentation fault" in text


@pytest.mark.parametrize("case", ["missing_file", "corrupt_image", "unknown_model", "negative_res", "unknown_method",
                                  "unwritable_output", "malformed_json"])
def test_bad_job_errors_and_worker_survives(case, worker, fixture_dir, soh_images, tmp_path):
    job = job_for(fixture_dir, soh_images, tmp_path / "out.npz")
    expected = "bad_input"
    if case == "missing_file":
        job["inputs"] = [str(tmp_path / "nope.png")]
    elif case == "corrupt_image":
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
        job["inputs"] = [str(bad)]
    elif case == "unknown_model":
        job["model"] = "definitely-not-a-da3-model"
        expected = "model_download"
    elif case == "negative_res":
        job["options"]["process_res"] = -5
    elif case == "unknown_method":
        job["options"]["process_res_method"] = "stretch_a_lot"
    elif case == "unwritable_output":
        (tmp_path / "afile").write_text("a file, not a folder")
        job["output"] = str(tmp_path / "afile" / "out.npz")
    if case == "malformed_json":
        worker.send_raw('{"v": 1, "request": "run", "id": "x", "job": {')
        end = worker.wait_for(lambda e: e["event"] == "error", 30)
        expected = "protocol"
    else:
        end, _ = run(worker, job)
    assert end["event"] == "error" and end["kind"] == expected, end
    assert end["kind"] in ERROR_KINDS and "\n" not in end["message"] and end["message"]
    if case == "unwritable_output":
        assert "afile" in end["message"] and "writable" in end["message"]
    if case in ("missing_file", "corrupt_image"):
        assert os.path.basename(job["inputs"][0]) in end["message"]
    pid = worker.pid
    assert worker.hello(30)["protocol"] == PROTOCOL_VERSION and worker.pid == pid


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs a file system that takes non-UTF-8 names")
def test_file_name_that_is_not_utf8_gets_its_error_and_worker_answers(worker, fixture_dir, tmp_path):
    """A Latin-1 file name (os.listdir gives lone surrogates) must not silence the worker's stdout."""
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9 001.png")
    with open(bad, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    job = job_for(fixture_dir, [tmp_path], tmp_path / "out.npz")  # the folder: its listing gives the name
    job_id = worker.submit(job)
    end = worker.wait_job(job_id, 30)
    assert end is not None, "no answer: the worker's protocol output died on the file name"
    assert end["event"] == "error" and end["kind"] == "bad_input", end
    assert os.fsdecode(os.path.basename(bad)) in end["message"]  # the exact name, escapes round-tripped
    assert worker.hello(30)["protocol"] == PROTOCOL_VERSION


def test_busy_worker_refuses_second_job(worker, fixture_dir, soh_images, tmp_path):
    first = worker.submit(big_job(fixture_dir, soh_images, tmp_path / "big.npz"))
    wait_forward(worker, first)
    second = worker.submit(job_for(fixture_dir, soh_images, tmp_path / "second.npz"))
    end = worker.wait_job(second, 10)
    assert end["event"] == "error" and end["kind"] == "bad_input" and "busy" in end["message"]
    worker.cancel(first)
    assert worker.wait_job(first, 10)["kind"] == "cancelled"


def test_result_is_atomic_and_matches_in_process_api(worker, fixture_dir, soh_images, tmp_path):
    out = tmp_path / "res" / "result.npz"
    out.parent.mkdir()
    seen_states, failures, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with np.load(out, allow_pickle=False) as npz:  # a partial file would raise here
                    seen_states.append(sorted(npz.files))
                    npz["depth"], npz["image"]  # read the members fully
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - any other failure is a torn read
                failures.append(repr(exc))
            time.sleep(0.002)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(2):  # the second write replaces an existing file
            end, _ = run(worker, job_for(fixture_dir, soh_images, out))
            assert end["event"] == "result", end
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert seen_states and all(s == seen_states[0] for s in seen_states)
    assert os.listdir(out.parent) == ["result.npz"], "temporary files left behind"
    assert zipfile.is_zipfile(out)
    with np.load(out, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta_json"]))
    assert meta["protocol_version"] == PROTOCOL_VERSION and meta["job"]["model"] == str(fixture_dir)
    assert meta["created"] and meta["package_version"]

    from da3_blender.api import DepthAnything3
    from da3_blender.inputs.collect import collect_inputs

    model = DepthAnything3.from_pretrained(fixture_dir, device="cpu")
    ref = model.inference(collect_inputs([str(p) for p in soh_images]), **SMALL)
    got = load_result(out)
    for key in ("depth", "conf", "extrinsics", "intrinsics"):
        np.testing.assert_allclose(getattr(got, key), getattr(ref, key), rtol=1e-5, atol=1e-6, err_msg=key)
    for key in ("processed_images", "orig_size", "proc_to_orig", "frame_numbers"):
        np.testing.assert_array_equal(getattr(got, key), getattr(ref, key), err_msg=key)
    assert got.source_paths == ref.source_paths and got.is_metric == ref.is_metric


def test_library_prints_never_reach_the_protocol(tmp_path):
    """print() and C-level writes to fd 1, at start and during a request, end up in the log, not the protocol."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os\n"
        "print('noise printed at start')\n"
        "import da3_blender.devices as devices\n"
        "_describe = devices.describe_devices\n"
        "def noisy():\n"
        "    print('noise printed by a library', flush=True)\n"
        "    os.write(1, b'noise written by C code\\n')\n"
        "    os.write(1, b'noise without a newline ')\n"
        "    return _describe()\n"
        "devices.describe_devices = noisy\n"
    )
    client = WorkerClient(python=sys.executable, env={"PYTHONPATH": str(tmp_path)})
    try:
        for _ in range(2):
            hello = client.hello(timeout=20)  # a stray partial line would corrupt this answer
            assert hello["event"] == "hello" and hello["devices"][0]["id"] == "cpu"
        assert client.poll() == [], "stray lines must not become events"
        assert client.shutdown(timeout=30) == 0  # joins the readers: the whole log is in
        log = "\n".join(client.stderr_tail)
        assert "noise printed at start" in log and "noise without a newline" in log
        assert log.count("noise printed by a library") == 2 and log.count("noise written by C code") == 2
    finally:
        client.kill()
