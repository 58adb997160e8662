"""The extension's Blender properties.

``Scene.da3_settings`` (:class:`DA3Settings`): what to reconstruct and how; saved with the .blend.
``WindowManager.da3_runtime`` (:class:`DA3Runtime`): the state of the running job and of the
environment set-up; never saved.

Every choice list and default comes from :mod:`da3_blender.options` (shared with the command line,
the worker and the headless script); this module only adds Blender's labels and tooltips. The
import settings (what to build and how) are defined once in :func:`import_properties` and used by
both the panel's settings and the *Import DA3 Result* operator (its redo panel).
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from .da3_blender import options as opt

CUSTOM_MODEL = "CUSTOM"
PREFERENCES_DEVICE = "DEFAULT"  # the scene's device item that defers to the preferences


def model_info(repo_id: str) -> dict | None:
    """The zoo entry (options.MODEL_ZOO) of a repo id as a dict; None for a custom model."""
    for repo, label, params, licence, depth, pose in opt.MODEL_ZOO:
        if repo == repo_id:
            return dict(repo=repo, label=label, params=params, licence=licence, depth=depth, pose=pose)
    return None


def enum_items(table, first: int = 0) -> list[tuple[str, str, str, int]]:
    """Blender enum items from an options ``(id, label, description)`` table, numbered in order
    (the numbers are what a .blend stores, so appending keeps old files meaning the same)."""
    return [(ident, label, desc, first + i) for i, (ident, label, desc) in enumerate(table)]


def _model_items():
    items = []
    for i, (repo, label, params, licence, depth, pose) in enumerate(opt.MODEL_ZOO):
        what = f"{depth} depth" + (", camera poses" if pose else ", single-view depth, no camera poses")
        items.append((repo, f"{label} ({params})", f"{repo}: {params} parameters, {what}; weights {licence}", i))
    items.append((CUSTOM_MODEL, "Custom", "A Hugging Face repo id or a local folder with config.json + model.safetensors",
                  len(items)))
    return items


def _default_model() -> tuple[str, str]:
    """(model item, custom model text) for options.default_model() ($DA3_MODEL or DA3-SMALL)."""
    model = opt.default_model()
    return (model, "") if model_info(model) is not None else (CUSTOM_MODEL, model)


DEFAULT_MODEL_ITEM, DEFAULT_CUSTOM_MODEL = _default_model()

INPUT_MODES = (
    ("IMAGES", "Images", "Reconstruct the image files in the list below", 0),
    ("FOLDER", "Folder", "Reconstruct every image in a folder, in natural name order (frame2 before frame10)", 1),
    ("VIDEO", "Video", "Reconstruct frames sampled from a video file", 2),
    ("SEQUENCE", "Sequence", "An image sequence (plate.####.exr, or one of its files): one camera keyed on "
                             "the frames' own numbers", 3),  # issue 17
)
DEVICE_ITEMS = [(PREFERENCES_DEVICE, "Preferences default",
                 "The device chosen in Edit > Preferences > Add-ons > DA3 for Blender", 0)] + enum_items(opt.DEVICES, 1)
CHUNKING = (
    ("VIDEO", "Shots", "Videos and image sequences are processed in chunks, stills in one pass (default)", 0),
    ("ALWAYS", "Always", "Videos, folders and image lists are processed in chunks", 1),
    ("OFF", "Never", "Every view in one pass: time and memory grow quickly with the number of views", 2),
)


def import_properties() -> dict:
    """The import settings (what to build, and how), as property definitions.

    One fresh set per class: the panel's :class:`DA3Settings` and the import operator both get them,
    so the two never disagree. :func:`import_options` reads either into ``scene.importer.ImportOptions``.
    """
    return {
        "build_points": BoolProperty(
            name="Point cloud", default=True, description="Create a coloured point cloud of all views"),
        "build_planes": BoolProperty(
            name="Depth planes", default=True,
            description="Create one textured mesh per view, its pixels pushed out to their depth"),
        "build_cameras": BoolProperty(
            name="Cameras", default=True,
            description="Create the cameras (one per image; one animated camera for a video)"),
        "conf_percentile": FloatProperty(
            name="Confidence cut", default=opt.DEFAULT_CONF_THRESH_PERCENTILE, min=0.0, max=99.0,
            subtype="PERCENTAGE",
            description="Drop this percentage of the points, the ones the model is least sure about (0: keep all)"),
        "max_points": IntProperty(
            name="Max points", default=opt.DEFAULT_NUM_MAX_POINTS, min=0, soft_max=10_000_000,
            description="Keep at most this many points, a random subset spread over all views (0: no limit)"),
        "point_stride": IntProperty(
            name="Point spacing", default=1, min=1, soft_max=16, subtype="PIXEL",
            description="Take a point every this many pixels in rows and columns (1: every pixel, the most points)"),
        "fuse_points": BoolProperty(
            name="One cloud", default=True,
            description="One point cloud object for all views (off: one object per view)"),
        "plane_stride": IntProperty(
            name="Plane vertex spacing", default=opt.DEFAULT_PLANE_STRIDE, min=1, soft_max=16, subtype="PIXEL",
            description="Pixels between the vertices of a depth plane: 1 puts a vertex on every pixel (finest, "
                        "heaviest mesh), 4 on every 4th pixel (16x fewer vertices)"),
        "plane_texture": EnumProperty(
            name="Plane texture", default=opt.DEFAULT_PLANE_TEXTURE, items=enum_items(opt.PLANE_TEXTURES),
            description="Which picture textures the depth planes"),
        "pack_images": BoolProperty(
            name="Pack original images", default=True,
            description="Store the full-resolution textures in the .blend (off: refer to the image files by path)"),
        "plane_edge_threshold": FloatProperty(
            name="Cut stretched edges", default=0.1, min=0.0, soft_max=1.0, step=1,
            description="Remove plane faces that span a depth jump (they stretch between foreground and "
                        "background): a face is cut when its farthest corner is more than this fraction farther "
                        "than its nearest, 0.1 = 10% (0: keep every face)"),
        "planes_max_views": IntProperty(
            name="Planes up to", default=100, min=0, soft_max=1000,
            description="Long shots: no depth planes when the result has more views than this, only points "
                        "and cameras (0: no limit)"),
        "planes_every": IntProperty(
            name="Plane every", default=1, min=1, soft_max=50,
            description="Long shots: a depth plane for every this-many-th view only (1: every view)"),
        "standard_view_transform": BoolProperty(
            name="Match footage colours", default=True,
            description="Set the scene's view transform to Standard, so renders through the cameras give back the "
                        "footage's colours (Blender's default AgX tone-maps them)"),
        "scale_mode": EnumProperty(
            name="Scale", default="PREDICTED",
            description="Size of the reconstruction in the scene",
            items=(
                ("PREDICTED", "As predicted", "Depth and camera positions as the model predicts them", 0),
                ("METRIC", "Metres", "Real-world metres (needs a metric model: DA3 Metric Large or Nested)", 1),
                ("FACTOR", "Factor", "Multiply depth and camera positions by a factor", 2),
            )),
        "scale_factor": FloatProperty(
            name="Factor", default=1.0, min=1e-6, soft_max=100.0, description="Scene units per predicted unit"),
        "fixed_intrinsics": BoolProperty(
            name="Fixed lens", default=False,
            description="Video: one focal length and lens shift for the whole shot (the median), no lens keys"),
        "interpolation": EnumProperty(
            name="Key interpolation", default=opt.DEFAULT_KEY_INTERPOLATION, items=enum_items(opt.KEY_INTERPOLATIONS),
            description="How the video camera moves between the sampled frames"),
        "up_axis": EnumProperty(
            name="Up axis", default=opt.DEFAULT_UP_AXIS, items=enum_items(opt.UP_AXES),
            description="How the reconstruction is oriented in the scene"),
        **matchmove_properties(),
    }


def matchmove_properties() -> dict:
    """Issue 27: the scale from the camera height, the proxy mesh, the shadow catcher."""
    return {
        "camera_height": FloatProperty(
            name="Camera height", default=0.0, min=0.0, soft_max=100.0, unit="LENGTH",
            description="Scale the scene so the first camera is this high above the floor found (0: keep the scale)"),
        "build_mesh": BoolProperty(
            name="Proxy mesh", default=False,
            description="Fuse the depth maps into one coloured mesh of the set, to catch shadows and occlude CG "
                        "(needs scikit-image in the worker's Python)"),
        "mesh_max_faces": IntProperty(
            name="Mesh triangles", default=opt.DEFAULT_MESH_MAX_FACES, min=1000, soft_max=5_000_000,
            description="Decimate the proxy mesh to at most this many triangles"),
        "mesh_holdout": BoolProperty(
            name="Mesh as holdout", default=False,
            description="The proxy mesh cuts CG out where the set is in front of it, instead of rendering itself"),
        "shadow_catcher": BoolProperty(
            name="Shadow catcher", default=False,
            description="A plane on the floor that renders only the shadows CG casts on it, over the footage "
                        "(transparent film, the plate behind the camera)"),
    }


def add_properties(cls, props: dict):
    """Add property definitions to a class before it is registered."""
    cls.__annotations__ = {**getattr(cls, "__annotations__", {}), **props}
    return cls


def import_options(source):
    """The import settings of ``source`` (DA3Settings or the import operator) as ImportOptions.

    The long-shot plane options are passed when the importer has them (scene/importer.py).
    """
    import dataclasses

    from .scene.importer import ImportOptions

    values = dict(
        points=source.build_points,
        planes=source.build_planes,
        cameras=source.build_cameras,
        fuse_points=source.fuse_points,
        conf_percentile=source.conf_percentile,
        max_points=source.max_points,
        point_stride=source.point_stride,
        plane_stride=source.plane_stride,
        plane_texture=source.plane_texture,
        pack_images=source.pack_images,
        plane_edge_threshold=source.plane_edge_threshold,
        up_axis=source.up_axis,
        scale={"PREDICTED": "predicted", "METRIC": "metric"}.get(source.scale_mode, float(source.scale_factor)),
        fixed_intrinsics=source.fixed_intrinsics,
        interpolation=source.interpolation,
        planes_max_views=source.planes_max_views,
        planes_every=source.planes_every,
        standard_view_transform=source.standard_view_transform,
        camera_height=source.camera_height,
        mesh=source.build_mesh,
        mesh_max_faces=source.mesh_max_faces,
        mesh_holdout=source.mesh_holdout,
        shadow_catcher=source.shadow_catcher,
    )
    known = {f.name for f in dataclasses.fields(ImportOptions)}
    return ImportOptions(**{k: v for k, v in values.items() if k in known})


def copy_import_settings(source, target) -> None:
    """Copy the import settings from one holder (settings, operator) to another."""
    for name in import_properties():
        setattr(target, name, getattr(source, name))


class DA3ImagePath(PropertyGroup):
    filepath: StringProperty(name="File", subtype="FILE_PATH", description="An image to reconstruct")


class DA3Settings(PropertyGroup):
    """What the Reconstruct button does (Scene.da3_settings)."""

    # input
    input_mode: EnumProperty(name="Input", items=INPUT_MODES, default="IMAGES",
                             description="What to reconstruct: a list of images, a folder of images or a video")
    images: CollectionProperty(type=DA3ImagePath, name="Images", description="The images to reconstruct")
    images_index: IntProperty(default=0, name="Active image", description="The highlighted image in the list")
    folder: StringProperty(name="Folder", subtype="DIR_PATH", description="A folder of images")
    video: StringProperty(name="Video", subtype="FILE_PATH", description="A video file")
    video_fps: FloatProperty(
        name="Frames per second", default=opt.DEFAULT_SHOT_FPS, min=opt.EVERY_FRAME_FPS, soft_max=30.0,
        description="How many frames to take per second of a video or sequence (0: every frame, keyed on each; "
                    "fewer: the camera is interpolated between keys)",
    )
    video_start: FloatProperty(name="Start", default=0.0, min=0.0, unit="TIME_ABSOLUTE", description="Start time in seconds")
    video_end: FloatProperty(
        name="End", default=0.0, min=0.0, unit="TIME_ABSOLUTE", description="End time in seconds (0: the end of the video)"
    )
    max_frames: IntProperty(
        name="Max frames", default=0, min=0, soft_max=500,
        description="Stop after this many frames (0: no limit). Fewer frames need less memory",
    )
    # shots (issue 17): image sequences, frame numbers, rates, plate colours
    sequence: StringProperty(name="Sequence", subtype="FILE_PATH",
                             description="One file of a numbered image sequence (plate.1001.exr), or its pattern "
                                         "(plate.####.exr)")
    folder_mode: EnumProperty(name="Folder as", items=enum_items(opt.SHOT_MODES), default=opt.DEFAULT_SHOT_MODE,
                              description="A folder holding one numbered sequence is a shot (one animated camera); "
                                          "choose Stills to give every image its own camera")
    frame_start: IntProperty(name="Frame start", default=opt.DEFAULT_FRAME_START, min=0, max=opt.MAX_SCENE_FRAME,
                             description="The scene frame of the video's first frame (1001 for a VFX plate); a "
                                         "sequence keeps its own frame numbers")
    frame_rate: FloatProperty(name="Frame rate", default=0.0, min=0.0, soft_max=120.0, precision=3,
                              description="The sequence's frames per second (23.976 is exactly 24000/1001); 0: the "
                                          f"EXR framesPerSecond, else {opt.DEFAULT_SEQUENCE_RATE:g}")
    input_colorspace: EnumProperty(name="Plate colours", items=enum_items(opt.INPUT_COLORSPACES),
                                   default=opt.DEFAULT_INPUT_COLORSPACE,
                                   description="How plates become the model's input: EXR is scene-linear (clamped "
                                               "and sRGB-encoded), other images display-referred")

    # model
    model: EnumProperty(name="Model", items=_model_items(), default=DEFAULT_MODEL_ITEM,
                        description="The Depth Anything 3 model: bigger is slower and more accurate "
                                    "(downloaded once from the Hugging Face hub)")
    custom_model: StringProperty(
        name="Repo or folder", default=DEFAULT_CUSTOM_MODEL,
        description="Hugging Face repo id (owner/name) or a folder with config.json and model.safetensors"
    )
    process_res: IntProperty(
        name="Processing resolution", default=opt.DEFAULT_PROCESS_RES, min=opt.MIN_PROCESS_RES, soft_max=1008,
        step=14, subtype="PIXEL",
        description="Size in pixels the images are scaled to for the model (a multiple of 14; not the render "
                    "resolution). Lower is faster and needs less memory",
    )
    process_res_method: EnumProperty(name="Fit", items=enum_items(opt.PROCESS_RES_METHODS),
                                     default=opt.DEFAULT_PROCESS_RES_METHOD,
                                     description="Which side of the image gets the processing resolution")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default=PREFERENCES_DEVICE,
                         description="Where the model runs")
    compute_dtype: EnumProperty(name="Precision", items=enum_items(opt.COMPUTE_DTYPE_CHOICES),
                                default=opt.DEFAULT_COMPUTE_DTYPE,
                                description="The network backbone's precision (fp32: exact, slower on a CPU)")

    # options
    use_ray_pose: BoolProperty(
        name="Camera poses from rays", default=False,
        description="Compute the camera poses from the model's per-pixel rays instead of its camera head "
                    "(slower, sometimes more accurate)"
    )
    infer_gs: BoolProperty(
        name="3D Gaussians", default=False,
        description="Also predict 3D Gaussian splats and import them as a Splats collection (DA3 Giant and "
                    "Nested models only; Giant needs ~6.5 GB of memory on a CPU at 504 px, Gaussians add ~0.1 GB)"
    )
    refine_cameras: BoolProperty(
        name="Refine cameras", default=False,
        description="Track features through the frames and bundle-adjust every camera to sub-pixel (needs "
                    "pycolmap in the worker's Python); the solve error before -> after is shown when done",
    )
    refine_lens: EnumProperty(name="Lens", items=enum_items(opt.REFINE_LENSES), default=opt.DEFAULT_REFINE_LENS,
                              description="What the camera solve may change about the lens")
    refine_motion: EnumProperty(name="Motion", items=enum_items(opt.REFINE_MOTIONS), default=opt.DEFAULT_REFINE_MOTION,
                                description="How the camera moves: solved free, or as a pan about one point (tripod)")
    ref_view_strategy: EnumProperty(name="Reference view", items=enum_items(opt.REF_VIEW_STRATEGIES),
                                    default=opt.DEFAULT_REF_VIEW_STRATEGY,
                                    description="Which view the model takes as its reference")
    use_selected_cameras: BoolProperty(
        name="Use selected cameras as known poses", default=False,
        description="Condition the model on the selected camera objects, one per view, matched in natural "
                    "name order (Cam2 before Cam10), or one animated camera on the views' frame numbers, e.g. "
                    "from a motion-tracking solve. The result is built in those cameras' world",
    )

    # long shots (streaming)
    chunking: EnumProperty(name="Split into chunks", items=CHUNKING, default="VIDEO",
                           description="Process many views in overlapping chunks aligned together: time grows "
                                       "in step with the frame count and memory stays bounded")
    chunk_size: IntProperty(
        name="Chunk size", default=0, min=0, soft_max=256,
        description="Views per chunk (0: automatic, from the device's memory). Bigger chunks are more "
                    "consistent, need more memory",
    )
    chunk_overlap: IntProperty(
        name="Overlap", default=0, min=0, soft_max=64,
        description="Views shared by consecutive chunks, used to align them (0: automatic, a quarter of the chunk)",
    )
    chunk_align: EnumProperty(name="Alignment", items=enum_items(opt.CHUNK_ALIGN_CHOICES),
                              default=opt.DEFAULT_CHUNK_ALIGN,
                              description="How each chunk is fitted onto the previous ones")
    loop_closure: BoolProperty(
        name="Close loops", default=opt.DEFAULT_LOOP_CLOSURE,
        description=f"A shot of {opt.LOOP_MIN_FRAMES} frames or more that comes back to a place it saw (an orbit, a "
                    "walk around a building) is pulled closed: the chunks that meet are run together once more",
    )

    # build
    keep_results: BoolProperty(
        name="Keep result files", default=False,
        description="Keep the result (.npz) in the results folder of the extension's preferences (default: the "
                    "extension's user folder), to import it again with File > Import > DA3 result"
    )
    export_format: EnumProperty(name="Export", items=list(opt.EXPORT_FORMATS),  # ENUM_FLAG: Blender numbers the flags
                                options={"ENUM_FLAG"}, default=set(),
                                description="Files the worker also writes into the export folder")
    export_dir: StringProperty(name="Export folder", subtype="DIR_PATH", description="Where the worker writes the exports")
    # the exr export's options (issue 17); choices and defaults from options.py
    exr_resolution: EnumProperty(name="EXR resolution", items=enum_items(opt.EXR_RESOLUTIONS),
                                 default=opt.DEFAULT_EXR_RESOLUTION,
                                 description="Size of the EXR depth passes: what the model saw, or the plate's own")
    exr_half: BoolProperty(name="Half floats", default=opt.DEFAULT_EXR_HALF,
                           description="Write the EXR channels as 16-bit half floats (smaller files) instead of 32-bit")
    exr_plate_filter: EnumProperty(name="Plate filter", items=enum_items(opt.EXR_PLATE_FILTERS),
                                   default=opt.DEFAULT_EXR_PLATE_FILTER,
                                   description="How plate-resolution EXR passes sample the depth")


def model_id(settings: DA3Settings) -> str:
    """The repo id or folder the worker loads. A function, not a Python property on the class: the bpy 4.2
    module crashes at interpreter exit when a registered PropertyGroup has one (README "Supported Blender")."""
    return settings.custom_model.strip() if settings.model == CUSTOM_MODEL else settings.model


add_properties(DA3Settings, import_properties())


class DA3Runtime(PropertyGroup):
    """The job in progress and the last outcome (WindowManager.da3_runtime, not saved)."""

    running: BoolProperty(default=False, name="Running", description="A reconstruction is running")
    cancel_requested: BoolProperty(default=False, name="Cancel requested", description="Cancel was pressed")
    stage: StringProperty(default="", name="Stage", description="The worker's current stage")
    fraction: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR", name="Progress",
                            description="How much of the run is done")
    message: StringProperty(default="", name="Message", description="The worker's latest progress message")
    summary: StringProperty(default="", name="Summary", description="What the last run made")
    error: StringProperty(default="", name="Error", description="Why the last run failed")
    warning: StringProperty(default="", name="Warning", description="What the last run could not do (it finished)")
    # environment set-up and interpreter check (shown in the preferences)
    env_busy: BoolProperty(default=False, name="Busy", description="The environment set-up or check is running")
    env_log: StringProperty(default="", name="Set-up log", description="The last lines of the set-up output")
    env_result: StringProperty(default="", name="Set-up result", description="How the environment set-up ended")
    interpreter_info: StringProperty(default="", name="Interpreter", description="What the interpreter check found")


CLASSES = (DA3ImagePath, DA3Settings, DA3Runtime)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.da3_settings = PointerProperty(type=DA3Settings, name="DA3 settings",
                                                   description="Depth Anything 3 reconstruction settings")
    bpy.types.WindowManager.da3_runtime = PointerProperty(type=DA3Runtime, name="DA3 runtime",
                                                          description="The running DA3 job")


def unregister():
    del bpy.types.WindowManager.da3_runtime
    del bpy.types.Scene.da3_settings
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
