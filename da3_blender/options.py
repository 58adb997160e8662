"""Every user-facing option's choices and default, defined once.

The CLI, the worker protocol, the worker, the headless script, the panel's properties and the
preferences all derive their choices and defaults from here. Standard library only: Blender's
Python (no torch, no PIL) imports this module.

Choice tables are ``(id, label, description)`` triples: the id is what the API, CLI and protocol
take; label and description are what the panel shows (Blender ``EnumProperty`` items).
"""

from __future__ import annotations

import os
import re

# -- model -----------------------------------------------------------------------------------------
DEFAULT_MODEL = "depth-anything/DA3-SMALL"  # Apache-2.0 weights, the fastest model; env DA3_MODEL overrides
MODEL_ENV = "DA3_MODEL"

# The model zoo: (repo id, label, parameters, weights licence, depth kind, camera poses).
# CC BY-NC 4.0 is non-commercial; the extension's own code is Apache-2.0.
MODEL_ZOO = (
    ("depth-anything/DA3-SMALL", "DA3 Small", "0.08B", "Apache-2.0", "relative", True),
    ("depth-anything/DA3-BASE", "DA3 Base", "0.12B", "Apache-2.0", "relative", True),
    ("depth-anything/DA3-LARGE-1.1", "DA3 Large 1.1", "0.35B", "CC BY-NC 4.0", "relative", True),
    ("depth-anything/DA3-GIANT-1.1", "DA3 Giant 1.1", "1.15B", "CC BY-NC 4.0", "relative", True),
    ("depth-anything/DA3METRIC-LARGE", "DA3 Metric Large", "0.35B", "Apache-2.0", "metric", False),
    ("depth-anything/DA3MONO-LARGE", "DA3 Mono Large", "0.35B", "Apache-2.0", "relative", False),
    ("depth-anything/DA3NESTED-GIANT-LARGE-1.1", "DA3 Nested Giant-Large 1.1", "1.40B", "CC BY-NC 4.0", "metric", True),
)


def default_model() -> str:
    """The model used when none is named: ``$DA3_MODEL`` if set, else :data:`DEFAULT_MODEL`."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


# -- processing ------------------------------------------------------------------------------------
DEFAULT_PROCESS_RES = 504  # official default
MIN_PROCESS_RES = 14  # one patch
PROCESS_RES_METHODS = (
    ("upper_bound_resize", "Longest side", "Scale so the longest side is the resolution (default, least memory)"),
    ("upper_bound_crop", "Longest side, crop", "As 'Longest side', centre-cropping to multiples of 14"),
    ("lower_bound_resize", "Shortest side", "Scale so the shortest side is the resolution: more pixels, more memory"),
    ("lower_bound_crop", "Shortest side, crop", "As 'Shortest side', centre-cropping to multiples of 14"),
)
DEFAULT_PROCESS_RES_METHOD = "upper_bound_resize"

REF_VIEW_STRATEGIES = (
    ("saddle_balanced", "Most central view", "The view most similar to all others is the reference (default)"),
    ("saddle_sim_range", "Most distinctive view", "The view whose similarity to the others varies most"),
    ("first", "First view", "The first view is the reference"),
    ("middle", "Middle view", "The middle view is the reference"),
)
DEFAULT_REF_VIEW_STRATEGY = "saddle_balanced"

COMPUTE_DTYPE_CHOICES = (  # the backbone's precision (docs/precision.md); heads and cameras are always fp32
    ("auto", "Automatic", "bf16 on a CPU that computes it natively and faster (else fp32); bf16 on an NVIDIA GPU"),
    ("fp32", "fp32 (exact)", "Full precision everywhere: the exact official-parity path, slower on a CPU"),
    ("bf16", "bf16", "bf16 backbone even where the processor emulates it"),
    ("fp16", "fp16", "fp16 autocast on a GPU (fp32 on a CPU)"),
)
COMPUTE_DTYPES = tuple(c[0] for c in COMPUTE_DTYPE_CHOICES)
DEFAULT_COMPUTE_DTYPE = "auto"
COMPUTE_DTYPE_HELP = "backbone precision: auto (bf16 on a CPU with native bf16 where faster), fp32 (exact), bf16, fp16"

# -- device ----------------------------------------------------------------------------------------
DEVICES = (
    ("auto", "Best available", "An NVIDIA GPU (CUDA) if there is one, else Apple silicon (MPS), else the CPU"),
    ("cpu", "CPU", "The processor: slow, but always works"),
    ("cuda", "NVIDIA GPU (CUDA)", "The first NVIDIA GPU (cuda:N picks another)"),
    ("mps", "Apple GPU (MPS)", "The Apple silicon GPU"),
)
DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def is_device_name(text: str) -> bool:
    """True for a device the CLI, the worker and the headless script accept (see :data:`DEVICE_HELP`)."""
    return isinstance(text, str) and bool(_DEVICE_RE.match(text))


# -- video sampling --------------------------------------------------------------------------------
DEFAULT_VIDEO_FPS = 1.0  # frames sampled per second of video (the official default)
EVERY_FRAME_FPS = 0.0  # fps 0 means every frame, on every surface

# -- exports ---------------------------------------------------------------------------------------
EXPORT_FORMATS = (
    ("glb", "glTF (.glb)", "Coloured point cloud and camera frustums as glTF binary"),
    ("ply", "PLY points", "Coloured point cloud as binary PLY"),
    ("colmap", "COLMAP", "Cameras and points as a COLMAP text model"),
    ("npz", "NPZ (all)", "Images, depth, confidence and cameras as npz (official layout)"),
    ("mini_npz", "NPZ (no images)", "Depth, confidence and cameras as npz"),
    ("depth_vis", "Depth pictures", "Each image beside its colour-mapped depth, as PNG"),
    ("exr", "EXR depth passes", "One OpenEXR per view: Z, confidence, sky, camera in the header (needs OpenEXR)"),
    # i10: 3D Gaussians (DA3-GIANT / NESTED only; turns on infer_gs)
    ("gs_ply", "3D Gaussians (.ply)", "3D Gaussian splats as a 3DGS PLY (Giant/Nested models only)"),
    # i28: into comp (docs/comp.md)
    ("stmap", "STMaps (lens)", "Undistort/redistort STMaps as float EXR and lens.json with the overscan camera (needs OpenEXR)"),
    ("nuke", "Nuke script + .chan", "The camera as a Nuke script (Camera2, plate Read, STMap lens nodes) and a .chan file"),
    ("usd", "USD stage", "Animated camera and point cloud as a USD stage (needs usd-core)"),
    ("undistorted", "Undistorted plates", "Each plate undistorted into the overscan frame (EXR stays EXR, else PNG)"),
    # issue 27: the depth maps fused into one coloured mesh (needs scikit-image)
    ("mesh", "Proxy mesh", "The depth maps fused into one coloured mesh, as mesh/mesh.glb and mesh/mesh.ply"),
)
EXPORT_FORMAT_NAMES = tuple(f[0] for f in EXPORT_FORMATS)
DEFAULT_EXPORT_FORMAT = "glb"  # CLI default
DEFAULT_CONF_THRESH_PERCENTILE = 40.0  # points below this confidence percentile are dropped
DEFAULT_NUM_MAX_POINTS = 1_000_000

# -- exr depth passes (exports/exr.py) -------------------------------------------------------------
EXR_RESOLUTIONS = (
    ("processed", "Processed", "The resolution the model saw (exr/depth.NNNN.exr)"),
    ("plate", "Plate", "The original footage's resolution, resampled (exr_plate/depth.NNNN.exr)"),
)
DEFAULT_EXR_RESOLUTION = "processed"
EXR_PLATE_FILTERS = (
    ("nearest", "Nearest", "Each plate pixel takes the nearest processed pixel: no mixed depths at edges"),
    ("bilinear", "Bilinear", "Smooth between processed pixels (mixes depths across silhouettes)"),
)
DEFAULT_EXR_PLATE_FILTER = "nearest"
DEFAULT_EXR_HALF = False  # float32 channels; half (float16) on request
EXR_OPTION_KEYS = ("exr_resolution", "exr_half", "exr_plate_filter")  # job options -> exports.export keywords

# -- usd stage (exports/usd.py) ----------------------------------------------------------------------
USD_FILE_FORMATS = (
    ("usda", "Text (.usda)", "Readable text layer (usd/shot.usda)"),
    ("usdc", "Binary (.usdc)", "Crate binary layer: smaller, faster to load (usd/shot.usdc)"),
)
DEFAULT_USD_FILE_FORMAT = "usda"

# -- camera exchange (scene/exchange.py): (id, label, description, file extension) --------------------
CAMERA_EXPORT_FORMATS = (
    ("ABC", "Alembic (.abc)", "Exact motion; lens on every frame (Blender's own importer reads it once)", ".abc"),
    ("FBX", "FBX (.fbx)", "Motion and focal length keyed on every frame", ".fbx"),
    # i28: into comp (scene/comp_export.py)
    ("USD", "USD (.usd)", "Blender's own USD exporter: the cameras over the frame range", ".usd"),
    ("NK", "Nuke script (.nk)", "A Camera2 node keyed on every frame and a Read of the footage", ".nk"),
    ("CHAN", "Nuke .chan (.chan)", "frame tx ty tz rx ry rz vfov on every frame (rotation order ZXY)", ".chan"),
)
CAMERA_EXPORT_EXTENSIONS = tuple(f[3] for f in CAMERA_EXPORT_FORMATS)
CAMERA_EXPORT_KINDS = ", ".join(f[1] for f in CAMERA_EXPORT_FORMATS)  # "Alembic (.abc), FBX (.fbx), ..."

# -- streaming (long shots: chunks aligned to each other) -------------------------------------------
CHUNK_ALIGN_CHOICES = (
    ("auto", "By model", "Similarity (with scale) for relative-depth models, rigid for metric models"),
    ("sim3", "Similarity (Sim3)", "Rotation, translation and scale: for relative-depth models"),
    ("se3", "Rigid (SE3)", "Rotation and translation only: metric models, whose scale must not drift"),
)
CHUNK_ALIGN_NAMES = tuple(c[0] for c in CHUNK_ALIGN_CHOICES)
DEFAULT_CHUNK_ALIGN = "auto"
MIN_CHUNK_SIZE = 2
AUTO_CHUNK = "auto"  # chunk_size "auto": chosen from the device (streaming.auto_chunk_size)
DEFAULT_VIDEO_CHUNK_SIZE = AUTO_CHUNK  # videos stream by default; image sets run in one pass


# loop closure (da3_blender/pipeline/streaming_loops.py): on by default for streamed shots of at least LOOP_MIN_FRAMES
# frames (five chunks of the CPU's 8 with overlap 2: fewer leave no chunk two apart that could revisit another)
DEFAULT_LOOP_CLOSURE = True
LOOP_MIN_FRAMES = 32


def loop_closure_on(loop_closure, n_views: int) -> bool:
    """Whether a streamed shot of ``n_views`` views closes its loops (in process and on the farm)."""
    return bool(loop_closure) and int(n_views) >= LOOP_MIN_FRAMES


def default_chunk_overlap(chunk_size: int) -> int:
    """Views shared by two consecutive chunks when the user gives none."""
    return max(2, int(chunk_size) // 4)


def choice_ids(table) -> tuple[str, ...]:
    """The ids of a ``(id, label, description)`` table."""
    return tuple(row[0] for row in table)


# -- scene building (the panel's Build section, the importer and the headless script) --------------
# Ids are the scene importer's (scene/importer.ImportOptions) and the panel's enum ids.
UP_AXES = (
    ("Z_UP", "Z up", "Blender's Z up: the first camera sits at the origin looking along +Y"),
    ("KEEP", "As computed", "The first camera's own axes (OpenCV: Y down, Z forward), unrotated"),
    ("FLOOR", "Floor", "The floor found in the result at Z = 0, Z up, the origin under the first camera, which "
                       "looks along +Y (Z up with a note when no floor is found)"),  # issue 27
)
DEFAULT_UP_AXIS = "FLOOR"  # Blender: the floor when one is found, else Z_UP; the da3 command keeps DA3's world
FALLBACK_UP_AXIS = "Z_UP"  # FLOOR without a floor
DEFAULT_MESH_MAX_FACES = 500_000  # the fused proxy mesh (issue 27), decimated to at most this many triangles
PLANE_TEXTURES = (
    ("processed", "Processed", "The image at processing resolution, stored in the .blend"),
    ("original", "Original", "The source image file at full resolution"),
)
DEFAULT_PLANE_TEXTURE = "processed"
KEY_INTERPOLATIONS = (
    ("LINEAR", "Linear", "Move the camera smoothly from one sampled frame to the next"),
    ("CONSTANT", "Constant", "Hold each sampled camera until the next sampled frame"),
)
DEFAULT_KEY_INTERPOLATION = "LINEAR"
SCALE_MODES = ("predicted", "metric")  # or a positive factor
DEFAULT_PLANE_STRIDE = 4  # pixels per plane vertex (1: every pixel)


# -- camera solve (issue 18, da3_blender/solve): refine=False | True (= the default lens) | a lens id -------
REFINE_LENSES = (
    ("fixed", "Fixed lens", "One focal length for the whole shot (prime lens)"),
    ("zoom", "Zoom", "A focal length per frame (zoom lens)"),
    ("radial", "Fixed + distortion", "One focal length with radial lens distortion k1, k2 (wide or cheap lenses)"),
    ("known", "Known lens", "The lens given (camera report, tracked camera or the result's own) is held: only the "
                            "camera poses are solved"),
)
DEFAULT_REFINE_LENS = "fixed"
REFINE_MOTIONS = (
    ("auto", "Auto", "Free camera, or a nodal pan when turning about one point explains the tracks as well"),
    ("free", "Free", "The camera moves through the scene (parallax): every position and rotation is solved"),
    ("nodal", "Nodal (tripod)", "The camera only turns about one point (tripod pan): one position, rotations solved"),
)
DEFAULT_REFINE_MOTION = "auto"


# -- remote worker (issue 11): where the model runs ----------------------------------------------------
WORKER_LOCATIONS = (
    ("LOCAL", "Local", "The worker runs on this computer with the Python chosen below"),
    ("REMOTE", "Remote (SSH)", "The worker runs on another computer (e.g. a GPU box) over SSH; files are sent with each job"),
)
DEFAULT_REMOTE_PYTHON = "python3"
DEFAULT_REMOTE_CACHE_DIR = "~/.cache/da3-blender"  # DA3 code, job folders and sent models on the remote


# -- shots: plate sequences, frame numbers and rates (issue 17) ----------------------------------------
SHOT_MODES = (
    ("auto", "Detect", "A numbered sequence (name.####.ext) is a shot: one animated camera; other images are stills"),
    ("sequence", "Shot", "The numbered images are one shot: one camera keyed on their frame numbers"),
    ("stills", "Stills", "Every image is a still photo with its own camera"),
)
SHOT_MODE_NAMES = tuple(m[0] for m in SHOT_MODES)
DEFAULT_SHOT_MODE = "auto"
DEFAULT_SHOT_FPS = EVERY_FRAME_FPS  # panel and headless: every frame of a video or a sequence is keyed
MAX_SCENE_FRAME = 1_048_574  # Blender's last frame
DEFAULT_FRAME_START = 1  # the scene frame of a video's first frame (1001 for a VFX plate)
DEFAULT_SEQUENCE_RATE = 24.0  # an image sequence's frame rate when it names none (EXR framesPerSecond)
SEQUENCE_MIN_DENSITY = 0.5  # a folder is a shot when its numbered images fill at least this share of their range
INPUT_COLORSPACES = (
    ("auto", "Automatic", "Float plates (EXR) and files declared linear are scene-linear, other images "
                          "(PNG, TIFF, DPX, JPEG) display-referred"),
    ("srgb", "sRGB", "The plate already holds display-referred sRGB values: used as they are (clamped to 0..1)"),
    ("linear", "Linear", "The plate is scene-linear: clamped to 0..1, then encoded with the sRGB transfer"),
)
INPUT_COLORSPACE_NAMES = tuple(c[0] for c in INPUT_COLORSPACES)
DEFAULT_INPUT_COLORSPACE = "auto"


# -- the web side (issue 21): `da3 backend`, `da3 gallery`, --use-backend ---------------------------------
DEFAULT_BACKEND_PORT = 8008  # official DA3's backend port
DEFAULT_BACKEND_URL = f"http://127.0.0.1:{DEFAULT_BACKEND_PORT}"  # where --use-backend sends work
DEFAULT_GALLERY_DIR = os.path.join("workspace", "gallery")  # official DA3's gallery folder
