"""One reconstruction: settings -> worker job -> events -> scene import.

:class:`Run` holds no Blender UI: the ``da3.reconstruct`` operator drives it from a modal timer
(or a blocking loop in background mode), calling :meth:`Run.step` until it returns an outcome.
The scene is touched only by :meth:`Run.finish` after a ``result`` event, so a cancelled or
failed run leaves it exactly as it was.
"""

from __future__ import annotations

import os
import time

import bpy

from . import session
from .gather import gather

# share of the progress bar per worker stage (in order)
STAGES = (("upload", 0.05), ("load", 0.15), ("preprocess", 0.05), ("forward", 0.45), ("postprocess", 0.1),
          ("solve", 0.1), ("export", 0.05), ("save", 0.03), ("download", 0.02))  # upload/download: remote only
# solve: the camera solve (Refine cameras, i18)


def overall_fraction(stage: str, fraction: float) -> float:
    done = 0.0
    for name, share in STAGES:
        if name == stage:
            return min(1.0, done + share * max(0.0, min(1.0, fraction)))
        done += share
    return done if stage else 0.0


class Run:
    """A job from the panel's settings. ``Run(context)`` validates and raises on bad input."""

    def __init__(self, context):
        setup = gather(context)  # settings and preferences read once, checked; nothing started yet
        self.job, self.python, self.env, self.remote = setup.job, setup.python, setup.env, setup.remote
        self.options, self.name, self.keep_results = setup.import_options, setup.name, setup.keep_results
        self.output = self.job["output"]
        self.client = None
        self.job_id = None
        self.stage, self.fraction, self.message = "", 0.0, ""
        self.outcome = None  # "result" | "error" once the job ended
        self.event = None  # the terminal event
        self.cancel_requested = False
        self.started = None

    # -- worker --------------------------------------------------------------------------------
    def start(self) -> None:
        self.client = session.client(self.python, self.env, self.remote)
        self.job_id = self.client.submit(self.job)
        self.started = time.monotonic()
        session.active_run = self

    def step(self) -> str | None:
        """Handle what the worker sent since the last call; the outcome once the job has ended."""
        for ev in self.client.poll():
            if ev.get("job") not in (self.job_id, None):
                continue
            kind = ev.get("event")
            if kind == "progress":
                self.stage = ev.get("stage", "")
                self.fraction = overall_fraction(self.stage, float(ev.get("fraction") or 0.0))
                self.message = ev.get("message", "")
            elif kind == "loaded":
                self.message = f"loaded {ev.get('model')} on {ev.get('device')}"
            elif kind in ("result", "error") and ev.get("job") == self.job_id:
                self.outcome, self.event = kind, ev
            session.notify(self, ev)
            if self.outcome:
                break
        return self.outcome

    def cancel(self) -> None:
        """Ask the worker to stop (it is killed if it does not answer within a few seconds)."""
        if self.client is not None and self.job_id and not self.outcome:
            self.cancel_requested = True
            self.client.cancel(self.job_id)

    def abandon(self) -> None:
        """Stop caring about the job (extension unregistered): cancel and drop the result file."""
        self.cancel()
        self._remove_output()
        if session.active_run is self:
            session.active_run = None

    def wait(self, poll_interval: float = 0.05) -> str:
        """Block until the job ends (background mode)."""
        while self.step() is None:
            time.sleep(poll_interval)
        return self.outcome

    # -- outcome -------------------------------------------------------------------------------
    def finish(self, context) -> tuple[bool, str]:
        """Import a result (one undo step) or explain the error. Returns (success, one-line message)."""
        if session.active_run is self:
            session.active_run = None
        ev = self.event or {}
        if self.outcome != "result":
            self._remove_output()
            if ev.get("kind") == "cancelled" or self.cancel_requested:
                return False, "Cancelled: the scene was not changed"
            return False, f"DA3 failed: {ev.get('message') or 'no answer from the worker'}"
        path = ev.get("path") or self.output
        from ..scene import importer

        try:
            collection = importer.import_result_file(path, self.options)
        except Exception as ex:  # the importer removes what it created; keep the file for a retry
            return False, (f"DA3 import failed ({ex}); the result is kept at {path}: "
                           "import it again with File > Import > DA3 result")
        try:
            bpy.ops.ed.undo_push(message="DA3 Reconstruct")
        except RuntimeError:
            pass
        if not self.keep_results:
            self._remove_output(path)
        s = ev.get("summary") or {}
        self.warnings = [str(w) for w in s.get("warnings") or []]  # e.g. a failed camera solve (the result is kept)
        size = s.get("size") or ["?", "?"]
        where = getattr(collection, "name", self.name)
        note = collection.get("da3_planes_note") if hasattr(collection, "get") else None
        solved = collection.get("da3_solve_summary") if hasattr(collection, "get") else None  # i18
        note = "; ".join(n for n in (solved, note) if n) or None
        return True, (f"{s.get('views', '?')} view(s) at {size[1]}x{size[0]} with {os.path.basename(str(s.get('model')))} "
                      f"on {s.get('device', '?')} in {float(s.get('seconds') or 0):.1f} s -> '{where}'"
                      + (f" ({note})" if note else "") + (f"; {s['shot']}" if s.get("shot") else ""))

    def _remove_output(self, path: str | None = None) -> None:
        for p in {path or self.output, self.output}:
            try:
                os.remove(p)
            except OSError:
                pass
