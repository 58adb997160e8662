"""``da3 backend``: the model kept warm behind a local HTTP server, with the official routes.

    POST   /inference        official InferenceRequest body -> {success, message, task_id, export_dir, export_format}
    GET    /task/{id}        the task (official TaskStatus fields + stage, files, summary, kind)
    DELETE /task/{id}        cancel a pending/running task; forget a finished one
    GET    /tasks            every task's summary, without its request (tasks, active_tasks, completed_tasks,
                             active_count, total_count); the whole task is at /task/{id}
    GET    /status           model_loaded, model_dir, device, load_time, uptime, model_loads, queue
    GET    /  /dashboard     the home page and a dashboard of the tasks (polls /tasks)
    GET    /gallery/...      the result gallery (:mod:`.gallery`)

Jobs run one at a time, in order, in our worker process (the same one Blender uses), which keeps
the model loaded between tasks. Security (:mod:`.security`, docs/backend-security.md): loopback
only unless ``--allow-remote`` (then a bearer token), no state change from another site's page,
request paths only under ``--allow-root`` folders, ``--max-body`` and ``--max-images`` limits,
one-line JSON errors.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid

from .. import options as opt
from ..errors import BadInputError
from ..runtime.client import WorkerClient
from .gallery import STATIC_DIR, GalleryRoutes, vendor_ready
from .http import DEFAULT_MAX_BODY, Handler, HttpError, Server, route, serve
from .payload import DEFAULT_MAX_IMAGES, job_from_request
from .security import Roots, check_bind, make_token
from .tasks import QueueFull, TaskQueue

DEFAULT_PORT = opt.DEFAULT_BACKEND_PORT


class BackendHandler(GalleryRoutes, Handler):
    """The routes; the class attributes are set by :func:`make_server`."""

    queue: TaskQueue
    roots: Roots
    max_images: int = DEFAULT_MAX_IMAGES

    def routes(self):
        return [
            route("GET", r"/", lambda: self.send_file(os.path.join(STATIC_DIR, "home.html"))),
            route("GET", r"/dashboard", lambda: self.send_file(os.path.join(STATIC_DIR, "dashboard.html"))),
            route("GET", r"/status", lambda: self.send_json(self.queue.status())),
            route("GET", r"/tasks", lambda: self.send_json(self.queue.list())),
            route("POST", r"/inference", self.inference),
            route("GET", r"/task/([0-9a-f]{1,64})", lambda t: self.send_json(self._task(t).to_dict())),
            route("DELETE", r"/task/([0-9a-f]{1,64})", self.delete_task),
            *self.gallery_routes(),
        ]

    def inference(self) -> None:
        body = self.read_json()
        task_id = uuid.uuid4().hex
        default_dir = os.path.join(self.gallery_dir or tempfile.gettempdir(), "backend", task_id)  # no export_dir
        job = job_from_request(body, self.roots, self.queue.model, self.queue.device, default_dir, self.max_images)
        try:
            task = self.queue.submit(job, body, task_id)
        except QueueFull as exc:
            raise HttpError(429, str(exc)) from None
        self.send_json({"success": True, "message": f"Task submitted successfully ({task.message})",
                        "task_id": task.task_id, "export_dir": job["export_dir"],
                        "export_format": job["export_format"], "processing_time": None})

    def delete_task(self, task_id: str) -> None:
        done = self.queue.cancel(task_id)  # one step under the queue's lock: a second DELETE finds it gone
        if done is None:
            raise HttpError(404, f"Task {task_id} not found")
        self.send_json({"success": True, "message": f"Task {task_id} {done}", "task_id": task_id, "status": done})

    def _task(self, task_id: str):
        task = self.queue.get(task_id)
        if task is None:
            raise HttpError(404, f"Task {task_id} not found")
        return task


def make_server(model: str, device: str = "auto", host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                gallery_dir: str | None = None, allow_roots: list[str] | None = None, allow_remote: bool = False,
                max_body: int = DEFAULT_MAX_BODY, max_images: int = DEFAULT_MAX_IMAGES, python: str | None = None,
                work_dir: str | None = None) -> Server:
    """A started task queue behind a bound (not yet serving) server; ``server.queue`` is the queue."""
    from ..job import check_device

    check_bind(host, allow_remote)
    check_device(device)
    if max_body < 1024 or max_images < 1:
        raise BadInputError("--max-body must be at least 1024 bytes and --max-images at least 1")
    token = make_token(allow_remote)
    gallery = os.path.realpath(gallery_dir) if gallery_dir else None
    if gallery:
        os.makedirs(gallery, exist_ok=True)
    roots = Roots([*(allow_roots or [os.getcwd()]), *([gallery] if gallery else [])])  # the gallery always
    handler = type("Handler", (BackendHandler,), {"roots": roots, "gallery_dir": gallery, "max_images": int(max_images)})
    server = Server((host, port), handler, token=token, max_body=max_body)  # a port in use: one line, nothing made
    own_dir = work_dir is None  # our temporary folder: removed when the server stops
    work_dir = work_dir or tempfile.mkdtemp(prefix="da3-backend-")
    client = WorkerClient(python=python, log_dir=work_dir)
    handler.queue = server.queue = TaskQueue(client, os.path.join(work_dir, "results"), model, device)
    server.roots = roots

    def stop() -> None:
        server.queue.stop()
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)

    server.stop_backend = stop
    server.queue.start()
    return server


def serve_backend(out=None, **kwargs) -> int:
    """``da3 backend``: serve until interrupted; prints where, the token and the allowed roots."""
    out = out or sys.stdout
    server = make_server(**kwargs)
    suffix = f"/?token={server.token}" if server.token else "/"
    lines = [f"da3 backend: {server.queue.model} on {server.queue.device}, one job at a time",
             f"  home       {server.url}{suffix}", f"  dashboard  {server.url}/dashboard",
             f"  status     {server.url}/status"]
    if server.RequestHandlerClass.gallery_dir:
        lines.append(f"  gallery    {server.url}/gallery/" + ("" if vendor_ready() else
                                                                 "  (3D viewer off: python scripts/vendor_three.py)"))
    lines.append(f"  paths allowed under: {', '.join(server.roots.roots)}")
    if server.token:
        lines.append(f"  token      {server.token}   (clients: Authorization: Bearer TOKEN, or DA3_BACKEND_TOKEN)")
    print("\n".join(lines), file=out, flush=True)
    return serve(server, server.stop_backend)
