"""Blender-version differences, in one place.

Blender 4.4 introduced layered actions (``Action.fcurve_ensure_for_datablock``) and 5.0 removed
``Action.fcurves``; 4.2/4.3 only have the latter.
"""

from __future__ import annotations

import numpy as np

INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}


def ensure_node_tree(material) -> None:
    """Give ``material`` a node tree (5.0 always has one and deprecates ``use_nodes``)."""
    if material.node_tree is None:
        material.use_nodes = True


def set_positions(mesh, flat_xyz: np.ndarray) -> None:
    """Write vertex positions (flat float32) through the ``position`` attribute (~50x faster than
    ``vertices.foreach_set("co")`` in 5.0); vertices must already be added."""
    attr = mesh.attributes.get("position")
    if attr is not None:
        attr.data.foreach_set("vector", flat_xyz)
    else:
        mesh.vertices.foreach_set("co", flat_xyz)


def set_corner_vertices(mesh, vertex_indices: np.ndarray) -> None:
    """Write each loop's vertex (int32) through the ``.corner_vert`` attribute when there is one."""
    attr = mesh.attributes.get(".corner_vert")
    if attr is not None:
        attr.data.foreach_set("value", vertex_indices)
    else:
        mesh.loops.foreach_set("vertex_index", vertex_indices)


def set_edges(mesh, edge_vertices: np.ndarray, corner_edges: np.ndarray) -> bool:
    """Add edges (flat int32 vertex pairs) and each loop's edge through the ``.edge_verts`` and
    ``.corner_edge`` attributes; False (nothing done) where those do not exist."""
    if mesh.attributes.get(".corner_edge") is None:
        return False
    mesh.edges.add(len(edge_vertices) // 2)
    verts = mesh.attributes.get(".edge_verts")
    if verts is None:
        mesh.edges.foreach_set("vertices", edge_vertices)
    else:
        verts.data.foreach_set("value", edge_vertices)
    mesh.attributes[".corner_edge"].data.foreach_set("value", corner_edges)
    return True


def set_uvs(mesh, name: str, loop_uvs: np.ndarray) -> None:
    """Create the UV map ``name`` and write per-loop UVs (flat float32). A 2D float face-corner
    attribute is a UV map (3.5+); ``uv_layers.new`` would first compute default UVs (~10x slower)."""
    mesh.attributes.new(name, "FLOAT2", "CORNER").data.foreach_set("vector", loop_uvs)


def assign_action(idblock, action) -> None:
    """Make ``action`` the active action of ``idblock`` (an object or object data)."""
    anim = idblock.animation_data or idblock.animation_data_create()
    anim.action = action


def fcurve(action, idblock, data_path: str, index: int = 0):
    """The F-curve of ``idblock.data_path[index]`` in ``action`` (assigned to ``idblock``), created if needed."""
    if hasattr(action, "fcurve_ensure_for_datablock"):  # 4.4+
        return action.fcurve_ensure_for_datablock(idblock, data_path, index=index)
    found = action.fcurves.find(data_path, index=index)  # 4.2, 4.3
    return found or action.fcurves.new(data_path, index=index)


def action_fcurves(action, idblock=None) -> list:
    """All F-curves of ``action`` (for ``idblock``'s slot on layered actions)."""
    if hasattr(action, "layers") and len(action.layers):
        slot = idblock.animation_data.action_slot if idblock is not None and idblock.animation_data else None
        curves = []
        for layer in action.layers:
            for strip in layer.strips:
                for bag in strip.channelbags:
                    if slot is None or bag.slot == slot:
                        curves.extend(bag.fcurves)
        return curves
    return list(getattr(action, "fcurves", []))


def set_keyframes(curve, frames: np.ndarray, values: np.ndarray, interpolation: str = "LINEAR") -> None:
    """Replace ``curve``'s keys with (frames, values) in bulk (no per-key Python calls)."""
    n = len(frames)
    points = curve.keyframe_points
    if len(points):
        points.clear()
    points.add(n)
    co = np.empty((n, 2), dtype=np.float32)
    co[:, 0] = frames
    co[:, 1] = values
    points.foreach_set("co", co.ravel())
    points.foreach_set("interpolation", np.full(n, INTERPOLATION[interpolation], dtype=np.int32))
    curve.update()
