"""The ``da3`` command line (the dispatcher; ``python -m da3_blender`` and the ``da3`` script run :func:`main`): photos, a folder or a video in, a 3D scene (GLB, PLY, COLMAP, npz) out.

    da3 auto INPUT                      # a file, a folder of images or a video, detected
    da3 image PATH
    da3 images DIR [--image-extensions png,jpg]
    da3 video PATH [--fps 2 --start 1.5 --end 8 --max-frames 30]
    da3 export RESULT.npz --export-format glb-exr   # a kept result in other formats, no model run
    da3 farm plan|forward|align|build|submit ...   # a long shot as render-farm tasks (da3_blender.farm)
    da3 colmap MODEL_DIR --image-dir DIR   # a COLMAP model's cameras as known poses
    da3 backend | gallery | gradio      # the web side: see da3_blender/web/ (any command: --use-backend)

Common options: ``--model`` (repo id or local folder; default ``depth-anything/DA3-SMALL`` or
``$DA3_MODEL``), ``--device``, ``--process-res``, ``--export-dir``, ``--export-format`` ("-"-joined
npz, mini_npz, glb, ply, colmap, depth_vis) and more, see ``da3 <command> --help``.

Errors are one line on stderr (``da3: error: ...``): exit 2 for a problem with the input, the
options, the model or the device, 1 for a bug, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..errors import CancelledError, DA3Error
from . import colmap, export, farm, reconstruct, web
from .common import DEBUG_ENV, _Parser, _UsageError, debug_wanted, parent_parsers
from .farm import split_build_options


def build_parser() -> argparse.ArgumentParser:
    common, video, video_only, exts = parent_parsers()
    parser = _Parser(prog="da3", description="Depth Anything 3: images or a video to depth, cameras and a 3D scene.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    reconstruct.add_parsers(sub, common, video, video_only, exts)  # auto, image, images, video
    export.add_parser(sub, common)
    farm.add_parser(sub, common, video)  # render farms (issue 20)
    web.add_commands(sub, common)  # backend, gallery, gradio (issue 21)
    colmap.add_parser(sub, common)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``da3`` console script; returns the exit code (never raises)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BaseException as exc:
        debug = debug_wanted(argv)
        code, line = _error_line(exc, debug)
        if line is None:
            return code
        if debug and not isinstance(exc, (_UsageError, KeyboardInterrupt)):
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(line, file=sys.stderr)
        return code


def _main(argv: list[str]) -> int:
    parser = build_parser()
    argv, build_options = split_build_options(argv)  # da3 farm build DIR -- OPTIONS
    args = parser.parse_args(argv)
    if args.command is None:
        raise _UsageError("choose a command: auto, image, images, video, export, colmap, farm, backend, gallery or "
                          "gradio (see da3 --help)")
    logging.basicConfig(level=logging.ERROR if getattr(args, "quiet", False) else logging.WARNING,
                        format="da3: warning: %(message)s", stream=sys.stderr)
    if args.command == "export":
        return export.export_result(args)
    if args.command == "farm":
        return farm.run(args, build_options)
    if args.command == "colmap":
        return colmap.run_colmap(args)
    if args.command in web.COMMANDS:
        return web.run_command(args)
    return reconstruct.run(args)


def _error_line(exc: BaseException, debug: bool = False) -> tuple[int, str | None]:
    """(exit code, the one line for stderr, or None to print nothing) for what ``_main`` raised."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "da3: interrupted"
    if isinstance(exc, CancelledError):
        return 130, f"da3: error: {_one_line(exc)}"
    if isinstance(exc, _UsageError):
        return 2, f"da3: error: {_one_line(exc)}"
    if isinstance(exc, DA3Error):
        return (1 if exc.kind == "internal" else 2), f"da3: error: {_one_line(exc)}"
    if isinstance(exc, SystemExit):  # --help, --version
        return (exc.code if isinstance(exc.code, int) else 0), None
    from ..devices import is_out_of_memory, out_of_memory_error

    if is_out_of_memory(exc):  # out of memory is not a bug
        return 2, f"da3: error: {_one_line(out_of_memory_error(exc))}"
    hint = "" if debug else f" (--debug or {DEBUG_ENV}=1 shows the traceback)"
    return 1, f"da3: error: internal error ({type(exc).__name__}: {_one_line(exc)[:300]}); please report it{hint}"
