"""Input list editing, importing a saved result, and freeing the worker's model."""

from __future__ import annotations

import os

import bpy
from bpy.props import CollectionProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement
from bpy_extras.io_utils import ImportHelper

from ..da3_blender.errors import DA3Error
from ..da3_blender.inputs import IMAGE_EXTENSIONS, natural_key
from . import session


class DA3_OT_add_images(Operator, ImportHelper):
    """Add images to reconstruct (select several with Shift or A)"""

    bl_idname = "da3.add_images"
    bl_label = "Add Images"
    bl_options = {"REGISTER", "UNDO"}

    files: CollectionProperty(type=OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    filter_glob: StringProperty(default=";".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS)), options={"HIDDEN"})
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN"})

    def execute(self, context):
        settings = context.scene.da3_settings
        names = [f.name for f in self.files if f.name] or [os.path.basename(self.filepath)]
        known = {item.filepath for item in settings.images}
        added = 0
        for name in sorted(names, key=natural_key):  # frame2 before frame10, as folders are read
            path = os.path.join(self.directory or os.path.dirname(self.filepath), name)
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS or path in known:
                continue
            settings.images.add().filepath = path
            added += 1
        settings.input_mode = "IMAGES"
        self.report({"INFO"}, f"{added} image(s) added, {len(settings.images)} in the list")
        return {"FINISHED"}


class DA3_OT_remove_image(Operator):
    """Remove the highlighted image from the list"""

    bl_idname = "da3.remove_image"
    bl_label = "Remove Image"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.da3_settings.images) > 0

    def execute(self, context):
        settings = context.scene.da3_settings
        settings.images.remove(settings.images_index)
        settings.images_index = min(settings.images_index, max(0, len(settings.images) - 1))
        return {"FINISHED"}


class DA3_OT_clear_images(Operator):
    """Remove all images from the list"""

    bl_idname = "da3.clear_images"
    bl_label = "Clear Images"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.da3_settings.images.clear()
        return {"FINISHED"}


class DA3_OT_import_result(Operator, ImportHelper):
    """Import a DA3 result file (.npz, from this extension, the da3 command or official DA3)"""

    bl_idname = "da3.import_result"
    bl_label = "Import DA3 Result"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    def execute(self, context):
        from ..scene import importer
        from .run import import_options

        if not os.path.isfile(self.filepath):
            self.report({"ERROR"}, f"file not found: {self.filepath}: choose a DA3 result (.npz)")
            return {"CANCELLED"}
        try:
            collection = importer.import_result_file(self.filepath, import_options(context.scene.da3_settings))
        except DA3Error as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self.report({"INFO"}, f"imported {os.path.basename(self.filepath)} -> '{getattr(collection, 'name', '')}'")
        return {"FINISHED"}


class DA3_OT_unload_model(Operator):
    """Free the memory held by the loaded model (the next run loads it again)"""

    bl_idname = "da3.unload_model"
    bl_label = "Unload Model"

    def execute(self, context):
        if session.is_running():
            self.report({"ERROR"}, "a reconstruction is running: cancel it first")
            return {"CANCELLED"}
        client = session.current()
        if client is None or not client.is_alive():
            self.report({"INFO"}, "no model is loaded")
            return {"CANCELLED"}
        session.shutdown()  # ending the worker process returns all of its memory
        context.window_manager.da3_runtime.summary = "Model unloaded"
        self.report({"INFO"}, "DA3 model unloaded")
        return {"FINISHED"}


CLASSES = (DA3_OT_add_images, DA3_OT_remove_image, DA3_OT_clear_images, DA3_OT_import_result, DA3_OT_unload_model)
