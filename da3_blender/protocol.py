"""The worker protocol: JSON lines between Blender (the client) and ``python -m da3_blender.worker``.

One JSON object per line, UTF-8, ``\\n``-terminated, in both directions. The worker's stdout carries
only these lines; its logs go to stderr.

Requests (client -> worker), each with a unique ``id`` and ``"v": PROTOCOL_VERSION``::

    {"v": 1, "request": "hello",    "id": "h1"}
    {"v": 1, "request": "run",      "id": "job-1", "job": {...see normalize_job...}}
    {"v": 1, "request": "cancel",   "id": "c1", "job": "job-1"}
    {"v": 1, "request": "unload",   "id": "u1"}
    {"v": 1, "request": "shutdown", "id": "s1"}

Events (worker -> client) echo the request ``id`` and name the ``job`` they concern (the id of the
``run`` request, or null)::

    hello     protocol, python, executable, torch, cuda, devices, model, dependencies
    progress  stage ("load", "preprocess", "forward", "postprocess", "export", "save"), fraction, message
    loaded    model, device, dtype, loads, seconds
    result    path, summary {views, size, model, device, seconds, model_loads}
    error     kind (one of errors.ERROR_KINDS), message (one line)
    unloaded  model (the one released, or null)
    bye

A job ends with exactly one ``result`` or ``error`` event. This module imports nothing heavy: the
worker must start (and answer ``hello``) in a Python without numpy or torch.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import ERROR_KINDS, BadInputError, DA3Error

PROTOCOL_VERSION = 1

REQUESTS = ("hello", "run", "cancel", "unload", "shutdown")
EVENTS = ("hello", "progress", "loaded", "result", "error", "unloaded", "bye")
TERMINAL_EVENTS = ("result", "error")  # a job ends with exactly one of these

DEFAULT_MODEL = "da3-large"

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
}
VIDEO_KEYS = ("fps", "start", "end", "max_frames")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class ProtocolError(DA3Error):
    kind = "protocol"


def encode(message: dict[str, Any]) -> str:
    """One message as one ASCII line (with its ``\\n``); NaN/inf become null so every reader can parse it.

    ASCII escapes keep file names that are not valid UTF-8 (``os.listdir`` gives them as lone
    surrogates on POSIX) writable and round-trip them exactly through :func:`decode`.
    """
    return json.dumps(_finite(message), ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def decode(line: str | bytes) -> dict[str, Any]:
    """Parse one line into a message dict; :class:`ProtocolError` if it is not a JSON object."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("the line is not UTF-8") from None
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


def request(kind: str, id: str, **fields) -> dict[str, Any]:
    """A request message."""
    if kind not in REQUESTS:
        raise ValueError(f"unknown request {kind!r}")
    return {"v": PROTOCOL_VERSION, "request": kind, "id": id, **fields}


def event(name: str, id: str | None, job: str | None = None, **fields) -> dict[str, Any]:
    """An event message."""
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}")
    return {"event": name, "id": id, "job": job, **fields}


def error_event(id: str | None, job: str | None, kind: str, message: str, **fields) -> dict[str, Any]:
    if kind not in ERROR_KINDS:
        kind = "internal"
    return event("error", id, job, kind=kind, message=" ".join(str(message).split()), **fields)


def check_request(message: dict[str, Any]) -> tuple[str, str]:
    """Validate the envelope of a request; returns ``(request, id)`` or raises :class:`ProtocolError`."""
    version = message.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported (this worker speaks {PROTOCOL_VERSION}); "
            "update the DA3 extension and its environment together"
        )
    kind = message.get("request")
    if kind not in REQUESTS:
        raise ProtocolError(f"unknown request {kind!r} (known: {', '.join(REQUESTS)})")
    rid = message.get("id")
    if not isinstance(rid, str) or not rid:
        raise ProtocolError(f"request {kind!r} needs a non-empty string 'id'")
    return kind, rid


def normalize_job(job: Any) -> dict[str, Any]:
    """Check a ``run`` job's fields and types and fill defaults; :class:`BadInputError` naming the bad field.

    Values that need torch to judge (methods, dtypes, export formats) are checked by the worker.

    Fields: ``inputs`` (list of image/video paths or folders), ``output`` (result .npz path),
    ``video`` {fps, start, end, max_frames}, ``model``, ``device``, ``dtype``, ``options`` (see
    :data:`OPTION_TYPES`), ``export_dir``, ``export_format``.
    """
    if not isinstance(job, dict):
        raise BadInputError("the run request needs a 'job' object")
    known = {"inputs", "output", "video", "model", "device", "dtype", "options", "export_dir", "export_format"}
    unknown = sorted(set(job) - known)
    if unknown:
        raise BadInputError(f"unknown job field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    inputs = job.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(p, str) and p for p in inputs):
        raise BadInputError("'inputs' must be a non-empty list of image, video or folder paths")
    output = job.get("output")
    if not isinstance(output, str) or not output:
        raise BadInputError("'output' must be the path of the result file to write (.npz)")
    video = job.get("video") or {}
    if not isinstance(video, dict) or set(video) - set(VIDEO_KEYS):
        raise BadInputError(f"'video' must be an object with some of {', '.join(VIDEO_KEYS)}")
    for key in ("fps", "start", "end"):
        value = video.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise BadInputError(f"video {key} must be a number >= 0, got {value!r}")
    max_frames = video.get("max_frames")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise BadInputError(f"video max_frames must be a whole number >= 1, got {max_frames!r}")
    options = job.get("options") or {}
    if not isinstance(options, dict):
        raise BadInputError("'options' must be an object")
    for key, value in options.items():
        if key not in OPTION_TYPES:
            raise BadInputError(f"unknown option {key!r} (known: {', '.join(OPTION_TYPES)})")
        types = OPTION_TYPES[key]
        if value is None and key in ("extrinsics", "intrinsics"):
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise BadInputError(f"option {key} must be {names}, got {value!r}")
    model = job.get("model") or DEFAULT_MODEL
    device = job.get("device") or "auto"
    dtype = job.get("dtype") or "auto"
    if not isinstance(model, str):
        raise BadInputError("'model' must be a model name, Hugging Face repo id or local folder")
    if not isinstance(device, str):
        raise BadInputError(f"'device' must be one of {DEVICE_CHOICES}")
    if not isinstance(dtype, str):
        raise BadInputError("'dtype' must be auto, fp32, bf16 or fp16")
    export_dir = job.get("export_dir")
    export_format = job.get("export_format")
    for key, value in (("export_dir", export_dir), ("export_format", export_format)):
        if value is not None and not (isinstance(value, str) and value):
            raise BadInputError(f"'{key}' must be a non-empty string")
    return {
        "inputs": list(inputs),
        "output": output,
        "video": {k: video.get(k) for k in VIDEO_KEYS},
        "model": model,
        "device": device,
        "dtype": dtype,
        "options": dict(options),
        "export_dir": export_dir,
        "export_format": export_format if export_dir else None,
    }


# -- remote workers: job files across the link (issue 11) ----------------------------------------
# A worker started with ``--jobs-dir`` (the SSH client starts it so) also answers these requests,
# each about a path inside one job folder (``folder``: a token the client picks); see transfer.py.
#
#     put      folder, path, offset, data (base64, <= CHUNK_SIZE bytes), final, size + sha256 (final)
#              -> stored  folder, path, bytes (received so far), done
#     stat     folder, path                 -> stat     exists, size, sha256
#     get      folder, path, offset, length -> chunk    offset, size, data (base64), eof
#     list     folder, path                 -> listing  files [{path, size}] (regular files, relative)
#     discard  folder                       -> discarded existed
#
# ``run`` may carry ``sources`` ([[remote path, client path, client separator], ...]) so the result
# names the client's files; ``hello`` answers ``jobs_dir`` (null for a local worker). A bad transfer
# request gets an ``error`` event (kind bad_input) with the request's id.
TRANSFER_REQUESTS = ("put", "stat", "get", "list", "discard")
TRANSFER_EVENTS = ("stored", "stat", "chunk", "listing", "discarded")
CHUNK_SIZE = 1 << 20  # bytes of file data per put/get line (1 MiB; ~1.4 MB of base64)
REQUESTS = REQUESTS + TRANSFER_REQUESTS
EVENTS = EVENTS + tuple(e for e in TRANSFER_EVENTS if e not in EVENTS)
