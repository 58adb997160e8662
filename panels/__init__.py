"""The DA3 sidebar panel (3D View > Sidebar > DA3): Input, Model, Options, Long shots, Build (with
Export), and the Reconstruct button with its progress."""

from __future__ import annotations

import os

import bpy
from bpy.types import Panel, UIList

from ..da3_blender import options as opt
from ..operators.known_poses import is_animated  # issue 17: one animated camera = a pose per frame number
from ..preferences import OFFLINE_HINT, _prop, get_preferences, online_access, user_dir, wrap_lines
from ..properties import CUSTOM_MODEL, model_info



class _Sidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DA3"


class _Sub(_Sidebar):
    bl_parent_id = "DA3_PT_main"

    def layout_enabled(self, context):
        self.layout.enabled = not context.window_manager.da3_runtime.running


def draw_wrapped(layout, context, text: str, icon: str = "NONE", alert: bool = False) -> None:
    col = layout.column(align=True)
    col.alert = alert
    for i, line in enumerate(wrap_lines(context, text)):
        col.label(text=line, icon=icon if i == 0 else ("BLANK1" if icon != "NONE" else "NONE"))


def _ordinal(n: int) -> str:
    return {1: "", 2: "2nd ", 3: "3rd "}.get(n, f"{n}th ")


def planes_rule(data) -> str:
    """What the long-shot plane settings do, in words."""
    every = f"a depth plane for every {_ordinal(data.planes_every)}view" if data.planes_every > 1 \
        else "a depth plane for every view"
    if data.planes_max_views:
        return f"{every.capitalize()}; none when the result has more than {data.planes_max_views} views"
    return every.capitalize()


def draw_import_settings(layout, data, long_shots: bool = True) -> None:
    """The import settings (the Build panel and the import operator's redo panel draw the same; the
    panel shows the long-shot plane settings in its Long Shots section)."""
    col = layout.column(heading="Create")
    col.prop(data, "build_points")
    col.prop(data, "build_planes")
    col.prop(data, "build_cameras")
    col = layout.column(align=True)
    col.active = data.build_points
    col.prop(data, "conf_percentile")
    col.prop(data, "max_points")
    col.prop(data, "point_stride")
    col.prop(data, "fuse_points")
    col = layout.column(align=True)
    col.active = data.build_planes
    col.prop(data, "plane_stride")
    col.prop(data, "plane_texture")
    if data.plane_texture == "original":
        col.prop(data, "pack_images")
    col.prop(data, "plane_edge_threshold")
    if long_shots:
        col.prop(data, "planes_every")
        col.prop(data, "planes_max_views")
    col = layout.column(align=True)
    col.active = data.build_cameras
    col.prop(data, "fixed_intrinsics")
    col.prop(data, "interpolation")
    layout.prop(data, "up_axis")
    layout.prop(data, "standard_view_transform")
    row = layout.row(align=True)
    row.prop(data, "scale_mode")
    if data.scale_mode == "FACTOR":
        row.prop(data, "scale_factor", text="")
    draw_matchmove_settings(layout, data)


def draw_matchmove_settings(layout, data) -> None:
    """Issue 27: the floor's scale, the proxy mesh and the shadow catcher."""
    col = layout.column(heading="Matchmove")
    col.prop(data, "camera_height")
    col.prop(data, "shadow_catcher")
    col.prop(data, "build_mesh")
    sub = col.column(align=True)
    sub.active = data.build_mesh
    sub.prop(data, "mesh_max_faces")
    sub.prop(data, "mesh_holdout")


class DA3_UL_images(UIList):
    bl_idname = "DA3_UL_images"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        name = os.path.basename(item.filepath) or item.filepath
        layout.label(text=name, icon="IMAGE_DATA" if os.path.isfile(bpy.path.abspath(item.filepath)) else "ERROR")


class DA3_PT_main(_Sidebar, Panel):
    bl_idname = "DA3_PT_main"
    bl_label = "Depth Anything 3"

    def draw(self, context):
        layout = self.layout
        runtime = context.window_manager.da3_runtime
        if runtime.running:
            stage = runtime.stage.capitalize() or "Starting"
            text = f"{stage}: {runtime.message}" if runtime.message else stage
            layout.progress(factor=runtime.fraction, type="BAR", text=text)
            row = layout.row()
            row.enabled = not runtime.cancel_requested
            row.operator("da3.cancel", text="Cancelling..." if runtime.cancel_requested else "Cancel", icon="CANCEL")
            return
        row = layout.row()
        row.scale_y = 1.5
        row.operator("da3.reconstruct", text="Reconstruct", icon="PLAY")
        if runtime.error:
            draw_wrapped(layout, context, runtime.error, icon="ERROR", alert=True)
        elif runtime.summary:
            draw_wrapped(layout, context, runtime.summary, icon="CHECKMARK")
            if runtime.warning:
                draw_wrapped(layout, context, runtime.warning, icon="ERROR")
        if not online_access():
            draw_wrapped(layout, context, OFFLINE_HINT, icon="INTERNET_OFFLINE")
        row = layout.row(align=True)
        row.operator("da3.import_result", text="Import Result", icon="IMPORT")
        row.operator("da3.unload_model", text="Unload Model", icon="X")
        row = layout.row(align=True)  # issue 27: the tracker's overrides, on the selected points
        row.operator("da3.set_floor", text="Set Floor", icon="AXIS_TOP")
        row.operator("da3.set_scale", text="Set Scale", icon="DRIVER_DISTANCE")
        layout.operator("da3.submit_flamenco", icon="NETWORK_DRIVE")  # render farm (issue 20)


class DA3_PT_input(_Sub, Panel):
    bl_idname = "DA3_PT_input"
    bl_label = "Input"

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        layout.row().prop(s, "input_mode", expand=True)
        if s.input_mode == "IMAGES":
            row = layout.row()
            row.template_list("DA3_UL_images", "", s, "images", s, "images_index", rows=3)
            col = row.column(align=True)
            col.operator("da3.add_images", text="", icon="ADD")
            col.operator("da3.remove_image", text="", icon="REMOVE")
            col.operator("da3.clear_images", text="", icon="TRASH")
            layout.label(text=f"{len(s.images)} image(s)")
        elif s.input_mode == "FOLDER":
            layout.prop(s, "folder")
            layout.row().prop(s, "folder_mode", expand=True)  # issue 17: a numbered folder as a shot or stills
            if s.folder_mode != "stills":
                draw_shot_settings(layout, s, sequence=True)
        else:
            layout.prop(s, "video" if s.input_mode == "VIDEO" else "sequence")
            draw_shot_settings(layout, s, sequence=s.input_mode == "SEQUENCE")


def draw_shot_settings(layout, s, sequence: bool) -> None:
    """Sampling, frame numbers, rate and plate colours of a video or an image sequence (issue 17)."""
    col = layout.column(align=True)
    col.prop(s, "video_fps")
    if s.video_fps == opt.EVERY_FRAME_FPS:
        col.label(text="Every frame, each keyed", icon="INFO")
    else:
        col.label(text="Sampled: the camera is interpolated between keys", icon="INFO")
    row = col.row(align=True)
    row.prop(s, "video_start")
    row.prop(s, "video_end")
    col.prop(s, "max_frames")
    col = layout.column(align=True)
    if sequence:
        col.prop(s, "frame_rate")
        col.prop(s, "input_colorspace")
    else:
        col.prop(s, "frame_start")


class DA3_PT_model(_Sub, Panel):
    bl_idname = "DA3_PT_model"
    bl_label = "Model"

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        layout.prop(s, "model", text="")
        if s.model == CUSTOM_MODEL:
            _prop(layout, s, "custom_model", placeholder="owner/name or /path/to/folder")
        else:
            info = model_info(s.model)
            col = layout.column(align=True)
            col.label(text=f"{info['params']} parameters, weights {info['licence']}", icon="INFO")
            can = f"{info['depth'].capitalize()} depth" + (", camera poses" if info["pose"] else ", no camera poses")
            col.label(text=can, icon="BLANK1")
            if "NC" in info["licence"]:
                col.label(text="Non-commercial licence", icon="BLANK1")
        col = layout.column(align=True)
        col.prop(s, "process_res")
        col.prop(s, "process_res_method")
        if s.process_res_method.startswith("lower_bound"):
            col.label(text="Shortest side: more pixels, more memory", icon="ERROR")
        layout.prop(s, "device")
        layout.prop(s, "compute_dtype")


class DA3_PT_options(_Sub, Panel):
    bl_idname = "DA3_PT_options"
    bl_label = "Options"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        layout.prop(s, "use_ray_pose")
        layout.prop(s, "infer_gs")
        row = layout.row(align=True)
        row.prop(s, "refine_cameras")
        sub = row.row(align=True)
        sub.active = s.refine_cameras
        sub.prop(s, "refine_lens", text="")
        sub.prop(s, "refine_motion", text="")
        layout.prop(s, "ref_view_strategy")
        layout.prop(s, "use_selected_cameras")
        if s.use_selected_cameras:
            cams = [ob for ob in context.selected_objects if ob.type == "CAMERA"]
            how = "a pose per frame number" if len(cams) == 1 and is_animated(cams[0]) else "matched by name"
            layout.label(text=f"{len(cams)} camera(s) selected, {how}", icon="CAMERA_DATA")


class DA3_PT_long_shots(_Sub, Panel):
    bl_idname = "DA3_PT_long_shots"
    bl_label = "Long Shots"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        draw_wrapped(layout, context, "Many frames are processed in overlapping chunks, each aligned to the "
                                      "previous ones: time grows in step with the shot, memory stays bounded.",
                     icon="INFO")
        layout.prop(s, "chunking")
        col = layout.column(align=True)
        col.active = s.chunking != "OFF"
        col.prop(s, "chunk_size", text="Chunk size (0: auto)")
        col.prop(s, "chunk_overlap", text="Overlap (0: auto)")
        col.prop(s, "chunk_align")
        col.prop(s, "loop_closure")
        col = layout.column(align=True)
        col.label(text="Depth planes", icon="MESH_GRID")
        col.prop(s, "planes_every")
        col.prop(s, "planes_max_views")
        draw_wrapped(col, context, planes_rule(s))


class DA3_PT_build(_Sub, Panel):
    bl_idname = "DA3_PT_build"
    bl_label = "Build"

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        draw_import_settings(layout, s, long_shots=False)
        layout.prop(s, "keep_results")
        if s.keep_results:
            prefs = get_preferences(context)
            where = bpy.path.abspath(prefs.results_dir) if prefs.results_dir else user_dir("results")
            draw_wrapped(layout, context, f"Kept in {where}", icon="FILE_FOLDER")


class DA3_PT_export(_Sidebar, Panel):
    bl_idname = "DA3_PT_export"
    bl_label = "Export"
    bl_parent_id = "DA3_PT_build"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        self.layout.enabled = not context.window_manager.da3_runtime.running
        s = context.scene.da3_settings
        layout = self.layout
        grid = layout.grid_flow(row_major=True, columns=2, even_columns=True, align=True)
        for name in opt.EXPORT_FORMAT_NAMES:
            grid.prop_enum(s, "export_format", name)
        col = layout.column()
        col.active = bool(s.export_format)
        col.prop(s, "export_dir")
        if "exr" in s.export_format:  # the exr export's options (issue 17)
            col = layout.column(heading="EXR")
            col.prop(s, "exr_resolution")
            col.prop(s, "exr_half")
            sub = col.column()
            sub.active = s.exr_resolution == "plate"
            sub.prop(s, "exr_plate_filter")
        layout.operator("da3.export_camera", icon="OUTLINER_OB_CAMERA")


CLASSES = (DA3_UL_images, DA3_PT_main, DA3_PT_input, DA3_PT_model, DA3_PT_options, DA3_PT_long_shots, DA3_PT_build,
           DA3_PT_export)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
