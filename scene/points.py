"""Point clouds: one mesh of vertices (fused or one per view) drawn by a Geometry Nodes modifier.

Points sit at pixel centres (``conventions.lift``, the convention of ``geometry.unproject_depth``)
in the Blender world of :mod:`.conventions`. Vertex attributes: ``Col`` (FLOAT_COLOR, scene-linear, from the processed
image), ``conf`` (FLOAT), ``view`` (INT). The modifier's node group deletes points whose ``conf``
is below its "Confidence Threshold" input (live), turns vertices into points of "Radius" and sets
the material, which reads ``Col``.
"""

from __future__ import annotations

import bpy
import numpy as np

from .compat import set_positions
from .conventions import SRGB8_TO_LINEAR, lift, pixel_to_world

GROUP_INPUTS = ("Confidence Threshold", "Radius")
PERCENTILE_SAMPLE = 2_000_000  # the confidence cut is estimated from this many values at most


def random_pixels(mask: np.ndarray, count: int, rng) -> np.ndarray:
    """Flat indices of ``count`` pixels of ``mask`` drawn uniformly without replacement, in order (all
    of them when there are no more). Over many pixels (a long shot: tens of millions) a coin flip per
    pixel first keeps about twice ``count``, and the exact draw runs on those (still a uniform draw)
    instead of listing and permuting every pixel."""
    total = int(np.count_nonzero(mask))
    if not count or total <= count:
        return np.flatnonzero(mask)
    if total > 8 * count:
        pool = np.flatnonzero(mask & (rng.random(mask.shape, dtype=np.float32) < 2.0 * count / total))
        if pool.size < count:  # (practically never) too few heads: draw from every pixel
            pool = np.flatnonzero(mask)
    else:
        pool = np.flatnonzero(mask)
    keep = np.zeros(pool.size, dtype=bool)  # a mask keeps the order without a sort
    keep[rng.choice(pool.size, count, replace=False)] = True
    return pool[keep]


def point_data(pred, k_proc, w2c_rel, up, scale, *, conf_percentile=40.0, max_points=0, stride=1,
               skip_sky=True, seed=0) -> dict[str, np.ndarray]:
    """Select pixels and lift them. Returns ``positions`` (M,3) float32 Blender world, ``colors``
    (M,4) float32 linear, ``conf`` (M,) float32, ``view`` (M,) int32, ``pixel`` (M,) flat pixel index."""
    depth = pred.depth
    n, h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    if stride > 1:
        grid = np.zeros((h, w), dtype=bool)
        grid[::stride, ::stride] = True
        valid &= grid
    if skip_sky and pred.sky is not None:
        valid &= ~pred.sky
    if pred.conf is not None and conf_percentile > 0:
        kept = pred.conf[valid]
        if kept.size > PERCENTILE_SAMPLE:  # long results: the percentile of an evenly spaced sample
            kept = kept[::kept.size // PERCENTILE_SAMPLE]
        if kept.size:
            valid &= pred.conf >= np.percentile(kept, conf_percentile)
    flat = random_pixels(valid, int(max_points or 0), np.random.default_rng(seed))
    view, pixel = np.divmod(flat, h * w)
    view = view.astype(np.int32)
    positions = np.empty((flat.size, 3), dtype=np.float32)
    bounds = np.searchsorted(view, np.arange(n + 1))
    m_all, b_all = pixel_to_world(k_proc, w2c_rel, up, scale)  # every view at once (long shots: 1000s of views)
    for i in range(n):
        sel = pixel[bounds[i]:bounds[i + 1]]
        if sel.size:
            rows, cols = np.divmod(sel, w)
            positions[bounds[i]:bounds[i + 1]] = lift(cols + 0.5, rows + 0.5, depth[i].reshape(-1)[sel], m_all[i], b_all[i])
    colors = np.empty((flat.size, 4), dtype=np.float32)
    colors[:, 3] = 1.0
    if pred.processed_images is not None:
        colors[:, :3] = SRGB8_TO_LINEAR[pred.processed_images.reshape(-1, 3)[flat]]
    else:
        colors[:, :3] = 0.5
    conf = pred.conf.reshape(-1)[flat].astype(np.float32) if pred.conf is not None else np.ones(flat.size, np.float32)
    return {"positions": positions, "colors": colors, "conf": conf, "view": view, "pixel": pixel}


def points_mesh(name: str, positions, colors, conf, view):
    """A vertex-only mesh with the ``Col``, ``conf`` and ``view`` point attributes (bulk writes)."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(positions))
    set_positions(mesh, np.ascontiguousarray(positions, dtype=np.float32).ravel())
    mesh.attributes.new("Col", "FLOAT_COLOR", "POINT").data.foreach_set("color", np.ascontiguousarray(colors, np.float32).ravel())
    mesh.attributes.new("conf", "FLOAT", "POINT").data.foreach_set("value", np.ascontiguousarray(conf, np.float32))
    mesh.attributes.new("view", "INT", "POINT").data.foreach_set("value", np.ascontiguousarray(view, np.int32))
    mesh.update()
    return mesh


def points_node_group(name: str, material):
    """Geometry Nodes: delete conf < threshold, Mesh to Points (radius), Set Material."""
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    if hasattr(group, "is_modifier"):  # listed in the modifier's node-group menu (4.0+)
        group.is_modifier = True
    face = group.interface
    face.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    thr = face.new_socket("Confidence Threshold", in_out="INPUT", socket_type="NodeSocketFloat")
    thr.default_value, thr.min_value = 0.0, 0.0
    rad = face.new_socket("Radius", in_out="INPUT", socket_type="NodeSocketFloat")
    rad.default_value, rad.min_value = 0.005, 0.0
    face.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    g_in, g_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    attr, less, delete = delete_below(group, g_in, "conf", "Confidence Threshold")
    to_points = nodes.new("GeometryNodeMeshToPoints")
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = material
    links.new(delete.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(g_in.outputs["Radius"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], g_out.inputs["Geometry"])
    for i, node in enumerate((g_in, attr, less, delete, to_points, set_mat, g_out)):
        node.location = (220 * i - 700, 0)
    return group


def delete_below(group, g_in, attribute: str, threshold: str):
    """The one Geometry Nodes threshold: points whose float ``attribute`` is below the group input
    ``threshold`` are deleted (the group's Geometry input goes in). Returns the (named attribute,
    compare, delete) nodes; the delete node's Geometry output is the kept points."""
    nodes, links = group.nodes, group.links
    attr = nodes.new("GeometryNodeInputNamedAttribute")
    attr.data_type = "FLOAT"
    attr.inputs["Name"].default_value = attribute
    less = nodes.new("FunctionNodeCompare")
    less.data_type, less.operation = "FLOAT", "LESS_THAN"
    delete = nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"
    links.new(attr.outputs["Attribute"], less.inputs[0])
    links.new(g_in.outputs[threshold], less.inputs[1])
    links.new(g_in.outputs["Geometry"], delete.inputs["Geometry"])
    links.new(less.outputs["Result"], delete.inputs["Selection"])
    return attr, less, delete


def set_group_input(modifier, name: str, value) -> None:
    """Set a Geometry Nodes modifier input by its interface name (Blender 5.2+: ``modifier.properties.inputs``,
    where the modifier no longer holds ID properties; before: ``modifier[identifier]``)."""
    for item in modifier.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            inputs = getattr(getattr(modifier, "properties", None), "inputs", None)
            if inputs is not None:
                getattr(inputs, item.identifier).value = value
            else:
                modifier[item.identifier] = value
            return
    raise KeyError(name)


def points_object(name: str, mesh, group, material, radius: float):
    obj = bpy.data.objects.new(name, mesh)
    mesh.materials.append(material)
    mod = obj.modifiers.new("DA3 Points", "NODES")
    mod.node_group = group
    set_group_input(mod, "Radius", float(radius))
    set_group_input(mod, "Confidence Threshold", 0.0)
    return obj
