"""``da3.reconstruct`` (Run) and ``da3.cancel``.

With a window the run is modal: a window-manager timer polls the worker so Blender stays
responsive; progress shows in the panel, the status bar and the window-manager progress. In
background mode (``blender -b``, the bpy module) the same operator blocks until the job ends.
"""

from __future__ import annotations

import time

import bpy
from bpy.types import Operator

from ..da3_blender.errors import DA3Error
from . import session
from .run import Run

TIMER_INTERVAL = 0.1


def _redraw(context) -> None:
    wm = context.window_manager
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _blocking(context) -> bool:
    """Run to the end inside ``execute`` (no event loop: ``blender -b``, the bpy module, no window)."""
    return bpy.app.background or context.window is None


def _show(context, run: Run) -> None:
    rt = context.window_manager.da3_runtime
    rt.stage, rt.fraction, rt.message = run.stage, run.fraction, run.message[:200]
    rt.cancel_requested = run.cancel_requested


class DA3_OT_reconstruct(Operator):
    """Reconstruct the input images or video as a 3D scene with Depth Anything 3"""

    bl_idname = "da3.reconstruct"
    bl_label = "Reconstruct"
    bl_options = {"REGISTER"}  # one undo step is pushed by hand after the import

    _run: Run | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        rt = context.window_manager.da3_runtime
        if session.is_running():
            self.report({"ERROR"}, "a DA3 reconstruction is already running: wait for it or cancel it")
            return {"CANCELLED"}
        try:
            run = Run(context)
        except (DA3Error, OSError) as ex:  # bad input, or e.g. an unwritable results folder
            rt.error, rt.summary = str(ex), ""
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        try:
            run.start()
        except DA3Error as ex:
            session.active_run = None
            rt.error, rt.summary = str(ex), ""
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        rt.running, rt.error, rt.summary, rt.warning = True, "", "", ""
        rt.stage, rt.fraction, rt.message, rt.cancel_requested = "", 0.0, "starting the worker", False
        self._run = run
        if _blocking(context):
            try:
                self._wait(context, run)
            except BaseException:  # e.g. Ctrl+C in a script: stop the job, leave nothing "running"
                self._abandon(context, "Cancelled: the scene was not changed")
                raise
            return self._finish(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        self._status(context, f"DA3: starting ({run.name})  Esc: cancel")
        return {"RUNNING_MODAL"}

    def invoke(self, context, event):
        return self.execute(context)

    def modal(self, context, event):
        run = self._run
        if event.type == "ESC" and event.value == "PRESS":
            run.cancel()
            _show(context, run)
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            if context.window_manager.da3_runtime.cancel_requested and not run.cancel_requested:
                run.cancel()
            outcome = run.step()
            _show(context, run)
            context.window_manager.progress_update(int(run.fraction * 100))
            stage = run.stage.capitalize() or "Starting"
            self._status(context, f"DA3 {run.name}: {stage} {run.fraction * 100:.0f}%  {run.message}  Esc: cancel")
            _redraw(context)
        except Exception as ex:  # never leave a timer, a progress display or "running" behind
            self._end_modal(context)
            self._abandon(context, f"DA3 failed: internal error ({type(ex).__name__}: {ex}); the scene was not changed")
            self.report({"ERROR"}, context.window_manager.da3_runtime.error)
            return {"CANCELLED"}
        if outcome is None:
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        return self._finish(context)

    def _wait(self, context, run) -> None:
        rt, shown = context.window_manager.da3_runtime, None
        while run.step() is None:
            if rt.cancel_requested and not run.cancel_requested:
                run.cancel()
            _show(context, run)
            if bpy.app.background and (run.stage, run.message) != shown and run.stage:
                shown = (run.stage, run.message)
                print(f"DA3 {run.fraction * 100:3.0f}% {run.stage}: {run.message}", flush=True)
            time.sleep(0.05)

    def cancel(self, context):
        """Blender ends the modal run (a file is opened, the window closes, the extension is disabled)."""
        self._end_modal(context)
        self._abandon(context, "Cancelled: the scene was not changed")

    def _status(self, context, text) -> None:
        workspace = context.workspace
        if workspace is not None:
            workspace.status_text_set(text)

    def _end_modal(self, context) -> None:
        """Remove the timer, end the progress display and clear the status bar (every exit path)."""
        if self._timer is None:
            return
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        self._timer = None
        wm.progress_end()
        self._status(context, None)

    def _abandon(self, context, message: str) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        run.abandon()
        rt = getattr(context.window_manager, "da3_runtime", None)
        if rt is not None:
            rt.running, rt.cancel_requested, rt.stage, rt.fraction = False, False, "", 0.0
            rt.summary, rt.error = "", message

    def _finish(self, context):
        run, self._run = self._run, None
        ok, message = run.finish(context)
        rt = context.window_manager.da3_runtime
        rt.running, rt.cancel_requested = False, False
        rt.stage, rt.fraction = "", 0.0
        rt.summary, rt.error = (message, "") if ok else ("", message)
        rt.warning = "; ".join(getattr(run, "warnings", None) or []) if ok else ""
        if not bpy.app.background:
            _redraw(context)
        self.report({"INFO"} if ok else {"WARNING"} if message.startswith("Cancelled") else {"ERROR"}, message)
        if rt.warning:  # one line of its own (the scene was built: the run finished)
            self.report({"WARNING"}, rt.warning)
        return {"FINISHED"} if ok else {"CANCELLED"}


class DA3_OT_cancel(Operator):
    """Stop the running reconstruction (the scene is left as it was)"""

    bl_idname = "da3.cancel"
    bl_label = "Cancel Reconstruction"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return session.is_running()

    def execute(self, context):
        context.window_manager.da3_runtime.cancel_requested = True
        if session.active_run is not None:
            session.active_run.cancel()
        return {"FINISHED"}


CLASSES = (DA3_OT_reconstruct, DA3_OT_cancel)
