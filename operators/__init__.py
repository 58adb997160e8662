"""The extension's operators (thin: the work happens in the worker and in ``scene``)."""

from __future__ import annotations

import bpy

from . import environment, files, reconstruct, session

CLASSES = reconstruct.CLASSES + files.CLASSES + environment.CLASSES


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    environment.stop()
    session.shutdown()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
