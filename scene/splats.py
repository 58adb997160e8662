"""3D Gaussians (DA3-GIANT / NESTED ``infer_gs``) as Blender geometry: an APPROXIMATION of splatting.

Each kept Gaussian is one vertex of a mesh carrying its attributes (bulk writes): ``Col``
(FLOAT_COLOR, scene-linear, from the DC harmonic ``0.5 + C0 * f_dc``), ``opacity`` (FLOAT),
``scale`` (FLOAT_VECTOR, standard deviations in scene units) and ``rotation`` (QUATERNION, w x y z).
A Geometry Nodes modifier deletes Gaussians below its "Min Opacity" input and instances an ico
sphere on every vertex, rotated by ``rotation`` and scaled by ``scale * Size`` ("Size": the ellipsoid
radius in standard deviations, 2 by default; "Detail": the sphere's subdivisions, 1 by default).
The material shows ``Col`` (emission, as the points and planes) blended with transparency by
``opacity`` times a soft fall-off towards the ellipsoid's rim, so overlapping ellipsoids build up
like splats. It renders in EEVEE and Cycles, but it is not a
Gaussian rasteriser: real splatting integrates each Gaussian's density along the ray, sorted; this
draws semi-transparent ellipsoids. Good for previews, layout and fly-throughs of the animated camera.

Which Gaussians are kept is the ``gs_ply`` export's choice (border and depth-percentile pruning,
``da3_blender.results.gaussians.per_pixel_mask``), then a seeded subset above ``max_count``. Positions, axes
and sizes go through the importer's conventions (first camera at the origin, up axis, scale).
"""

from __future__ import annotations

import bpy
import numpy as np

from ..da3_blender.results.gaussians import per_pixel_mask
from ..da3_blender.geometry import quaternion_to_rotation, rotation_to_quaternion, to_4x4
from .compat import ensure_node_tree, set_positions
from .conventions import srgb_to_linear
from .points import delete_below, set_group_input

GROUP_INPUTS = ("Min Opacity", "Size", "Detail")
DEFAULT_SIZE = 2.0  # ellipsoid radius in standard deviations
DEFAULT_DETAIL = 1  # ico-sphere subdivisions: 20 triangles per Gaussian (2: 80; a million Gaussians add up)


def splat_data(pred, up, scale, *, max_count=0, seed=0, reference=None) -> dict[str, np.ndarray]:
    """The kept Gaussians in Blender's world: ``positions`` (M,3), ``rotations`` (M,4) w x y z,
    ``scales`` (M,3), ``opacity`` (M,), ``colors`` (M,4) linear RGBA, ``index`` (M,) into
    ``pred.gaussians``; all float32 but ``index``."""
    gs = pred.gaussians
    index = np.flatnonzero(per_pixel_mask(pred.depth))
    if max_count and index.size > max_count:
        keep = np.zeros(index.size, dtype=bool)  # a mask keeps the pixel order
        keep[np.random.default_rng(seed).choice(index.size, int(max_count), replace=False)] = True
        index = index[keep]
    g = gs.subset(index)
    w2c0 = to_4x4(pred.extrinsics[0]) if pred.extrinsics is not None else np.eye(4)
    if reference is not None:  # the world the importer builds in (known poses: the given cameras' world)
        w2c0 = to_4x4(reference)
    rot = np.asarray(up, np.float64) @ w2c0[:3, :3]  # prediction world -> Blender world: s (C R0 x + C t0)
    shift = np.asarray(up, np.float64) @ w2c0[:3, 3]
    positions = scale * (g.means.astype(np.float64) @ rot.T + shift)
    axes = rot @ quaternion_to_rotation(g.rotations)
    colors = np.ones((len(g), 4), np.float32)
    colors[:, :3] = srgb_to_linear(g.colors())
    return {"positions": positions.astype(np.float32), "rotations": rotation_to_quaternion(axes).astype(np.float32),
            "scales": (scale * g.scales).astype(np.float32), "opacity": g.opacities, "colors": colors, "index": index}


def splats_mesh(name: str, data: dict):
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(data["positions"]))
    set_positions(mesh, np.ascontiguousarray(data["positions"], np.float32).ravel())
    attrs = mesh.attributes
    attrs.new("Col", "FLOAT_COLOR", "POINT").data.foreach_set("color", np.ascontiguousarray(data["colors"]).ravel())
    attrs.new("opacity", "FLOAT", "POINT").data.foreach_set("value", np.ascontiguousarray(data["opacity"], np.float32))
    attrs.new("scale", "FLOAT_VECTOR", "POINT").data.foreach_set("vector", np.ascontiguousarray(data["scales"]).ravel())
    attrs.new("rotation", "QUATERNION", "POINT").data.foreach_set("value", np.ascontiguousarray(data["rotations"]).ravel())
    mesh.update()
    return mesh


def splat_material(name: str):
    """Emission ``Col`` over transparency, alpha = instancer ``opacity`` x (1 - facing)^0.5 (soft rim)."""
    mat = bpy.data.materials.new(name)
    ensure_node_tree(mat)
    if hasattr(mat, "surface_render_method"):  # EEVEE (4.2+): order-independent transparency
        mat.surface_render_method = "DITHERED"
    elif hasattr(mat, "blend_method"):
        mat.blend_method = "HASHED"
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    mix = nodes.new("ShaderNodeMixShader")
    clear = nodes.new("ShaderNodeBsdfTransparent")
    emit = nodes.new("ShaderNodeEmission")
    col = nodes.new("ShaderNodeAttribute")
    col.attribute_type, col.attribute_name = "INSTANCER", "Col"
    opacity = nodes.new("ShaderNodeAttribute")
    opacity.attribute_type, opacity.attribute_name = "INSTANCER", "opacity"
    facing = nodes.new("ShaderNodeLayerWeight")
    facing.inputs["Blend"].default_value = 0.5
    rim = nodes.new("ShaderNodeMath")
    rim.operation = "SUBTRACT"
    rim.inputs[0].default_value = 1.0
    soft = nodes.new("ShaderNodeMath")
    soft.operation = "SQRT"
    alpha = nodes.new("ShaderNodeMath")
    alpha.operation, alpha.use_clamp = "MULTIPLY", True
    links.new(col.outputs["Color"], emit.inputs["Color"])
    links.new(facing.outputs["Facing"], rim.inputs[1])
    links.new(rim.outputs["Value"], soft.inputs[0])
    links.new(opacity.outputs["Fac"], alpha.inputs[0])
    links.new(soft.outputs["Value"], alpha.inputs[1])
    links.new(alpha.outputs["Value"], mix.inputs["Fac"])
    links.new(clear.outputs["BSDF"], mix.inputs[1])
    links.new(emit.outputs["Emission"], mix.inputs[2])
    links.new(mix.outputs["Shader"], out.inputs["Surface"])
    for i, node in enumerate((col, opacity, facing, rim, soft, alpha, clear, emit, mix, out)):
        node.location = (200 * (i % 5) - 900, -250 * (i // 5))
    return mat


def splats_node_group(name: str, material):
    """Geometry Nodes: delete opacity < "Min Opacity", an ico sphere ("Detail" subdivisions)
    instanced per vertex with the ``rotation`` attribute and ``scale * Size``, material set on the sphere."""
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    if hasattr(group, "is_modifier"):
        group.is_modifier = True
    face = group.interface
    face.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    thr = face.new_socket("Min Opacity", in_out="INPUT", socket_type="NodeSocketFloat")
    thr.default_value, thr.min_value, thr.max_value = 0.0, 0.0, 1.0
    size = face.new_socket("Size", in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value, size.min_value = DEFAULT_SIZE, 0.0
    detail = face.new_socket("Detail", in_out="INPUT", socket_type="NodeSocketInt")
    detail.default_value, detail.min_value, detail.max_value = DEFAULT_DETAIL, 1, 5
    face.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    g_in, g_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")

    def named(attr_name, data_type):
        node = nodes.new("GeometryNodeInputNamedAttribute")
        node.data_type = data_type
        node.inputs["Name"].default_value = attr_name
        return node

    opacity, less, delete = delete_below(group, g_in, "opacity", "Min Opacity")
    rotation, scale = named("rotation", "QUATERNION"), named("scale", "FLOAT_VECTOR")
    sphere = nodes.new("GeometryNodeMeshIcoSphere")
    sphere.inputs["Radius"].default_value = 1.0
    links.new(g_in.outputs["Detail"], sphere.inputs["Subdivisions"])
    smooth = nodes.new("GeometryNodeSetShadeSmooth")
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = material
    sized = nodes.new("ShaderNodeVectorMath")
    sized.operation = "SCALE"
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    links.new(sphere.outputs["Mesh"], smooth.inputs["Geometry"])
    links.new(smooth.outputs["Geometry"], set_mat.inputs["Geometry"])
    links.new(scale.outputs["Attribute"], sized.inputs[0])
    links.new(g_in.outputs["Size"], sized.inputs["Scale"])
    links.new(delete.outputs["Geometry"], instance.inputs["Points"])
    links.new(set_mat.outputs["Geometry"], instance.inputs["Instance"])
    links.new(rotation.outputs["Attribute"], instance.inputs["Rotation"])
    links.new(sized.outputs["Vector"], instance.inputs["Scale"])
    links.new(instance.outputs["Instances"], g_out.inputs["Geometry"])
    for i, node in enumerate((g_in, opacity, less, delete, sphere, smooth, set_mat, rotation, scale, sized, instance, g_out)):
        node.location = (220 * (i % 6) - 700, -220 * (i // 6))
    return group


def build_splats(pred, label: str, up, scale, collection, track, *, max_count=0, seed=0, reference=None):
    """Create the splat object of ``pred.gaussians`` in ``collection``; every data-block goes through
    ``track`` (the importer removes them all if anything fails)."""
    data = splat_data(pred, up, scale, max_count=max_count, seed=seed, reference=reference)
    name = f"{label} splats"
    mat = track(splat_material(f"DA3 {label} splats"))
    group = track(splats_node_group(f"DA3 {label} splats", mat))
    mesh = track(splats_mesh(name, data))
    mesh.materials.append(mat)
    obj = track(bpy.data.objects.new(name, mesh))
    mod = obj.modifiers.new("DA3 Splats", "NODES")
    mod.node_group = group
    set_group_input(mod, "Size", DEFAULT_SIZE)
    set_group_input(mod, "Min Opacity", 0.0)
    obj["da3_gaussians"] = len(data["positions"])
    collection.objects.link(obj)
    return obj
