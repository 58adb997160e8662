"""``da3 farm plan|forward|align|loops|solve|build|submit``: a shot as render-farm tasks (:mod:`da3_blender.farm`).

    da3 farm plan INPUT... --out DIR [the usual options]   # one plan folder per shot (several: DIR/<shot>)
    da3 farm forward DIR --chunk K [--device cuda]         # one chunk's forward -> DIR/chunks/K.npz
    da3 farm align DIR                                     # -> DIR/result.npz and the asked exports
    da3 farm loops DIR [--device cuda]                     # a long shot's loop closure (loop chunks: the model)
    da3 farm solve DIR                                     # --refine: the stitched shot's camera solve
    da3 farm build DIR [--output shot.blend] [--blender PATH] [-- build options]
    da3 farm submit DIR --flamenco URL                     # the shot as a Flamenco job

Each is its own process with the ``da3`` exit codes (0 done, 2 bad input, 1 failed, 130 interrupted),
one ``da3: error: ...`` line on failure and progress lines on stdout; safe to run again.
"""

from __future__ import annotations

import argparse
import json
import os

from ..errors import BadInputError


def add_parser(sub, common, video) -> None:
    """The ``farm`` command and its sub-commands, under the ``da3`` parser's sub-parsers ``sub``."""
    import copy

    common = copy.deepcopy(common)  # its own actions: the export defaults below must not reach the other commands
    farm = sub.add_parser("farm", help="a long shot as render-farm tasks: plan, forward, align, loops, solve, build, submit")
    steps = farm.add_subparsers(dest="farm_command", metavar="STEP", parser_class=type(farm))
    p = steps.add_parser("plan", parents=[common, video], help="plan shots: DIR/plan.json and DIR/openjd-params.json")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="shots: a video, a folder of images or an image each")
    p.add_argument("--out", required=True, metavar="DIR", help="the plan folder (several shots: one folder each in it)")
    p.add_argument("--job", default=None, metavar="JOB.json", help="plan the job in this file (da3_blender.job) instead")
    p.add_argument("--python", default=None,
                   help="the Python the farm runs the steps with (default: this one), written to openjd-params.json")
    p.add_argument("--blend", default=None, metavar="PATH.blend",
                   help="the .blend the build step writes (default: DIR/<shot>.blend; one shot only)")
    p.set_defaults(export_dir="", export_format=None)  # a farm job exports only when asked
    p = steps.add_parser("forward", help="one chunk's forward -> DIR/chunks/K.npz")
    p.add_argument("plan_dir", metavar="DIR")
    p.add_argument("--chunk", type=int, required=True, metavar="K", help="the chunk (0 to the plan's count - 1)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: the plan's)")
    p.add_argument("--force", action="store_true", help="run it even if this plan's chunk K is already there")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only errors and the file")
    p = steps.add_parser("align", help="stitch the chunks -> DIR/result.npz and the plan's exports")
    p.add_argument("plan_dir", metavar="DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only errors and the file")
    p = steps.add_parser("loops", help="close the loops of a long shot that comes back to a place (as in-process "
                         "streaming; else nothing to do) -> DIR/result.npz")
    p.add_argument("plan_dir", metavar="DIR")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: the plan's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only errors and the file")
    p = steps.add_parser("solve", help="the camera solve of the stitched shot (a plan with --refine; else nothing to do)")
    p.add_argument("plan_dir", metavar="DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only errors and the file")
    p = steps.add_parser("build", help="DIR/result.npz into a .blend with headless Blender (the panel's builders)",
                         epilog="Build options follow a --, as scripts/reconstruct.py takes them: "
                                "da3 farm build DIR -- --no-planes --plane-detail 2")
    p.add_argument("plan_dir", metavar="DIR")
    p.add_argument("--output", "-o", default=None, help="the .blend to write (default: the plan's, DIR/<shot>.blend)")
    p.add_argument("--blender", default=None,
                   help="Blender executable (default auto: blender on PATH, else this Python's bpy module)")
    p = steps.add_parser("submit", help="submit a planned shot to a Flamenco manager")
    p.add_argument("plan_dir", metavar="DIR")
    p.add_argument("--flamenco", required=True, metavar="URL", help="the Flamenco manager, e.g. http://manager:8080")
    p.add_argument("--python", default=None, help="the worker Python in the job (default: the manager variable {da3_python})")
    p.add_argument("--blender", default=None, help="Blender on the workers (default: the manager variable {blender})")
    p.add_argument("--priority", type=int, default=50, help="job priority (default 50)")
    p.add_argument("--da3-root", default=None, metavar="DIR",
                   help="the DA3 for Blender folder on the workers, with scripts/ (default: this one)")


def split_build_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``da3 farm build DIR ... -- OPTIONS``: (the arguments for the parser, the build options after ``--``)."""
    if argv[:2] == ["farm", "build"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def run(args, build_options=()) -> int:
    """Execute ``da3 farm ...``; raises DA3Error on failure."""
    from .common import ProgressPrinter, _quiet

    step = getattr(args, "farm_command", None)
    if step is None:
        raise BadInputError("choose a farm step: plan, forward, align, loops, solve, build or submit (see da3 farm --help)")
    args.build_options = list(build_options)
    from ..cancel import terminate_as_cancel

    printer = _quiet if getattr(args, "quiet", False) else ProgressPrinter()
    failed = True
    try:
        with terminate_as_cancel(f"da3 farm {step}"):  # a killed task leaves no .tmp-* file
            code = {"plan": _plan, "forward": _forward, "align": _align, "loops": _loops, "solve": _solve,
                    "build": _build, "submit": _submit}[step](args, printer)
        failed = False
        return code
    finally:
        if isinstance(printer, ProgressPrinter):
            printer.close(failed)


def _jobs(args) -> list[dict]:
    """The job of each shot on the command line (or in --job), checked before any work."""
    from .common import input_kind, job_from_args
    from ..job import normalize_job

    if args.job:
        if args.inputs:
            raise BadInputError("give either --job JOB.json or INPUT paths, not both")
        try:
            with open(args.job, encoding="utf-8") as fh:
                return [normalize_job(json.load(fh), need_output=False)]
        except (OSError, ValueError) as exc:
            raise BadInputError(f"--job {args.job} is not a readable JSON job ({exc})") from None
    if not args.inputs:
        raise BadInputError("give the shots to plan: a video, a folder of images or an image each (or --job JOB.json)")
    if args.export_format and not args.export_dir:
        raise BadInputError("--export-format needs --export-dir (a farm job exports only when asked)")
    if args.export_dir and not args.export_format:
        from ..options import DEFAULT_EXPORT_FORMAT

        args.export_format = DEFAULT_EXPORT_FORMAT
    jobs = []
    for path in args.inputs:
        input_kind(path, "auto")
        shot = argparse.Namespace(**{**vars(args), "input": path})
        if args.export_dir and len(args.inputs) > 1:
            from ..farm.tasks import _shot_name

            shot.export_dir = os.path.join(args.export_dir, _shot_name([path]))
        jobs.append(job_from_args(shot))
    return jobs


def _plan(args, printer) -> int:
    from ..farm import tasks as farm

    jobs = _jobs(args)
    if args.python and not os.path.isfile(args.python):
        raise BadInputError(f"--python: no interpreter at {args.python}")
    if args.blend and (len(jobs) > 1 or not args.blend.lower().endswith(".blend")):
        raise BadInputError("--blend takes one .blend file, for one shot (several shots: each gets DIR/<shot>/<shot>.blend)")
    folders, used = [], set()
    for job in jobs:
        folder = args.out
        if len(jobs) > 1:
            name = base = farm._shot_name(job["inputs"])
            suffix = 2
            while name in used:
                name, suffix = f"{base}-{suffix}", suffix + 1
            used.add(name)
            folder = os.path.join(args.out, name)
        folders.append(folder)
    for job, folder in zip(jobs, folders):
        plan = farm.plan_shot(job, folder, python=args.python and os.path.abspath(args.python), blend=args.blend,
                              progress=printer)
        count = len(plan["chunks"])
        print(f"da3 farm: {plan['shot']}: {plan['views']['count']} views in {count} chunk{'s' * (count != 1)} of "
              f"{plan['chunk_size']} (overlap {plan['chunk_overlap']}) -> {os.path.abspath(folder)}")
    return 0


def _forward(args, printer) -> int:
    from ..farm import tasks as farm

    path, skipped = farm.forward_chunk(args.plan_dir, args.chunk, device=args.device, force=args.force, progress=printer)
    note = " (already done for this plan; --force runs it again)" if skipped else ""
    print(f"da3 farm: chunk {args.chunk} -> {path}{note}")
    return 0


def _align(args, printer) -> int:
    from ..farm import tasks as farm

    path, pred = farm.align_shot(args.plan_dir, progress=printer)
    chunks = pred.meta["chunks"]
    plan = farm.read_plan(args.plan_dir)
    todo = [step for step, pending in (("loops", farm.closes_loops(plan)), ("solve", farm.refines(plan))) if pending]
    pending = f" (to do: {' then '.join(f'`da3 farm {s}`' for s in todo)}, it writes the exports)" if todo else ""
    print(f"da3 farm: {pred.num_views} views from {len(chunks)} chunk{'s' * (len(chunks) != 1)} -> {path}{pending}")
    for f in pred.meta.get("exported_files", []):
        print(f"  {f}")
    return 0


def _loops(args, printer) -> int:
    from ..farm.loops import close_shot_loops

    path, pred, closed = close_shot_loops(args.plan_dir, device=args.device, progress=printer)
    figures = (pred.meta.get("streaming") or {}).get("loop_closure")
    if not closed:
        what = "loops already closed" if figures else "no loop closure in this plan (loop_closure off or a short shot)"
    else:
        found = len(figures["loops"])
        what = f"{found} loop{'s' * (found != 1)} closed ({figures['candidates']} found, {figures['rejected']} rejected)"
    return _step_done(pred, what, path, closed)


def _solve(args, printer) -> int:
    from ..farm.solve import solve_shot

    path, pred, solved = solve_shot(args.plan_dir, progress=printer)
    s = pred.meta.get("solve") or {}
    if not solved:
        what = "already solved" if s else "nothing to solve: the plan does not refine cameras"
    elif s.get("failed"):
        what = "the camera solve failed, the DA3 cameras are kept (see the warning)"
    else:
        what = f"solve error {s['rms_px_before']:.2f} -> {s['rms_px']:.2f} px ({s['tracks']} tracks)"
    return _step_done(pred, what, path, solved)


def _step_done(pred, what: str, path, wrote: bool) -> int:
    """The one-line summary of a Loops or Solve step, then the exports it wrote (if it ran)."""
    print(f"da3 farm: {pred.num_views} views, {what} -> {path}")
    for f in pred.meta.get("exported_files", []) if wrote else []:
        print(f"  {f}")
    return 0


def _build(args, printer) -> int:
    from ..farm import tasks as farm

    command = farm.build_command(args.plan_dir, args.output, args.blender, args.build_options)
    printer("build", 0.0, f"{os.path.basename(command[0])} building {os.path.join(args.plan_dir, farm.RESULT_FILE)}")
    farm.build_shot(command)
    printer("build", 1.0, "")
    return 0


def _submit(args, printer) -> int:
    from ..farm import tasks as farm, flamenco

    plan = farm.read_plan(args.plan_dir)
    job = flamenco.job_for_plan(plan, os.path.abspath(args.plan_dir), python=args.python, blender=args.blender,
                                priority=args.priority, da3_root=args.da3_root)
    answer = flamenco.submit(args.flamenco, job)
    print(f"da3 farm: {plan['shot']} submitted to {args.flamenco} as job {answer.get('id', '?')} "
          f"({len(plan['chunks'])} forward tasks, align, loops, solve, build)")
    return 0
