"""What every ``da3`` command shares: the option groups, the parsed line as a job (:func:`job_from_args`),
the input kind, progress on a terminal (:class:`ProgressPrinter`) and running a checked job (:func:`run_job`).

Imported by every command module (:mod:`.reconstruct`, :mod:`.export`, :mod:`.farm`, :mod:`.colmap`,
:mod:`.web`) and the dispatcher (:mod:`.main`); it imports none of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .. import options as opt
from ..errors import BadInputError
from ..matchmove.steps import add_arguments as add_matchmove_arguments, options_from_args as matchmove_options

DEFAULT_EXPORT_DIR = "da3_output"
DEBUG_ENV = "DA3_DEBUG"  # DA3_DEBUG=1: print the traceback of an error (as --debug)

log = logging.getLogger("da3_blender")


class _UsageError(Exception):
    """An argparse complaint, turned into our one-line error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block and exit 2
        raise _UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------------------------
# arguments


def chunk_size_arg(text: str):
    """``--chunk-size``: a whole number >= 2 or ``auto``."""
    if text == opt.AUTO_CHUNK:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor {opt.AUTO_CHUNK!r}") from None


def add_exr_arguments(g) -> None:
    """``--exr-resolution``, ``--exr-half``, ``--exr-filter``: the ``exr`` export's options (shared with
    scripts/reconstruct.py); unset: the defaults of :mod:`options`."""
    g.add_argument("--exr-resolution", default=None, choices=opt.choice_ids(opt.EXR_RESOLUTIONS),
                   help="exr depth passes at the processed resolution (exr/) or the plate's (exr_plate/) "
                        f"(default: {opt.DEFAULT_EXR_RESOLUTION})")
    g.add_argument("--exr-half", action="store_true", default=None,
                   help="exr channels as half floats (default: 32-bit float)")
    g.add_argument("--exr-filter", dest="exr_plate_filter", default=None, choices=opt.choice_ids(opt.EXR_PLATE_FILTERS),
                   help=f"how plate-resolution exr passes sample the depth (default: {opt.DEFAULT_EXR_PLATE_FILTER})")


def exr_options(args) -> dict:
    """The job options of :func:`add_exr_arguments` (None: not given, the default applies)."""
    return {key: getattr(args, key, None) for key in opt.EXR_OPTION_KEYS}


def add_streaming_arguments(g) -> None:
    """``--chunk-size``, ``--chunk-overlap``, ``--chunk-align``, ``--no-loop-closure`` (shared with reconstruct.py)."""
    g.add_argument("--chunk-size", type=chunk_size_arg, default=None, metavar="N|auto",
                   help=f"views per chunk for long shots, each chunk one pass of the network, aligned on the overlap; "
                        f"{opt.AUTO_CHUNK}: from the device (default: {opt.DEFAULT_VIDEO_CHUNK_SIZE} for videos, one pass for images)")
    g.add_argument("--chunk-overlap", type=int, default=None, metavar="N",
                   help="views shared by consecutive chunks (default: a quarter of the chunk, at least 2)")
    g.add_argument("--chunk-align", default=None, choices=opt.CHUNK_ALIGN_NAMES,
                   help="how chunks are aligned: sim3 (with scale), se3 (rigid, metric models) or auto "
                        f"(by model; default: {opt.DEFAULT_CHUNK_ALIGN})")
    g.add_argument("--no-loop-closure", action="store_true", help="leave a streamed shot's loops open (docs/loop-closure.md)")


def add_refine_argument(g) -> None:
    """``--refine [fixed|zoom|radial|known]``: the camera solve (shared with scripts/reconstruct.py)."""
    g.add_argument("--refine", nargs="?", const=opt.DEFAULT_REFINE_LENS, default=None,
                   choices=opt.choice_ids(opt.REFINE_LENSES),
                   help="refine the cameras by tracking features and bundle adjustment (needs pycolmap); the lens: fixed "
                        "(one focal length), zoom (per frame), radial (with k1, k2), known (held: only the poses solved); "
                        f"--refine alone: {opt.DEFAULT_REFINE_LENS}")
    g.add_argument("--refine-motion", default=None, choices=opt.choice_ids(opt.REFINE_MOTIONS),
                   help="the camera's motion for --refine: free (it travels), nodal (a pan from a tripod: one "
                        f"position) or auto (nodal when a pan explains the tracks as well; default: {opt.DEFAULT_REFINE_MOTION})")


def add_video_arguments(g, default_fps: float | None = None) -> None:
    """``--fps``, ``--start``, ``--end``, ``--max-frames`` (shared with scripts/reconstruct.py). ``default_fps``
    None: ``options.DEFAULT_VIDEO_FPS`` for a video, every frame of an image sequence."""
    default_text = (f"{opt.DEFAULT_VIDEO_FPS:g} for a video, every frame of an image sequence" if default_fps is None
                    else "every frame" if default_fps == opt.EVERY_FRAME_FPS else f"{default_fps:g}")
    g.add_argument("--fps", type=float, default=default_fps,
                   help=f"frames per second to sample, 0 for every frame (default: {default_text})")
    g.add_argument("--start", type=float, default=None, help="start time in seconds")
    g.add_argument("--end", type=float, default=None, help="end time in seconds")
    g.add_argument("--max-frames", type=int, default=None,
                   help="keep at most this many of the sampled frames (the first ones, from --start on)")


def add_shot_arguments(g) -> None:
    """``--frame-start``, ``--frame-rate``, ``--input-colorspace`` (shared with scripts/reconstruct.py; issue 17)."""
    g.add_argument("--frame-start", type=int, default=None, metavar="N",
                   help=f"the scene frame of a video's first frame; frame numbers name the cameras, planes and EXR/"
                        f"depth_vis files (default: {opt.DEFAULT_FRAME_START}; 1001 for a VFX plate); a sequence "
                        "keeps its own numbers")
    g.add_argument("--frame-rate", type=float, default=None, metavar="FPS",
                   help=f"an image sequence's rate, e.g. 23.976 (exactly 24000/1001) (default: the EXR "
                        f"framesPerSecond, else {opt.DEFAULT_SEQUENCE_RATE:g}); a video's is its stream's")
    g.add_argument("--input-colorspace", default=None, choices=opt.INPUT_COLORSPACE_NAMES,
                   help="auto: EXR plates are scene-linear (clamped to 0..1, sRGB-encoded for the model), other "
                        "images display-referred; linear or srgb force one (default: auto)")


def shot_from_args(args, stills: bool = False) -> dict:
    """The job's ``shot`` for parsed arguments (``stills``: never a sequence)."""
    return {"mode": "stills" if stills else opt.DEFAULT_SHOT_MODE, "frame_start": getattr(args, "frame_start", None),
            "frame_rate": getattr(args, "frame_rate", None), "colorspace": getattr(args, "input_colorspace", None)}


def debug_wanted(argv: Sequence[str] | None = None) -> bool:
    """``--debug`` among the arguments or ``DA3_DEBUG`` set (to anything but 0/empty)."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def job_from_args(args) -> dict:
    """The job description (:mod:`da3_blender.job`) of a parsed command line, checked before any work."""
    from ..job import build_job

    video = None
    if hasattr(args, "fps"):
        video = {"fps": args.fps, "start": args.start, "end": args.end, "max_frames": args.max_frames}
    options = {
        "process_res": args.process_res,
        "process_res_method": args.process_res_method,
        "use_ray_pose": args.use_ray_pose,
        "ref_view_strategy": args.ref_view_strategy,
        "conf_thresh_percentile": args.conf_thresh_percentile,
        "num_max_points": args.num_max_points,
        "show_cameras": args.show_cameras,
        "exif_transpose": not args.no_exif,
        "chunk_size": args.chunk_size,
        "chunk_overlap": args.chunk_overlap,
        "chunk_align": args.chunk_align, "loop_closure": False if args.no_loop_closure else None,
        "refine": args.refine,
        "refine_motion": args.refine_motion,
        **exr_options(args), **matchmove_options(args),
    }
    if os.path.exists(args.export_dir) and not os.path.isdir(args.export_dir):
        raise BadInputError(f"--export-dir {args.export_dir} is a file: choose a folder")
    return build_job([args.input], model=args.model, device=args.device, dtype=args.dtype, video=video, options=options,
                     export_dir=args.export_dir, export_format=args.export_format,
                     shot=shot_from_args(args, stills=args.command in ("image", "images")))


# --------------------------------------------------------------------------------------------
# inputs


def _extensions(text: str) -> tuple[str, ...]:
    exts = tuple(sorted({"." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip()}))
    if not exts:
        raise BadInputError("--image-extensions is empty: give e.g. png,jpg")
    return exts


def input_kind(path: str, command: str = "auto") -> str:
    """"image", "images", "sequence" or "video" for ``path``; BadInputError when it does not fit ``command``."""
    from ..inputs.paths import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_path, is_video_path
    from ..inputs.sequences import find_sequence, is_pattern

    if command == "auto" and (is_pattern(path) or os.path.exists(path)) and find_sequence(path) is not None:
        return "sequence"  # a pattern, a folder that is one numbered sequence, or one file of it
    if not os.path.exists(path):
        raise BadInputError(f"{path} does not exist: check the path")
    if os.path.isdir(path):
        kind = "images"
    elif is_video_path(path):
        kind = "video"
    elif is_image_path(path):
        kind = "image"
    else:
        known = ", ".join(sorted(set(IMAGE_EXTENSIONS) | set(VIDEO_EXTENSIONS)))
        raise BadInputError(f"{path} is neither an image nor a video file (known types: {known})")
    if command != "auto" and kind != command:
        hint = {"image": "da3 image FILE", "images": "da3 images FOLDER", "video": "da3 video FILE"}[kind]
        what = {"image": "an image file", "images": "a folder", "video": "a video file"}[kind]
        raise BadInputError(f"{path} is {what}, not what `da3 {command}` takes: use {hint} or da3 auto")
    return kind


# --------------------------------------------------------------------------------------------
# progress


class ProgressPrinter:
    """``progress(stage, fraction, message)`` for a terminal.

    On a TTY: one line on stderr, rewritten in place (cleared again if the run fails, so an error
    stays a single line). Otherwise: plain lines on stdout, one per stage and per 25 %.
    """

    WIDTH = 100

    def __init__(self, stream=None, tty: bool | None = None):
        if tty is None:
            tty = bool(getattr(stream or sys.stderr, "isatty", lambda: False)())
        self.stream = stream or (sys.stderr if tty else sys.stdout)
        self.tty = tty
        self.last: tuple[str, int] | None = None
        self.open_line = False
        self.messages: dict[str, str] = {}  # the last message of each stage, for calls that give none

    def __call__(self, stage: str, fraction: float = 0.0, message: str = "", *_):
        pct = int(round(100 * min(max(float(fraction), 0.0), 1.0)))
        message = message or self.messages.get(stage, "")
        self.messages[stage] = message
        if self.tty:
            self.stream.write("\r" + f"{stage:<11} {pct:3d}%  {message}"[: self.WIDTH].ljust(self.WIDTH))
            self.open_line = True
        else:
            step = pct // 25
            if self.last == (stage, step):
                return
            self.last = (stage, step)
            self.stream.write(f"{stage} {pct}%{'  ' + message if message else ''}\n")
        self.stream.flush()

    def close(self, failed: bool = False):
        """End the TTY line: keep it (newline) after success, erase it after a failure."""
        if self.tty and self.open_line:
            self.stream.write("\r" + " " * self.WIDTH + "\r" if failed else "\n")
            self.stream.flush()
            self.open_line = False


def _quiet(*_args, **_kwargs):
    return None


def backend_paths(args) -> list[str]:
    """The input files a backend request names: a folder is listed here, in natural order."""
    from ..inputs.paths import list_folder_images

    if os.path.isdir(args.input):
        exts = _extensions(args.image_extensions) if getattr(args, "image_extensions", None) else None
        return list_folder_images(args.input, exts)
    return [args.input]


def run_job(args, spec: dict, source, paths) -> int:
    """Run a checked job here (``source(progress)`` gives its InputSet) or, with ``--use-backend``, on
    the backend (``paths()`` gives its input files); prints the summary and the files written."""
    from ..job import inference_kwargs

    formats = spec["export_format"].split("-")
    printer = _quiet if args.quiet else ProgressPrinter()
    failed = True
    try:
        if getattr(args, "use_backend", False):
            from ..web.client import run_on_backend

            task = run_on_backend(args.backend_url, spec, paths(), progress=printer)
            summary = task.get("summary") or {}
            n, (h, w), files = summary.get("views", 0), summary.get("size") or (0, 0), task.get("files", [])
            video = summary.get("video")
        else:
            pred = _run_here(spec, source, printer, inference_kwargs(spec))
            n, (h, w), files = pred.num_views, pred.image_size, pred.meta.get("exported_files", [])
            video = pred.meta.get("video")
        failed = False
    finally:
        if isinstance(printer, ProgressPrinter):
            printer.close(failed)
    out = os.path.abspath(spec["export_dir"])
    print(f"da3: {n} view{'s' * (n != 1)} at {w}x{h} -> {out} ({len(files)} file{'s' * (len(files) != 1)}: {', '.join(formats)})")
    from ..inputs.sequences import shot_summary

    if shot_summary(video):
        print(f"da3: {shot_summary(video)}")
    for f in files:
        print(f"  {f}")
    return 0


def _run_here(spec: dict, source, printer, kwargs: dict):
    from .. import devices
    from ..api import DepthAnything3
    from ..files import make_folder
    from ..inference import run_inference

    device = devices.resolve_device(spec["device"])
    inputs = source(printer)
    printer("model", 0.0, f"loading {spec['model']} on {device}")
    model = DepthAnything3.from_pretrained(spec["model"], device=device, compute_dtype=spec["dtype"])
    printer("model", 1.0, f"{getattr(model, 'model_name', spec['model'])} on {device}")
    make_folder(spec["export_dir"])
    return run_inference(model, inputs, export_dir=spec["export_dir"], export_format=spec["export_format"],
                         progress=printer, exif_transpose=spec["options"].get("exif_transpose", True), **kwargs)


def parent_parsers():
    """The option groups the commands share: (common, video, video_only, exts) argparse parents."""
    default_model = opt.default_model()
    methods = opt.choice_ids(opt.PROCESS_RES_METHODS)
    common = _Parser(add_help=False)
    g = common.add_argument_group("model and device")
    g.add_argument("--model", default=default_model,
                   help=f"Hugging Face repo id or local model folder (default: {default_model}; env {opt.MODEL_ENV})")
    g.add_argument("--device", default=opt.DEFAULT_DEVICE,
                   help=f"{opt.DEVICE_HELP} (default: {opt.DEFAULT_DEVICE}: CUDA, then MPS, then CPU)")
    g.add_argument("--dtype", default=opt.DEFAULT_COMPUTE_DTYPE, choices=opt.COMPUTE_DTYPES, help=opt.COMPUTE_DTYPE_HELP)
    g = common.add_argument_group("processing")
    g.add_argument("--process-res", type=int, default=opt.DEFAULT_PROCESS_RES,
                   help=f"longest (or shortest) side in pixels (default: {opt.DEFAULT_PROCESS_RES})")
    g.add_argument("--process-res-method", default=opt.DEFAULT_PROCESS_RES_METHOD, choices=methods)
    g.add_argument("--use-ray-pose", action="store_true", help="solve cameras from the ray map (slower, often better)")
    g.add_argument("--ref-view-strategy", default=opt.DEFAULT_REF_VIEW_STRATEGY,
                   choices=opt.choice_ids(opt.REF_VIEW_STRATEGIES))
    g.add_argument("--no-exif", action="store_true", help="ignore EXIF orientation (use stored pixel order)")
    add_refine_argument(g)
    add_streaming_arguments(g)
    g = common.add_argument_group("export")
    g.add_argument("--export-dir", default=DEFAULT_EXPORT_DIR,
                   help=f"output folder, created if needed; files in it are overwritten (default: ./{DEFAULT_EXPORT_DIR})")
    g.add_argument("--export-format", default=opt.DEFAULT_EXPORT_FORMAT,
                   help=f"'-'-joined formats: {', '.join(opt.EXPORT_FORMAT_NAMES)} (default: {opt.DEFAULT_EXPORT_FORMAT})")
    g.add_argument("--conf-thresh-percentile", type=float, default=opt.DEFAULT_CONF_THRESH_PERCENTILE,
                   help=f"drop the least confident points below this percentile (glb, ply, colmap; default: "
                        f"{opt.DEFAULT_CONF_THRESH_PERCENTILE:g})")
    g.add_argument("--num-max-points", type=int, default=opt.DEFAULT_NUM_MAX_POINTS,
                   help=f"point budget of glb/ply (default: {opt.DEFAULT_NUM_MAX_POINTS})")
    g.add_argument("--no-cameras", dest="show_cameras", action="store_false", help="no camera frustums in the glb")
    add_exr_arguments(g)
    add_matchmove_arguments(g)  # issue 27: --up-axis, --camera-height, --mesh-max-faces
    g = common.add_argument_group("backend (issue 21)")
    g.add_argument("--use-backend", action="store_true",
                   help="send the work to a running `da3 backend` (its model stays loaded) instead of running here")
    g.add_argument("--backend-url", default=opt.DEFAULT_BACKEND_URL,
                   help=f"the backend's address (default: {opt.DEFAULT_BACKEND_URL}; token: env DA3_BACKEND_TOKEN)")
    g = common.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress or warnings, only errors and the file list")
    g.add_argument("--debug", action="store_true", help=f"print the traceback of an error (also env {DEBUG_ENV}=1)")

    video, video_only = _Parser(add_help=False), _Parser(add_help=False)  # auto: 1 fps for a video, every frame of a
    add_video_arguments(video.add_argument_group("video and sequences"))  # sequence; `da3 video`: the official 1 fps
    add_video_arguments(video_only.add_argument_group("video"), default_fps=opt.DEFAULT_VIDEO_FPS)
    for parent in (video, video_only):
        add_shot_arguments(parent.add_argument_group("shots: frame numbers, rates, plates"))

    exts = _Parser(add_help=False)
    exts.add_argument("--image-extensions", default=None,
                      help="comma-separated extensions to take from the folder, e.g. png,jpg (default: all image types)")

    return common, video, video_only, exts
