"""The extension's Blender properties.

``Scene.da3_settings`` (:class:`DA3Settings`): what to reconstruct and how; saved with the .blend.
``WindowManager.da3_runtime`` (:class:`DA3Runtime`): the state of the running job and of the
environment set-up; never saved.
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

# The model zoo, as shown in the panel. (repo id, label, parameters, licence, depth kind, pose)
# Licences of the weights (the extension's code is Apache-2.0): CC BY-NC 4.0 is non-commercial.
MODEL_ZOO = (
    ("depth-anything/DA3-SMALL", "DA3 Small", "0.08B", "Apache-2.0", "relative", True),
    ("depth-anything/DA3-BASE", "DA3 Base", "0.12B", "Apache-2.0", "relative", True),
    ("depth-anything/DA3-LARGE-1.1", "DA3 Large 1.1", "0.35B", "CC BY-NC 4.0", "relative", True),
    ("depth-anything/DA3-GIANT-1.1", "DA3 Giant 1.1", "1.15B", "CC BY-NC 4.0", "relative", True),
    ("depth-anything/DA3METRIC-LARGE", "DA3 Metric Large", "0.35B", "Apache-2.0", "metric", False),
    ("depth-anything/DA3MONO-LARGE", "DA3 Mono Large", "0.35B", "Apache-2.0", "relative", False),
    ("depth-anything/DA3NESTED-GIANT-LARGE-1.1", "DA3 Nested Giant-Large 1.1", "1.40B", "CC BY-NC 4.0", "metric", True),
)
CUSTOM_MODEL = "CUSTOM"
DEFAULT_MODEL = "depth-anything/DA3-BASE"


def model_info(repo_id: str) -> dict | None:
    """The zoo entry of a repo id as a dict (None for a custom model)."""
    for repo, label, params, licence, depth, pose in MODEL_ZOO:
        if repo == repo_id:
            return dict(repo=repo, label=label, params=params, licence=licence, depth=depth, pose=pose)
    return None


def _model_items():
    items = []
    for i, (repo, label, params, licence, depth, pose) in enumerate(MODEL_ZOO):
        what = f"{depth} depth" + (", camera poses" if pose else ", single-view depth, no poses")
        items.append((repo, f"{label} ({params})", f"{repo}: {params} parameters, {what}; weights {licence}", i))
    items.append((CUSTOM_MODEL, "Custom", "A Hugging Face repo id or a local folder with config.json + model.safetensors", len(items)))
    return items


INPUT_MODES = (
    ("IMAGES", "Images", "One or more image files", 0),
    ("FOLDER", "Folder", "Every image in a folder, in name order", 1),
    ("VIDEO", "Video", "Frames sampled from a video file", 2),
)
PROCESS_RES_METHODS = (
    ("upper_bound_resize", "Longest side", "Resize so the longest side is the resolution (default, least memory)", 0),
    ("upper_bound_crop", "Longest side, crop", "As 'Longest side', centre-cropping to multiples of 14", 1),
    ("lower_bound_resize", "Shortest side", "Resize so the shortest side is the resolution: more pixels, MORE memory", 2),
    ("lower_bound_crop", "Shortest side, crop", "As 'Shortest side', centre-cropping to multiples of 14", 3),
)
DEVICES = (
    ("DEFAULT", "Default", "The default device set in the extension's preferences", 0),
    ("auto", "Auto", "CUDA if available, else Apple MPS, else CPU", 1),
    ("cpu", "CPU", "Run on the processor (slow, but always works)", 2),
    ("cuda", "CUDA", "Run on the NVIDIA GPU", 3),
    ("mps", "Apple MPS", "Run on the Apple silicon GPU", 4),
)
REF_VIEW_STRATEGIES = (
    ("saddle_balanced", "Balanced", "Pick the most central view as the reference (default)", 0),
    ("saddle_sim_range", "Similarity range", "Pick the view whose similarity to the others varies most", 1),
    ("first", "First", "The first view is the reference", 2),
    ("middle", "Middle", "The middle view is the reference", 3),
)
EXPORT_FORMATS = (  # an ENUM_FLAG: Blender numbers the flags itself
    ("glb", "glTF (.glb)", "Point cloud and cameras as glTF binary"),
    ("ply", "PLY", "Point cloud as PLY"),
    ("colmap", "COLMAP", "Cameras and points as a COLMAP sparse model"),
    ("npz", "NPZ", "All arrays as npz"),
    ("mini_npz", "Mini NPZ", "Depth, confidence and cameras as npz (no images)"),
    ("depth_vis", "Depth images", "Coloured depth maps as PNG"),
)


class DA3ImagePath(PropertyGroup):
    filepath: StringProperty(name="File", subtype="FILE_PATH")


class DA3Settings(PropertyGroup):
    """What the Run button reconstructs (Scene.da3_settings)."""

    # input
    input_mode: EnumProperty(name="Input", items=INPUT_MODES, default="IMAGES")
    images: CollectionProperty(type=DA3ImagePath, name="Images")
    images_index: IntProperty(default=0)
    folder: StringProperty(name="Folder", subtype="DIR_PATH", description="A folder of images")
    video: StringProperty(name="Video", subtype="FILE_PATH", description="A video file")
    video_fps: FloatProperty(
        name="Frames per second", default=2.0, min=0.0, soft_max=30.0,
        description="How many frames to take per second of video (0: every frame)",
    )
    video_start: FloatProperty(name="Start", default=0.0, min=0.0, unit="TIME_ABSOLUTE", description="Start time in seconds")
    video_end: FloatProperty(
        name="End", default=0.0, min=0.0, unit="TIME_ABSOLUTE", description="End time in seconds (0: the end of the video)"
    )
    max_frames: IntProperty(
        name="Max frames", default=0, min=0, soft_max=500,
        description="Stop after this many frames (0: no limit). Fewer frames need less memory",
    )

    # model
    model: EnumProperty(name="Model", items=_model_items(), default=DEFAULT_MODEL)
    custom_model: StringProperty(
        name="Repo or folder", description="Hugging Face repo id (owner/name) or a folder with config.json and model.safetensors"
    )
    process_res: IntProperty(
        name="Resolution", default=504, min=14, soft_max=1008, step=14,
        description="Processing resolution in pixels (multiple of 14). Lower is faster and needs less memory",
    )
    process_res_method: EnumProperty(name="Resize", items=PROCESS_RES_METHODS, default="upper_bound_resize")
    device: EnumProperty(name="Device", items=DEVICES, default="DEFAULT")

    # options
    use_ray_pose: BoolProperty(
        name="Ray pose", default=False, description="Camera poses from the ray head (slower, sometimes more accurate)"
    )
    ref_view_strategy: EnumProperty(name="Reference view", items=REF_VIEW_STRATEGIES, default="saddle_balanced")
    use_selected_cameras: BoolProperty(
        name="Use selected cameras as known poses", default=False,
        description="Condition the model on the selected camera objects (sorted by name, one per view)",
    )

    # build
    build_points: BoolProperty(name="Point cloud", default=True, description="One point cloud of all views")
    build_planes: BoolProperty(name="Depth planes", default=True, description="One displaced image plane per view")
    build_cameras: BoolProperty(name="Cameras", default=True, description="Cameras (one animated camera for a video)")
    conf_percentile: FloatProperty(
        name="Confidence cut", default=40.0, min=0.0, max=100.0, subtype="PERCENTAGE",
        description="Drop the least confident points, this percentage of them",
    )
    max_points: IntProperty(name="Max points", default=1_000_000, min=0, soft_max=10_000_000,
                            description="Keep at most this many points, a random subset (0: all)")
    point_stride: IntProperty(name="Point spacing", default=1, min=1, soft_max=16,
                              description="One point every this many pixels in rows and columns (1: every pixel)")
    fuse_points: BoolProperty(name="One cloud", default=True, description="One point cloud object (else one per view)")
    plane_stride: IntProperty(name="Plane detail", default=4, min=1, soft_max=16,
                              description="One plane vertex every this many pixels (1: every pixel)")
    plane_texture: EnumProperty(name="Plane texture", default="processed", items=(
        ("processed", "Processed", "The image at processing resolution (stored in the .blend)"),
        ("original", "Original", "The source image file at full resolution"),
    ))
    pack_images: BoolProperty(
        name="Pack original images", default=True,
        description="Store original-resolution plane textures in the .blend (off: refer to the image files by path)",
    )
    plane_edge_threshold: FloatProperty(
        name="Edge cut", default=0.1, min=0.0, soft_max=1.0,
        description="Drop plane faces whose corner depths differ by more than this fraction (0: keep all)",
    )
    scale_mode: EnumProperty(name="Scale", default="PREDICTED", items=(
        ("PREDICTED", "As predicted", "Depth and camera positions as the model predicts them"),
        ("METRIC", "Metric", "Metres (needs a metric model: DA3 Metric Large with known focal, or Nested)"),
        ("FACTOR", "Factor", "Multiply depth and camera positions by a factor"),
    ))
    scale_factor: FloatProperty(name="Factor", default=1.0, min=1e-6, soft_max=100.0,
                                description="Scene units per predicted unit")
    fixed_intrinsics: BoolProperty(
        name="Fixed lens", default=False,
        description="Video: one lens and shift for the whole shot (the median), no per-frame lens keys",
    )
    interpolation: EnumProperty(name="Keys", default="LINEAR", items=(
        ("LINEAR", "Linear", "Interpolate the camera between sampled frames"),
        ("CONSTANT", "Constant", "Hold each sampled camera until the next"),
    ))
    up_axis: EnumProperty(name="Up", default="Z_UP", items=(
        ("Z_UP", "Z up", "Blender Z up, the first camera at the origin looking along +Y"),
        ("KEEP", "OpenCV", "The first camera's OpenCV frame as is (Y down, Z forward)"),
    ))
    keep_results: BoolProperty(
        name="Keep result files", default=False, description="Keep the .npz result after importing (it can be imported again)"
    )
    export_format: EnumProperty(name="Export", items=EXPORT_FORMATS, options={"ENUM_FLAG"}, default=set())
    export_dir: StringProperty(name="Export folder", subtype="DIR_PATH", description="Where the worker writes the exports")

    @property
    def model_id(self) -> str:
        """The repo id or folder the worker loads."""
        return self.custom_model.strip() if self.model == CUSTOM_MODEL else self.model


class DA3Runtime(PropertyGroup):
    """The job in progress and the last outcome (WindowManager.da3_runtime, not saved)."""

    running: BoolProperty(default=False)
    cancel_requested: BoolProperty(default=False)
    stage: StringProperty(default="")
    fraction: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(default="")
    summary: StringProperty(default="")
    error: StringProperty(default="")
    # environment set-up and interpreter check (shown in the preferences)
    env_busy: BoolProperty(default=False)
    env_log: StringProperty(default="")
    env_result: StringProperty(default="")
    interpreter_info: StringProperty(default="")


CLASSES = (DA3ImagePath, DA3Settings, DA3Runtime)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.da3_settings = PointerProperty(type=DA3Settings)
    bpy.types.WindowManager.da3_runtime = PointerProperty(type=DA3Runtime)


def unregister():
    del bpy.types.WindowManager.da3_runtime
    del bpy.types.Scene.da3_settings
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
