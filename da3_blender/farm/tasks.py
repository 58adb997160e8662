"""Render-farm jobs: a long shot as separate processes a farm manager schedules.

One shot is a *plan folder* (``DIR``) that every worker sees (shared storage):

* ``plan``: reads the inputs once and writes ``DIR/plan.json`` (the job, every view with its source
  and frame number, the chunks with their overlap; :func:`da3_blender.pipeline.streaming.chunk_plan`, the
  rule in-process streaming uses) and ``DIR/openjd-params.json`` (the parameters of
  ``farm/openjd/da3-shot.yaml`` for this shot);
* ``forward --chunk K``: one chunk's forward (``run_inference`` in one pass over the chunk's views,
  exactly what in-process streaming runs for that chunk) -> ``DIR/chunks/K.npz`` (result format);
* ``align``: the chunks stitched in order as in-process streaming stitches them
  (:class:`da3_blender.pipeline.streaming.Stitcher`) -> ``DIR/result.npz`` (File > Import) and the exports;
* ``loops``: loop closure of a long shot that comes back to a place (:mod:`da3_blender.farm.loops`, as
  in-process streaming: loop chunks through the network, the chunks' pose graph) -> ``DIR/result.npz``;
* ``solve``: the stitched shot's camera solve (:mod:`da3_blender.farm.solve`, as in-process ``--refine``;
  chunks never solve) -> ``DIR/result.npz`` and the exports, which wait for it; a no-op without refine;
* ``build``: ``result.npz`` into a .blend by headless Blender (``scripts/farm_build.py``).

Outputs are written atomically (a temp file renamed into place): a killed task leaves the previous
file or none (SIGTERM: its temp file removed). Re-runs are safe: a plan of the same inputs (each
file's size and mtime count: re-rendered plates are a new plan), options and chunks keeps its id
(``plan_id``; the exports and the .blend do not count), ``forward`` refuses inputs changed since the
plan and skips a chunk already computed for this plan id (``force`` recomputes), ``align`` refuses
chunks of another plan. Known camera poses and 3D Gaussians are not farm jobs (one line).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

from .. import options as opt
from ..errors import BadInputError, DA3Error
from ..files import open_atomic, remove_stale_temp_files
from .sizes import processed_size

PLAN_FORMAT = "da3-farm-plan"
PLAN_VERSION = 2  # 2: input stamps in the plan id, chunks never solve (the Solve step does)
PLAN_FILE = "plan.json"
PARAMS_FILE = "openjd-params.json"
RESULT_FILE = "result.npz"
CHUNKS_DIR = "chunks"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "farm_build.py"
TEMPLATE = REPO_ROOT / "farm" / "openjd" / "da3-shot.yaml"
AUTO_BLENDER = "auto"  # build: blender on PATH, else this Python's bpy module


def _nothing(*_args, **_kwargs):
    return None


# ---------------------------------------------------------------------------------------------------
# plan


def plan_shot(job: dict, out_dir, python: str | None = None, blend: str | None = None, progress=None) -> dict:
    """Plan one shot (a job of :func:`da3_blender.job.build_job`) into ``out_dir``; returns the plan.

    ``python``: the interpreter the farm runs the commands with (default: this one); ``blend``: the
    .blend the Build step writes (default ``out_dir/<shot>.blend``).
    """
    from .. import devices
    from ..inputs.collect import collect_inputs
    from ..job import inference_kwargs, normalize_job, video_kwargs

    progress = progress or _nothing
    job = normalize_job(job, need_output=False)
    _check_farm_job(job)
    job["inputs"] = [os.path.abspath(p) for p in job["inputs"]]  # every worker reads the same paths
    if job["export_dir"]:
        job["export_dir"] = os.path.abspath(job["export_dir"])
    out_dir = os.path.abspath(out_dir)
    source = collect_inputs(job["inputs"], exif_transpose=job["options"].get("exif_transpose", True),
                                   progress=progress, **video_kwargs(job))
    n = len(source)
    hw = processed_size(source, job["options"])
    kwargs = inference_kwargs(job)
    size, overlap = kwargs.get("chunk_size"), kwargs.get("chunk_overlap")
    device = devices.resolve_device(job["device"]) if size == opt.AUTO_CHUNK else job["device"]
    from ..pipeline import streaming

    chunking = streaming.chunk_plan(n, size, overlap, device, hw, job["model"])
    size, overlap, chunks = chunking if chunking is not None else (n, 0, [(0, n)])
    if len(chunks) > 1 and overlap < 1:
        raise BadInputError("farm chunks are aligned on their shared views: give --chunk-overlap 1 or more")
    if job["options"].get("refine") not in (None, False) and n < 2:
        raise BadInputError(f"refining cameras needs at least 2 views (got {n}): give more frames, or plan without --refine")
    video = source.video
    shot = _shot_name(job["inputs"])
    plan = {
        "format": PLAN_FORMAT, "version": PLAN_VERSION, "shot": shot, "job": job,
        "views": {"count": n, "kind": source.kind, "video": dict(video) if video else None,
                  "paths": [os.path.abspath(p) for p in source.source_paths],
                  "frame_numbers": [int(f) for f in source.frame_numbers],
                  "timestamps": [None if not math.isfinite(t) else float(t) for t in source.timestamps],
                  "processed_size": list(hw), "stamps": input_stamps(source.source_paths)},
        "chunk_size": int(size), "chunk_overlap": int(overlap),
        "chunk_align": kwargs.get("chunk_align", opt.DEFAULT_CHUNK_ALIGN),
        "chunks": [{"index": k, "start": int(a), "end": int(b)} for k, (a, b) in enumerate(chunks)],
    }
    if video:
        plan["views"]["video"]["path"] = os.path.abspath(video["path"])
    plan["plan_id"] = _plan_id(plan)
    plan["blend"] = os.path.abspath(blend) if blend else os.path.join(out_dir, f"{shot}.blend")
    _write_json(os.path.join(out_dir, PLAN_FILE), plan)
    _write_json(os.path.join(out_dir, PARAMS_FILE), openjd_params(plan, out_dir, python))
    return plan


EXPORT_ONLY = ("output", "export_dir", "export_format")  # job fields that change no chunk's forward
SOLVE_KEYS = ("refine", "refine_motion")  # the Solve step's options: a chunk's forward never solves
EXPORT_ONLY_OPTIONS = ("conf_thresh_percentile", "num_max_points", "show_cameras")


def input_stamps(paths) -> dict:
    """``{path: [size, mtime_ns]}`` of each input file: a plate re-rendered under the same name changes the plan id."""
    stamps = {}
    for path in dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise BadInputError(f"cannot read {path} ({exc.strerror or exc}): check the inputs") from None
        stamps[path] = [int(st.st_size), int(st.st_mtime_ns)]
    return stamps


def _check_stamps(plan: dict, start: int, end: int) -> None:
    """One line when an input of views ``start..end`` changed since the plan (its chunks would mix old and new)."""
    stamps = plan["views"].get("stamps") or {}
    paths = plan["views"]["paths"][start:end]
    changed = [p for p in dict.fromkeys(paths) if p in stamps and input_stamps([p]).get(p) != stamps[p]]
    if changed:
        raise BadInputError(f"{changed[0]} changed since the shot was planned ({len(changed)} input"
                            f"{'s' * (len(changed) != 1)}): run `da3 farm plan` again (the new plan recomputes every chunk)")


def _plan_id(plan: dict) -> str:
    """A hash of what the chunk results depend on (input stamps too): other exports keep them valid."""
    job = {k: v for k, v in plan["job"].items() if k not in EXPORT_ONLY}
    job["options"] = {k: v for k, v in job["options"].items() if k not in EXPORT_ONLY_OPTIONS}
    return hashlib.sha256(json.dumps({**plan, "job": job}, sort_keys=True).encode()).hexdigest()[:16]


def _check_farm_job(job: dict) -> None:
    options = job["options"]
    if options.get("extrinsics") is not None or options.get("intrinsics") is not None:
        raise BadInputError("farm jobs do not take known camera poses: run them in one process (da3, the panel)")
    if options.get("infer_gs") or "gs_ply" in (job["export_format"] or "").split("-"):
        raise BadInputError("3D Gaussians are predicted in one pass, not in farm chunks: leave infer_gs and gs_ply out")


def _shot_name(paths: list[str]) -> str:
    first = os.path.normpath(os.path.abspath(paths[0]))
    name = os.path.basename(first) if os.path.isdir(first) else os.path.splitext(os.path.basename(first))[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "shot"


def chunk_range(count: int) -> str:
    """The chunk indices as an OpenJD range expression ("0-4", "0")."""
    return "0" if count == 1 else f"0-{count - 1}"


def openjd_params(plan: dict, plan_dir: str, python: str | None = None) -> dict:
    """The job parameters of ``farm/openjd/da3-shot.yaml`` for a plan."""
    device = plan["job"]["device"]
    return {
        "PlanDir": plan_dir,
        "Chunks": chunk_range(len(plan["chunks"])),
        "Python": python or sys.executable,
        "Da3Root": str(REPO_ROOT),
        "Device": device,
        "WorkerGpus": 1 if device.startswith("cuda") else 0,  # auto and cpu: any worker may take a chunk
        "BlendFile": plan["blend"],
        "Blender": AUTO_BLENDER,
    }


def read_plan(plan_dir) -> dict:
    """``plan_dir/plan.json``, checked; one line when it is missing or not a plan."""
    path = os.path.join(os.fspath(plan_dir), PLAN_FILE)
    if not os.path.isfile(path):
        raise BadInputError(f"no farm plan at {path}: run `da3 farm plan INPUT --out {plan_dir}` first")
    try:
        with open(path, encoding="utf-8") as fh:
            plan = json.load(fh)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path} is not readable ({exc}): run `da3 farm plan` again") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise BadInputError(f"{path} is not a DA3 farm plan: run `da3 farm plan` again")
    if plan.get("version") != PLAN_VERSION:
        raise BadInputError(f"{path} is a farm plan of version {plan.get('version')!r}; this DA3 reads version "
                            f"{PLAN_VERSION}: plan the shot again with this version")
    return plan


def _write_json(path: str, data: dict) -> None:
    with open_atomic(path, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")


# ---------------------------------------------------------------------------------------------------
# forward


def chunk_path(plan_dir, index: int) -> str:
    return os.path.join(os.fspath(plan_dir), CHUNKS_DIR, f"{int(index)}.npz")


def _chunk(plan: dict, index) -> dict:
    count = len(plan["chunks"])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise BadInputError(f"chunk {index!r} is not in this plan: it has chunks 0 to {count - 1}")
    return plan["chunks"][index]


def _farm_meta(path: str) -> dict:
    """The ``farm`` entry of a result file's metadata, read without loading its arrays ({} if unreadable)."""
    from ..errors import ResultFormatError
    from ..prediction import read_meta

    try:
        meta = read_meta(path)
    except ResultFormatError:
        return {}
    farm = meta.get("farm")
    return farm if isinstance(farm, dict) else {}


def _chunk_done(path: str, plan: dict, index: int) -> bool:
    """True when ``path`` is this plan's result of chunk ``index`` (same plan id)."""
    farm = _farm_meta(path) if os.path.isfile(path) else {}
    return farm.get("plan_id") == plan["plan_id"] and farm.get("chunk") == index


def chunk_inputs(plan: dict, start: int, end: int):
    """The :class:`~da3_blender.inputs.images.InputSet` of views ``start..end`` (decoding only those)."""
    import numpy as np

    from ..inputs.collect import VideoFrames
    from ..inputs.images import ImageFiles, InputSet
    from ..prediction import video_indices

    views = plan["views"]
    exif = plan["job"]["options"].get("exif_transpose", True)
    paths = views["paths"][start:end]
    numbers = views["frame_numbers"][start:end]
    video = views["video"]
    if views["kind"] == "video":
        images = VideoFrames(video["path"], [int(f) for f in video_indices(numbers, video)], video["width"], video["height"])
    else:
        images = ImageFiles(paths, exif)
    times = [math.nan if t is None else t for t in views["timestamps"][start:end]]
    return InputSet(images=images, source_paths=list(paths), frame_numbers=np.asarray(numbers, dtype=np.int64),
                           timestamps=np.asarray(times, dtype=np.float64), kind=views["kind"], video=video)


def forward_chunk(plan_dir, index: int, device: str | None = None, model=None, force: bool = False,
                  progress=None) -> tuple[str, bool]:
    """Run chunk ``index`` of the plan -> ``(DIR/chunks/K.npz, skipped)``.

    ``model``: a loaded model (else the plan's, on ``device`` or the plan's device). A chunk already
    computed for this plan is skipped unless ``force``.
    """
    from ..inference import run_inference
    from ..job import STREAMING_KEYS, inference_kwargs
    from ..prediction import save_result

    progress = progress or _nothing
    plan = read_plan(plan_dir)
    chunk = _chunk(plan, index)
    out = chunk_path(plan_dir, index)
    remove_stale_temp_files(os.path.dirname(out))  # left by a task killed outright (SIGKILL); others' are recent
    _check_stamps(plan, chunk["start"], chunk["end"])
    if not force and _chunk_done(out, plan, index):
        return out, True
    job = plan["job"]
    if device is not None:
        from ..job import check_device

        check_device(device)
    source = chunk_inputs(plan, chunk["start"], chunk["end"])
    if model is None:
        model = _load_model(job, device or job["device"], progress)
    kwargs = {k: v for k, v in inference_kwargs(job).items() if k not in (*STREAMING_KEYS, *SOLVE_KEYS)}
    pred = run_inference(model, source, progress=progress, exif_transpose=job["options"].get("exif_transpose", True),
                         **kwargs)
    save_result(out, pred, meta={"farm": {"plan_id": plan["plan_id"], "chunk": index, "start": chunk["start"],
                                          "end": chunk["end"]}})
    return out, False


def _load_model(job: dict, device: str, progress):
    from .. import devices
    from ..api import DepthAnything3

    device = devices.resolve_device(device)
    progress("model", 0.0, f"loading {job['model']} on {device}")
    model = DepthAnything3.from_pretrained(job["model"], device=device, compute_dtype=job["dtype"])
    progress("model", 1.0, f"{getattr(model, 'model_name', job['model'])} on {device}")
    return model


# ---------------------------------------------------------------------------------------------------
# align


def _load_chunk(plan_dir, plan: dict, index: int):
    from ..prediction import load_result

    chunk = plan["chunks"][index]
    part = load_result(chunk_path(plan_dir, index))
    farm = part.meta.get("farm") or {}
    if farm.get("plan_id") != plan["plan_id"] or farm.get("chunk") != index:
        raise BadInputError(f"{chunk_path(plan_dir, index)} is not chunk {index} of this plan (the shot was planned "
                            f"again?): run `da3 farm forward {plan_dir} --chunk {index} --force`")
    if part.num_views != chunk["end"] - chunk["start"]:
        raise BadInputError(f"{chunk_path(plan_dir, index)} has {part.num_views} views, chunk {index} has "
                            f"{chunk['end'] - chunk['start']}: run its forward again with --force")
    return part


def stitch(plan_dir, plan: dict | None = None, progress=None):
    """The plan's chunk results stitched as in-process streaming stitches them -> Prediction."""
    import numpy as np

    from ..pipeline import streaming
    from ..model.config import capabilities

    progress = progress or _nothing
    plan = plan or read_plan(plan_dir)
    _check_stamps(plan, 0, plan["views"]["count"])
    chunks = plan["chunks"]
    missing = [c["index"] for c in chunks if not os.path.isfile(chunk_path(plan_dir, c["index"]))]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise BadInputError(f"{len(missing)} of {len(chunks)} chunk results missing (chunks {shown}): run "
                            f"`da3 farm forward {plan_dir} --chunk K` for each first")
    stitcher, meta, align = None, {}, None
    for c in chunks:
        k, start, end = c["index"], c["start"], c["end"]
        part = _load_chunk(plan_dir, plan, k)
        if stitcher is None:
            meta = {key: v for key, v in part.meta.items() if key not in ("format", "version", "farm", "exported_files")}
            align = streaming.resolve_align(plan["chunk_align"], capabilities(meta.get("model", "da3-large")))
            stitcher = streaming.Stitcher(plan["views"]["count"], with_scale=align == "sim3")
        label = f"chunk {k + 1}/{len(chunks)} (frames {start + 1}-{end})"
        stitcher.add_part(start, end, part, label=label, extra={"image": part.processed_images,
                                                                "orig_size": part.orig_size,
                                                                "proc_to_orig": part.proc_to_orig})
        progress("align", (k + 1) / len(chunks), label)
    arrays = stitcher.arrays
    pred = stitcher.prediction(arrays["image"])
    pred.orig_size, pred.proc_to_orig = arrays["orig_size"], arrays["proc_to_orig"]
    views = plan["views"]
    pred.source_paths = list(views["paths"])
    pred.frame_numbers = np.asarray(views["frame_numbers"], dtype=np.int64)
    pred.timestamps = np.asarray([math.nan if t is None else t for t in views["timestamps"]], dtype=np.float64)
    meta["streaming"] = {"chunk_size": plan["chunk_size"], "chunk_overlap": plan["chunk_overlap"], "chunk_align": align}
    meta["chunks"] = stitcher.chunks
    meta["farm"] = {"plan_id": plan["plan_id"], "chunks": len(chunks)}
    pred.meta = meta
    return pred


def refines(plan: dict) -> bool:
    """True when the plan's job refines the cameras (the Solve step has work)."""
    return plan["job"]["options"].get("refine") not in (None, False)


def closes_loops(plan: dict) -> bool:
    """True when the Loops step has work: a streamed shot that in-process streaming would close loops in."""
    on = plan["job"]["options"].get("loop_closure", opt.DEFAULT_LOOP_CLOSURE)
    return len(plan["chunks"]) > 1 and opt.loop_closure_on(on, plan["views"]["count"])


def align_shot(plan_dir, progress=None) -> tuple[str, object]:
    """Stitch the chunks, write the exports (unless Loops or Solve will) and ``DIR/result.npz`` -> ``(path, prediction)``."""
    from ..prediction import save_result

    progress = progress or _nothing
    plan = read_plan(plan_dir)
    pred = stitch(plan_dir, plan, progress)
    pending = {"loops": closes_loops(plan), "solve": refines(plan)}  # da3 farm loops, solve: the whole shot's
    pred.meta["farm"].update({step: "pending" if todo else None for step, todo in pending.items()})
    if not any(pending.values()):
        export_shot(pred, plan["job"], progress)
    out = save_result(os.path.join(os.fspath(plan_dir), RESULT_FILE), pred)
    return out, pred


def export_shot(pred, job: dict, progress) -> None:
    """The job's exports of the shot (none without an export folder); their paths to ``meta["exported_files"]``."""
    if not job["export_dir"]:
        return
    from .. import exports
    from ..files import make_folder

    options = job["options"]
    make_folder(job["export_dir"])
    progress("export", 0.0, f"writing {job['export_format']} to {job['export_dir']}")
    files = exports.export(
        pred, export_format=job["export_format"], export_dir=job["export_dir"],
        conf_thresh_percentile=options.get("conf_thresh_percentile", opt.DEFAULT_CONF_THRESH_PERCENTILE),
        num_max_points=options.get("num_max_points", opt.DEFAULT_NUM_MAX_POINTS),
        show_cameras=options.get("show_cameras", True), progress=lambda f: progress("export", float(f), ""),
    )
    pred.meta["exported_files"] = [os.fspath(f) for f in (files or [])]
    progress("export", 1.0, f"{len(pred.meta['exported_files'])} files")


# ---------------------------------------------------------------------------------------------------
# build


def build_command(plan_dir, output: str | None = None, blender: str | None = None, build_args=()) -> list[str]:
    """The command that builds ``DIR/result.npz`` into ``output`` (.blend), checked before any work.

    ``blender``: a Blender executable, or ``auto``/None: ``blender`` on PATH, else this Python when it
    has the bpy module.
    """
    import importlib.util
    import shutil

    plan = read_plan(plan_dir)
    result = os.path.join(os.fspath(plan_dir), RESULT_FILE)
    _check_result(result, plan, plan_dir)
    output = os.path.abspath(output or plan["blend"])
    if not output.lower().endswith(".blend"):
        raise BadInputError(f"--output must be a .blend file, got {output}")
    if not BUILD_SCRIPT.is_file():
        raise BadInputError(f"the build script {BUILD_SCRIPT} is missing: use a complete DA3 for Blender checkout")
    script_args = [os.path.abspath(os.fspath(plan_dir)), "--output", output, *map(str, build_args)]
    if blender in (None, "", AUTO_BLENDER):
        blender = shutil.which("blender")
        if blender is None:
            if importlib.util.find_spec("bpy") is None:
                raise BadInputError("no Blender to build with: put blender on PATH, give --blender /path/to/blender, "
                                    "or pip install bpy==5.0.1 in this Python")
            return [sys.executable, str(BUILD_SCRIPT), *script_args]
    elif not (os.path.isfile(blender) or shutil.which(blender)):
        raise BadInputError(f"--blender: no Blender executable at {blender}")
    return [blender, "-b", "--factory-startup", "-P", str(BUILD_SCRIPT), "--", *script_args]


def _check_result(result: str, plan: dict, plan_dir) -> None:
    if not os.path.isfile(result):
        raise BadInputError(f"no {RESULT_FILE} in {plan_dir}: run `da3 farm align {plan_dir}` first")
    farm = _farm_meta(result)
    if farm.get("plan_id") != plan["plan_id"]:
        raise BadInputError(f"{result} is not the result of this plan (planned again?): run `da3 farm align {plan_dir}`")
    if farm.get("loops") == "pending":
        raise BadInputError(f"the loops of {result} are not closed yet: run `da3 farm loops {plan_dir}` first")
    if farm.get("solve") == "pending":
        raise BadInputError(f"the cameras of {result} are not solved yet (the plan refines them): run "
                            f"`da3 farm solve {plan_dir}` first")


def build_shot(command: list[str]) -> None:
    """Run a :func:`build_command`; its output passes through, its one-line error becomes a DA3Error."""
    import subprocess

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last = ""
    try:
        for line in proc.stdout:
            if line.strip():
                last = line.strip()
            if not line.startswith("farm-build: error: "):
                sys.stdout.write(line)
    except BaseException:  # terminated (SIGTERM) or interrupted: Blender stops too
        proc.terminate()
        proc.wait()
        raise
    code = proc.wait()
    if code:
        raise DA3Error(last.removeprefix("farm-build: error: ") if last else f"the build failed (exit status {code})")
