"""Reconstruct photos or a video into a .blend without the Blender interface.

    blender -b -P scripts/reconstruct.py -- INPUT... --output scene.blend [options]
    python scripts/reconstruct.py INPUT... --output scene.blend [options]      (bpy module)

INPUT is images, folders, one image sequence (``plate.####.exr``: one camera keyed on the frames' own
numbers; ``--stills`` keeps the images apart) or one video; the extension is registered, ``da3.reconstruct``
runs (the model in the worker Python: ``--python``, this Python with torch, or the managed environment)
and the scene is saved. Arguments are checked as the worker checks a job (``da3_blender.job``) before any
work. Exit 0; else one line ``reconstruct: error: ...``, 2 for bad arguments, 1 for a failed run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the core's option tables and job checks (standard library only)
    sys.path.insert(0, str(REPO_ROOT))

from da3_blender import options as opt  # noqa: E402
from da3_blender.commands.common import (DEBUG_ENV, add_exr_arguments, add_refine_argument, add_shot_arguments,  # noqa: E402
                                         add_streaming_arguments, add_video_arguments, debug_wanted, exr_options, shot_from_args)
from da3_blender.errors import BadInputError  # noqa: E402
from da3_blender.matchmove.steps import add_build_arguments as add_matchmove_arguments, scene_settings as mm_settings  # noqa: E402,E501
from da3_blender.files import check_writable_folder  # noqa: E402
from da3_blender.inputs.sequences import find_sequence, is_pattern  # noqa: E402

PACKAGE = "da3_for_blender"  # the manifest id
PROG = "reconstruct"


class Failure(Exception):
    """One-line error for the user; ``code`` is the exit status (2: bad arguments, 1: the run failed)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _lower_choice(choices):
    """argparse type accepting a choice in any case, returned as spelled in ``choices``."""
    def parse(text: str) -> str:
        for c in choices:
            if text.lower() == c.lower():
                return c
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(c.lower() for c in choices)}")
    return parse


def _scale(text: str):
    if text.lower() in opt.SCALE_MODES:
        return text.lower()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use {' or '.join(opt.SCALE_MODES)} or a positive factor") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the scale factor {text} must be positive")
    return value


def add_build_arguments(p) -> None:
    """The panel's Build options (shared with scripts/farm_build.py, the render farm's Build step)."""
    g = p.add_argument_group("build (as the panel's Build section)")
    g.add_argument("--no-points", action="store_true", help="no point cloud")
    g.add_argument("--no-planes", action="store_true", help="no depth planes")
    g.add_argument("--no-cameras", action="store_true", help="no cameras")
    g.add_argument("--conf-thresh-percentile", type=float, default=None,
                   help=f"drop the least confident points, this percentage of them (default: {opt.DEFAULT_CONF_THRESH_PERCENTILE:g})")
    g.add_argument("--num-max-points", type=int, default=None,
                   help=f"keep at most this many points (default: {opt.DEFAULT_NUM_MAX_POINTS})")
    g.add_argument("--plane-detail", type=int, default=None, metavar="PIXELS",
                   help=f"one plane vertex every this many pixels; 1 is the finest (default: {opt.DEFAULT_PLANE_STRIDE})")
    g.add_argument("--plane-texture", type=_lower_choice(opt.choice_ids(opt.PLANE_TEXTURES)), default=None,
                   help=f"processed or original images on the planes (default: {opt.DEFAULT_PLANE_TEXTURE})")
    g.add_argument("--up-axis", type=_lower_choice(opt.choice_ids(opt.UP_AXES)), default=None, help="floor (the floor at Z = 0; z_up without one), z_up or keep (the first camera's OpenCV frame) (default: floor)")
    g.add_argument("--scale", type=_scale, default=None,
                   help="predicted, metric (metric models) or a factor for depth and camera positions (default: predicted)")
    g.add_argument("--fixed-lens", action="store_true", help="video: one lens for the whole shot, no lens keys")
    add_matchmove_arguments(g)  # issue 27: --camera-height, --shadow-catcher, --mesh, --mesh-max-faces, --mesh-holdout
    g.add_argument("--keys", type=_lower_choice(opt.choice_ids(opt.KEY_INTERPOLATIONS)), default=None,
                   help="camera key interpolation: linear or constant (default: linear)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    default_model = opt.default_model()
    p = _Parser(prog=PROG, description="Photos or a video to a 3D scene (.blend) with Depth Anything 3.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images, one image sequence (plate.####.exr, one of its files or its "
                        "folder) or one video")
    p.add_argument("--output", "-o", required=True, help="the .blend file to write")
    p.add_argument("--model", "-m", default=default_model,
                   help=f"Hugging Face repo id or a local model folder (default: {default_model}; env {opt.MODEL_ENV})")
    add_video_arguments(p.add_argument_group("video and sequences"), default_fps=opt.DEFAULT_SHOT_FPS)
    g = p.add_argument_group("shots: frame numbers, rates, plates")
    add_shot_arguments(g)
    g.add_argument("--stills", action="store_true",
                   help="numbered images are stills (a camera each), not one shot (default: a sequence is a shot)")
    g = p.add_argument_group("model and processing")
    g.add_argument("--device", default=None, help=f"{opt.DEVICE_HELP} (default: the extension's preference, auto)")
    g.add_argument("--dtype", default=None, choices=opt.COMPUTE_DTYPES, help=opt.COMPUTE_DTYPE_HELP + " (default: the panel's)")
    g.add_argument("--process-res", type=int, default=None, help=f"processing resolution (default: {opt.DEFAULT_PROCESS_RES})")
    g.add_argument("--process-res-method", default=None, choices=opt.choice_ids(opt.PROCESS_RES_METHODS))
    g.add_argument("--ref-view-strategy", default=None, choices=opt.choice_ids(opt.REF_VIEW_STRATEGIES))
    g.add_argument("--use-ray-pose", action="store_true", help="solve cameras from the ray map")
    g.add_argument("--gaussians", action="store_true",
                   help="also predict 3D Gaussians and import them as splats (DA3 Giant / Nested models)")
    add_streaming_arguments(g)
    add_refine_argument(g)
    g.add_argument("--known-cameras", default=None, metavar="TRACK.blend",
                   help="condition the model on the cameras of this .blend (a tracking solve): one per view in natural "
                        "name order, or one animated camera on the views' frame numbers; the scene is built in that "
                        "file (its cameras' world) and saved as --output")
    g.add_argument("--python", default=None, help="the worker's Python interpreter (must have torch)")
    # remote worker (issue 11): the model runs on another machine over SSH
    g.add_argument("--remote", default=None, metavar="HOST",
                   help="run the model on HOST over SSH (an ~/.ssh/config alias or user@host)")
    g.add_argument("--remote-python", default=None, help=f"with --remote: the Python there (default: {opt.DEFAULT_REMOTE_PYTHON})")
    g.add_argument("--remote-dir", default=None, help=f"with --remote: its cache folder (default: {opt.DEFAULT_REMOTE_CACHE_DIR})")
    add_build_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--export-dir", default=None, help="also export files (see --export-format) into this folder")
    g.add_argument("--export-format", default=None,
                   help=f"{', '.join(opt.EXPORT_FORMAT_NAMES)}; join with '-' (default: {opt.DEFAULT_EXPORT_FORMAT})")
    add_exr_arguments(g)
    g.add_argument("--keep-result", action="store_true", help="keep the result .npz next to the .blend")
    g.add_argument("--export-camera", default=None, metavar="PATH" + "|PATH".join(opt.CAMERA_EXPORT_EXTENSIONS),
                   help="also write the cameras (scene fps, frame range): Alembic/FBX/USD by Blender, or Nuke .nk/.chan")
    g.add_argument("--debug", action="store_true", help=f"print tracebacks of errors (also env {DEBUG_ENV}=1)")
    # render farm (issue 20): plan here, run on a Flamenco farm
    g.add_argument("--submit-flamenco", default=None, metavar="URL", help="plan the shot into --farm-dir and submit it to this Flamenco manager instead of running it here")  # noqa: E501
    g.add_argument("--farm-dir", default=None, metavar="DIR", help="with --submit-flamenco: the plan folder, on storage the workers see (default: <output>_farm)")  # noqa: E501
    args = p.parse_args(argv)
    try:
        check_args(args)
    except (BadInputError, Failure) as ex:
        p.error(str(ex))
    return args


def check_args(args: argparse.Namespace) -> dict:
    """Every argument checked before any work (outputs included); returns the job they describe."""
    mm_settings(args)  # issue 27: camera height, mesh budget
    for path in args.inputs:
        if not os.path.exists(path) and not is_pattern(path):
            raise Failure(f"input not found: {path}", code=2)
    if not args.output.lower().endswith(".blend"):
        raise Failure(f"--output must be a .blend file, got {args.output}", code=2)
    if os.path.isdir(args.output):
        raise Failure(f"--output {args.output} is a folder: give a file name such as scene.blend", code=2)
    if args.process_res is not None and args.process_res < opt.MIN_PROCESS_RES:
        raise Failure(f"--process-res must be >= {opt.MIN_PROCESS_RES} (e.g. {opt.DEFAULT_PROCESS_RES}), got {args.process_res}", code=2)
    if args.export_format and not args.export_dir:
        raise Failure("--export-format needs --export-dir", code=2)
    if args.plane_detail is not None and args.plane_detail < 1:
        raise Failure(f"--plane-detail must be >= 1 pixel, got {args.plane_detail}", code=2)
    if args.python and not os.path.isfile(args.python):
        raise Failure(f"--python: no interpreter at {args.python}", code=2)
    if (args.remote_python or args.remote_dir) and not args.remote:
        raise Failure("--remote-python and --remote-dir need --remote HOST", code=2)
    if args.known_cameras and not (args.known_cameras.lower().endswith(".blend") and os.path.isfile(args.known_cameras)):
        raise Failure(f"--known-cameras {args.known_cameras}: no such .blend file; give the tracking scene's .blend", code=2)
    if args.known_cameras and os.path.abspath(args.known_cameras) == os.path.abspath(args.output):
        raise Failure("--output is the --known-cameras file: give another .blend (the track is kept as it is)", code=2)
    if args.farm_dir and not args.submit_flamenco:
        raise Failure("--farm-dir needs --submit-flamenco URL", code=2)
    if args.submit_flamenco and (args.remote or args.export_camera or args.gaussians):
        raise Failure("--submit-flamenco runs the shot on the farm: leave out --remote, --export-camera and --gaussians", code=2)
    if args.export_camera and os.path.splitext(args.export_camera)[1].lower() not in opt.CAMERA_EXPORT_EXTENSIONS:
        raise Failure(f"--export-camera must be one of {opt.CAMERA_EXPORT_KINDS}, got {args.export_camera}", code=2)
    spec = job_from_args(args)
    if args.export_camera:
        check_writable_folder(os.path.dirname(os.path.abspath(args.export_camera)), f"write the cameras to {args.export_camera}")
    check_writable_folder(os.path.dirname(os.path.abspath(args.output)), f"write the .blend to {args.output}")
    if args.export_dir:
        check_writable_folder(os.path.abspath(args.export_dir), f"write the exports into {args.export_dir}")
    return spec


def job_from_args(args: argparse.Namespace) -> dict:
    """The worker job these arguments describe (:func:`da3_blender.job.build_job`: the checks every surface shares)."""
    from da3_blender.job import build_job
    options = {
        "process_res": args.process_res,
        "process_res_method": args.process_res_method,
        "ref_view_strategy": args.ref_view_strategy,
        "use_ray_pose": args.use_ray_pose or None,
        "infer_gs": args.gaussians or None,
        "conf_thresh_percentile": args.conf_thresh_percentile,
        "num_max_points": args.num_max_points,
        "chunk_size": args.chunk_size,
        "chunk_overlap": args.chunk_overlap,
        "chunk_align": args.chunk_align, "loop_closure": False if getattr(args, "no_loop_closure", False) else None,
        "refine": args.refine, "refine_motion": args.refine_motion,
        **exr_options(args),
    }
    video = {"fps": args.fps, "start": args.start, "end": args.end, "max_frames": args.max_frames}
    export_format = (args.export_format or opt.DEFAULT_EXPORT_FORMAT) if args.export_dir else None
    return build_job([os.path.abspath(p) for p in args.inputs], os.path.splitext(os.path.abspath(args.output))[0] + ".npz",
                     model=args.model, device=args.device, dtype=args.dtype, video=video, options=options,
                     export_dir=os.path.abspath(args.export_dir) if args.export_dir else None, export_format=export_format,
                     shot=shot_from_args(args, stills=args.stills))


def scene_settings(args: argparse.Namespace) -> dict:
    """``scene.da3_settings`` values for the arguments (name -> value); unset arguments keep the panel's defaults."""
    s: dict = {
        "build_points": not args.no_points,
        "build_planes": not args.no_planes,
        "build_cameras": not args.no_cameras,
        "keep_results": args.keep_result,
        "use_ray_pose": args.use_ray_pose,
        "infer_gs": args.gaussians,
        "fixed_intrinsics": args.fixed_lens,
        "refine_cameras": args.refine is not None,
    }
    optional = {
        **exr_options(args),  # issue 17
        "device": args.device, "compute_dtype": args.dtype,
        "process_res": args.process_res, "process_res_method": args.process_res_method,
        "ref_view_strategy": args.ref_view_strategy,
        "conf_percentile": args.conf_thresh_percentile,
        "max_points": args.num_max_points,
        "plane_stride": args.plane_detail,
        "plane_texture": args.plane_texture,
        "up_axis": args.up_axis,
        "interpolation": args.keys,
        "chunk_size": args.chunk_size,
        "chunk_overlap": args.chunk_overlap,
        "chunk_align": args.chunk_align, "loop_closure": not getattr(args, "no_loop_closure", False),
        "refine_lens": args.refine, "refine_motion": args.refine_motion,
        "frame_start": getattr(args, "frame_start", None),  # issue 17 (shots)
        "frame_rate": getattr(args, "frame_rate", None),
        "input_colorspace": getattr(args, "input_colorspace", None),
    }
    s.update({k: v for k, v in optional.items() if v is not None}, **mm_settings(args))
    if any(getattr(args, k) is not None for k in ("chunk_size", "chunk_overlap", "chunk_align")):
        s["chunking"] = "ALWAYS"  # asked for on the command line: chunk image sets too (videos chunk by default)
    if args.scale is not None:
        if isinstance(args.scale, float):
            s["scale_mode"], s["scale_factor"] = "FACTOR", args.scale
        else:
            s["scale_mode"] = args.scale.upper()
    if args.export_dir:
        s["export_dir"] = os.path.abspath(args.export_dir)
        s["export_format"] = set((args.export_format or opt.DEFAULT_EXPORT_FORMAT).split("-"))
    return s


def _set(settings, name: str, value) -> None:
    """Set one scene setting, in the form its property takes (e.g. chunk size "auto" as 0 in an int)."""
    prop = settings.bl_rna.properties.get(name)
    if prop is None:
        raise Failure(f"this version of the DA3 extension has no '{name}' setting: update it, or leave that option out", code=2)
    if value == opt.AUTO_CHUNK and prop.type == "INT":
        value = 0
    if prop.type == "ENUM" and not prop.is_enum_flag and value not in {item.identifier for item in prop.enum_items}:
        offered = ", ".join(item.identifier for item in prop.enum_items)
        raise Failure(f"the DA3 extension's '{name}' setting does not take {value!r} (it takes {offered}): "
                      "update the extension or choose one of those", code=2)
    try:
        setattr(settings, name, value)
    except (TypeError, ValueError) as ex:
        raise Failure(f"{name}: {str(ex).splitlines()[-1]}", code=2) from None


def script_argv() -> list[str]:
    """The script's own arguments: after ``--`` (under Blender), else after the script name."""
    argv = sys.argv
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return argv[1:]


def load_extension():
    """The extension package: an enabled installed copy, else this repository registered as one."""
    import addon_utils
    for mod in addon_utils.modules():
        name = mod.__name__
        if (name == PACKAGE or name.endswith("." + PACKAGE)) and addon_utils.check(name)[1]:
            return name, False
    if PACKAGE not in sys.modules:
        root = Path(tempfile.mkdtemp(prefix="da3-ext-"))
        (root / PACKAGE).symlink_to(REPO_ROOT, target_is_directory=True)
        sys.path.insert(0, str(root))
    addon_utils.enable(PACKAGE, default_set=True, handle_error=_raise)
    return PACKAGE, True


def _raise(ex):
    raise Failure(f"cannot register the DA3 extension: {ex}")


def _expand(inputs: list[str], stills: bool = False) -> tuple[str, list[str]]:
    """(input mode, paths) for the panel's settings; folders listed as every surface lists them."""
    from da3_blender.inputs.paths import is_video_path, list_folder_images
    paths = [os.path.abspath(p) for p in inputs]
    if len(paths) == 1 and not stills and not os.path.isdir(paths[0]) and find_sequence(paths[0]) is not None:
        return "SEQUENCE", paths  # a pattern or one file of a sequence (a folder: FOLDER, detected as a shot)
    videos = [p for p in paths if os.path.isfile(p) and is_video_path(p)]
    if videos:
        if len(paths) != 1:
            raise Failure("give one video alone (not with other videos, images or folders)")
        return "VIDEO", paths
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return "FOLDER", paths
    images = []
    for p in paths:
        images.extend(list_folder_images(p) if os.path.isdir(p) else [p])
    return "IMAGES", images


def use_known_cameras(context, path: str) -> None:
    """The opened tracking file's cameras (not an earlier DA3 import's) become the known poses: the panel's
    settings start from their defaults, with only these cameras selected and 'Use selected cameras' on."""
    s = context.scene.da3_settings
    for prop in s.bl_rna.properties:
        if prop.identifier != "rna_type" and not prop.is_readonly and prop.type not in ("COLLECTION", "POINTER"):
            s.property_unset(prop.identifier)
    cams = [ob for ob in context.view_layer.objects if ob.type == "CAMERA" and "da3_import" not in ob]
    if not cams:
        raise Failure(f"--known-cameras {path}: its scene {context.scene.name!r} has no cameras", code=2)
    for ob in context.view_layer.objects:
        ob.select_set(ob in cams)
    s.use_selected_cameras = True


def configure(context, package: str, args) -> dict:
    """Fill the scene settings and preferences from the arguments; returns the old preference values."""
    from importlib import import_module

    props = import_module(f"{package}.properties")
    s = context.scene.da3_settings
    try:
        mode, paths = _expand(args.inputs, args.stills)
    except BadInputError as ex:
        raise Failure(str(ex), code=2) from None
    s.input_mode = mode
    s.images.clear()
    if mode == "IMAGES":
        for p in paths:
            s.images.add().filepath = p
    elif mode == "FOLDER":
        s.folder = paths[0]
        s.folder_mode = "stills" if args.stills else opt.DEFAULT_SHOT_MODE
    elif mode == "SEQUENCE":
        s.sequence = paths[0]
    else:
        s.video = paths[0]
    if mode != "IMAGES":  # videos, sequences and numbered folders: sampling (every frame by default) and frames
        s.video_fps = args.fps  # 0: every frame
        s.video_start = args.start or 0.0
        s.video_end = args.end or 0.0
        s.max_frames = args.max_frames or 0
    if props.model_info(args.model) is not None:
        s.model = args.model
    else:
        s.model, s.custom_model = props.CUSTOM_MODEL, args.model
    for name, value in scene_settings(args).items():
        _set(s, name, value)

    prefs = context.preferences.addons[package].preferences
    saved = {k: getattr(prefs, k) for k in ("python_mode", "custom_python", "results_dir")}
    python = args.python or (sys.executable if importlib.util.find_spec("torch") else None)
    if python:
        prefs.python_mode, prefs.custom_python = "CUSTOM", os.path.abspath(python)
    if args.keep_result:
        prefs.results_dir = os.path.dirname(os.path.abspath(args.output))
    remote_keys = ("worker_location", "remote_host", "remote_python", "remote_cache_dir")  # issue 11
    saved.update({k: getattr(prefs, k) for k in remote_keys})
    prefs.worker_location = "REMOTE" if args.remote else "LOCAL"
    if args.remote:
        options = import_module(f"{package}.da3_blender.options")
        prefs.remote_host = args.remote
        prefs.remote_python = args.remote_python or options.DEFAULT_REMOTE_PYTHON
        prefs.remote_cache_dir = args.remote_dir or options.DEFAULT_REMOTE_CACHE_DIR
    return saved


def submit_flamenco(args) -> int:
    """``--submit-flamenco URL``: plan the shot with the worker Python and submit it (nothing is built here)."""
    from da3_blender.errors import DA3Error
    from da3_blender.farm.flamenco import plan_and_submit

    python = args.python or (sys.executable if importlib.util.find_spec("torch") else None)
    if python is None:
        print(f"{PROG}: error: --submit-flamenco plans the shot with a Python that has torch: give --python", file=sys.stderr)
        return 2
    out = os.path.abspath(args.output)
    farm_dir = os.path.abspath(args.farm_dir or os.path.splitext(out)[0] + "_farm")
    try:
        answer, plan = plan_and_submit(job_from_args(args), args.submit_flamenco, farm_dir, python, blend=out)
    except DA3Error as ex:
        print(f"{PROG}: error: {ex}", file=sys.stderr)
        return 1 if ex.kind == "internal" else 2
    print(f"{PROG}: {plan['shot']}: {plan['views']['count']} views in {len(plan['chunks'])} chunks planned in {farm_dir}")
    print(f"{PROG}: submitted to {args.submit_flamenco} as job {answer.get('id', '?')}; the farm writes {out}")
    return 0


def run(argv: list[str]) -> int:
    from importlib import import_module

    args = parse_args(argv)
    if args.submit_flamenco:
        return submit_flamenco(args)
    import bpy

    try:
        if args.known_cameras:  # the tracking scene is the starting point: its cameras condition the model
            bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.known_cameras), load_ui=False)
        else:
            bpy.ops.wm.read_homefile(use_empty=True)
        package, enabled_here = load_extension()
        context = bpy.context
        if args.export_camera:  # this Blender's Alembic/FBX exporter, checked before any work
            try:
                import_module(f"{package}.scene.exchange").check_exporter(args.export_camera)
            except ValueError as ex:  # BadInputError: one line naming what is missing and the other format
                raise Failure(str(ex), code=2) from None
        try:
            if args.known_cameras:
                use_known_cameras(context, args.known_cameras)
            saved = configure(context, package, args)
        except (TypeError, ValueError) as ex:  # e.g. an export format Blender's enum does not know
            raise Failure(str(ex).splitlines()[-1], code=2) from None
        try:
            try:
                result = bpy.ops.da3.reconstruct()
            except RuntimeError as ex:  # the operator reported an error
                raise Failure(str(ex).strip().removeprefix("Error: ")) from None
            if result != {"FINISHED"}:
                raise Failure(context.window_manager.da3_runtime.error or "cancelled")
            out = os.path.abspath(args.output)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            bpy.ops.wm.save_as_mainfile(filepath=out, check_existing=False)
            print(f"{PROG}: {(rt := context.window_manager.da3_runtime).summary}" + (f"\n{PROG}: warning: {rt.warning}" * bool(rt.warning)))
            print(f"{PROG}: saved {out}")
            if args.export_camera:
                camera_file = os.path.abspath(args.export_camera)
                os.makedirs(os.path.dirname(camera_file), exist_ok=True)
                try:
                    import_module(f"{package}.scene.exchange").export_cameras(camera_file, scene=context.scene)
                except ValueError as ex:  # BadInputError: one line
                    raise Failure(str(ex)) from None
                print(f"{PROG}: cameras written to {camera_file}")
        finally:
            prefs = context.preferences.addons.get(package)
            if prefs is not None:
                for key, value in saved.items():
                    setattr(prefs.preferences, key, value)
            if enabled_here:
                import addon_utils

                addon_utils.disable(package, default_set=True)
    except Failure as ex:
        if _debug(args):
            import traceback

            traceback.print_exc()
        print(f"{PROG}: error: {ex}", file=sys.stderr)
        return ex.code
    except Exception as ex:  # a bug: still one line (the traceback with --debug)
        if _debug(args):
            import traceback

            traceback.print_exc()
        text = " ".join(str(ex).split())[:300]
        hint = "" if _debug(args) else f" (--debug or {DEBUG_ENV}=1 shows the traceback)"
        print(f"{PROG}: error: internal error ({type(ex).__name__}: {text}); please report it{hint}", file=sys.stderr)
        return 1
    return 0


def _debug(args) -> bool:
    return bool(args.debug) or debug_wanted([])


def main() -> None:
    code = run(script_argv())
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
