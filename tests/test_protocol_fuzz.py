"""Protocol fuzzing: seeded adversarial lines to ``python -m da3_blender.worker`` and, through a fake
worker, to the client (:class:`WorkerClient`). Every line gets an error event (or a clean end) within a
timeout, the worker keeps serving (the next job runs), and memory stays bounded. The figures (lines
tried, worst answer time, peak memory) are printed (``pytest -s`` shows them).

Bounded: a fixed seed and count, well under a minute on 2 cores.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from da3_blender.errors import ERROR_KINDS
from da3_blender.runtime import protocol
from da3_blender.runtime.client import WorkerClient

ROOT = Path(__file__).resolve().parents[1]
SEED = 19
RANDOM_LINES = 220  # plus the fixed adversarial cases
ANSWER_TIMEOUT = 10.0  # seconds for any line's answer
BIG = 64 << 20  # a 64 MB line


def _valid_requests(rng: random.Random) -> list[dict]:
    rid = f"r{rng.randrange(10**6)}"
    return [
        {"v": 1, "request": "hello", "id": rid},
        {"v": 1, "request": "run", "id": rid, "job": {"inputs": ["/nonexistent/a.png"], "output": "/tmp/x.npz"}},
        {"v": 1, "request": "cancel", "id": rid, "job": "job-x"},
        {"v": 1, "request": "put", "id": rid, "folder": "f1", "path": "in/a.png", "offset": 0, "data": "QUJD",
         "final": True, "size": 3, "sha256": "0" * 64},
        {"v": 1, "request": "get", "id": rid, "folder": "f1", "path": "in/a.png", "offset": 0, "length": 10},
        {"v": 1, "request": "stat", "id": rid, "folder": "f1", "path": "in/a.png"},
        {"v": 1, "request": "list", "id": rid, "folder": "f1", "path": "in"},
        {"v": 1, "request": "discard", "id": rid, "folder": "f2"},
        {"v": 1, "request": "unload", "id": rid},
    ]


def _weird_value(rng: random.Random, depth: int = 0):
    choices = [None, True, -1, 0, 10**30, 1e308, -0.0, "", "x" * rng.randrange(1, 300), "..", "/etc/passwd",
               "a\x00b", "\udcff", [], {}, "QUJ", "////", "C:\\Windows", "-oProxyCommand=id"]
    if depth < 3:
        choices += [[_weird_value(rng, depth + 1)], {"k": _weird_value(rng, depth + 1)}]
    return rng.choice(choices)


def _mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(3)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[min(pos, len(data) - 1)]
        elif op == 1:
            data.insert(pos, rng.randrange(256))
        else:
            data[pos:pos] = rng.choice([b"{", b"}", b"[", b'"', b"\\", b"\x00", b"\xff", b"\xc3", b",", b":", b"1e999"])
    return bytes(data).replace(b"\n", b" ")


def adversarial_lines(rng: random.Random, count: int) -> list[bytes]:
    """Fixed hostile cases, then ``count`` seeded ones (wrong types, mutations, unknown kinds, numbers)."""
    fixed = [
        b"[" * 200_000,
        b'{"v":1,"request":"hello","id":' * 50_000 + b"1",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"x" * BIG,
        b'{"v":1,"request":"hello","id":"' + b"a" * BIG + b'"}',
        b"\xff\xfe\xfd",
        b'{"v":1,"request":"hello","id":"\xc3"}',
        b"\x00\x00\x00",
        b'{"v":1,"request":"hello","id":"a\x00b"}',
        b'{"v":1,"request":"run","id":"1' + b"9" * 5000 + b'"}',
        b'{"v":1e999,"request":"hello","id":"h"}',
        b'{"v":1,"request":"hello","id":' + b"9" * 5000 + b"}",
        b'{"v":1,"request":"put","id":"p","folder":"f1","path":"a","offset":0,"data":"QUJDR","final":true}',
        b'{"v":1,"request":"put","id":"p","folder":"f1","path":"a","offset":1' + b"0" * 40 + b',"data":"QUJD"}',
        b'{"v":1,"request":"get","id":"g","folder":"f1","path":"a","offset":0,"length":' + b"9" * 30 + b"}",
        b'{"v":1,"request":"nonsense","id":"n"}',
        b'{"v":1,"request":["hello"],"id":"n"}',
        b'{"v":1,"request":{"a":1},"id":"n"}',
        b'{"v":1,"request":"hello","id":["a"]}',
        b'{"v":1,"request":"cancel","id":"c","job":{"a":[1,2,3]}}',
        b'{"v":1,"request":"run","id":"r","job":"' + b"j" * 1000 + b'"}',
        b'"just a string"',
        b"[1,2,3]",
        b"null",
        b"NaN",
        b"{}",
    ]
    lines = list(fixed)
    for _ in range(count):
        base = rng.choice(_valid_requests(rng))
        kind = rng.randrange(4)
        if kind == 0:  # wrong types in a valid envelope
            msg = dict(base)
            for key in rng.sample(sorted(msg), rng.randrange(1, len(msg) + 1)):
                msg[key] = _weird_value(rng)
            lines.append(json.dumps(msg, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass"))
        elif kind == 1:  # byte mutations
            lines.append(_mutate(rng, json.dumps(base).encode()))
        elif kind == 2:  # truncated
            text = json.dumps(base).encode()
            lines.append(text[: rng.randrange(1, len(text))])
        else:  # a valid request (answered normally)
            lines.append(json.dumps(base).encode())
    return [line for line in lines if line.strip()]


# -- the worker --------------------------------------------------------------------------------------
class _Pipe:
    """A worker subprocess with a reader thread collecting its events."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, cwd=str(ROOT))
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.bad: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = None
            with self.cond:
                if isinstance(msg, dict):
                    self.events.append(msg)
                else:
                    self.bad.append(raw[:200])
                self.cond.notify_all()

    def send(self, data: bytes):
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def wait(self, predicate, timeout: float):
        return self.wait_new(0, predicate, timeout)

    def wait_new(self, start: int, predicate, timeout: float):
        """The first event from index ``start`` on with ``predicate``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[start:]:
                    if predicate(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.2))

    def peak_kib(self) -> int | None:
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmHWM:")), None)


@pytest.mark.slow
def test_worker_answers_every_hostile_line_and_serves_the_next_job(tmp_path, fixture_dir, soh_images):
    rng = random.Random(SEED)
    lines = adversarial_lines(rng, RANDOM_LINES)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-u", "-m", "da3_blender.worker", "--jobs-dir", str(tmp_path / "jobs"),
            "--allow", str(Path(soh_images[0]).parent)]  # the final job reads the example images in place
    worker = _Pipe(argv, env)
    try:
        worker.send(protocol.encode(protocol.request("hello", "h0")).encode())
        assert worker.wait(lambda e: e.get("id") == "h0", 60), "no hello"
        base_kib = worker.peak_kib()
        worst = 0.0
        started = time.monotonic()
        for i, line in enumerate(lines):
            before = len(worker.events)
            t0 = time.monotonic()
            worker.send(line)
            probe = f"probe-{i}"
            worker.send(protocol.encode(protocol.request("hello", probe)).encode())
            answered = worker.wait(lambda e: e.get("id") == probe, ANSWER_TIMEOUT)
            assert answered is not None, f"line {i} ({line[:80]!r}) left the worker silent or dead"
            # the line itself got an answer (an error event, or its normal reply), maybe after the probe's
            assert worker.wait_new(before, lambda e: e.get("id") != probe, ANSWER_TIMEOUT), \
                f"line {i} ({line[:80]!r}) got no answer"
            worst = max(worst, time.monotonic() - t0)
        assert not worker.bad, f"the worker wrote non-JSON on its protocol stream: {worker.bad[:3]}"
        errors = [e for e in worker.events if e.get("event") == "error"]
        assert errors and all(e["kind"] in ERROR_KINDS and "\n" not in e["message"] for e in errors)
        peak_kib = worker.peak_kib()
        fuzz_seconds = time.monotonic() - started
        # still serves a real job after all that
        job = {"inputs": [str(p) for p in soh_images], "output": str(tmp_path / "jobs" / "ok" / "r.npz"),
               "model": str(fixture_dir), "device": "cpu", "options": {"process_res": 70}}
        worker.send(protocol.encode(protocol.request("run", "final-job", job=job)).encode())
        end = worker.wait(lambda e: e.get("job") == "final-job" and e.get("event") in ("result", "error"), 120)
        assert end is not None and end["event"] == "result", end and end.get("message")
        worker.send(protocol.encode(protocol.request("shutdown", "bye")).encode())
        assert worker.wait(lambda e: e.get("event") == "bye", 30) is not None  # a clean end
        assert worker.proc.wait(30) == 0
        grown = None if peak_kib is None or base_kib is None else (peak_kib - base_kib) / 1024
        print(f"\nworker fuzz: {len(lines)} lines tried in {fuzz_seconds:.1f} s, worst answer {worst * 1000:.0f} ms, "
              f"peak memory {None if peak_kib is None else peak_kib // 1024} MiB (+{grown if grown is None else round(grown)} MiB over the idle worker)")
        assert worst < ANSWER_TIMEOUT
        if grown is not None:  # a 64 MB line is never held whole
            assert grown < protocol.MAX_LINE / (1 << 20) * 4, f"worker memory grew by {grown:.0f} MiB"
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait()


# -- the client, through a fake worker ---------------------------------------------------------------
FAKE_WORKER = r'''
import base64, json, os, sys, time
out = os.fdopen(1, "wb")
def send(obj):
    out.write(json.dumps(obj).encode() + b"\n"); out.flush()
for raw in sys.stdin.buffer:
    msg = json.loads(raw)
    rid = msg.get("id")
    if msg.get("request") == "hello":
        send({"event": "hello", "id": rid, "job": None, "protocol": 1})
    elif msg.get("request") == "run":
        job = msg["job"]
        for line in job["lines"]:
            out.write(base64.b64decode(line) + b"\n")
        for size in job["big"]:  # over-long lines made here: the test process never holds them
            for _ in range(size >> 20):
                out.write(b"x" * (1 << 20))
            out.write(b"\n")
        out.flush()
        end = job["end"]
        if end == "result":
            send({"event": "result", "id": rid, "job": rid, "path": job["output"], "summary": {"views": 1}})
        elif end == "error":
            send({"event": "error", "id": rid, "job": rid, "kind": "bad_input", "message": "fake failure"})
        elif end == "exit":
            sys.exit(3)
        elif end == "hang":
            time.sleep(3600)
    elif msg.get("request") == "shutdown":
        send({"event": "bye", "id": rid, "job": None})
        break
'''


def _hostile_events(rng: random.Random, job_id: str) -> list[bytes]:
    """Lines a hostile or broken worker might write: garbage, and events of the right shape with wrong fields."""
    out = [b"[" * 100_000, b"\xff\xfe", b"\x00", b"null", b"{}"]
    names = list(protocol.EVENTS) + ["nonsense", None, 1]
    for _ in range(12):
        msg = {"event": rng.choice(names), "id": rng.choice([job_id, None, 7, ["x"]]),
               "job": rng.choice([job_id, job_id, None, {"a": 1}, ["x"], 10**30])}
        for key in rng.sample(["fraction", "stage", "message", "kind", "path", "summary", "data"], 3):
            msg[key] = _weird_value(rng)
        out.append(json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return out


def _ends_job(lines: list[bytes], job_id: str) -> bool:
    for line in lines:
        try:
            msg = protocol.decode(line)
        except protocol.ProtocolError:
            continue
        if msg.get("event") in ("result", "error") and msg.get("job") == job_id:
            return True
    return False


@pytest.mark.slow
def test_client_survives_a_hostile_worker(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    python = tmp_path / "python"  # the client runs "<python> -u -m da3_blender.worker": a wrapper runs the fake
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    python.chmod(0o755)
    if os.name == "nt":
        pytest.skip("the fake worker wrapper is a POSIX shell script")
    rng = random.Random(SEED)
    client = WorkerClient(python=str(python), cancel_timeout=0.5)
    tracemalloc.start()
    worst, tried = 0.0, 0
    try:
        for i, end in enumerate(["result", "error", "exit", "hang"] * 3):
            job_id = f"job-{i}"
            lines = _hostile_events(rng, job_id)
            tried += len(lines)
            job = {"lines": [base64.b64encode(x).decode() for x in lines], "end": end, "big": [BIG, 1 << 20],
                   "output": str(tmp_path / "r.npz")}
            t0 = time.monotonic()
            client.submit(job, job_id)
            seen = []
            if end == "hang":
                client.cancel(job_id)  # not answered: killed after cancel_timeout
            final = client.wait_job(job_id, ANSWER_TIMEOUT, on_event=seen.append)
            worst = max(worst, time.monotonic() - t0)
            assert final is not None, f"job {i} ({end}) never ended: the client's reader died?"
            expected = {"result": "result", "error": "error", "exit": "error", "hang": "error"}[end]
            if _ends_job(lines, job_id):  # a hostile end for this job came first: it ends the job (well typed)
                assert final["event"] in ("result", "error"), final
            else:
                assert final["event"] == expected, final
            if end == "hang" and not _ends_job(lines, job_id):
                assert final["kind"] == "cancelled"
            for e in seen + client.poll():  # whatever reaches Blender is well typed
                assert e["event"] in protocol.EVENTS
                if e["event"] == "progress":
                    assert isinstance(e["fraction"], float) and 0 <= e["fraction"] <= 1 and isinstance(e["message"], str)
                if e["event"] == "error":
                    assert e["kind"] in ERROR_KINDS and isinstance(e["message"], str)
            # exactly one end per job: nothing else for it arrives later
            time.sleep(0.05)
            if end in ("exit", "hang"):  # the fake is gone (or going): the next submit starts a new one
                if client._proc is not None:
                    client._proc.wait(10)
            assert not [e for e in client.poll() if e.get("job") == job_id and e["event"] in ("result", "error")]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.kill()
    print(f"\nclient fuzz: {tried} lines tried, worst answer {worst * 1000:.0f} ms, "
          f"peak Python memory {peak / (1 << 20):.0f} MiB")
    assert peak < 3 * protocol.MAX_LINE  # a 64 MB line is never held whole (one 16 MB piece at most)
