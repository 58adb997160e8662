"""The matchmove scene in Blender (issue 27): the FLOOR world, the fused proxy mesh and the shadow catcher.

:func:`resolve_world` turns the import's geometry (``importer._validate``) into the FLOOR world when a floor is
found (``da3_blender.matchmove``), else leaves Z up with a note; :func:`build` adds the ``Mesh`` (role
``mesh``) and ``Floor`` (role ``floor``) child collections and records the world on the root collection.
"""

from __future__ import annotations

import json

import bpy
import numpy as np

from ..da3_blender import options as opt
from ..da3_blender.errors import BadInputError
from ..da3_blender.geometry import to_4x4
from ..da3_blender.matchmove import world
from .compat import set_corner_vertices, set_positions
from .conventions import SRGB8_TO_LINEAR, relative_extrinsics, up_matrix

CATCHER_MARGIN = 0.25  # the shadow catcher reaches this share of the floor points' extent beyond them


def resolve_world(pred, opts, geo: dict, in_input_world: bool) -> None:
    """Fill ``geo`` with the world actually built: ``up_axis``, ``world`` (result world -> Blender before the
    scale, 4x4), ``floor`` (Blender world, or None), ``note``; FLOOR rebases cameras on the floor."""
    geo["up_axis"], geo["note"], floor = opts.up_axis, None, None
    if opts.up_axis == "FLOOR" and in_input_world:
        geo["up_axis"], geo["note"] = opt.FALLBACK_UP_AXIS, "known poses keep their world: no floor re-orientation"
    elif opts.up_axis == "FLOOR" or opts.camera_height or opts.shadow_catcher:
        transform, found = world.floor_world(pred)
        if transform is None:
            geo["note"] = found
            if opts.up_axis == "FLOOR":
                geo["up_axis"] = opt.FALLBACK_UP_AXIS
        else:
            floor = found
            if opts.up_axis == "FLOOR":
                ext = np.eye(4)[None] if pred.extrinsics is None else to_4x4(np.asarray(pred.extrinsics, np.float64))
                geo["reference"], geo["w2c_rel"] = transform, relative_extrinsics(ext, transform)
    if geo["up_axis"] != opts.up_axis or opts.up_axis != "FLOOR":
        geo["up"] = up_matrix(geo["up_axis"])
    else:
        geo["up"] = np.eye(3)
    if opts.camera_height:
        if floor is None:
            raise BadInputError(f"a camera height needs a floor, and {geo['note'] or 'none was found'}: set the scale "
                                "instead")
        geo["scale"] = float(opts.camera_height) / floor["height"]
    up4 = np.eye(4)
    up4[:3, :3] = geo["up"]
    geo["world"] = up4 @ to_4x4(geo["reference"])
    geo["floor"] = None if floor is None else world.moved_floor(floor, geo["world"], geo["scale"])


def record(root, geo: dict) -> None:
    """The world on the root collection: da3_up_axis, da3_world (4x4 result -> Blender, row-major, and the
    scale), da3_floor (JSON: normal, offset, inlier share, RMS in Blender units) or da3_floor_note."""
    root["da3_up_axis"] = geo["up_axis"]
    root["da3_world"] = [float(v) for v in geo["world"].ravel()]
    if geo["floor"] is not None:
        root["da3_floor"] = json.dumps({k: geo["floor"][k] for k in ("normal", "offset", "inlier_share", "rms", "height")})
    if geo["note"]:
        root["da3_floor_note"] = geo["note"]


def build(pred, opts, geo, label, root, child, track, cams, scene) -> None:
    """The world on the root (:func:`record`), the proxy mesh and the shadow catcher, as asked for."""
    record(root, geo)
    if opts.mesh:
        from ..da3_blender.matchmove.fusion import mesh_of

        fused = mesh_of(pred, int(opts.mesh_max_faces)).moved(geo["world"], geo["scale"])
        obj = _mesh_object(f"{label} mesh", fused, track)
        obj.is_holdout = bool(opts.mesh_holdout)
        child(root, "mesh", track).objects.link(obj)
    if opts.shadow_catcher:
        if geo["floor"] is None:
            root["da3_shadow_catcher_note"] = f"no shadow catcher: {geo['note'] or 'no floor found'}"
            return
        obj = _catcher(f"{label} shadow catcher", geo["floor"], track)
        child(root, "floor", track).objects.link(obj)
        scene.render.film_transparent = True  # the catcher's shadows go into alpha, over the plate
        for i, cam in enumerate(cams if len(cams) == pred.num_views else []):  # stills; a shot shows its clip
            _plate_background(cam, i, pred, track)


def _mesh_object(name, mesh_data, track):
    from .materials import attribute_material

    mesh = track(bpy.data.meshes.new(name))
    verts, faces = mesh_data.vertices, mesh_data.faces
    mesh.vertices.add(len(verts))
    set_positions(mesh, np.ascontiguousarray(verts, np.float32).ravel())
    mesh.loops.add(3 * len(faces))
    set_corner_vertices(mesh, np.ascontiguousarray(faces, np.int32).ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * len(faces), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    colors = np.ones((len(verts), 4), np.float32)
    colors[:, :3] = SRGB8_TO_LINEAR[np.asarray(mesh_data.colors, np.uint8)]
    mesh.attributes.new("Col", "FLOAT_COLOR", "POINT").data.foreach_set("color", colors.ravel())
    mesh.materials.append(track(attribute_material(name, "Col")))
    obj = track(bpy.data.objects.new(name, mesh))
    obj["da3_role"] = "mesh"
    return obj


def _catcher(name, floor, track):
    """A plane on the floor over the floor points' extent plus a margin; Z = 0 in the FLOOR world."""
    normal = np.asarray(floor["normal"], np.float64)
    pts = np.asarray(floor["points"], np.float64).reshape(-1, 3)
    origin = -floor["offset"] * normal
    x = np.cross([0.0, 1.0, 0.0] if abs(normal[0]) > 0.9 else [1.0, 0.0, 0.0], normal)
    x = x / np.linalg.norm(x) if abs(normal[2]) < 0.9999 else np.array([1.0, 0.0, 0.0])
    y = np.cross(normal, x)
    local = (pts - origin) @ np.stack([x, y]).T
    lo, hi = local.min(axis=0), local.max(axis=0)
    lo, hi = lo - CATCHER_MARGIN * (hi - lo), hi + CATCHER_MARGIN * (hi - lo)
    corners = [origin + a * x + b * y for a, b in ((lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1]))]
    mesh = track(bpy.data.meshes.new(name))
    mesh.from_pydata([tuple(c) for c in corners], [], [(0, 1, 2, 3)])
    mat = track(bpy.data.materials.new(name))
    mesh.materials.append(mat)
    obj = track(bpy.data.objects.new(name, mesh))
    obj.is_shadow_catcher = True
    obj["da3_role"] = "floor"
    return obj


def _plate_background(cam, i, pred, track) -> None:
    """The view's picture behind its camera (the source file, else the processed image)."""
    if len(cam.data.background_images):
        return
    paths = pred.source_paths or []
    image = None
    if i < len(paths) and paths[i]:
        try:
            image = track(bpy.data.images.load(paths[i], check_existing=False))
        except RuntimeError:
            image = None
    if image is None and pred.processed_images is not None:
        from .planes import image_from_array

        image = track(image_from_array(f"{cam.name} plate", pred.processed_images[i]))
    if image is None:
        return
    bg = cam.data.background_images.new()
    bg.image, bg.frame_method = image, "FIT"
    cam.data.show_background_images = True
