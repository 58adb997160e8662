"""``da3.setup_environment`` and ``da3.check_interpreter``: slow work on a thread, shown in the
preferences by a ``bpy.app.timers`` poll, so the interface never blocks."""

from __future__ import annotations

import threading
from collections import deque

import bpy
from bpy.props import EnumProperty
from bpy.types import Operator

from .. import preferences
from ..preferences import ENV_VARIANTS, OFFLINE_HINT, environment_dir, get_preferences, worker_python

POLL_INTERVAL = 0.25


class _Task:
    """A background job: its thread, the lines it printed, its final one-line result."""

    def __init__(self, target, what: str):
        self.lines: deque[str] = deque(maxlen=200)
        self.result: str | None = None
        self.what = what
        self.thread = threading.Thread(target=self._main, args=(target,), name=f"da3-{what}", daemon=True)

    def _main(self, target):
        try:
            self.result = target(self.lines.append)
        except Exception as ex:  # shown to the user, never raised into Blender
            self.result = f"{self.what} failed: {ex}"


_task: _Task | None = None


def busy() -> bool:
    return _task is not None and _task.thread.is_alive()


def _poll():
    """Timer: copy the task's output into the window manager; stop when it is done."""
    wm = bpy.context.window_manager
    task = _task
    if task is None or not hasattr(wm, "da3_runtime"):
        return None
    rt = wm.da3_runtime
    rt.env_log = "\n".join(list(task.lines)[-12:])
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    if task.thread.is_alive():
        return POLL_INTERVAL
    rt.env_busy = False
    if task.what == "check":
        rt.interpreter_info = task.result or ""
    else:
        rt.env_result = task.result or ""
    return None


def _start(context, target, what: str) -> None:
    global _task
    _task = _Task(target, what)
    rt = context.window_manager.da3_runtime
    rt.env_busy, rt.env_log = True, ""
    if what == "check":
        rt.interpreter_info = "Checking..."
    else:
        rt.env_result = ""
    _task.thread.start()
    if not bpy.app.timers.is_registered(_poll):
        bpy.app.timers.register(_poll, first_interval=POLL_INTERVAL)


def stop() -> None:
    """Unregister the poll timer (the thread, a daemon, finishes on its own)."""
    if bpy.app.timers.is_registered(_poll):
        bpy.app.timers.unregister(_poll)


def describe(report) -> str:
    """An envs.InterpreterReport as lines for the preferences."""
    if not report.ok:
        return report.message
    lines = [report.message]
    for dev in report.devices or []:
        total = dev.get("total_memory")
        size = f" ({total / 2**30:.1f} GiB)" if isinstance(total, (int, float)) and total > 0 else ""
        lines.append(f"device: {dev.get('name') or dev.get('id')}{size}")
    lines.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(lines)


class DA3_OT_setup_environment(Operator):
    """Create the Python environment that runs DA3 (downloads torch and friends once; takes minutes)"""

    bl_idname = "da3.setup_environment"
    bl_label = "Set up environment"

    variant: EnumProperty(
        name="torch build", items=(("PREFS", "From preferences", "The torch build chosen in the preferences"),)
        + tuple(i[:3] for i in ENV_VARIANTS),
        default="PREFS", options={"SKIP_SAVE"}, description="Which build of torch to install",
    )

    @classmethod
    def poll(cls, context):
        return not busy()

    def execute(self, context):
        from ..da3_blender.runtime import envs

        if not preferences.online_access():  # Blender's "Allow Online Access" is off: download nothing
            self.report({"ERROR"}, f"cannot set up the environment: {OFFLINE_HINT}, or choose your own Python "
                                   "(Custom interpreter)")
            return {"CANCELLED"}
        prefs = get_preferences(context)
        variant = prefs.env_variant if self.variant == "PREFS" else self.variant
        directory = environment_dir(prefs)

        from ..da3_blender.errors import DA3Error
        from ..preferences import worker_remote

        try:
            remote = worker_remote(prefs)  # Remote (SSH): the environment is made on that machine (issue 11)
        except DA3Error as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        if remote is not None:
            directory = f"{remote.cache_dir}/env on {remote.label}"

        def work(say):
            if remote is not None:
                py = envs.create_remote_environment(remote, torch_variant=variant, progress=say)
                return f"Remote environment ready: set the remote Python to {py}"
            py = envs.create_environment(directory, torch_variant=variant, progress=say)
            return f"Environment ready: {py}"

        if bpy.app.background:  # scripts: run to the end here
            try:
                text = work(print)
            except Exception as ex:
                self.report({"ERROR"}, f"environment set-up failed: {ex}")
                return {"CANCELLED"}
            context.window_manager.da3_runtime.env_result = text
            self.report({"INFO"}, text)
            return {"FINISHED"}
        _start(context, work, "setup")
        self.report({"INFO"}, f"setting up the DA3 environment in {directory} (see the preferences for progress)")
        return {"FINISHED"}


class DA3_OT_check_interpreter(Operator):
    """Check that the chosen Python can run DA3 (shows the torch version and devices)"""

    bl_idname = "da3.check_interpreter"
    bl_label = "Check Interpreter"

    @classmethod
    def poll(cls, context):
        return not busy()

    def execute(self, context):
        from ..da3_blender.runtime import envs
        from ..da3_blender.errors import DA3Error
        from ..preferences import worker_remote

        try:
            remote = worker_remote(get_preferences(context))  # Remote (SSH): check the Python there (issue 11)
        except DA3Error as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        python = remote.python if remote is not None else worker_python(get_preferences(context))
        if not python:
            self.report({"ERROR"}, "no Python interpreter set: choose the python executable first")
            return {"CANCELLED"}
        if bpy.app.background:  # scripts: answer directly
            text = describe(envs.check_interpreter(python, remote=remote))
            context.window_manager.da3_runtime.interpreter_info = text
            self.report({"INFO"}, text.splitlines()[0])
            return {"FINISHED"}
        _start(context, lambda say: describe(envs.check_interpreter(python, remote=remote)), "check")
        return {"FINISHED"}


CLASSES = (DA3_OT_setup_environment, DA3_OT_check_interpreter)
