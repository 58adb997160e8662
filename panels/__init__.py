"""The DA3 sidebar panel (3D View > Sidebar > DA3): Input, Model, Options, Build, Run."""

from __future__ import annotations

import os

import bpy
from bpy.types import Panel, UIList

from ..preferences import _prop
from ..properties import CUSTOM_MODEL, model_info


class _Sidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DA3"


class _Sub(_Sidebar):
    bl_parent_id = "DA3_PT_main"

    def layout_enabled(self, context):
        self.layout.enabled = not context.window_manager.da3_runtime.running


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
            col = layout.column(align=True)
            col.alert = True
            col.label(text=runtime.error, icon="ERROR")
        elif runtime.summary:
            layout.label(text=runtime.summary, icon="CHECKMARK")
        row = layout.row(align=True)
        row.operator("da3.import_result", text="Import Result", icon="IMPORT")
        row.operator("da3.unload_model", text="Unload Model", icon="X")


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
        else:
            layout.prop(s, "video")
            col = layout.column(align=True)
            col.prop(s, "video_fps")
            row = col.row(align=True)
            row.prop(s, "video_start")
            row.prop(s, "video_end")
            col.prop(s, "max_frames")


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
            col.label(text="Shortest side = resolution: needs more memory", icon="ERROR")
        layout.prop(s, "device")


class DA3_PT_options(_Sub, Panel):
    bl_idname = "DA3_PT_options"
    bl_label = "Options"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        layout.prop(s, "use_ray_pose")
        layout.prop(s, "ref_view_strategy")
        layout.prop(s, "use_selected_cameras")
        if s.use_selected_cameras:
            n = sum(1 for ob in context.selected_objects if ob.type == "CAMERA")
            layout.label(text=f"{n} camera(s) selected, one per view, in name order", icon="CAMERA_DATA")


class DA3_PT_build(_Sub, Panel):
    bl_idname = "DA3_PT_build"
    bl_label = "Build"

    def draw(self, context):
        self.layout_enabled(context)
        s = context.scene.da3_settings
        layout = self.layout
        col = layout.column(heading="Create")
        col.prop(s, "build_points")
        col.prop(s, "build_planes")
        col.prop(s, "build_cameras")
        col = layout.column(align=True)
        col.active = s.build_points
        col.prop(s, "conf_percentile")
        col.prop(s, "max_points")
        col.prop(s, "point_stride")
        col.prop(s, "fuse_points")
        col = layout.column(align=True)
        col.active = s.build_planes
        col.prop(s, "plane_stride")
        col.prop(s, "plane_texture")
        if s.plane_texture == "original":
            col.prop(s, "pack_images")
        col.prop(s, "plane_edge_threshold")
        col = layout.column(align=True)
        col.active = s.build_cameras
        col.prop(s, "fixed_intrinsics")
        col.prop(s, "interpolation")
        layout.prop(s, "up_axis")
        row = layout.row(align=True)
        row.prop(s, "scale_mode")
        if s.scale_mode == "FACTOR":
            row.prop(s, "scale_factor", text="")
        layout.prop(s, "keep_results")
        col = layout.column(heading="Export")
        col.prop(s, "export_format")
        if s.export_format:
            col.prop(s, "export_dir")


CLASSES = (DA3_UL_images, DA3_PT_main, DA3_PT_input, DA3_PT_model, DA3_PT_options, DA3_PT_build)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
