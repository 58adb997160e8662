"""The one description of a DA3 job, built and checked in one place.

The panel (``operators/run.py``), the headless script (``scripts/reconstruct.py``), the ``da3``
command line and the worker protocol (:func:`da3_blender.runtime.protocol.normalize_job`) all describe a
run with the same dict, made by :func:`build_job` (from keyword arguments) or :func:`normalize_job`
(from a received dict). Every check that needs no torch happens here, before any work, and fails
with one :class:`BadInputError` line naming the field. Choices and defaults come from
:mod:`da3_blender.options`. Standard library only: Blender's Python imports this module.

A job::

    {
      "inputs": ["a.jpg", "b.jpg"] | ["folder"] | ["shot.mp4"],
      "output": "/path/result.npz",           # the result file the worker writes
      "model": "depth-anything/DA3-SMALL",    # default: options.default_model() ($DA3_MODEL)
      "device": "auto",                        # auto, cpu, cuda, cuda:N, mps
      "dtype": "auto",                         # auto, fp32, bf16, fp16
      "video": {"fps": 1.0, "start": None, "end": None, "max_frames": None},   # fps 0: every frame
      "options": {...},                        # keywords of DepthAnything3.inference, see OPTION_TYPES
      "export_dir": None | "/path/exports",
      "export_format": None | "glb-ply",
      "shot": {"mode": "auto", "frame_start": 1, "frame_rate": None, "colorspace": "auto"},   # issue 17
    }

``shot``: ``mode`` auto (a numbered sequence is one shot), sequence or stills; ``frame_start`` the
scene frame of a video's first frame; ``frame_rate`` an image sequence's rate (None: the EXR
``framesPerSecond``, else ``options.DEFAULT_SEQUENCE_RATE``); ``colorspace`` how plates are turned
into the model's display-referred input (auto, srgb, linear).

:func:`inference_kwargs` and :func:`video_kwargs` turn a job into the keywords of
``DepthAnything3.inference`` / ``run_inference`` and ``inputs.collect_inputs``.
"""

from __future__ import annotations

from typing import Any, Iterable

from . import options as opt
from .errors import BadInputError
from .inputs.checks import VIDEO_KEYS, check_frame_start, check_video
from .inputs.checks import is_number as _is_number, is_whole as _is_whole

FIELDS = ("inputs", "output", "model", "device", "dtype", "video", "options", "export_dir", "export_format", "shot")
STREAMING_KEYS = ("chunk_size", "chunk_overlap", "chunk_align")
SHOT_KEYS = ("mode", "frame_start", "frame_rate", "colorspace")

# options passed to DepthAnything3.inference (exif_transpose goes to the input reader)
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "process_res": (int,),
    "process_res_method": (str,),
    "use_ray_pose": (bool,),
    "ref_view_strategy": (str,),
    "extrinsics": (list,),
    "intrinsics": (list,),
    "align_to_input_ext_scale": (bool,),
    "conf_thresh_percentile": (int, float),
    "num_max_points": (int,),
    "show_cameras": (bool,),
    "exif_transpose": (bool,),
    "chunk_size": (int, str),  # int >= 2, or "auto"
    "chunk_overlap": (int,),
    "chunk_align": (str,),
    "loop_closure": (bool,),  # streamed shots that revisit a place close their loops (options.DEFAULT_LOOP_CLOSURE)
    "infer_gs": (bool,),  # 3D Gaussians (GIANT / NESTED models)
    "refine": (bool, str),  # camera solve: False, True (options.DEFAULT_REFINE_LENS) or a lens of options.REFINE_LENSES
    "refine_motion": (str,),  # the solve's camera motion: options.REFINE_MOTIONS (auto, free, nodal)
    # the exr export (issue 17): plate or processed resolution, half floats, plate filter
    "exr_resolution": (str,),
    "exr_half": (bool,),
    "exr_plate_filter": (str,),
    # the matchmove scene (issue 27): the exports' world, the scale from the first camera's height, the proxy mesh
    "up_axis": (str,),
    "camera_height": (int, float),
    "mesh": (bool,),
    "mesh_max_faces": (int,),
}


def _one_of(value, table, what: str) -> str:
    ids = table if isinstance(table[0], str) else opt.choice_ids(table)
    if value not in ids:
        raise BadInputError(f"unknown {what} {value!r}; use one of: {', '.join(ids)}")
    return value


def check_device(device) -> str:
    if not opt.is_device_name(device):
        raise BadInputError(f"unknown device {device!r}: choose {opt.DEVICE_HELP}")
    return device


def parse_export_format(export_format) -> list[str]:
    """``"glb-ply"`` -> ``["glb", "ply"]`` (duplicates dropped), or one line naming the unknown ones."""
    names = [f.strip() for f in str(export_format or "").split("-")]
    unknown = [f for f in names if f not in opt.EXPORT_FORMAT_NAMES]
    if unknown or not names:
        raise BadInputError(
            f"unknown export format {', '.join(repr(f) for f in unknown)} in {export_format!r}; "
            f"valid formats are {', '.join(opt.EXPORT_FORMAT_NAMES)}, joined with '-' (e.g. 'glb-mini_npz')"
        )
    return list(dict.fromkeys(names))


def check_streaming(chunk_size=None, chunk_overlap=None, chunk_align=None) -> None:
    """chunk_size int >= 2 or "auto"; chunk_overlap int >= 0 and below chunk_size; align a known choice."""
    if chunk_size is not None and chunk_size != opt.AUTO_CHUNK and not (_is_whole(chunk_size) and chunk_size >= opt.MIN_CHUNK_SIZE):
        raise BadInputError(f"chunk size must be a whole number >= {opt.MIN_CHUNK_SIZE} or {opt.AUTO_CHUNK!r}, got {chunk_size!r}")
    if chunk_overlap is not None:
        if not (_is_whole(chunk_overlap) and chunk_overlap >= 0):
            raise BadInputError(f"chunk overlap must be a whole number >= 0, got {chunk_overlap!r}")
        if _is_whole(chunk_size) and chunk_overlap >= chunk_size:
            raise BadInputError(f"chunk overlap {chunk_overlap} must be smaller than the chunk size {chunk_size}: chunks "
                                f"share some views, not all; try {opt.default_chunk_overlap(chunk_size)}")
    if chunk_align is not None:
        _one_of(chunk_align, opt.CHUNK_ALIGN_NAMES, "chunk align")
        if chunk_align == "sim3" and chunk_overlap == 0:
            raise BadInputError("chunk overlap 0 leaves nothing to align chunks with sim3: give an overlap of 2 or more")


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Types and values of the inference options (no torch needed); returns a copy."""
    if not isinstance(options, dict):
        raise BadInputError("'options' must be an object")
    for key, value in options.items():
        if key not in OPTION_TYPES:
            raise BadInputError(f"unknown option {key!r} (known: {', '.join(OPTION_TYPES)})")
        if value is None and key in ("extrinsics", "intrinsics", *STREAMING_KEYS):
            continue
        types = OPTION_TYPES[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise BadInputError(f"option {key} must be {names}, got {value!r}")
    res = options.get("process_res")
    if res is not None and res < opt.MIN_PROCESS_RES:
        raise BadInputError(f"process_res {res} is too small: use at least {opt.MIN_PROCESS_RES} "
                            f"({opt.DEFAULT_PROCESS_RES} is the default)")
    if options.get("process_res_method") is not None:
        _one_of(options["process_res_method"], opt.PROCESS_RES_METHODS, "process_res_method")
    if options.get("ref_view_strategy") is not None:
        _one_of(options["ref_view_strategy"], opt.REF_VIEW_STRATEGIES, "ref_view_strategy")
    pct = options.get("conf_thresh_percentile")
    if pct is not None and not (_is_number(pct) and 0.0 <= pct <= 100.0):
        raise BadInputError(f"conf_thresh_percentile {pct!r} is not in 0..100")
    points = options.get("num_max_points")
    if points is not None and points < 1:
        raise BadInputError(f"num_max_points must be at least 1, got {points}")
    check_streaming(*(options.get(k) for k in STREAMING_KEYS))
    if isinstance(options.get("refine"), str):
        _one_of(options["refine"], opt.REFINE_LENSES, "refine lens")
    if options.get("refine_motion") is not None:
        _one_of(options["refine_motion"], opt.REFINE_MOTIONS, "refine motion")
    if options.get("exr_resolution") is not None:
        _one_of(options["exr_resolution"], opt.EXR_RESOLUTIONS, "exr resolution")
    if options.get("exr_plate_filter") is not None:
        _one_of(options["exr_plate_filter"], opt.EXR_PLATE_FILTERS, "exr filter")
    if options.get("up_axis") is not None:
        _one_of(options["up_axis"], opt.UP_AXES, "up axis")
    height, faces = options.get("camera_height"), options.get("mesh_max_faces")
    if height is not None and not (_is_number(height) and height > 0):
        raise BadInputError(f"camera height must be a positive number of metres, got {height!r}")
    if faces is not None and faces < 1:
        raise BadInputError(f"mesh max faces must be at least 1, got {faces}")
    return dict(options)


def check_shot(shot: Any) -> dict[str, Any]:
    """The shot's mode, frame start (0..Blender's last frame), sequence rate (> 0) and colour space; defaults filled."""
    if not isinstance(shot, dict) or set(shot) - set(SHOT_KEYS):
        raise BadInputError(f"'shot' must be an object with some of {', '.join(SHOT_KEYS)}")
    mode = _one_of(shot.get("mode") or opt.DEFAULT_SHOT_MODE, opt.SHOT_MODE_NAMES, "shot mode")
    colorspace = _one_of(shot.get("colorspace") or opt.DEFAULT_INPUT_COLORSPACE, opt.INPUT_COLORSPACE_NAMES,
                         "input colour space")
    start = check_frame_start(opt.DEFAULT_FRAME_START if shot.get("frame_start") is None else shot["frame_start"])
    rate = shot.get("frame_rate")
    if rate is not None and not (_is_number(rate) and 0 < rate <= 1000):
        raise BadInputError(f"frame rate must be frames per second above 0 (e.g. 24 or 23.976), got {rate!r}")
    return {"mode": mode, "frame_start": start, "frame_rate": None if rate is None else float(rate),
            "colorspace": colorspace}


def normalize_job(job: Any, need_output: bool = True) -> dict[str, Any]:
    """Check a job dict (fields, types, values) and fill the defaults; one :class:`BadInputError` line.

    ``need_output`` False accepts a job without a result file (the ``da3`` command writes exports only).
    """
    if not isinstance(job, dict):
        raise BadInputError("the run request needs a 'job' object")
    unknown = sorted(set(job) - set(FIELDS))
    if unknown:
        raise BadInputError(f"unknown job field(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})")
    inputs = job.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or not inputs or not all(isinstance(p, str) and p for p in inputs):
        raise BadInputError("'inputs' must be a non-empty list of image, video or folder paths")
    output = job.get("output")
    if (need_output or output is not None) and (not isinstance(output, str) or not output):
        raise BadInputError("'output' must be the path of the result file to write (.npz)")
    video = job.get("video") or {}
    if not isinstance(video, dict) or set(video) - set(VIDEO_KEYS):
        raise BadInputError(f"'video' must be an object with some of {', '.join(VIDEO_KEYS)}")
    video = check_video(video)
    options = check_options(job.get("options") or {})
    model = job.get("model") or opt.default_model()
    if not isinstance(model, str):
        raise BadInputError("'model' must be a Hugging Face repo id or a local model folder")
    device = check_device(job.get("device") or opt.DEFAULT_DEVICE)
    dtype = _one_of(job.get("dtype") or opt.DEFAULT_COMPUTE_DTYPE, opt.COMPUTE_DTYPES, "dtype")
    export_dir, export_format = job.get("export_dir"), job.get("export_format")
    if export_dir is not None and not (isinstance(export_dir, str) and export_dir):
        raise BadInputError("'export_dir' must be the path of a folder")
    if export_format is not None:
        export_format = "-".join(parse_export_format(export_format))
        if not export_dir:
            raise BadInputError("export formats given but no export folder: set export_dir")
    exr_given = [k for k in opt.EXR_OPTION_KEYS if options.get(k) is not None]
    if exr_given and "exr" not in (export_format or "").split("-"):
        raise BadInputError(f"{', '.join(exr_given)} given without the exr export: add exr to the export formats "
                            "(e.g. --export-format glb-exr) or leave the exr options out")
    return {
        "inputs": list(inputs),
        "output": output,
        "model": model,
        "device": device,
        "dtype": dtype,
        "video": video,
        "options": options,
        "export_dir": export_dir,
        "export_format": export_format if export_dir else None,
        "shot": check_shot(job.get("shot") or {}),
    }


def build_job(inputs: str | Iterable[str], output: str | None = None, *, model: str | None = None, device: str | None = None,
              dtype: str | None = None, video: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
              export_dir: str | None = None, export_format: str | None = None,
              shot: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job for these settings, checked and with defaults filled (see the module docstring).

    ``video`` holds some of fps/start/end/max_frames (None = not set); ``options`` the inference
    keywords of :data:`OPTION_TYPES`, streaming included (``chunk_size``, ``chunk_overlap``,
    ``chunk_align``; None = not set). ``output`` (the result .npz) may be None only for a job run
    in-process (the ``da3`` command); the worker needs it. Raises :class:`BadInputError` (one line).
    """
    job: dict[str, Any] = {
        "inputs": [inputs] if isinstance(inputs, str) else list(inputs),
        "output": output,
        "model": model,
        "device": device,
        "dtype": dtype,
        "video": {k: v for k, v in (video or {}).items() if v is not None},
        "options": {k: v for k, v in (options or {}).items() if v is not None},
        "export_dir": export_dir or None,
        "export_format": export_format,
        "shot": {k: v for k, v in (shot or {}).items() if v is not None},
    }
    return normalize_job(job, need_output=output is not None)


def is_video_job(job: dict[str, Any]) -> bool:
    """True when the job's single input is a video file (by its extension)."""
    from .inputs.paths import is_video_path  # standard library only

    paths = job["inputs"]
    return len(paths) == 1 and is_video_path(paths[0])


def is_sequence_job(job: dict[str, Any]) -> bool:
    """True when the job's single input is an image sequence taken as one shot (see :mod:`.inputs.sequences`)."""
    from .inputs.sequences import find_sequence  # standard library only

    paths, shot = job["inputs"], job.get("shot") or {}
    if len(paths) != 1 or shot.get("mode") == "stills":
        return False
    try:
        return find_sequence(paths[0], forced=shot.get("mode") == "sequence") is not None
    except BadInputError:
        return False


def video_kwargs(job: dict[str, Any]) -> dict[str, Any]:
    """Keywords of ``inputs.collect_inputs`` for the job (fps None: options.DEFAULT_VIDEO_FPS for a video,
    every frame of a sequence), with the shot's mode, frame start, sequence rate and colour space."""
    video = job["video"]
    fps = video.get("fps")
    shot = job.get("shot") or check_shot({})
    return {"fps": None if fps is None else float(fps), "start": video.get("start"),
            "end": video.get("end"), "max_frames": video.get("max_frames"), "shot": shot["mode"],
            "frame_start": shot["frame_start"], "frame_rate": shot["frame_rate"], "colorspace": shot["colorspace"]}


def inference_kwargs(job: dict[str, Any]) -> dict[str, Any]:
    """Keywords for ``DepthAnything3.inference`` / ``run_inference`` from the job's options.

    A video without a chunk size streams with ``options.DEFAULT_VIDEO_CHUNK_SIZE``; image sets run in
    one pass. Streaming keywords left unset are not passed (the inference's own defaults apply).
    """
    kwargs = {k: v for k, v in job["options"].items() if k != "exif_transpose"}
    if kwargs.get("chunk_size") is None and (is_video_job(job) or is_sequence_job(job)):
        kwargs["chunk_size"] = opt.DEFAULT_VIDEO_CHUNK_SIZE
    for key in STREAMING_KEYS:
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    return kwargs


