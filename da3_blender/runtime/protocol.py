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
    progress  stage ("load", "preprocess", "forward", "postprocess", "solve", "export", "save"), fraction, message
              (never empty: a step without its own message repeats its stage's last one)
    loaded    model, device, dtype, loads, seconds
    result    path, summary {views, size, model, device, seconds, model_loads, shot, warnings}
    error     kind (one of errors.ERROR_KINDS), message (one line), log (the worker's log file, or null)
    unloaded  model (the one released, or null)
    bye

A job ends with exactly one ``result`` or ``error`` event. A line is at most :data:`MAX_LINE` bytes
(:func:`read_line` skips a longer one and the reader answers it with an error); whatever a line holds,
:func:`decode` gives a dict or a :class:`ProtocolError`, and the client acts only on events that
:func:`check_event` accepts, so neither side trusts the other. This module imports nothing heavy: the
worker must start (and answer ``hello``) in a Python without numpy or torch.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import ERROR_KINDS, DA3Error

# the worker's log file: the client sets the folder (Blender: the extension's user folder), the worker names it in errors
LOG_DIR_ENV = "DA3_WORKER_LOG_DIR"
LOG_FILE = "worker.log"

PROTOCOL_VERSION = 1
# a remote worker's exit status (and stderr line) when a folder it would trust is not private
UNTRUSTED_MARKER = "da3-remote: cache folder not private"
UNTRUSTED_STATUS = 4

REQUESTS = ("hello", "run", "cancel", "unload", "shutdown")
EVENTS = ("hello", "progress", "loaded", "result", "error", "unloaded", "bye")
TERMINAL_EVENTS = ("result", "error")  # a job ends with exactly one of these
MAX_LINE = 16 << 20  # bytes: a longer line is skipped (read in pieces, never held) and answered as an error
MAX_ID = 200  # characters of a request id
MAX_MESSAGE = 4000  # characters of an event's message kept by the client


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


def read_line(stream, limit: int = MAX_LINE) -> bytes:
    """The next line of a binary stream (``b""`` at its end). A line longer than ``limit`` bytes is read
    on to its end in pieces (never held whole) and raises :class:`ProtocolError`; the stream stays usable."""
    line = stream.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line
    skipped = len(line)
    while True:
        more = stream.readline(1 << 20)
        skipped += len(more)
        if not more or more.endswith(b"\n"):
            break
    raise ProtocolError(f"a line of {skipped} bytes is longer than the {limit} a message may have")


def decode(line: str | bytes) -> dict[str, Any]:
    """Parse one line into a message dict; :class:`ProtocolError` if it is not a JSON object (whatever
    the line holds: invalid UTF-8, deep nesting, huge numbers, over :data:`MAX_LINE` bytes)."""
    if len(line) > MAX_LINE + 1:
        raise ProtocolError(f"a line of {len(line)} bytes is longer than the {MAX_LINE} a message may have")
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("the line is not UTF-8") from None
    try:
        message = json.loads(line)
    except RecursionError:
        raise ProtocolError("not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
        where = f" at column {exc.colno}" if hasattr(exc, "colno") else ""
        raise ProtocolError(f"not valid JSON ({getattr(exc, 'msg', None) or str(exc)[:100]}{where})") from None
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
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID:
        raise ProtocolError(f"request {kind!r} needs a non-empty string 'id' of at most {MAX_ID} characters")
    return kind, rid


def request_id(message: dict[str, Any]) -> str | None:
    """The id to echo in an answer to a (maybe malformed) request: a short string, else None."""
    rid = message.get("id")
    return rid if isinstance(rid, str) and 0 < len(rid) <= MAX_ID else None


def check_event(message: dict[str, Any]) -> dict[str, Any]:
    """An event from a worker, checked before the client acts on it (the worker may be another
    machine's): ``event`` known, ``id``/``job`` strings or null, the fields the client reads well typed.

    A terminal event for a job with malformed fields becomes an ``error`` event of kind protocol for
    that job (so the job still ends); anything else malformed raises :class:`ProtocolError`.
    """
    name = message.get("event")
    if not isinstance(name, str) or name not in EVENTS:
        raise ProtocolError(f"unknown event {str(name)[:40]!r}")
    for key in ("id", "job"):
        value = message.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ID):
            raise ProtocolError(f"event {name}: {key} must be a short string or null")
    try:
        return _check_fields(name, message)
    except ProtocolError as exc:
        if name in TERMINAL_EVENTS and message.get("job"):
            return error_event(message.get("id"), message["job"], "protocol", f"the worker sent a bad {name}: {exc}")
        raise


def _check_fields(name: str, message: dict[str, Any]) -> dict[str, Any]:
    if name == "progress":
        fraction = message.get("fraction")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
            raise ProtocolError("progress without a numeric fraction")
        if not isinstance(message.get("stage"), str) or not isinstance(message.get("message", ""), str):
            raise ProtocolError("progress stage and message must be text")
        return dict(message, fraction=min(max(float(fraction), 0.0), 1.0), message=message.get("message", "")[:MAX_MESSAGE])
    if name == "error":
        kind = message.get("kind")
        text = message.get("message")
        if not isinstance(text, str):
            raise ProtocolError("error without a message")
        return dict(message, kind=kind if kind in ERROR_KINDS else "internal",
                    message=" ".join(text[:MAX_MESSAGE].split()))
    if name == "result":
        summary = message.get("summary")
        if not isinstance(message.get("path"), str) or not message["path"] or "\0" in message["path"]:
            raise ProtocolError("result without a file path")
        if summary is not None and not isinstance(summary, dict):
            raise ProtocolError("result summary must be an object")
    return message


def normalize_job(job: Any) -> dict[str, Any]:
    """Check a ``run`` job and fill its defaults: :func:`da3_blender.job.normalize_job` (the one job description).

    Fields: ``inputs``, ``output``, ``model`` (default ``options.default_model()``), ``device``,
    ``dtype``, ``video`` {fps (0: every frame), start, end, max_frames}, ``options`` (inference
    keywords, streaming included), ``export_dir``, ``export_format``.
    """
    from ..job import normalize_job as _normalize

    return _normalize(job)


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
