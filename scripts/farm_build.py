"""The render farm's Build step: a farm plan folder's ``result.npz`` into a .blend.

    blender -b --factory-startup -P scripts/farm_build.py -- DIR --output shot.blend [build options]
    python scripts/farm_build.py DIR --output shot.blend [build options]          (bpy module)

Usually run by ``da3 farm build DIR`` (``da3_blender/farm/tasks.py`` picks Blender or the bpy module). The
extension is registered as ``scripts/reconstruct.py`` registers it, its panel settings take the build
options (the same ``--no-planes``, ``--plane-detail`` ... as the headless script), and the result is
imported with the panel's builders (``scene/importer.py``). The .blend is written atomically (a
temporary file renamed into place). Exit status 0 on success; otherwise one line ``farm-build:
error: ...`` on stderr, 2 for bad arguments, 1 for a failed build.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import reconstruct  # noqa: E402  (puts the repository on sys.path too)

PROG = "farm-build"
SCENE_DEFAULTS = dict(keep_result=False, use_ray_pose=False, gaussians=False, fixed_lens=False, device=None,
                      process_res=None, process_res_method=None, ref_view_strategy=None, chunk_size=None,
                      chunk_overlap=None, chunk_align=None, export_dir=None, export_format=None, refine=None,
                      refine_motion=None, dtype=None)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog=PROG, description="A DA3 farm plan's result.npz into a .blend (the panel's builders).")
    p.add_argument("plan_dir", metavar="DIR", help="the plan folder (da3 farm plan ... --out DIR)")
    p.add_argument("--output", "-o", required=True, help="the .blend file to write")
    reconstruct.add_build_arguments(p)
    p.set_defaults(**SCENE_DEFAULTS)
    args = p.parse_args(argv)
    if not args.output.lower().endswith(".blend"):
        p.error(f"--output must be a .blend file, got {args.output}")
    result = os.path.join(args.plan_dir, "result.npz")
    if not os.path.isfile(result):
        p.error(f"no result.npz in {args.plan_dir}: run `da3 farm align {args.plan_dir}` first")
    if args.plane_detail is not None and args.plane_detail < 1:
        p.error(f"--plane-detail must be >= 1 pixel, got {args.plane_detail}")
    return args


def build(args) -> str:
    """Import the result with the panel's builders and save the .blend; returns its path."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    package, enabled_here = reconstruct.load_extension()
    try:
        settings = bpy.context.scene.da3_settings
        for name, value in reconstruct.scene_settings(args).items():
            reconstruct._set(settings, name, value)
        props = import_module(f"{package}.properties")
        importer = import_module(f"{package}.scene.importer")
        try:
            collection = importer.import_result_file(os.path.join(args.plan_dir, "result.npz"),
                                                     props.import_options(settings))
        except ValueError as ex:  # BadInputError / ResultFormatError: one line
            raise reconstruct.Failure(str(ex)) from None
        out = os.path.abspath(args.output)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = os.path.join(os.path.dirname(out), f".tmp-{os.getpid()}-{os.path.basename(out)}")
        try:
            bpy.ops.wm.save_as_mainfile(filepath=tmp, check_existing=False, copy=True)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        print(f"{PROG}: imported '{getattr(collection, 'name', '?')}'")
        return out
    finally:
        if enabled_here:
            import addon_utils

            addon_utils.disable(package, default_set=True)


def main() -> None:
    args = parse_args(reconstruct.script_argv())
    try:
        out = build(args)
    except reconstruct.Failure as ex:
        print(f"{PROG}: error: {ex}", file=sys.stderr)
        sys.exit(ex.code)
    except Exception as ex:  # a bug: still one line
        text = " ".join(str(ex).split())[:300]
        print(f"{PROG}: error: internal error ({type(ex).__name__}: {text}); please report it", file=sys.stderr)
        sys.exit(1)
    print(f"{PROG}: saved {out}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
