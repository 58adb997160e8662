"""Input list editing, importing a saved result, and freeing the worker's model."""

from __future__ import annotations

import os

import bpy
from bpy.props import CollectionProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement
from bpy_extras.io_utils import ImportHelper

from ..da3_blender.errors import DA3Error
from ..da3_blender.inputs.paths import IMAGE_EXTENSIONS, natural_key
from ..properties import add_properties, copy_import_settings, import_options, import_properties
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


class DA3_OT_import_result(Operator):
    """Import a DA3 result (.npz from this extension, the da3 command or the official DA3) as a point cloud, depth planes and cameras"""

    bl_idname = "da3.import_result"
    bl_label = "Import DA3 Result"
    bl_options = {"REGISTER", "UNDO"}  # the import settings stay adjustable in the redo panel

    filepath: StringProperty(subtype="FILE_PATH", options={"HIDDEN", "SKIP_SAVE"}, name="File",
                             description="The result file (.npz)")
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"}, name="Folder",
                              description="The folder of the files")
    files: CollectionProperty(type=OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"}, name="Files",
                              description="The result files (.npz)")
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"}, name="Filter", description="Files shown")

    def paths(self) -> list[str]:
        names = [f.name for f in self.files if f.name]
        if names and self.directory:
            return [os.path.join(self.directory, n) for n in names]
        return [self.filepath] if self.filepath else []

    def invoke(self, context, event):
        settings = getattr(context.scene, "da3_settings", None)
        if settings is not None:  # start from the panel's Build settings
            copy_import_settings(settings, self)
        if self.paths():  # dropped on the viewport (FileHandler) or given by a script
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def draw(self, context):
        from ..panels import draw_import_settings

        draw_import_settings(self.layout, self)

    def execute(self, context):
        from ..scene import importer

        paths = [bpy.path.abspath(p) for p in self.paths()]
        if not paths:
            self.report({"ERROR"}, "no file given: choose a DA3 result (.npz)")
            return {"CANCELLED"}
        made = []
        for path in paths:
            if not os.path.isfile(path):
                self.report({"ERROR"}, f"file not found: {path}: choose a DA3 result (.npz)")
                return {"CANCELLED"}
            name = os.path.splitext(os.path.basename(path))[0]
            try:
                collection = importer.import_result_file(path, import_options(self), name=name)
            except DA3Error as ex:
                self.report({"ERROR"}, f"{os.path.basename(path)}: {ex}")
                return {"CANCELLED"}
            except Exception as ex:  # noqa: BLE001 - a file we could not foresee: one line, the scene unchanged
                import traceback

                traceback.print_exc()  # the system console has the details
                self.report({"ERROR"}, f"{os.path.basename(path)}: cannot import it ({type(ex).__name__}: "
                                       f"{' '.join(str(ex).split())[:200]})")
                return {"CANCELLED"}
            made.append(getattr(collection, "name", name))
        self.report({"INFO"}, f"imported {len(paths)} DA3 result(s) -> {', '.join(repr(m) for m in made)}")
        return {"FINISHED"}


add_properties(DA3_OT_import_result, import_properties())


def menu_import(self, context):
    """File > Import > DA3 result (.npz)."""
    self.layout.operator(DA3_OT_import_result.bl_idname, text="DA3 result (.npz)")


if hasattr(bpy.types, "FileHandler"):  # Blender 4.1+: drop a result on the 3D viewport to import it

    class DA3_FH_result(bpy.types.FileHandler):
        bl_idname = "DA3_FH_result"
        bl_label = "DA3 result"
        bl_import_operator = DA3_OT_import_result.bl_idname
        bl_file_extensions = ".npz"

        @classmethod
        def poll_drop(cls, context):
            return context.area is not None and context.area.type == "VIEW_3D"

    FILE_HANDLERS = (DA3_FH_result,)
else:
    FILE_HANDLERS = ()


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


CLASSES = (DA3_OT_add_images, DA3_OT_remove_image, DA3_OT_clear_images, DA3_OT_import_result,
           DA3_OT_unload_model) + FILE_HANDLERS
