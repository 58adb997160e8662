"""The extension's operators (thin: the work happens in the worker and in ``scene``)."""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import environment, export_camera, farm, files, matchmove, reconstruct, session

CLASSES = (reconstruct.CLASSES + files.CLASSES + environment.CLASSES + export_camera.CLASSES + farm.CLASSES
           + matchmove.CLASSES)


@persistent
def _on_load_pre(*_args):
    """Opening another file ends the modal run: stop its job and clear the progress display."""
    if session.active_run is not None:
        session.active_run.abandon()
        rt = bpy.context.window_manager.da3_runtime
        rt.running, rt.cancel_requested, rt.stage, rt.fraction = False, False, "", 0.0


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(files.menu_import)
    bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister():
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    bpy.types.TOPBAR_MT_file_import.remove(files.menu_import)
    environment.stop()
    session.shutdown()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
