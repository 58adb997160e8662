"""Drive a DA3 worker process from Blender (or any Python): start, submit, poll, cancel, restart.

:class:`WorkerClient` never blocks the caller except in the explicit waits (``hello``, ``wait_for``,
``shutdown``): a reader thread turns the worker's stdout lines into event dicts on a queue and
:meth:`WorkerClient.poll` hands out what has arrived (Blender calls it from a timer). A worker that
dies becomes an ``error`` event for the job it was running; the next :meth:`submit` starts a fresh
one. Standard library only: no bpy, no numpy.

``WorkerClient(remote=RemoteSpec(host, ...))`` runs the worker on another machine over SSH
(:mod:`da3_blender.remote`): the same API and events; each job's files are sent and its result
fetched on a thread of its own, reported as ``upload``/``download`` progress.
"""

from __future__ import annotations

import collections
import itertools
import logging
import logging.handlers
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from .client_remote import RemoteWorkers, WorkerError, _NoAnswer  # noqa: F401  (WorkerError: imported from here)
from .protocol import (LOG_DIR_ENV, LOG_FILE, TERMINAL_EVENTS, ProtocolError, check_event, decode, encode, error_event,
                       read_line, request)
from .remote import RemoteJob
from .ssh import RemoteSpec, death_message, last_line

EXTENSION_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding da3_blender/
CANCEL_TIMEOUT = 3.0  # seconds a worker gets to answer a cancel before it is killed
STDERR_LINES = 200
STDERR_LINE_MAX = 8192  # characters of one stderr line kept (a longer one is cut into pieces)
LOG_MAX_BYTES = 2_000_000  # the log rotates at this size, keeping LOG_BACKUPS old files
LOG_BACKUPS = 2
_OOM_MARKERS = ("out of memory", "outofmemoryerror", "memoryerror", "cannot allocate memory", "std::bad_alloc")


class WorkerClient(RemoteWorkers):
    """One worker process, started on demand and restarted after a crash."""

    def __init__(self, python: str | None = None, extension_root: str | None = None,
                 env: dict[str, str] | None = None, cancel_timeout: float = CANCEL_TIMEOUT,
                 log_dir: str | None = None, remote: RemoteSpec | None = None):
        self.remote = remote  # None: a local worker process
        self.python = remote.python if remote is not None else (python or sys.executable)
        self.extension_root = os.fspath(extension_root or EXTENSION_ROOT)
        self.env = dict(env or {})
        # everything the worker writes on stderr (logs, tracebacks, library output, crash messages)
        # also goes to a rotating log file in log_dir (else $DA3_WORKER_LOG_DIR), named in its errors
        log_dir = log_dir or self.env.get(LOG_DIR_ENV) or os.environ.get(LOG_DIR_ENV)
        self.log_path = os.path.join(os.path.abspath(log_dir), LOG_FILE) if log_dir else None
        if log_dir:
            self.env[LOG_DIR_ENV] = os.path.abspath(log_dir)
        self._log: logging.Logger | None = None
        self.cancel_timeout = cancel_timeout
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._stash: list[dict[str, Any]] = []  # events taken off the queue by a wait, not yet polled
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._jobs: set[str] = set()  # jobs sent to the current process and not finished
        self._cancels: dict[str, float] = {}  # job id -> when its cancel was sent
        self._ended: collections.deque[str] = collections.deque(maxlen=1000)  # jobs that have had their end
        self._expected_exit = False
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:6]
        # remote workers (issue 11): replies routed to the thread that waits for them
        self._routes: dict[str, queue.Queue] = {}  # request id -> its waiter's queue
        self._finishers: dict[str, queue.Queue] = {}  # remote job id -> queue for its run's terminal event
        self._remote_jobs: dict[str, RemoteJob] = {}
        self._start_lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._hello: dict[str, Any] | None = None
        self._kept: set[tuple] = set()  # (folder, path, size, sha256) of kept files this worker has (models)
        self._orphans: set[str] = set()  # remote job folders to remove (left by a dropped link)

    # -- process ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the worker if it is not running (a dead one is cleaned up first)."""
        with self._start_lock:
            if self.is_alive():
                return
            self._reap()
            self._hello = None
            self._kept.clear()  # a new connection checks again (the remote may have been cleaned)
            if self.remote is not None:
                self._start_remote()
            else:
                self._start_local()

    def _start_local(self) -> None:
        if not os.path.isfile(self.python):
            raise WorkerError(f"Python not found at {self.python}: choose an existing Python or set up the DA3 environment",
                              kind="missing_dependency")
        env = os.environ.copy()
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.extension_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into another Python
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        try:
            proc = subprocess.Popen(
                [self.python, "-u", "-m", "da3_blender.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.extension_root, env=env, **kwargs,
            )
        except OSError as exc:
            raise WorkerError(f"could not start {self.python} ({exc.strerror or exc}): choose a working Python",
                              kind="missing_dependency") from None
        self._started(proc)

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc
        self._expected_exit = False
        self.stderr_tail.clear()
        self._log_line(f"--- worker started: pid {proc.pid}, {self.python}")
        err_thread = threading.Thread(target=self._read_stderr, args=(proc,), name="da3-worker-stderr", daemon=True)
        out_thread = threading.Thread(target=self._read_stdout, args=(proc, err_thread), name="da3-worker-stdout",
                                      daemon=True)
        self._threads = [err_thread, out_thread]
        err_thread.start()
        out_thread.start()

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(lambda: proc.stderr.readline(STDERR_LINE_MAX), b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            self._log_line(line)

    def _log_line(self, line: str) -> None:
        """Append one line to the log file (a log that cannot be written is given up, never fatal)."""
        if self.log_path is None:
            return
        if self._log is None:
            try:
                os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
                handler = logging.handlers.RotatingFileHandler(self.log_path, maxBytes=LOG_MAX_BYTES,
                                                               backupCount=LOG_BACKUPS, encoding="utf-8")
            except OSError:
                self.log_path = None
                return
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._log = logging.getLogger(f"da3_blender.worker_log.{self._prefix}")
            self._log.propagate = False
            self._log.setLevel(logging.INFO)
            self._log.addHandler(handler)
        self._log.info(line)

    def _log_hint(self) -> str:
        return f"; the full log is {self.log_path}" if self.log_path else ""

    def _read_stdout(self, proc: subprocess.Popen, err_thread: threading.Thread) -> None:
        while True:
            raw = b""
            try:
                raw = read_line(proc.stdout)
                if not raw:
                    break
                message = check_event(decode(raw))
            except ProtocolError as exc:  # a line that is no event: noted, never fatal to the reader
                self.stderr_tail.append(f"(stdout) {exc}: {raw[:200].decode('utf-8', 'replace').rstrip()}")
                continue
            except (OSError, ValueError):  # the pipe closed under us
                break
            if message.get("event") in TERMINAL_EVENTS and message.get("job"):
                with self._lock:
                    again = message["job"] in self._ended
                    self._ended.append(message["job"])
                    self._jobs.discard(message["job"])
                    self._cancels.pop(message["job"], None)
                if again:  # a job ends once: a second end is dropped
                    self.stderr_tail.append(f"(stdout) a second {message['event']} for job {message['job']}")
                    continue
            self._deliver(message)
        code = proc.wait()
        err_thread.join(timeout=5)
        with self._lock:
            lost = sorted(self._jobs)
            self._jobs.clear()
            self._cancels.clear()
            expected = self._expected_exit
            waiting = list(self._routes.values())
        kind, text = self._death(code)
        for route in waiting:  # requests of remote jobs that will never be answered
            route.put(error_event(None, None, "cancelled" if expected else kind, text, exit_code=code))
        if expected and not lost:
            return
        for job in lost or ([] if waiting or self.remote is not None else [None]):
            if expected:  # killed on purpose (cancel timeout or kill()) while a job ran
                self._deliver(error_event(job, job, "cancelled", "the worker was stopped"))
            else:
                self._deliver(error_event(job, job, kind, text, exit_code=code))

    def _death(self, code: int) -> tuple[str, str]:
        lines = [line for line in self.stderr_tail if line.strip()]
        if self.remote is not None:
            found = death_message(self.remote, code, lines)
            if found is not None:
                return found
        if code < 0:
            try:
                status = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                status = f"killed by signal {-code}"
        else:
            status = f"exit status {code}"
        last = last_line(lines)
        oom = any(m in line.lower() for line in lines[-20:] for m in _OOM_MARKERS)
        if oom:
            return "out_of_memory", (f"the DA3 worker ran out of memory ({status}; last log line: {last}): "
                                     f"choose a smaller model, a lower processing resolution or fewer frames{self._log_hint()}")
        return "internal", f"the DA3 worker stopped unexpectedly ({status}; last log line: {last}); run the job again{self._log_hint()}"

    def _reap(self) -> None:
        """Forget a finished process and join its reader threads."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
        self._proc = None

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise WorkerError("the DA3 worker is not running", kind="internal")
        try:
            with self._send_lock:  # job threads of remote workers send too: whole lines only
                proc.stdin.write(encode(message).encode("utf-8"))
                proc.stdin.flush()
        except (OSError, ValueError):
            raise WorkerError("the DA3 worker is not running (its input is closed)", kind="internal") from None

    def send_raw(self, line: str) -> None:
        """Send one raw line (for tests and debugging)."""
        self.start()
        self._proc.stdin.write(line.encode("utf-8") + b"\n")
        self._proc.stdin.flush()

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{self._prefix}-{next(self._ids)}"

    # -- requests --------------------------------------------------------------------------------
    def submit(self, job: dict[str, Any], job_id: str | None = None) -> str:
        """Send a ``run`` job (starting a worker if needed); returns its id. Events follow via :meth:`poll`."""
        if self.remote is not None:
            return self._submit_remote(job, job_id or self._new_id("job"))
        self.start()
        job_id = job_id or self._new_id("job")
        with self._lock:
            self._jobs.add(job_id)
        try:
            self._send(request("run", job_id, job=job))
        except WorkerError:
            with self._lock:
                self._jobs.discard(job_id)
            raise
        return job_id

    def cancel(self, job_id: str) -> None:
        """Ask the worker to stop ``job_id``; if it does not answer within ``cancel_timeout`` it is killed."""
        remote_job = self._remote_jobs.get(job_id)
        if remote_job is not None:
            remote_job.cancel()  # stops a transfer between two chunks; a running job is cancelled below
        with self._lock:
            if job_id not in self._jobs:
                return
            self._cancels[job_id] = time.monotonic()
        try:
            self._send(request("cancel", self._new_id("cancel"), job=job_id))
        except WorkerError:
            pass  # already dead: the reader reports it

    def unload(self) -> str | None:
        """Ask the worker to free its model (no-op without a worker). Returns the request id."""
        if not self.is_alive():
            return None
        rid = self._new_id("unload")
        self._send(request("unload", rid))
        return rid

    def hello(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start the worker if needed and return its ``hello`` event; :class:`WorkerError` on failure."""
        if self.remote is not None:
            return self._connect(timeout)
        self.start()
        rid = self._new_id("hello")
        try:
            self._send(request("hello", rid))
        except WorkerError:
            pass  # it died at start: explained below
        found = self.wait_for(lambda e: e.get("id") == rid, timeout=timeout)
        if found is None:
            if not self.is_alive():
                code = self._proc.poll() if self._proc else None
                self._reap()
                raise WorkerError(self._start_failure(code), kind="missing_dependency")
            raise WorkerError(f"the DA3 worker ({self.python}) did not answer within {timeout:.0f} s", kind="internal")
        if found.get("event") != "hello":
            raise WorkerError(found.get("message", "the worker refused hello"), kind=found.get("kind", "internal"))
        return found

    def _start_failure(self, code: int | None) -> str:
        last = last_line(self.stderr_tail)
        return f"the DA3 worker could not start with {self.python} (exit status {code}: {last}){self._log_hint()}"

    def poll(self) -> list[dict[str, Any]]:
        """All events that arrived since the last call, without blocking."""
        self._check_cancel_timeouts()
        events, self._stash = self._stash, []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """Block until an event matching ``predicate`` arrives (returned and consumed) or ``timeout``.

        Other events stay queued for :meth:`poll`.
        """
        return self._wait(predicate, lambda e: False, timeout)

    def wait_job(self, job_id: str, timeout: float, on_event: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any] | None:
        """Block until ``job_id`` ends; returns its ``result``/``error`` event (None on timeout).

        The job's events are consumed (each passed to ``on_event``); other events stay queued.
        """
        def accept(e):
            if e.get("job") != job_id:
                return False
            if on_event is not None:
                on_event(e)
            return e.get("event") in TERMINAL_EVENTS

        return self._wait(accept, lambda e: e.get("job") == job_id, timeout)

    def _wait(self, accept, consume, timeout: float) -> dict[str, Any] | None:
        """The first event with ``accept(e)``; on the way, events with ``consume(e)`` are dropped and
        the others kept (in order) for :meth:`poll`."""
        deadline = time.monotonic() + timeout
        pending = collections.deque(self._stash)
        self._stash = []
        while True:
            if pending:
                e = pending.popleft()
            else:
                self._check_cancel_timeouts()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    e = self.events.get(timeout=min(left, 0.1))
                except queue.Empty:
                    if (not self.is_alive() and not any(t.is_alive() for t in self._threads) and self.events.empty()
                            and not self._remote_jobs):
                        return None
                    continue
            if accept(e):
                self._stash.extend(pending)
                return e
            if not consume(e):
                self._stash.append(e)

    def _check_cancel_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [j for j, t in self._cancels.items() if now - t > self.cancel_timeout]
        if late and self.is_alive():
            self.kill()  # the reader reports the lost jobs as cancelled

    def shutdown(self, timeout: float = 10.0) -> int | None:
        """Stop the worker politely (kill after ``timeout``); returns its exit code. Joins all threads."""
        self._stop_remote_jobs()
        proc = self._proc
        if proc is None:
            return None
        code = proc.poll()
        if code is None:
            self._expected_exit = True
            try:
                self._send(request("shutdown", self._new_id("shutdown")))
                proc.stdin.close()
            except (WorkerError, OSError, ValueError):
                pass
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        self._reap()
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            for handler in list(self._log.handlers):
                self._log.removeHandler(handler)
                handler.close()
            self._log = None

    def kill(self) -> int | None:
        """Kill the worker at once; a job it was running ends with a ``cancelled`` error event."""
        for remote_job in list(self._remote_jobs.values()):
            remote_job.cancel()
        proc = self._proc
        if proc is None:
            return None
        self._expected_exit = True
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        self._reap()
        return code

    def _deliver(self, message: dict[str, Any]) -> None:
        """An event to the thread waiting for it (remote transfers, remote job ends), else to the queue."""
        rid = message.get("id")
        route = self._routes.get(rid) if isinstance(rid, str) else None
        if route is None and message.get("event") in TERMINAL_EVENTS and message.get("job"):
            route = self._finishers.get(message["job"])
        (route or self.events).put(message)

    def _emit(self, message: dict[str, Any]) -> None:
        self.events.put(message)

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
