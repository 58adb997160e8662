"""Build a DA3 result into the Blender scene: point cloud, textured depth planes, cameras.

``import_prediction(pred, name=None, options=None)`` creates the collection ``DA3 <source>``
(source = video or image folder name) with child collections Points, Planes and Cameras.
Importing the same source again replaces that collection and every data-block it made (meshes,
materials, images, node groups, cameras, actions, clips); different sources coexist. The import is
transactional: the result and options are validated first, and if anything fails while building,
everything created so far is removed, leaving the file exactly as it was.
Conventions (axes, origin, scale, pixel centres, camera intrinsics): see :mod:`.conventions`.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from dataclasses import dataclass

import bpy
import numpy as np

from ..da3_blender.errors import BadInputError, ResultFormatError
from ..da3_blender.geometry import to_4x4
from ..da3_blender import options as opt
from ..da3_blender.options import DEFAULT_CONF_THRESH_PERCENTILE, DEFAULT_NUM_MAX_POINTS
from ..da3_blender.prediction import Prediction, load_result
from . import cameras, footage, materials, planes, points, splats, tracking
from . import matchmove as mm
from . import solve as solve_scene
from .conventions import (
    camera_matrices, fallback_intrinsics, intrinsics_to_blender, relative_extrinsics,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr", ".tga", ".dpx", ".cin", ".hdr")


@dataclass
class ImportOptions:
    points: bool = True
    planes: bool = True
    cameras: bool = True
    fuse_points: bool = True  # one mesh for all views (else one object per view)
    conf_percentile: float = DEFAULT_CONF_THRESH_PERCENTILE  # drop points below this confidence percentile (0 keeps all)
    max_points: int = DEFAULT_NUM_MAX_POINTS  # random (seeded) subset above this; 0 = no limit
    point_stride: int = 1  # every n-th pixel in rows and columns
    point_radius: float | None = None  # scene units; None: 0.2 % of the median depth
    skip_sky: bool = True
    plane_stride: int = opt.DEFAULT_PLANE_STRIDE
    plane_edge_threshold: float = 0.1  # drop faces whose corner depths differ more (max/min - 1); <= 0 keeps all
    plane_texture: str = opt.DEFAULT_PLANE_TEXTURE  # or "original" (the source image file, if it exists)
    pack_images: bool = True  # pack original images into the .blend (processed ones always are)
    up_axis: str = opt.DEFAULT_UP_AXIS  # FLOOR (Z_UP when no floor is found), Z_UP or KEEP (the first camera's frame)
    camera_height: float = 0.0  # > 0: scale so the first camera is this high above the floor (needs a floor)
    mesh: bool = False  # issue 27: the fused proxy mesh (the result's, else fused here: needs scikit-image)
    mesh_max_faces: int = opt.DEFAULT_MESH_MAX_FACES
    mesh_holdout: bool = False  # the mesh cuts CG out (holdout) instead of showing
    shadow_catcher: bool = False  # a floor plane catching CG shadows over the plate (needs a floor)
    scale: str | float = "predicted"  # "predicted" (as is), "metric" (needs a metric result) or a factor
    fixed_intrinsics: bool = False  # video: median lens/shifts instead of keys
    intrinsics_tolerance: float = 1e-4  # video: key lens (relative) / shifts only if they vary more
    interpolation: str = opt.DEFAULT_KEY_INTERPOLATION  # or "CONSTANT"
    set_scene_from_source: bool = True  # render resolution, pixel aspect, fps, frame range, scene camera
    standard_view_transform: bool = True  # scene view transform "Standard": renders give back the footage's colours
    planes_max_views: int = 100  # build depth planes only if at most this many would be made (0 = no limit)
    planes_every: int = 1  # a depth plane for every k-th view (video: every k-th sampled frame)
    footage_background: bool = True  # video as the camera's viewport background
    frame_start: int = 1  # results before issue 17 only (0-based video frames): the scene frame of frame 0
    fallback_fov: float = 60.0  # horizontal degrees, for results without intrinsics (mono models)
    seed: int = 0
    splats: bool = True  # i10: 3D Gaussians as ellipsoid splats, when the result has them (max_points caps them)


def _check_options(opts: ImportOptions) -> None:
    def bad(msg):
        raise BadInputError(f"import option {msg}")

    if opts.up_axis not in opt.choice_ids(opt.UP_AXES):
        bad(f"up_axis={opts.up_axis!r} is unknown; use one of {', '.join(opt.choice_ids(opt.UP_AXES))}")
    if not (opts.camera_height >= 0 and math.isfinite(opts.camera_height)) or int(opts.mesh_max_faces) < 1:
        bad(f"camera_height={opts.camera_height} must be >= 0 (0: none) and mesh_max_faces={opts.mesh_max_faces} >= 1")
    for key, table in (("plane_texture", opt.PLANE_TEXTURES), ("interpolation", opt.KEY_INTERPOLATIONS)):
        if getattr(opts, key) not in opt.choice_ids(table):
            bad(f"{key}={getattr(opts, key)!r} is unknown; use one of {', '.join(opt.choice_ids(table))}")
    if not 0 <= opts.conf_percentile < 100:
        bad(f"conf_percentile={opts.conf_percentile} must be in [0, 100)")
    for key in ("point_stride", "plane_stride", "planes_every"):
        if int(getattr(opts, key)) < 1:
            bad(f"{key}={getattr(opts, key)} must be at least 1")
    if opts.max_points < 0:
        bad(f"max_points={opts.max_points} must be >= 0 (0 = no limit)")
    if opts.planes_max_views < 0:
        bad(f"planes_max_views={opts.planes_max_views} must be >= 0 (0 = no limit)")
    if opts.point_radius is not None and not opts.point_radius > 0:
        bad(f"point_radius={opts.point_radius} must be positive")
    if not 0 < opts.fallback_fov < 180:
        bad(f"fallback_fov={opts.fallback_fov} must be in (0, 180) degrees")


def _resolve_scale(pred: Prediction, scale) -> float:
    if scale == "predicted":
        return 1.0
    if scale == "metric":
        if not pred.is_metric:
            raise BadInputError("this result is not metric (use a metric model, or scale='predicted' or a number)")
        return 1.0
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise BadInputError(f"import option scale={scale!r}: use 'predicted', 'metric' or a positive number") from None
    if not (math.isfinite(value) and value > 0):
        raise BadInputError(f"import option scale={scale!r} must be a positive number")
    return value


def _validate(pred: Prediction, opts: ImportOptions) -> dict:
    """Check every array the build reads; returns the derived geometry. Raises ResultFormatError."""
    def bad(msg):
        raise ResultFormatError(f"DA3 result: {msg}; run DA3 again to recreate it")

    depth = np.asarray(pred.depth)
    if depth.ndim != 3 or depth.shape[0] < 1 or min(depth.shape[1:]) < 2:
        bad(f"depth has shape {depth.shape}, expected (N,H,W)")
    n, h, w = depth.shape
    shapes = {"processed_images": (n, h, w, 3), "conf": (n, h, w), "sky": (n, h, w), "intrinsics": (n, 3, 3),
              "orig_size": (n, 2), "proc_to_orig": (n, 3, 3), "frame_numbers": (n,)}
    for key, shape in shapes.items():
        value = getattr(pred, key)
        if value is not None and np.shape(value) != shape:
            bad(f"{key} has shape {np.shape(value)}, expected {shape}")
    if pred.extrinsics is not None and np.shape(pred.extrinsics) not in ((n, 3, 4), (n, 4, 4)):
        bad(f"extrinsics has shape {np.shape(pred.extrinsics)}, expected ({n},3,4)")
    for key in ("extrinsics", "intrinsics", "proc_to_orig"):
        value = getattr(pred, key)
        if value is not None and not np.all(np.isfinite(value)):
            bad(f"{key} contains NaN or infinite values")
    if not np.any(np.isfinite(depth) & (depth > 0)):
        bad("depth has no valid (finite, positive) value")
    if pred.gaussians is not None and pred.gaussians.check(n * h * w):  # i10
        bad(pred.gaussians.check(n * h * w))
    sizes = np.asarray(pred.orig_size, dtype=np.int64)
    if np.any(sizes < 1):
        bad("orig_size has non-positive sizes")
    if pred.intrinsics is not None:
        k_proc = np.asarray(pred.intrinsics, dtype=np.float64)
        if np.any(k_proc[:, 0, 0] <= 0) or np.any(k_proc[:, 1, 1] <= 0):
            bad("intrinsics have non-positive focal lengths")
    else:
        k_proc = fallback_intrinsics(n, w, h, opts.fallback_fov)
    if pred.extrinsics is None:
        if opts.cameras and n > 1:
            raise BadInputError(f"this result has {n} views but no camera poses; import without cameras or "
                                "run a model that predicts poses")
        w2c_rel = np.tile(np.eye(4), (n, 1, 1))
        reference = np.eye(4)
    else:
        # known poses (issue 17): the world of the given cameras (a tracking solve), not re-based on view 0
        reference = np.eye(4) if in_input_world(pred) else to_4x4(np.asarray(pred.extrinsics, np.float64)[0])
        w2c_rel = relative_extrinsics(pred.extrinsics, reference)
    video = footage.video_info(pred)
    if video is not None and len(np.unique(pred.frame_numbers)) != n:
        bad("frame_numbers repeat a frame")
    try:  # a shot's scene frames (results before issue 17: the video index + frame_start)
        frames = None if video is None else footage.scene_frames(pred, opts.frame_start)
    except ValueError as exc:
        raise BadInputError(f"DA3 result: {exc}") from None
    return {
        "k_proc": k_proc,
        "k_orig": np.asarray(pred.proc_to_orig, dtype=np.float64) @ k_proc,
        "sizes": sizes,
        "w2c_rel": w2c_rel,
        "reference": reference,  # world-to-camera of the frame built in (identity: the result's own world)
        "scale": _resolve_scale(pred, opts.scale),
        "video": video,
        "frames": frames,
        "assumed_fov": pred.intrinsics is None,
    }


def in_input_world(pred: Prediction) -> bool:
    """True for a result whose cameras are the given known poses in their own world and units (inference
    with ``align_to_input_ext_scale``): it is built in that world, so the tracked cameras stay where they are."""
    options = (pred.meta or {}).get("options") or {}
    return bool(options.get("pose_conditioned")) and options.get("align_to_input_ext_scale") is True


def source_of(pred: Prediction, name: str | None = None, fallback: str | None = None) -> tuple[str, str]:
    """(label, key): the label names the collection, the key identifies the source for re-imports."""
    video = footage.video_info(pred)
    paths = [p for p in (pred.source_paths or []) if p]
    key = label = None
    if video is not None and video.get("pattern"):  # an image sequence: plate.####.exr -> "plate"
        pattern = os.path.abspath(video["pattern"])
        stem = os.path.basename(pattern).split("#")[0].split("%")[0].rstrip("._- ")
        key, label = f"video:{pattern}", stem or os.path.basename(os.path.dirname(pattern))
    elif video is not None and (video.get("path") or paths):
        path = os.path.abspath(video.get("path") or paths[0])
        key, label = f"video:{path}", os.path.splitext(os.path.basename(path))[0]
    elif paths:
        folder = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
        digest = hashlib.sha1("\n".join(sorted(os.path.abspath(p) for p in paths)).encode()).hexdigest()[:16]
        key, label = f"images:{folder}:{digest}", os.path.basename(folder) or folder
    elif fallback:
        key, label = f"file:{os.path.abspath(fallback)}", os.path.splitext(os.path.basename(fallback))[0]
    if name:
        label = name
    if key is None:
        key = f"name:{label or 'result'}"
    return label or "result", key


def find_import(key: str):
    """The collection of an earlier import of ``key``, or None."""
    for col in bpy.data.collections:
        if col.get(tracking.TAG) == key and col.get("da3_role") == "root":
            return col
    return None


def import_prediction(pred: Prediction, name: str | None = None, options: ImportOptions | None = None, *,
                      scene=None, _fallback_source: str | None = None):
    """Build ``pred`` into ``scene`` (default: the context scene); returns the new collection."""
    opts = options or ImportOptions()
    _check_options(opts)
    geo = _validate(pred, opts)
    mm.resolve_world(pred, opts, geo, in_input_world(pred))  # issue 27: the FLOOR world, the camera-height scale
    label, key = source_of(pred, name, _fallback_source)
    scene = scene or bpy.context.scene
    token = f"pending:{uuid.uuid4().hex}"
    track = tracking.Tracker(token)
    old = tracking.set_aside(key)
    try:
        root, cams = _build(pred, opts, geo, label, key, scene, track)
    except BaseException:
        tracking.remove_tagged(token)
        tracking.restore_names(old)
        raise
    tracking.remove_tagged(key)
    tracking.retag(token, key)
    if in_input_world(pred):
        root["da3_world"] = "known poses"  # built in the given cameras' world (not re-based on view 0)
    if opts.set_scene_from_source and cams:
        cameras.apply_camera_render_settings(cams[0], scene)
        if geo["video"] is not None:
            footage.set_render_size(scene, geo["video"])
            footage.set_scene_timing(scene, geo["video"], geo["frames"], opts.frame_start)
            scene.frame_set(int(geo["frames"].min()))
    if opts.standard_view_transform:
        scene.view_settings.view_transform = "Standard"  # AgX/Filmic would tone-map the footage's colours
        scene.view_settings.look = "None"
    return root


def import_result_file(path, options: ImportOptions | None = None, name: str | None = None, *, scene=None):
    """Load a result ``.npz`` (``prediction.load_result``) and import it. Bad files change nothing."""
    pred = load_result(path)
    return import_prediction(pred, name, options, scene=scene, _fallback_source=os.fspath(path))


def remove_import(key: str) -> int:
    """Remove an import (by its key, ``collection["da3_import"]``) and all its data-blocks."""
    return tracking.remove_tagged(key)


def _child(parent, role: str, track):
    col = track(bpy.data.collections.new(role.capitalize()))
    col["da3_role"] = role
    parent.children.link(col)
    return col


def _typical_depth(pred) -> float:
    """The median valid depth (of ~1M sampled pixels at most: plenty for a size)."""
    depth = np.asarray(pred.depth)
    step = max(1, int(np.sqrt(depth.size / 1e6)))
    sample = depth[:, ::step, ::step]
    valid = sample[np.isfinite(sample) & (sample > 0)]
    return float(np.median(valid if valid.size else depth[np.isfinite(depth) & (depth > 0)]))


def _build(pred, opts, geo, label, key, scene, track):
    up, scale, k_proc, w2c_rel = geo["up"], geo["scale"], geo["k_proc"], geo["w2c_rel"]
    typical = _typical_depth(pred) * scale
    root = track(bpy.data.collections.new(f"DA3 {label}"))
    root["da3_role"], root["da3_key"], root["da3_scale"] = "root", key, scale
    root["da3_kind"] = (geo["video"].get("kind") or "video") if geo["video"] is not None else "images"
    if geo["assumed_fov"]:
        root["da3_assumed_fov"] = float(opts.fallback_fov)
    scene.collection.children.link(root)
    if geo["video"] is not None:  # frame_1060: the scene frame, as the footage and the exports number it
        names = [f"frame_{int(n):04d}" for n in geo["frames"]]
    else:
        names = cameras.view_names(pred.source_paths, pred.num_views)

    if opts.points:
        col = _child(root, "points", track)
        data = points.point_data(pred, k_proc, w2c_rel, up, scale, conf_percentile=opts.conf_percentile,
                                 max_points=opts.max_points, stride=int(opts.point_stride),
                                 skip_sky=opts.skip_sky, seed=opts.seed)
        mat = track(materials.attribute_material(f"DA3 {label} points", "Col"))
        group = track(points.points_node_group(f"DA3 {label} points", mat))
        radius = opts.point_radius if opts.point_radius is not None else 0.002 * typical
        parts = [(f"{label} points", slice(None))]
        if not opts.fuse_points:
            bounds = np.searchsorted(data["view"], np.arange(pred.num_views + 1))
            parts = [(f"{names[i]} points", slice(bounds[i], bounds[i + 1])) for i in range(pred.num_views)]
        for obj_name, sel in parts:
            mesh = track(points.points_mesh(obj_name, data["positions"][sel], data["colors"][sel],
                                            data["conf"][sel], data["view"][sel]))
            col.objects.link(track(points.points_object(obj_name, mesh, group, mat, radius)))

    if opts.splats and pred.gaussians is not None:  # i10
        splats.build_splats(pred, label, up, scale, _child(root, "splats", track), track,
                            max_count=opts.max_points, seed=opts.seed, reference=geo["reference"])

    if opts.planes:
        col = _child(root, "planes", track)
        views = plane_views(pred.num_views, opts.planes_max_views, opts.planes_every)
        if not views:
            root["da3_planes_note"] = (f"no depth planes: {len(range(0, pred.num_views, opts.planes_every))} would "
                                       f"be more than {opts.planes_max_views}; raise the limit or build every "
                                       "k-th view's plane")
        video_frames = geo["frames"]
        for i in views:
            obj = _plane(pred, i, names[i], opts, geo, col, track)
            if video_frames is not None:  # a video frame's plane shows on that frame only
                planes.show_only_on_frame(obj, int(video_frames[i]), track)

    cams = []
    if opts.cameras:
        col = _child(root, "cameras", track)
        k_orig, sizes = geo["k_orig"], geo["sizes"]
        params = intrinsics_to_blender(k_orig, sizes[:, 0], sizes[:, 1])
        mats = camera_matrices(w2c_rel, up, scale)
        video = geo["video"]
        if video is not None:
            order = np.argsort(geo["frames"])
            frames = geo["frames"][order]
            cam = cameras.animated_camera(
                label, mats[order], {k: v[order] for k, v in params.items()}, frames, sizes[order[0]], track,
                fixed_intrinsics=opts.fixed_intrinsics, tolerance=opts.intrinsics_tolerance,
                interpolation=opts.interpolation, display_size=0.1 * typical)
            cams = [cam]
            if opts.footage_background:
                clip = footage.load_clip(video.get("path") or "", track)
                if clip is not None:
                    footage.set_background(cam, clip, footage.clip_start(video, opts.frame_start))
        else:
            cams = cameras.still_cameras(names, mats, params, sizes, track, display_size=0.1 * typical)
        for cam in cams:
            cam["da3_up_axis"], cam["da3_scale"] = geo["up_axis"], scale
            col.objects.link(cam)
    if (pred.meta or {}).get("solve"):  # i18: camera solve figures, tracks, lens distortion
        view_frames, first = None, None
        if geo["video"] is not None:
            view_frames = footage.scene_frames(pred, opts.frame_start)
            first = footage.clip_start(geo["video"], opts.frame_start)
        solve_scene.build(pred, root, cams if opts.cameras else [], names, view_frames, track, first)
    mm.build(pred, opts, geo, label, root, _child, track, cams, scene)  # records the world; mesh, shadow catcher
    return root, cams


def plane_views(n: int, max_views: int, every: int) -> list[int]:
    """The views that get a depth plane: every ``every``-th, and none if that is more than ``max_views``
    (0 = no limit), so a long shot does not turn into thousands of textured meshes by default."""
    views = list(range(0, n, max(1, int(every))))
    return [] if max_views and len(views) > max_views else views


def _plane(pred, i, name, opts, geo, col, track):
    source = (pred.source_paths or [""] * pred.num_views)[i]
    use_original = (opts.plane_texture == "original" and source and os.path.isfile(source)
                    and source.lower().endswith(IMAGE_SUFFIXES))
    if not use_original and pred.processed_images is None and source and os.path.isfile(source) \
            and source.lower().endswith(IMAGE_SUFFIXES):
        use_original = True  # no processed pixels stored: the source file is the only texture
    data = planes.plane_data(
        pred.depth[i], geo["k_proc"][i], geo["w2c_rel"][i], geo["up"], geo["scale"], stride=int(opts.plane_stride),
        edge_threshold=opts.plane_edge_threshold,
        proc_to_orig=pred.proc_to_orig[i] if use_original else None,
        orig_size=geo["sizes"][i] if use_original else None)
    image = None
    if use_original:
        image = track(planes.image_from_file(source, opts.pack_images))
    elif pred.processed_images is not None:
        image = track(planes.image_from_array(f"{name} image", pred.processed_images[i]))
    mesh = track(planes.plane_mesh(f"{name} plane", data["positions"], data["faces"], data["uv"],
                                   data["edges"], data["corner_edges"]))
    mat = track(materials.image_material(f"{name} plane", image))
    mesh.materials.append(mat)
    obj = track(bpy.data.objects.new(f"{name} plane", mesh))
    obj["da3_view"] = i
    col.objects.link(obj)
    return obj
