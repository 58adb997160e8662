"""DA3 for Blender core: Depth Anything 3 inference without bpy.

``import da3_blender`` stays light (no torch): ``DepthAnything3`` is imported on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it, the manifest must match (tested)

__all__ = ["DepthAnything3", "Prediction", "__version__"]


def __getattr__(name: str):
    if name == "DepthAnything3":
        from .api import DepthAnything3

        return DepthAnything3
    if name == "Prediction":
        from .prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'da3_blender' has no attribute {name!r}")
