"""The remote half of :class:`~da3_blender.runtime.client.WorkerClient`: a worker over SSH.

Connecting (with the one-time package upload), requests whose answers are routed to the thread that
waits for them (file transfers), and remote jobs (:class:`~.remote.RemoteJob`: upload, run, fetch on
a thread of their own). The SSH command lines are in :mod:`.ssh`, the files in :mod:`.remote`.
Standard library only.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from typing import Any

from ..errors import CancelledError, DA3Error
from .protocol import error_event, request
from .remote import RemoteJob
from .ssh import MISSING_PACKAGE_MARKER, MISSING_PACKAGE_STATUS, REMOTE_ENV, install_package, no_window, ssh_missing


class WorkerError(DA3Error):
    """The worker could not be started or did not answer."""


class _NoAnswer(WorkerError):
    """A request got no answer in time (the worker is alive but silent)."""


class RemoteWorkers:
    """Mixed into WorkerClient: what it does when ``remote`` is set (issue 11)."""

    def _start_remote(self) -> None:
        env = {k: v for k, v in self.env.items() if k in REMOTE_ENV}  # not the ones naming local folders
        spec = self.remote
        if env:
            from dataclasses import replace

            spec = replace(spec, env={**env, **spec.env})
        try:
            proc = subprocess.Popen(spec.worker_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, **no_window())
        except FileNotFoundError:
            raise WorkerError(str(ssh_missing(spec)), kind="missing_dependency") from None
        except OSError as exc:
            raise WorkerError(f"could not start ssh ({exc.strerror or exc})", kind="connection") from None
        self._started(proc)

    def _connect(self, timeout: float = 60.0, job: RemoteJob | None = None) -> dict[str, Any]:
        """A running remote worker that answered ``hello`` (the package is installed on first use);
        ``job``: a remote job whose cancel stops the wait."""
        with self._start_lock:
            if self.is_alive() and self._hello is not None:
                return self._hello
            for attempt in range(2):
                self.start()
                try:
                    self._hello = self._await(self._call_async("hello"), timeout, job=job)
                    self._discard_orphans()
                    return self._hello
                except CancelledError:
                    self.kill()
                    raise
                except DA3Error as exc:
                    failure = exc
                proc = self._proc
                code = None
                if proc is not None:
                    try:
                        code = proc.wait(timeout=0.1 if isinstance(failure, _NoAnswer) else 10)  # a failed start ends
                    except subprocess.TimeoutExpired:  # alive but silent, or refused hello
                        self.kill()
                        if isinstance(failure, _NoAnswer):
                            raise WorkerError(f"the DA3 worker on {self.remote.label} did not answer within "
                                              f"{timeout:.0f} s", kind="connection") from None
                        raise WorkerError(str(failure), kind=failure.kind) from None
                self._reap()  # joins the readers: the whole stderr is in
                if attempt == 0 and code == MISSING_PACKAGE_STATUS and MISSING_PACKAGE_MARKER in "\n".join(self.stderr_tail):
                    install_package(self.remote)  # first use of this version on that machine
                    continue
                kind, text = self._death(code if code is not None else 1)
                raise WorkerError(text, kind=kind)
            raise AssertionError("unreachable")

    def _discard_orphans(self) -> None:
        """Remove finished jobs' folders on the remote (kept for the next connection if the link is down)."""
        for token in sorted(self._orphans):
            if not self.is_alive():
                return
            try:
                self._call("discard", timeout=30, folder=token)
            except DA3Error:
                return
            self._orphans.discard(token)

    def _call_async(self, kind: str, **fields) -> tuple[str, queue.Queue]:
        """Send a request whose answer is routed to a private queue; returns (id, queue) for :meth:`_await`."""
        rid = self._new_id(kind)
        route: queue.Queue = queue.Queue()
        self._routes[rid] = route
        try:
            self._send(request(kind, rid, **fields))
        except WorkerError as exc:
            route.put(error_event(rid, None, "connection", str(exc)))
        return rid, route

    def _await(self, pending: tuple[str, queue.Queue], timeout: float, job: RemoteJob | None = None) -> dict[str, Any]:
        """The answer to a :meth:`_call_async` request; an ``error`` answer raises it as a DA3Error."""
        rid, route = pending
        deadline = time.monotonic() + timeout
        try:
            while True:
                if job is not None:
                    job.check()
                try:
                    reply = route.get(timeout=0.1)
                    break
                except queue.Empty:
                    if (not self.is_alive() and not any(t.is_alive() for t in self._threads)
                            and route.empty()):  # died before the request was routed
                        code = self._proc.poll() if self._proc is not None else None
                        kind, text = self._death(code if code is not None else -9)
                        raise WorkerError(text, kind=kind)
                    if time.monotonic() > deadline:
                        raise _NoAnswer(f"no answer from the DA3 worker within {timeout:.0f} s", kind="connection")
        finally:
            self._routes.pop(rid, None)
        if reply.get("event") == "error":
            raise DA3Error(reply.get("message") or "the worker refused the request", kind=reply.get("kind"))
        return reply

    def _call(self, kind: str, timeout: float, **fields) -> dict[str, Any]:
        return self._await(self._call_async(kind, **fields), timeout)

    def _submit_remote(self, job: dict[str, Any], job_id: str) -> str:
        remote_job = RemoteJob(self, job, job_id)
        self._remote_jobs[job_id] = remote_job
        remote_job.start()
        return job_id

    def _run_remote(self, job_id: str, job: dict[str, Any], sources: list, remote_job: RemoteJob) -> dict[str, Any]:
        """Send a remote job's ``run`` and block (its thread) until its terminal event."""
        finished: queue.Queue = queue.Queue()
        self._finishers[job_id] = finished
        try:
            with self._lock:
                self._jobs.add(job_id)
            try:
                self._send(request("run", job_id, job=job, sources=sources))
            except WorkerError:
                with self._lock:
                    self._jobs.discard(job_id)
                raise
            asked = False
            while True:
                if remote_job.cancelled.is_set() and not asked:
                    asked = True
                    self.cancel(job_id)
                try:
                    return finished.get(timeout=0.2)
                except queue.Empty:
                    if not self.is_alive() and finished.empty() and not any(t.is_alive() for t in self._threads):
                        return error_event(job_id, job_id, "connection", "the connection to the worker was lost")
        finally:
            self._finishers.pop(job_id, None)

    def _job_done(self, job_id: str, final: dict[str, Any]) -> None:
        with self._lock:
            self._jobs.discard(job_id)
            self._cancels.pop(job_id, None)
        self._remote_jobs.pop(job_id, None)
        self.events.put(final)

    def _stop_remote_jobs(self, timeout: float = 10.0) -> None:
        jobs = list(self._remote_jobs.values())
        for remote_job in jobs:
            remote_job.cancel()
        for remote_job in jobs:
            if remote_job is not threading.current_thread():
                remote_job.join(timeout)
