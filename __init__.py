"""DA3 for Blender: photos or a video to a 3D scene with Depth Anything 3.

The extension's entry point. The model runs in a separate Python (the worker, see
``da3_blender.worker``), so Blender itself never imports torch. The Blender modules are imported
in :func:`register`, so importing this package (pytest collects the repository root as one) needs
neither bpy nor torch.
"""

from __future__ import annotations

import atexit


def _modules():
    from . import operators, panels, preferences, properties

    return (preferences, properties, operators, panels)


def _shutdown_worker():
    from .operators import session

    session.shutdown()


def register():
    for module in _modules():
        module.register()
    atexit.register(_shutdown_worker)


def unregister():
    atexit.unregister(_shutdown_worker)
    for module in reversed(_modules()):
        module.unregister()
