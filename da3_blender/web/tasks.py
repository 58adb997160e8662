"""The backend's task queue: one job at a time on one warm worker, progress and cancel per task.

A task goes ``pending`` -> ``running`` -> ``completed`` | ``failed`` | ``cancelled``; its fields
are the official ``TaskStatus`` ones (``task_id``, ``status``, ``message``, ``progress`` 0..1,
``created_at``, ``started_at``, ``completed_at``, ``export_dir``, ``request``, ``num_images``,
``export_format``, ``process_res_method``, ``video_path``) plus ``stage``, ``files`` (the exports
written), ``summary`` and ``kind`` (the error kind of a failed task). The worker
(:class:`~da3_blender.runtime.client.WorkerClient`) keeps the model loaded between tasks, so only
the first task (or one after a model change) pays the load.
"""

from __future__ import annotations

import collections
import copy
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import DA3Error
from ..options import DEFAULT_PROCESS_RES_METHOD
from ..runtime.client import WorkerClient

log = logging.getLogger("da3_blender.web")

MAX_HISTORY = 100  # finished tasks kept (the oldest are forgotten first)
MAX_PENDING = 100  # tasks waiting at once; more are refused (HTTP 429)
TASK_TIMEOUT = 24 * 3600.0
# share of the whole task each worker stage covers (progress 0..1 across stages)
STAGES = {"load": (0.0, 0.1), "preprocess": (0.1, 0.2), "forward": (0.2, 0.8), "postprocess": (0.8, 0.9),
          "export": (0.9, 0.97), "save": (0.97, 1.0)}
FINISHED = ("completed", "failed", "cancelled")


class QueueFull(DA3Error):
    """Too many tasks waiting (HTTP 429)."""


@dataclass
class Task:
    task_id: str
    job: dict[str, Any]
    request: dict[str, Any]
    status: str = "pending"
    message: str = ""
    progress: float = 0.0
    stage: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    files: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    kind: str | None = None
    cancel_asked: bool = False

    def to_dict(self, details: bool = True) -> dict[str, Any]:
        """The task's fields; ``details`` False leaves out its ``request`` (up to --max-body of matrices:
        ``/tasks`` lists summaries, ``/task/{id}`` gives the whole task)."""
        skip = ("job", "cancel_asked") if details else ("job", "cancel_asked", "request")
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        job = self.job
        first = job["inputs"][0] if job["inputs"] else None
        data.update(export_dir=job["export_dir"], export_format=job["export_format"], num_images=len(job["inputs"]),
                    process_res_method=job["options"].get("process_res_method") or DEFAULT_PROCESS_RES_METHOD,
                    video_path=first)
        return data


class TaskQueue:
    """Tasks run in order on ``client``; ``jobs_dir`` holds each task's result file while it runs."""

    def __init__(self, client: WorkerClient, jobs_dir: str, model: str, device: str):
        self.client, self.jobs_dir, self.model, self.device = client, jobs_dir, model, device
        self.tasks: dict[str, Task] = {}
        self.pending: collections.deque[str] = collections.deque()
        self.running: str | None = None
        self.cond = threading.Condition()
        self.stopped = False
        self.loads = 0
        self.load_time: float | None = None
        self.loaded_at: float | None = None
        self.last_used: float | None = None
        self.thread = threading.Thread(target=self._loop, name="da3-backend-tasks", daemon=True)

    def start(self) -> None:
        os.makedirs(self.jobs_dir, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
            running = self.running
        if running:
            self.client.cancel(running)
        self.thread.join(timeout=15)
        self.client.shutdown()

    # -- requests --------------------------------------------------------------------------------
    def submit(self, job: dict[str, Any], request: dict[str, Any], task_id: str | None = None) -> Task:
        task = Task(task_id or uuid.uuid4().hex, job, request)
        with self.cond:
            if len(self.pending) >= MAX_PENDING:
                raise QueueFull(f"{len(self.pending)} tasks are already waiting: try again later or cancel some")
            waiting = self.running or (self.pending[-1] if self.pending else None)
            task.message = f"queued behind task {waiting}" if waiting else "submitted"
            self.tasks[task.task_id] = task
            self.pending.append(task.task_id)
            self.cond.notify_all()
        return task

    def get(self, task_id: str) -> Task | None:
        with self.cond:
            return self.tasks.get(task_id)

    def cancel(self, task_id: str) -> str:
        """Cancel a pending or running task, or forget a finished one; returns what was done, or None
        for a task this queue does not have (never had, or already forgotten by another request)."""
        with self.cond:
            task = self.tasks.get(task_id)
            if task is None:
                return None
            if task.status == "pending":
                self.pending.remove(task_id)
                self._finish(task, "cancelled", "cancelled before it started", "cancelled")
                return "cancelled"
            if task.status in FINISHED:
                del self.tasks[task_id]
                return "deleted"
            task.cancel_asked = True
            task.message = "cancelling"
        self.client.cancel(task_id)
        return "cancelling"

    def status(self) -> dict[str, Any]:
        with self.cond:
            counts = collections.Counter(t.status for t in self.tasks.values())
            return {
                "model_loaded": self.loaded_at is not None and self.client.is_alive(),
                "model_dir": self.model,
                "device": self.device,
                "load_time": self.load_time,
                "last_used": self.last_used,
                "uptime": time.time() - self.loaded_at if self.loaded_at else 0,
                "model_loads": self.loads,
                "worker_pid": self.client.pid,
                "running_task": self.running,
                "pending_tasks": list(self.pending),
                "task_counts": dict(counts),
                "gpu_memory": None,
            }

    def list(self) -> dict[str, Any]:
        with self.cond:
            tasks = [t.to_dict(details=False) for t in self.tasks.values()]
        active = [t for t in tasks if t["status"] in ("pending", "running")]
        done = [t for t in tasks if t["status"] in FINISHED]
        return {"tasks": tasks, "active_tasks": active, "completed_tasks": done,
                "active_count": len(active), "total_count": len(tasks)}

    # -- the runner ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
                task = self.tasks[self.pending.popleft()]
                self.running = task.task_id
                task.status, task.started_at, task.message = "running", time.time(), "starting"
            try:
                self._run(task)
            except Exception as exc:  # the queue must go on
                log.exception("task %s", task.task_id)
                with self.cond:
                    self._finish(task, "failed", f"internal error ({type(exc).__name__}: {exc})", "internal")
            finally:
                with self.cond:
                    self.running = None
                    self._forget_old()

    def _run(self, task: Task) -> None:
        output = os.path.join(self.jobs_dir, f"{task.task_id}.npz")
        job_id = self.client.submit({**task.job, "output": output}, job_id=task.task_id)
        final = self.client.wait_job(job_id, TASK_TIMEOUT, on_event=lambda e: self._event(task, e))
        try:
            done = final is not None and final.get("event") == "result"
            files, video = _files_and_shot(output) if done else ([], None)  # read outside the lock
            with self.cond:
                if final is None:
                    self._finish(task, "failed", "the worker gave no answer", "internal")
                elif done:
                    task.files = files
                    task.summary = {**(final.get("summary") or {}), "video": video}
                    n, secs = len(task.job["inputs"]), (task.summary or {}).get("seconds", 0)
                    self._finish(task, "completed", f"completed in {secs:.2f}s ({n} input{'s' * (n != 1)}, "
                                                    f"{len(task.files)} files)", None)
                    self.last_used = time.time()
                else:
                    kind = final.get("kind") or "internal"
                    status = "cancelled" if kind == "cancelled" or task.cancel_asked else "failed"
                    self._finish(task, status, final.get("message") or status, kind)
        finally:
            if os.path.exists(output):
                os.remove(output)

    def _event(self, task: Task, event: dict[str, Any]) -> None:
        with self.cond:
            if event.get("event") == "progress":
                stage = event.get("stage", "")
                lo, hi = STAGES.get(stage, (task.progress, task.progress))
                task.progress = round(max(task.progress, lo + (hi - lo) * float(event.get("fraction") or 0)), 4)
                task.stage, task.message = stage, f"{stage}: {event.get('message', '')}"
            elif event.get("event") == "loaded":
                self.loads += 1
                self.load_time = event.get("seconds")
                self.loaded_at = time.time()

    def _finish(self, task: Task, status: str, message: str, kind: str | None) -> None:
        task.status, task.message, task.kind, task.completed_at = status, " ".join(message.split()), kind, time.time()
        if status == "completed":
            task.progress = 1.0

    def _forget_old(self) -> None:
        done = sorted((t.completed_at or 0, t.task_id) for t in self.tasks.values() if t.status in FINISHED)
        for _, task_id in done[: max(0, len(done) - MAX_HISTORY)]:
            del self.tasks[task_id]


def _files_and_shot(result_path: str) -> tuple[list[str], dict[str, Any] | None]:
    """The exported files a result file records and its shot (``meta["video"]``, as a direct run's
    summary has it, less the list of missing frames: up to 10,000, its text stays); ([], None) if unreadable."""
    from ..errors import ResultFormatError
    from ..prediction import read_meta

    try:
        meta = read_meta(result_path)
    except ResultFormatError:
        return [], None
    files, video = meta.get("exported_files"), meta.get("video")
    return ([str(f) for f in files] if isinstance(files, list) else [],
            {k: v for k, v in video.items() if k != "missing"} if isinstance(video, dict) else None)
