"""``--use-backend [--backend-url URL]``: send a command's work to a running ``da3 backend``.

The request is the official ``POST /inference`` body (absolute paths: the backend checks them
against its allowed folders) with the shot settings as extension fields (:func:`request_body`), then ``GET /task/{id}`` is polled for progress until the task ends;
Ctrl+C cancels it (``DELETE /task/{id}``). The token of a backend started with ``--allow-remote``
comes from ``$DA3_BACKEND_TOKEN``. Standard library only (``urllib``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from .. import options as opt
from ..errors import BadInputError, DA3Error
from .security import TOKEN_ENV
from .tasks import STAGES

POLL_SECONDS = 0.25


class BackendError(DA3Error):
    """The backend refused a request or could not be reached (one line)."""


class BackendClient:
    def __init__(self, url: str = opt.DEFAULT_BACKEND_URL, token: str | None = None, timeout: float = 30.0):
        if not url.startswith(("http://", "https://")):
            raise BadInputError(f"--backend-url {url} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read().decode("utf-8"))
            except ValueError:
                answer = {}
            detail = answer.get("detail") or answer.get("message") or exc.reason
            kind = answer.get("kind") if exc.code != 401 else "bad_input"
            raise BackendError(f"the backend at {self.url} refused {method} {path} ({exc.code}): {detail}",
                               kind=kind or "bad_input") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"no DA3 backend answers at {self.url} ({reason}): start one with `da3 backend` "
                               "or check --backend-url", kind="connection") from None

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status")

    def submit(self, body: dict[str, Any]) -> str:
        return self.call("POST", "/inference", body)["task_id"]

    def task(self, task_id: str) -> dict[str, Any]:
        return self.call("GET", f"/task/{task_id}")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self.call("DELETE", f"/task/{task_id}")

    def wait(self, task_id: str, progress: Callable | None = None, poll: float = POLL_SECONDS) -> dict[str, Any]:
        """Poll until the task ends; its final state, or :class:`BackendError` for a failed task.
        Ctrl+C cancels the task on the backend and re-raises."""
        try:
            while True:
                task = self.task(task_id)
                if progress is not None and task.get("stage"):
                    lo, hi = STAGES.get(task["stage"], (0.0, 1.0))  # the stage's own fraction, as a direct run shows
                    part = ((task.get("progress") or 0.0) - lo) / max(hi - lo, 1e-9)
                    progress(task["stage"], min(max(part, 0.0), 1.0), task.get("message", "").partition(": ")[2])
                if task["status"] == "completed":
                    return task
                if task["status"] in ("failed", "cancelled"):
                    raise BackendError(f"backend task {task_id[:8]} {task['status']}: {task.get('message')}",
                                       kind=task.get("kind") or "internal")
                time.sleep(poll)
        except KeyboardInterrupt:
            try:
                self.cancel(task_id)
            except DA3Error:
                pass
            raise


def request_body(spec: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The official ``/inference`` body for a job description and its input files, with the shot
    (stills or not, frame start, rate, colour space) and a video's or sequence's sampling as our
    extension fields ``shot`` and ``video`` (official DA3's server ignores them). An image sequence
    is sent as its one path (a file of it, its folder or a pattern): the server expands it inside
    its allowed folders, as a direct run would here."""
    from ..inputs.paths import is_video_path
    from ..job import is_sequence_job

    sequence = is_sequence_job(spec)
    if sequence:
        paths = spec["inputs"]
    body: dict[str, Any] = {
        "image_paths": [os.path.abspath(p) for p in paths],
        "export_dir": os.path.abspath(spec["export_dir"]),
        "export_format": spec["export_format"],
        "export_feat_layers": [],
        "shot": {k: v for k, v in (spec.get("shot") or {}).items() if v is not None},
    }
    body.update({k: v for k, v in spec["options"].items() if v is not None})
    video = {k: v for k, v in (spec["video"] or {}).items() if v is not None}
    if video and len(paths) == 1 and (sequence or is_video_path(paths[0])):
        body["video"] = video
    return body


def run_on_backend(url: str, spec: dict[str, Any], paths: list[str], progress: Callable | None = None
                   ) -> dict[str, Any]:
    """Run a job on the backend at ``url``; returns the finished task (``files``, ``summary``)."""
    client = BackendClient(url)
    status = client.status()  # a clear "no backend" line before anything else
    if status.get("model_dir") and status["model_dir"] != spec["model"]:
        logging.getLogger("da3_blender").warning("the backend at %s runs %s on %s (its own model and device; --model "
                                                 "and --device are not sent)", url, status["model_dir"], status.get("device"))
    task_id = client.submit(request_body(spec, paths))
    task = client.wait(task_id, progress)
    for line in (task.get("summary") or {}).get("warnings") or []:  # e.g. a failed camera solve: the result is kept
        logging.getLogger("da3_blender").warning("%s", line)
    return task
