"""Reconstruct photos or a video into a .blend without the Blender interface.

    blender -b -P scripts/reconstruct.py -- INPUT... --output scene.blend [options]
    python scripts/reconstruct.py INPUT... --output scene.blend [options]      (bpy module)

INPUT is image files, folders of images, or one video. The extension (this repository) is
registered, ``da3.reconstruct`` runs to the end (the model runs in the worker Python) and the
scene is saved. The worker Python is ``--python``, else this Python when it has torch, else the
extension's managed environment. Exit status 0 on success; otherwise one line
``reconstruct: error: ...`` on stderr and status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "da3_for_blender"  # the manifest id
PROG = "reconstruct"


class Failure(Exception):
    """One-line error for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog=PROG, description="Photos or a video to a 3D scene (.blend) with Depth Anything 3.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or one video")
    p.add_argument("--output", "-o", required=True, help="the .blend file to write")
    p.add_argument("--model", "-m", default=None,
                   help="Hugging Face repo id (e.g. depth-anything/DA3-LARGE-1.1) or a local model folder")
    p.add_argument("--fps", type=float, default=None, help="video: frames per second to sample (default 2, 0: all)")
    p.add_argument("--start", type=float, default=None, help="video: start time in seconds")
    p.add_argument("--end", type=float, default=None, help="video: end time in seconds")
    p.add_argument("--max-frames", type=int, default=None, help="video: at most this many frames")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    p.add_argument("--process-res", type=int, default=None, help="processing resolution (default 504)")
    p.add_argument("--process-res-method", default=None,
                   choices=("upper_bound_resize", "upper_bound_crop", "lower_bound_resize", "lower_bound_crop"))
    p.add_argument("--python", default=None, help="the worker's Python interpreter (must have torch)")
    p.add_argument("--no-points", action="store_true", help="no point cloud")
    p.add_argument("--no-planes", action="store_true", help="no depth planes")
    p.add_argument("--no-cameras", action="store_true", help="no cameras")
    p.add_argument("--export-dir", default=None, help="also export files (see --export-format) into this folder")
    p.add_argument("--export-format", default=None, help="glb, ply, colmap, npz, mini_npz, depth_vis; join with '-'")
    p.add_argument("--keep-result", action="store_true", help="keep the result .npz next to the .blend")
    # remote worker (issue 11): the model runs on another machine over SSH
    p.add_argument("--remote", default=None, metavar="HOST",
                   help="run the model on HOST over SSH (an ~/.ssh/config alias or user@host)")
    p.add_argument("--remote-python", default=None, help="with --remote: the Python there (default: python3)")
    p.add_argument("--remote-dir", default=None, help="with --remote: its cache folder (default: ~/.cache/da3-blender)")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for path in args.inputs:
        if not os.path.exists(path):
            p.error(f"input not found: {path}")
    if not args.output.lower().endswith(".blend"):
        p.error(f"--output must be a .blend file, got {args.output}")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        p.error(f"cannot write {args.output}: {out_dir} is not a folder")
    for name in ("fps", "start", "end"):
        value = getattr(args, name)
        if value is not None and value < 0:
            p.error(f"--{name} must be >= 0, got {value}")
    if args.max_frames is not None and args.max_frames < 1:
        p.error(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.process_res is not None and args.process_res < 14:
        p.error(f"--process-res must be >= 14 (e.g. 504), got {args.process_res}")
    if args.export_format and not args.export_dir:
        p.error("--export-format needs --export-dir")
    if args.python and not os.path.isfile(args.python):
        p.error(f"--python: no interpreter at {args.python}")
    if (args.remote_python or args.remote_dir) and not args.remote:
        p.error("--remote-python and --remote-dir need --remote HOST")


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


def _expand(inputs: list[str], image_exts, video_exts, name_key) -> tuple[str, list[str]]:
    """(input mode, paths) for the panel's settings; folder images in natural order (as the worker)."""
    paths = [os.path.abspath(p) for p in inputs]
    videos = [p for p in paths if os.path.isfile(p) and os.path.splitext(p)[1].lower() in video_exts]
    if videos:
        if len(paths) != 1:
            raise Failure("give one video alone (not with other videos, images or folders)")
        return "VIDEO", paths
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return "FOLDER", paths
    images = []
    for p in paths:
        if os.path.isdir(p):
            names = [n for n in os.listdir(p) if os.path.splitext(n)[1].lower() in image_exts]
            images.extend(os.path.join(p, n) for n in sorted(names, key=name_key))
        else:
            images.append(p)
    return "IMAGES", images


def configure(context, package: str, args) -> dict:
    """Fill the scene settings and preferences from the arguments; returns the old preference values."""
    from importlib import import_module

    props = import_module(f"{package}.properties")
    inputs = import_module(f"{package}.da3_blender.inputs")
    s = context.scene.da3_settings
    mode, paths = _expand(args.inputs, inputs.IMAGE_EXTENSIONS, inputs.VIDEO_EXTENSIONS, inputs.natural_key)
    s.input_mode = mode
    s.images.clear()
    if mode == "IMAGES":
        for p in paths:
            s.images.add().filepath = p
    elif mode == "FOLDER":
        s.folder = paths[0]
    else:
        s.video = paths[0]
        s.video_fps = 2.0 if args.fps is None else args.fps
        s.video_start = args.start or 0.0
        s.video_end = args.end or 0.0
        s.max_frames = args.max_frames or 0
    model = args.model or props.DEFAULT_MODEL
    if props.model_info(model) is not None:
        s.model = model
    else:
        s.model, s.custom_model = props.CUSTOM_MODEL, model
    if args.device:
        s.device = args.device
    if args.process_res:
        s.process_res = args.process_res
    if args.process_res_method:
        s.process_res_method = args.process_res_method
    s.build_points, s.build_planes, s.build_cameras = not args.no_points, not args.no_planes, not args.no_cameras
    s.keep_results = args.keep_result
    if args.export_dir:
        s.export_dir = os.path.abspath(args.export_dir)
        s.export_format = set((args.export_format or "glb").split("-"))

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


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    import bpy

    try:
        bpy.ops.wm.read_homefile(use_empty=True)
        package, enabled_here = load_extension()
        context = bpy.context
        try:
            saved = configure(context, package, args)
        except (TypeError, ValueError) as ex:  # e.g. an export format Blender's enum does not know
            raise Failure(str(ex).splitlines()[-1]) from None
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
            print(f"{PROG}: {context.window_manager.da3_runtime.summary}")
            print(f"{PROG}: saved {out}")
        finally:
            prefs = context.preferences.addons.get(package)
            if prefs is not None:
                for key, value in saved.items():
                    setattr(prefs.preferences, key, value)
            if enabled_here:
                import addon_utils

                addon_utils.disable(package, default_set=True)
    except Failure as ex:
        print(f"{PROG}: error: {ex}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    code = run(script_argv())
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
