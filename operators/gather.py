"""The Reconstruct button's set-up, in one place: the scene's settings and the extension's
preferences are read once, checked, and turned into the worker job (the protocol's job dict).

:func:`gather` returns everything a :class:`~.run.Run` needs; :func:`gather_job` just the job.
Nothing is started and nothing in the file is changed; a problem raises one ``BadInputError`` /
``MissingDependencyError`` line that says what to fix.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import bpy

from ..da3_blender import options as opt
from ..da3_blender.job import build_job
from ..da3_blender.errors import BadInputError
from ..preferences import OFFLINE_HINT, get_preferences, read_worker_settings
from ..properties import PREFERENCES_DEVICE, import_options, model_id, model_info
from . import validate
from .known_poses import known_poses

@dataclass
class Setup:
    """A checked run: the worker job and what the Blender side keeps for the import."""

    job: dict
    python: str  # the worker's interpreter (on the remote machine for a remote worker)
    env: dict[str, str]  # its environment variables
    import_options: object  # scene.importer.ImportOptions
    name: str  # the run's name (input folder, video or first image)
    keep_results: bool
    images: list[str] = field(default_factory=list)
    remote: object = None  # a da3_blender.runtime.ssh.RemoteSpec: the worker runs over SSH; None: on this computer


def _job_name(mode: str, inputs: list[str]) -> str:
    path = inputs[0].rstrip("/\\")
    base = os.path.basename(path) if mode == "FOLDER" else os.path.splitext(os.path.basename(path))[0]
    return base or "DA3"


def streaming_options(settings) -> dict:
    """The chunk options of the job (empty when the views go through in one pass); checked by build_job."""
    if settings.chunking == "OFF" or (settings.chunking == "VIDEO" and settings.input_mode != "VIDEO"):
        return {}
    return {
        "chunk_size": int(settings.chunk_size) if settings.chunk_size else opt.AUTO_CHUNK,
        "chunk_overlap": int(settings.chunk_overlap) if settings.chunk_overlap else None,  # None: automatic
        "chunk_align": settings.chunk_align,
        "loop_closure": bool(settings.loop_closure),
    }


def shot_settings(settings) -> dict:
    """The job's ``shot`` (issue 17): a list of images is stills, a folder as chosen (detect, shot, stills), a
    sequence a shot; frame start (videos), frame rate (sequences, 0: from the plate) and plate colours."""
    mode = {"IMAGES": "stills", "FOLDER": settings.folder_mode, "SEQUENCE": "sequence"}.get(settings.input_mode,
                                                                                          opt.DEFAULT_SHOT_MODE)
    return {"mode": mode, "frame_start": int(settings.frame_start), "frame_rate": float(settings.frame_rate) or None,
            "colorspace": settings.input_colorspace}


def _check_model(model: str, settings, images: list[str]) -> None:
    if not model:
        raise BadInputError("no custom model given: enter a Hugging Face repo id or a local folder in DA3 > Model")
    info = model_info(model)
    if info is not None and not info["pose"] and settings.build_cameras and len(images) > 1:
        raise BadInputError(f"{info['label']} predicts depth only, no camera poses, so {len(images)} images "
                            "cannot be placed together: use a multi-view model (DA3 Small/Base/Large/Giant/"
                            "Nested), one image, or turn off Cameras in DA3 > Build")
    if info is not None and settings.scale_mode == "METRIC" and info["depth"] != "metric":
        raise BadInputError(f"{info['label']} predicts relative depth, so Scale 'Metres' cannot apply: choose "
                            "DA3 Metric Large or Nested, or set DA3 > Build > Scale to 'As predicted' or 'Factor'")


def _check_download(model: str, worker: dict) -> None:
    """Offline (Blender's online access off, or the preferences' Offline): the model must be at hand."""
    if worker["offline"] and not os.path.isdir(bpy.path.abspath(model)) and not _in_hub_cache(model, worker["env"]):
        turn_on = OFFLINE_HINT if worker["blender_offline"] else "turn off 'Offline' in the extension's preferences"
        raise BadInputError(f"{model} is not downloaded yet and downloads are off: {turn_on}; or choose a local "
                            "model folder (Model > Custom)")


def _in_hub_cache(repo_id: str, env: dict[str, str]) -> bool:
    """Whether the Hugging Face cache the worker will use holds a snapshot of ``repo_id``."""
    cache = env.get("HF_HUB_CACHE") or os.environ.get("HF_HUB_CACHE")
    if not cache:
        home = env.get("HF_HOME") or os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                                  "huggingface")
        cache = os.path.join(home, "hub")
    snapshots = os.path.join(cache, "models--" + repo_id.replace("/", "--"), "snapshots")
    return os.path.isdir(snapshots) and bool(os.listdir(snapshots))


def gather(context) -> Setup:
    """Read the scene's settings and the preferences once, check them, and describe the job."""
    settings = context.scene.da3_settings
    worker = read_worker_settings(get_preferences(context))
    inputs, images = validate.check_inputs(settings)
    remote = worker["remote"]
    python = validate.check_worker(worker) if remote is None else remote.python
    model = model_id(settings)
    _check_model(model, settings, images)
    build = import_options(settings)
    options = {
        "process_res": int(settings.process_res),
        "process_res_method": settings.process_res_method,
        "use_ray_pose": bool(settings.use_ray_pose),
        "ref_view_strategy": settings.ref_view_strategy,
        "conf_thresh_percentile": float(settings.conf_percentile),
    }
    if settings.infer_gs:
        options["infer_gs"] = True
    if settings.refine_cameras:
        options["refine"] = settings.refine_lens
        options["refine_motion"] = settings.refine_motion
    if build.mesh:  # issue 27: the worker fuses the proxy mesh (on its GPU when it has one)
        options.update(mesh=True, mesh_max_faces=int(build.mesh_max_faces))
    if settings.max_points:  # 0 (no limit) applies to the scene's points; exports keep their default
        options["num_max_points"] = int(settings.max_points)
    options.update(streaming_options(settings))
    if settings.use_selected_cameras:
        scale = build.scale if isinstance(build.scale, (int, float)) else 1.0
        up = opt.FALLBACK_UP_AXIS if build.up_axis == "FLOOR" else build.up_axis  # known poses keep their world
        options["extrinsics"], options["intrinsics"] = known_poses(context, images, up, scale)
    if remote is None:  # a remote worker downloads into its own cache
        _check_download(model, worker)
    name = _job_name(settings.input_mode, inputs)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    output = os.path.join(worker["results_dir"], f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.npz")
    device = worker["default_device"] if settings.device == PREFERENCES_DEVICE else settings.device
    video = None
    shot = shot_settings(settings)
    if settings.input_mode == "VIDEO" or shot["mode"] != "stills":
        video = {"fps": float(settings.video_fps),  # 0: every frame
                 "start": settings.video_start or None, "end": settings.video_end or None,
                 "max_frames": settings.max_frames or None}
    export_dir = export_format = None
    if settings.export_format:
        export_dir = bpy.path.abspath(settings.export_dir) if settings.export_dir.strip() else ""
        if not export_dir:
            raise BadInputError("export formats chosen but no export folder: set it in DA3 > Build > Export")
        export_format = "-".join(f for f in opt.EXPORT_FORMAT_NAMES if f in settings.export_format)
        if "exr" in settings.export_format:  # the exr export's options (issue 17)
            options.update({key: getattr(settings, key) for key in opt.EXR_OPTION_KEYS})
    # the checks every surface shares (da3_blender/job.py)
    job = build_job(inputs, output, model=model, device=device, dtype=settings.compute_dtype, video=video,
                    options=options, export_dir=export_dir, export_format=export_format, shot=shot)
    return Setup(job=job, python=python, env=worker["env"], import_options=build, name=name,
                 keep_results=settings.keep_results, images=images, remote=remote)


def gather_job(context) -> dict:
    """The worker job (protocol format) for the scene's settings and the preferences, checked."""
    return gather(context).job
