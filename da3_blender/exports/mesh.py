"""``mesh/mesh.glb`` and ``mesh/mesh.ply``: the fused proxy mesh (issue 27, :mod:`da3_blender.matchmove.fusion`)."""

from __future__ import annotations

import os

from ..files import make_folder
from ..matchmove.fusion import mesh_of
from ..matchmove.mesh import write_glb, write_ply


def export_mesh(pred, export_dir: str) -> list[str]:
    """The result's fused mesh (fused now if it has none), in the result's world (or the one it was moved to)."""
    mesh = mesh_of(pred)
    folder = make_folder(os.path.join(os.fspath(export_dir), "mesh"))
    return [write_glb(mesh, os.path.join(folder, "mesh.glb")), write_ply(mesh, os.path.join(folder, "mesh.ply"))]
