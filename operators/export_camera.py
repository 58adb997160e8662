"""Export the DA3 cameras to Alembic (.abc), FBX (.fbx), USD (.usd) or Nuke (.nk, .chan) for compositing and other 3D programs."""

from __future__ import annotations

import os

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy.types import Operator
from bpy_extras.io_utils import ExportHelper

from ..da3_blender.errors import DA3Error
from ..da3_blender.options import CAMERA_EXPORT_FORMATS

EXTENSION = {f[0]: f[3] for f in CAMERA_EXPORT_FORMATS}


class DA3_OT_export_camera(Operator, ExportHelper):
    """Write the DA3 cameras over the scene's frame range: Alembic, FBX or USD (Blender's exporters), a Nuke script or .chan"""

    bl_idname = "da3.export_camera"
    bl_label = "Export DA3 Camera"

    filename_ext = CAMERA_EXPORT_FORMATS[0][3]
    filter_glob: StringProperty(default=";".join(f"*{e}" for e in EXTENSION.values()), options={"HIDDEN"})
    file_format: EnumProperty(name="Format", items=[f[:3] for f in CAMERA_EXPORT_FORMATS],
                              default=CAMERA_EXPORT_FORMATS[0][0])

    def check(self, context):  # keep the file name's extension in step with the chosen format
        self.filename_ext = EXTENSION[self.file_format]
        return super().check(context)

    def invoke(self, context, event):
        """Refuse before the file browser when this Blender has no camera exporter; start on one it has."""
        from ..scene import exchange

        usable = [f[0] for f in CAMERA_EXPORT_FORMATS if exchange.exporter_problem(f[3]) is None]
        if not usable:
            try:
                exchange.check_exporter("camera" + EXTENSION[self.file_format])
            except DA3Error as ex:
                self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        if self.file_format not in usable:
            self.file_format = usable[0]
            self.filename_ext = EXTENSION[usable[0]]
        return super().invoke(context, event)

    def execute(self, context):
        from ..scene import exchange

        path = self.filepath
        if os.path.splitext(path)[1].lower() not in EXTENSION.values():
            path = os.path.splitext(path)[0] + EXTENSION[self.file_format]
        try:
            out = exchange.export_cameras(path, scene=context.scene)
        except DA3Error as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self.report({"INFO"}, f"cameras written to {out}")
        return {"FINISHED"}


CLASSES = (DA3_OT_export_camera,)
