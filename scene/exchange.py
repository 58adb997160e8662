"""Camera exchange: the imported cameras written with Blender's own Alembic, FBX and USD exporters, or as
Nuke files (``.nk``, ``.chan``: :mod:`.comp_export`, our writer; docs/comp.md).

``export_cameras(path, cameras=None, scene=None)`` writes ``path`` (``.abc``, ``.fbx``, ``.usd``, ``.nk``
or ``.chan``) with the
cameras of every DA3 import in the scene (or the given camera objects), over the scene's frame
range at the scene's fps (still cameras: the current frame only), and nothing else (no points,
planes or footage). The file holds what
each format can carry (measured by re-importing with Blender, ``tests/test_exchange.py``):

=========  ==============================================  ============================================
format     motion                                          lens
=========  ==============================================  ============================================
Alembic    world matrix sampled on every frame (exact to   focal length, apertures and film offsets
           float precision)                                written on every frame (a keyed lens is in
                                                           the file); Blender's own Alembic importer
                                                           reads camera data once (first frame), Nuke,
                                                           Houdini and Maya read it per frame
FBX        baked on every frame, no curve simplification  ``FocalLength`` keyed on every frame (read
           (Y up / -Z forward axis conversion, ~1e-4)      back by Blender's FBX importer); film
                                                           offsets (shifts) and apertures once, in
                                                           inches (~1e-3 mm lens)
=========  ==============================================  ============================================

The selection, active object and frame are restored afterwards; the scene is otherwise untouched.

Not every Blender has both exporters: Alembic is a build option (Debian's and some distributions'
builds leave it out) and FBX is the bundled ``io_scene_fbx`` add-on, which can be disabled or removed.
:func:`check_exporter` refuses such a format in one line, before any work, naming what is missing and
the other format (the headless ``--export-camera`` checks it before the reconstruction starts).
"""

from __future__ import annotations

import os

import bpy

from ..da3_blender.errors import BadInputError
from ..da3_blender.options import CAMERA_EXPORT_FORMATS
from . import tracking

FORMATS = {f[3]: f[1] for f in CAMERA_EXPORT_FORMATS}  # ".abc" -> "Alembic (.abc)"


def camera_format(path) -> str:
    """``".abc"`` or ``".fbx"`` from ``path``, or a one-line :class:`BadInputError`."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise BadInputError(f"camera export: {os.fspath(path)!r} must end in {' or '.join(FORMATS)} "
                            f"({', '.join(FORMATS.values())})")
    return ext


FBX_ADDON = "io_scene_fbx"


def alembic_built() -> bool:
    """Whether this Blender was built with Alembic (``bpy.app.build_options.alembic``)."""
    return bool(getattr(bpy.app.build_options, "alembic", False))


def fbx_addon_state() -> str:
    """``"enabled"`` (Blender's FBX exporter is registered), ``"disabled"`` (the add-on is there but off)
    or ``"missing"``."""
    if hasattr(bpy.types, "EXPORT_SCENE_OT_fbx"):
        return "enabled"
    import addon_utils

    return "disabled" if any(m.__name__ == FBX_ADDON for m in addon_utils.modules()) else "missing"


def exporter_problem(ext: str) -> str | None:
    """None when this Blender can write ``ext`` (".abc"/".fbx"/".usd"; ".nk"/".chan" are ours: always); else
    what is missing, in a few words."""
    if ext in (".nk", ".chan"):
        return None
    if ext == ".usd":
        return None if getattr(bpy.app.build_options, "usd", False) else "this Blender is built without USD"
    if ext == ".abc":
        return None if alembic_built() else "this Blender is built without Alembic (no Alembic exporter)"
    state = fbx_addon_state()
    if state == "enabled":
        return None
    if state == "disabled":
        return (f"the FBX exporter add-on ({FBX_ADDON}) is not enabled: enable 'FBX format' in "
                "Preferences > Add-ons")
    return f"this Blender has no FBX exporter (the {FBX_ADDON} add-on is missing)"


def check_exporter(path) -> str:
    """The camera format of ``path`` after checking this Blender can write it; one-line
    :class:`BadInputError` naming what is missing and the other format otherwise."""
    ext = camera_format(path)
    problem = exporter_problem(ext)
    if problem is None:
        return ext
    others = [e for e in FORMATS if e != ext and exporter_problem(e) is None]
    advice = f"export to a {others[0]} file ({FORMATS[others[0]]}) instead" if others else \
        "no other camera format is available either, so this Blender cannot export cameras"
    raise BadInputError(f"camera export: cannot write {os.path.basename(os.fspath(path))}: {problem}; {advice}")


def imported_cameras(scene) -> list:
    """The camera objects of every DA3 import linked to ``scene`` (image sets: one per view)."""
    found = []
    for obj in scene.objects:
        if obj.type == "CAMERA" and obj.get(tracking.TAG) and any(
                col.get("da3_role") == "cameras" for col in obj.users_collection):
            found.append(obj)
    return sorted(found, key=lambda o: o.name)


def export_cameras(path, cameras=None, *, scene=None) -> str:
    """Write ``cameras`` (default: :func:`imported_cameras`) to ``path`` (.abc or .fbx) over the
    scene's frame range; returns the absolute path. One-line errors before anything is written."""
    ext = check_exporter(path)
    scene = scene or bpy.context.scene
    cams = list(cameras) if cameras is not None else imported_cameras(scene)
    if not cams:
        raise BadInputError("camera export: there are no DA3 cameras in this scene; import a result first "
                            "(or pass the cameras to export)")
    not_cameras = [o.name for o in cams if getattr(o, "type", None) != "CAMERA"]
    if not_cameras:
        raise BadInputError(f"camera export: {', '.join(not_cameras)} are not cameras")
    view_layer = scene.view_layers[0] if bpy.context.scene != scene else bpy.context.view_layer
    view_layer.update()  # objects just built by a script are in the layer only after an update
    missing = [o.name for o in cams if o.name not in view_layer.objects]
    if missing:
        raise BadInputError(f"camera export: {', '.join(missing)} are not in the scene {scene.name!r}")
    out = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise BadInputError(f"camera export: the folder {folder} does not exist; create it first")

    animated = any(idb.animation_data is not None and idb.animation_data.action is not None
                   for o in cams for idb in (o, o.data))
    start, end = (scene.frame_start, scene.frame_end) if animated else (scene.frame_current, scene.frame_current)
    if ext in (".nk", ".chan"):  # our own writer (scene/comp_export.py)
        from .comp_export import write_nuke_file

        return write_nuke_file(out, cams, scene, start, end)
    selected = [o for o in view_layer.objects if o.select_get(view_layer=view_layer)]
    active, frame = view_layer.objects.active, scene.frame_current
    try:
        for obj in view_layer.objects:
            obj.select_set(False, view_layer=view_layer)
        for obj in cams:
            obj.select_set(True, view_layer=view_layer)
        view_layer.objects.active = cams[0]
        with bpy.context.temp_override(scene=scene, view_layer=view_layer):
            if ext == ".abc":
                result = bpy.ops.wm.alembic_export(
                    filepath=out, start=start, end=end, selected=True, flatten=False,
                    xsamples=1, gsamples=1, as_background_job=False, init_scene_frame_range=False,
                    evaluation_mode="RENDER", export_custom_properties=False)
            elif ext == ".usd":  # Blender's USD exporter: the cameras only, Y up as USD expects by default
                result = bpy.ops.wm.usd_export(
                    filepath=out, selected_objects_only=True, export_animation=animated, export_cameras=True,
                    export_meshes=False, export_lights=False, export_curves=False, export_points=False,
                    export_volumes=False, export_materials=False, export_hair=False, export_armatures=False,
                    export_shapekeys=False, export_custom_properties=False, evaluation_mode="RENDER")
            else:
                result = bpy.ops.export_scene.fbx(
                    filepath=out, use_selection=True, object_types={"CAMERA"}, bake_anim=animated,
                    bake_anim_use_all_bones=False, bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
                    bake_anim_force_startend_keying=True, bake_anim_step=1.0, bake_anim_simplify_factor=0.0,
                    use_custom_props=False, apply_unit_scale=True, global_scale=1.0, add_leaf_bones=False)
    finally:
        for obj in view_layer.objects:
            obj.select_set(obj in selected, view_layer=view_layer)
        view_layer.objects.active = active
        scene.frame_set(frame)
    if result != {"FINISHED"} or not os.path.isfile(out):
        raise BadInputError(f"camera export: Blender's {FORMATS[ext]} exporter did not write {out}")
    return out
