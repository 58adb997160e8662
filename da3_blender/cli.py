"""The ``da3`` command line: photos, a folder or a video in, a 3D scene (GLB, PLY, COLMAP, npz) out.

    da3 auto INPUT                      # a file, a folder of images or a video, detected
    da3 image PATH
    da3 images DIR [--image-extensions png,jpg]
    da3 video PATH [--fps 2 --start 1.5 --end 8 --max-frames 30]

Common options: ``--model`` (repo id or local folder; default ``depth-anything/DA3-SMALL`` or
``$DA3_MODEL``), ``--device``, ``--process-res``, ``--export-dir``, ``--export-format`` ("-"-joined
npz, mini_npz, glb, ply, colmap, depth_vis) and more, see ``da3 <command> --help``.

Errors are one line on stderr (``da3: error: ...``): exit 2 for a problem with the input, the
options, the model or the device, 1 for a bug, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .errors import BadInputError, CancelledError, DA3Error

DEFAULT_MODEL = "depth-anything/DA3-SMALL"  # Apache-2.0 weights
DEFAULT_EXPORT_DIR = "da3_output"
DEFAULT_EXPORT_FORMAT = "glb"
DEFAULT_FPS = 1.0
REF_VIEW_STRATEGIES = ("saddle_balanced", "saddle_sim_range", "first", "middle")
PROCESS_RES_METHODS = ("upper_bound_resize", "lower_bound_resize", "upper_bound_crop", "lower_bound_crop")

log = logging.getLogger("da3_blender")


class _UsageError(Exception):
    """An argparse complaint, turned into our one-line error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block and exit 2
        raise _UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------------------------
# arguments


def build_parser() -> argparse.ArgumentParser:
    default_model = os.environ.get("DA3_MODEL") or DEFAULT_MODEL
    common = _Parser(add_help=False)
    g = common.add_argument_group("model and device")
    g.add_argument("--model", default=default_model,
                   help=f"Hugging Face repo id or local model folder (default: {default_model}; env DA3_MODEL)")
    g.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    g = common.add_argument_group("processing")
    g.add_argument("--process-res", type=int, default=504, help="longest (or shortest) side in pixels (default: 504)")
    g.add_argument("--process-res-method", default="upper_bound_resize", choices=PROCESS_RES_METHODS)
    g.add_argument("--use-ray-pose", action="store_true", help="solve cameras from the ray map (slower, often better)")
    g.add_argument("--ref-view-strategy", default="saddle_balanced", choices=REF_VIEW_STRATEGIES)
    g.add_argument("--no-exif", action="store_true", help="ignore EXIF orientation (use stored pixel order)")
    g = common.add_argument_group("export")
    g.add_argument("--export-dir", default=DEFAULT_EXPORT_DIR,
                   help=f"output folder, created if needed; files in it are overwritten (default: ./{DEFAULT_EXPORT_DIR})")
    g.add_argument("--export-format", default=DEFAULT_EXPORT_FORMAT,
                   help="'-'-joined formats: npz, mini_npz, glb, ply, colmap, depth_vis (default: glb)")
    g.add_argument("--conf-thresh-percentile", type=float, default=40.0,
                   help="drop the least confident points below this percentile (glb, ply, colmap; default: 40)")
    g.add_argument("--num-max-points", type=int, default=1_000_000, help="point budget of glb/ply (default: 1000000)")
    g.add_argument("--no-cameras", dest="show_cameras", action="store_false", help="no camera frustums in the glb")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress or warnings, only errors and the file list")

    video = _Parser(add_help=False)
    g = video.add_argument_group("video")
    g.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frames per second to sample (default: {DEFAULT_FPS:g})")
    g.add_argument("--start", type=float, default=None, help="start time in seconds")
    g.add_argument("--end", type=float, default=None, help="end time in seconds")
    g.add_argument("--max-frames", type=int, default=None, help="keep at most this many of the sampled frames (the first ones, from --start on)")

    exts = _Parser(add_help=False)
    exts.add_argument("--image-extensions", default=None,
                      help="comma-separated extensions to take from the folder, e.g. png,jpg (default: all image types)")

    parser = _Parser(prog="da3", description="Depth Anything 3: images or a video to depth, cameras and a 3D scene.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("auto", parents=[common, video, exts], help="detect an image, a folder of images or a video")
    p.add_argument("input", metavar="INPUT")
    p = sub.add_parser("image", parents=[common], help="one image file")
    p.add_argument("input", metavar="PATH")
    p = sub.add_parser("images", parents=[common, exts], help="every image in a folder (sorted by name)")
    p.add_argument("input", metavar="DIR")
    p = sub.add_parser("video", parents=[common, video], help="frames sampled from a video file")
    p.add_argument("input", metavar="PATH")
    return parser


def _check_options(args) -> list[str]:
    from . import preprocess
    from .inference import parse_export_format

    formats = parse_export_format(args.export_format)
    preprocess.check_options(args.process_res, args.process_res_method)
    if not 0.0 <= args.conf_thresh_percentile <= 100.0:
        raise BadInputError(f"--conf-thresh-percentile {args.conf_thresh_percentile:g} is not in 0..100")
    if args.num_max_points < 1:
        raise BadInputError("--num-max-points must be at least 1")
    if getattr(args, "fps", None) is not None and not args.fps > 0:
        raise BadInputError(f"--fps {args.fps:g} must be positive")
    if getattr(args, "max_frames", None) is not None and args.max_frames < 1:
        raise BadInputError("--max-frames must be at least 1")
    if os.path.exists(args.export_dir) and not os.path.isdir(args.export_dir):
        raise BadInputError(f"--export-dir {args.export_dir} is a file: choose a folder")
    return formats


# --------------------------------------------------------------------------------------------
# inputs


def _extensions(text: str) -> tuple[str, ...]:
    exts = tuple(sorted({"." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip()}))
    if not exts:
        raise BadInputError("--image-extensions is empty: give e.g. png,jpg")
    return exts


def _folder_images(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Files of ``folder`` with one of ``extensions``, in natural order (as ``inputs`` sorts folders)."""
    from .inputs import natural_key

    names = sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=natural_key)
    files = [os.path.join(folder, n) for n in names
             if os.path.splitext(n)[1].lower() in extensions and os.path.isfile(os.path.join(folder, n))]
    if not files:
        raise BadInputError(f"no images ({', '.join(extensions)}) in folder {folder}: put photos there or change --image-extensions")
    return files


def input_kind(path: str, command: str = "auto") -> str:
    """"image", "images" or "video" for ``path``; BadInputError when it does not fit ``command``."""
    from . import inputs

    if not os.path.exists(path):
        raise BadInputError(f"{path} does not exist: check the path")
    if os.path.isdir(path):
        kind = "images"
    elif inputs.is_video_path(path):
        kind = "video"
    elif inputs.is_image_path(path):
        kind = "image"
    else:
        known = ", ".join(sorted(set(inputs.IMAGE_EXTENSIONS) | set(inputs.VIDEO_EXTENSIONS)))
        raise BadInputError(f"{path} is neither an image nor a video file (known types: {known})")
    if command != "auto" and kind != command:
        hint = {"image": "da3 image FILE", "images": "da3 images FOLDER", "video": "da3 video FILE"}[kind]
        what = {"image": "an image file", "images": "a folder", "video": "a video file"}[kind]
        raise BadInputError(f"{path} is {what}, not what `da3 {command}` takes: use {hint} or da3 auto")
    return kind


def collect(args, progress=None):
    """The InputSet for the parsed command line."""
    from . import inputs

    kind = input_kind(args.input, args.command)
    exif = not args.no_exif
    if kind == "images" and getattr(args, "image_extensions", None):
        files = _folder_images(args.input, _extensions(args.image_extensions))
        return inputs.collect_inputs(files, exif_transpose=exif, progress=progress)
    if kind in ("image", "images"):  # a folder is listed by inputs (all image types, natural order)
        return inputs.collect_inputs([args.input], exif_transpose=exif, progress=progress)
    return inputs.collect_inputs(
        [args.input], fps=args.fps, start=args.start, end=args.end, max_frames=args.max_frames,
        exif_transpose=exif, progress=progress,
    )


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

    def __call__(self, stage: str, fraction: float = 0.0, message: str = "", *_):
        pct = int(round(100 * min(max(float(fraction), 0.0), 1.0)))
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


# --------------------------------------------------------------------------------------------
# main


def run(args) -> int:
    """Execute a parsed command line; raises DA3Error on failure."""
    from . import devices
    from .api import DepthAnything3
    from .files import make_folder
    from .inference import run_inference

    formats = _check_options(args)
    input_kind(args.input, args.command)
    device = devices.resolve_device(args.device)
    printer = _quiet if args.quiet else ProgressPrinter()
    failed = True
    try:
        source = collect(args, progress=printer)
        printer("model", 0.0, f"loading {args.model} on {device}")
        model = DepthAnything3.from_pretrained(args.model, device=device)
        printer("model", 1.0, f"{getattr(model, 'model_name', args.model)} on {device}")
        make_folder(args.export_dir)
        pred = run_inference(
            model,
            source,
            use_ray_pose=args.use_ray_pose,
            ref_view_strategy=args.ref_view_strategy,
            process_res=args.process_res,
            process_res_method=args.process_res_method,
            export_dir=args.export_dir,
            export_format="-".join(formats),
            conf_thresh_percentile=args.conf_thresh_percentile,
            num_max_points=args.num_max_points,
            show_cameras=args.show_cameras,
            progress=printer,
            exif_transpose=not args.no_exif,
        )
        failed = False
    finally:
        if isinstance(printer, ProgressPrinter):
            printer.close(failed)
    files = pred.meta.get("exported_files", [])
    n = pred.num_views
    h, w = pred.image_size
    out = os.path.abspath(args.export_dir)
    print(f"da3: {n} view{'s' * (n != 1)} at {w}x{h} -> {out} ({len(files)} file{'s' * (len(files) != 1)}: {', '.join(formats)})")
    for f in files:
        print(f"  {f}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``da3`` console script; returns the exit code (never raises)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            raise _UsageError("choose a command: auto, image, images or video (see da3 --help)")
        logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING,
                            format="da3: warning: %(message)s", stream=sys.stderr)
        return run(args)
    except KeyboardInterrupt:
        print("da3: interrupted", file=sys.stderr)
        return 130
    except CancelledError as exc:
        print(f"da3: error: {_one_line(exc)}", file=sys.stderr)
        return 130
    except _UsageError as exc:
        print(f"da3: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except DA3Error as exc:
        print(f"da3: error: {_one_line(exc)}", file=sys.stderr)
        return 1 if exc.kind == "internal" else 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:  # a bug: still one line, and say so (out of memory is not a bug)
        from .devices import is_out_of_memory, out_of_memory_error

        if is_out_of_memory(exc):
            print(f"da3: error: {_one_line(out_of_memory_error(exc))}", file=sys.stderr)
            return 2
        print(f"da3: error: internal error ({type(exc).__name__}: {_one_line(exc)[:300]}); please report it",
              file=sys.stderr)
        return 1
