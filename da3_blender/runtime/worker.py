"""The DA3 worker: ``python -m da3_blender.worker``, a long-lived process that runs DA3 jobs.

It speaks the JSON-lines protocol of :mod:`da3_blender.protocol` on stdin/stdout (stdout carries
nothing else: stray prints and C-level writes go to stderr, where the logs are). Jobs run on a
thread, so the main thread keeps reading requests and a ``cancel`` stops a running job between two
network blocks. The model stays loaded between jobs (keyed by model, device, dtype) until
``unload``, another model, or ``shutdown``.

Only the standard library is imported at start: ``hello`` answers in a Python without torch.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO, TextIO

from ..errors import BadInputError, CancelledError, DA3Error
from ..cancel import cancellable
from ..files import check_writable_folder, remove_stale_temp_files
from ..job import inference_kwargs, video_kwargs
from ..inputs.sequences import shot_summary
from .protocol import (LOG_DIR_ENV, LOG_FILE, PROTOCOL_VERSION, TRANSFER_REQUESTS, UNTRUSTED_MARKER, UNTRUSTED_STATUS,
                       ProtocolError, check_request, decode, encode, error_event, event, normalize_job, read_line,
                       request_id)

log = logging.getLogger("da3_blender.worker")

PROGRESS_INTERVAL = 0.1  # seconds between two progress events of the same stage
INPUTS_SHARE = 0.6  # of the "load" stage: reading the inputs; the rest is loading the model


def package_version() -> str:
    """This code's version (``da3_blender.__version__``, the one version source; pyproject reads it).

    Not the installed distribution's metadata: the managed environment runs the extension's copy
    through PYTHONPATH, without installing it.
    """
    from .. import __version__

    return __version__


def dependency_versions() -> dict[str, str | None]:
    """Installed version of each pinned dependency (None if missing)."""
    from importlib.metadata import PackageNotFoundError, version

    from .requirements import DEPENDENCIES, requirement_name

    found: dict[str, str | None] = {}
    for req in DEPENDENCIES:
        name = requirement_name(req)
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_output_path(path: str, what: str = "result") -> str:
    """Absolute ``path`` after checking its folder can be written; :class:`BadInputError` otherwise."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise BadInputError(f"the {what} path {path} is a folder: give a file name such as {os.path.join(path, 'result.npz')}")
    check_writable_folder(os.path.dirname(path), f"write the {what} to {path}")
    return path


def classify(exc: BaseException, device: str | None = None) -> tuple[str, str]:
    """(error kind, one-line message) for any exception a job raised."""
    from ..devices import is_out_of_memory, out_of_memory_error

    if isinstance(exc, DA3Error):
        return exc.kind, str(exc)
    if is_out_of_memory(exc):
        err = out_of_memory_error(exc, device)
        return err.kind, str(err)
    if isinstance(exc, ImportError):
        return "missing_dependency", f"{exc}: set up the DA3 environment again (it lacks a package)"
    log.error("job failed with an unexpected error:\n%s", "".join(traceback.format_exception(exc)))
    return "internal", f"{type(exc).__name__}: {exc} (a bug in DA3 for Blender; the traceback is in {log_location()})"


def log_location() -> str:
    """Where this worker's log (its stderr) is kept: the file the client writes, named in errors."""
    folder = os.environ.get(LOG_DIR_ENV)
    return os.path.join(folder, LOG_FILE) if folder else "the worker's stderr (no log folder was given)"


class _Job:
    def __init__(self, job_id: str, spec: Any, sources: Any = None):
        self.id = job_id
        self.spec = spec
        self.sources = sources  # remote client: its names for the files it sent (transfer.check_sources)
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None

    def check(self) -> None:
        """Raise :class:`CancelledError` once the job was cancelled (the job's cancel points call it)."""
        if self.cancel.is_set():
            raise CancelledError()


class Worker:
    """Request handling and job execution; ``serve`` runs the request loop."""

    def __init__(self, out: TextIO, files=None):
        self._out = out
        self.files = files  # transfer.JobFiles when started with --jobs-dir (a remote worker), else None
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._job: _Job | None = None
        self._model = None
        self._model_key: tuple[str, str, str] | None = None
        self.loads = 0
        self._closed = False

    # -- output ---------------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        line = encode(message)
        with self._write_lock:
            if self._closed:
                return
            try:
                self._out.write(line)
                self._out.flush()
            except (OSError, ValueError):  # the client is gone
                self._closed = True

    # -- request loop ---------------------------------------------------------------------------
    def serve(self, stdin: BinaryIO) -> int:
        while True:
            try:
                raw = read_line(stdin)
            except ProtocolError as exc:  # an over-long line, skipped
                self.send(error_event(None, None, "protocol", f"bad request: {exc}"))
                continue
            if not raw:  # EOF: the client went away
                log.info("stdin closed; stopping")
                self._stop(None)
                return 0
            if not raw.strip():
                continue
            if not self.handle(raw):
                return 0

    def handle(self, raw: bytes | str) -> bool:
        """Handle one request line; False when the worker must exit."""
        rid = None
        try:
            message = decode(raw)
            rid = request_id(message)
            kind, rid = check_request(message)
        except ProtocolError as exc:
            self.send(error_event(rid, None, "protocol", f"bad request: {exc}"))
            return True
        try:
            return self._dispatch(kind, rid, message)
        except Exception as exc:  # the loop must survive anything a request does
            self.send(error_event(rid, None, *classify(exc)))
            return True

    def _dispatch(self, kind: str, rid: str, message: dict[str, Any]) -> bool:
        if kind == "hello":
            self.send(event("hello", rid, None, **self.hello_info()))
        elif kind == "run":
            self._start_job(rid, message.get("job"), message.get("sources"))
        elif kind in TRANSFER_REQUESTS:
            self._transfer(kind, rid, message)
        elif kind == "cancel":
            self._cancel(rid, message.get("job"))
        elif kind == "unload":
            with self._state_lock:
                busy = self._job
            if busy is not None:
                self.send(error_event(rid, None, "bad_input", f"busy: job {busy.id} is running; cancel it before unloading"))
            else:
                name = self._release_model()
                self.send(event("unloaded", rid, None, model=name, loads=self.loads))
        elif kind == "shutdown":
            self._stop(rid)
            return False
        return True

    def hello_info(self) -> dict[str, Any]:
        from ..devices import describe_devices, torch_info

        info = torch_info()
        with self._state_lock:
            busy = self._job.id if self._job else None
        return {
            "protocol": PROTOCOL_VERSION,
            "package": package_version(),
            "python": platform.python_version(),
            "executable": sys.executable,
            "platform": platform.platform(),
            "pid": os.getpid(),
            "torch": info["torch"],
            "torch_error": info.get("error"),
            "cuda": {"build": info["cuda_build"], "available": info["cuda_available"]},
            "mps": info["mps_available"],
            "devices": describe_devices(),
            "dependencies": dependency_versions(),
            "model": self._model_key[0] if self._model_key else None,
            "loads": self.loads,
            "busy": busy,
            "jobs_dir": self.files.root if self.files is not None else None,
        }

    # -- remote workers: job files (issue 11; see transfer.py) ----------------------------------
    def _transfer(self, kind: str, rid: str, message: dict[str, Any]) -> None:
        if self.files is None:
            self.send(error_event(rid, None, "bad_input", f"{kind}: this worker has no job folder (start it with "
                                  "--jobs-dir to receive files)"))
            return
        try:
            self.send(self.files.handle(kind, rid, message))
        except DA3Error as exc:
            self.send(error_event(rid, None, exc.kind, str(exc), request=kind))
        except OSError as exc:
            self.send(error_event(rid, None, "bad_input", f"{kind} {message.get('path')!r:.200}: "
                                  f"{exc.strerror or exc}", request=kind))

    def _start_job(self, rid: str, spec: Any, sources: Any = None) -> None:
        with self._state_lock:
            if self._job is not None:
                busy = self._job.id
                job = None
            else:
                job = self._job = _Job(rid, spec, sources)
        if job is None:
            self.send(error_event(rid, rid, "bad_input", f"busy: job {busy} is still running; wait for it or cancel it"))
            return
        job.thread = threading.Thread(target=self._run_job, args=(job,), name=f"da3-job-{rid}", daemon=True)
        job.thread.start()

    def _cancel(self, rid: str, job_id: Any) -> None:
        with self._state_lock:
            job = self._job
        if job is not None and (job_id is None or job_id == job.id):
            log.info("cancelling job %s", job.id)
            job.cancel.set()  # the job answers with error kind "cancelled"
        else:
            self.send(error_event(rid, None, "bad_input", f"no running job {job_id!r:.80} to cancel", request="cancel"))

    def _stop(self, rid: str | None) -> None:
        with self._state_lock:
            job = self._job
        if job is not None:
            job.cancel.set()
            if job.thread is not None:
                job.thread.join(timeout=30)
        self._release_model()
        self.send(event("bye", rid, None, loads=self.loads))

    # -- jobs -----------------------------------------------------------------------------------
    def _run_job(self, job: _Job) -> None:
        device = None
        try:
            spec = normalize_job(job.spec)
            device = spec["device"]
            if self.files is not None:  # a remote worker: only files of its job folders
                self.files.check_job(spec)
            if job.sources:  # checked before any work
                from .transfer import check_sources

                job.sources = check_sources(job.sources)
            with cancellable(job.check):  # model loading and file writes stop at a cancel too
                message = event("result", job.id, job.id, **self._execute(job, spec))
        except BaseException as exc:  # every failure becomes one error event
            kind, text = classify(exc, device)
            log.info("job %s ended: %s: %s", job.id, kind, text)
            message = error_event(job.id, job.id, kind, text, log=os.path.join(os.environ[LOG_DIR_ENV], LOG_FILE)
                                  if os.environ.get(LOG_DIR_ENV) else None)
        finally:
            with self._state_lock:
                self._job = None  # free before answering: the client may send the next job at once
        self.send(message)

    def _execute(self, job: _Job, spec: dict[str, Any]) -> dict[str, Any]:
        from ..devices import resolve_device

        started = time.perf_counter()
        progress = _Progress(self, job)
        output = check_output_path(spec["output"])
        remove_stale_temp_files(os.path.dirname(output))  # left by a killed worker
        if spec["export_dir"]:
            check_writable_folder(os.path.abspath(spec["export_dir"]), f"write exports to {spec['export_dir']}")
            remove_stale_temp_files(spec["export_dir"], depth=3)  # exr/, colmap/sparse/0/, ...
        device = resolve_device(spec["device"])
        exif = spec["options"].get("exif_transpose", True)
        matrices = _check_values(spec)

        from ..inputs.collect import collect_inputs

        progress("load", 0.0, "reading inputs")
        inputs = collect_inputs(spec["inputs"], exif_transpose=exif, progress=progress.part(0.0, INPUTS_SHARE),
                                **video_kwargs(spec))
        progress.check()
        model = self._get_model(spec["model"], device, spec["dtype"], job, progress)
        progress.check()
        kwargs = inference_kwargs(spec)
        kwargs.update(matrices)
        pred = model.inference(
            inputs,  # an InputSet: the prediction keeps source paths, frame numbers and timestamps
            export_dir=spec["export_dir"],
            export_format=spec["export_format"] or "mini_npz",
            progress=progress,
            **kwargs,
        )
        progress.check()
        from ..inference import solve_warning

        warnings = [w for w in (solve_warning(pred.meta),) if w]  # a failed camera solve: the result is kept
        for line in warnings:
            log.warning("job %s: %s", job.id, line)
            progress("solve", 1.0, f"warning: {line}", force=True)
        n = pred.num_views
        seconds = time.perf_counter() - started
        meta = {  # added to the model, options and video info the inference recorded
            "job": {k: spec[k] for k in ("inputs", "video", "model", "device", "dtype", "options", "shot")},
            "device": device,
            "package_version": package_version(),
            "protocol_version": PROTOCOL_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(seconds, 3),
        }
        if job.sources:  # a remote job: the result names the client's files
            from .transfer import restore_sources

            restore_sources(pred, meta, job.sources)
        progress("save", 0.0, f"handing over {n} view{'s' * (n != 1)}")
        from ..prediction import save_result

        save_result(output, pred, meta)
        progress("save", 1.0, "done")
        h, w = pred.image_size
        return {
            "path": output,
            "summary": {
                "views": n,
                "size": [h, w],
                "model": spec["model"],
                "device": device,
                "seconds": round(time.perf_counter() - started, 3),
                "model_loads": self.loads,
                "shot": shot_summary(pred.meta.get("video")),  # issue 17: frames, rate, gaps, sampling
                "warnings": warnings,  # one line each, reported as a warning by the operator
            },
        }

    def _get_model(self, name: str, device: str, dtype: str, job: _Job, progress: _Progress):
        key = (name, device, dtype)
        if self._model is not None and self._model_key == key:
            return self._model
        self._release_model()
        progress("load", INPUTS_SHARE, f"loading {name} on {device}", force=True)  # a step of its own: shown
        t0 = time.perf_counter()
        from ..api import DepthAnything3

        model = DepthAnything3.from_pretrained(name, device=device, compute_dtype=dtype)
        seconds = time.perf_counter() - t0
        self._model, self._model_key = model, key
        self.loads += 1
        log.info("loaded %s on %s in %.2fs (load %d)", name, device, seconds, self.loads)
        self.send(event("loaded", job.id, job.id, model=name, device=device, dtype=dtype, loads=self.loads,
                        seconds=round(seconds, 3)))
        return model

    def _release_model(self) -> str | None:
        name = self._model_key[0] if self._model_key else None
        if self._model is None:
            return None
        self._model = None
        self._model_key = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            mps = getattr(torch, "mps", None)
            if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                mps.empty_cache()
        except ImportError:
            pass
        log.info("released model %s", name)
        return name


class _Progress:
    """The inference progress callback: checks the cancel flag, sends throttled ``progress`` events."""

    def __init__(self, worker: Worker, job: _Job):
        self.worker = worker
        self.job = job
        self._last = ("", -1.0, 0.0)
        self._messages: dict[str, str] = {}  # the last message of each stage, for calls that give none
        self._highest: dict[str, float] = {}  # the furthest fraction of each stage so far

    def check(self) -> None:
        self.job.check()

    def part(self, start: float, end: float):
        """A callback whose fractions of the "load" stage map to ``start..end`` of it."""
        def scaled(stage: str, fraction: float = 0.0, message: str = "") -> None:
            if stage == "load":
                fraction = start + (end - start) * float(fraction)
            self(stage, fraction, message)
        return scaled

    def __call__(self, stage: str, fraction: float = 0.0, message: str = "", force: bool = False) -> None:
        self.check()
        now = time.monotonic()
        last_stage, last_fraction, last_time = self._last
        fraction = max(float(fraction), self._highest.get(stage, 0.0))  # a stage's bar never runs backwards
        self._highest[stage] = fraction
        if message:
            self._messages[stage] = message = str(message)
        else:  # a step without its own message (the network's blocks): its stage's message, in 10 % steps
            tenth = f"{10 * int(min(max(fraction, 0.0), 1.0) * 10)}%"
            base = self._messages.get(stage)
            message = (f"{base} ({tenth})" if tenth != "0%" else base) if base else tenth
        if force or stage != last_stage or fraction >= 1.0 or now - last_time >= PROGRESS_INTERVAL:
            self._last = (stage, fraction, now)
            self.worker.send(event("progress", self.job.id, self.job.id, stage=stage,
                                   fraction=round(min(max(fraction, 0.0), 1.0), 4), message=message))


def _check_values(spec: dict[str, Any]) -> dict[str, Any]:
    """The known-pose matrices as arrays, checked before any file is read or model loaded.

    Every other option was checked by :func:`da3_blender.job.normalize_job`.
    """
    options = spec["options"]
    return {key: _matrices(options[key], key) for key in ("extrinsics", "intrinsics") if options.get(key) is not None}


def _matrices(value: Any, name: str):
    import numpy as np

    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"option {name} must be a nested list of numbers") from None
    if not np.all(np.isfinite(arr)):
        raise BadInputError(f"option {name} contains NaN or infinite values")
    return arr


def _parse_args(argv: list[str] | None):
    """``--jobs-dir DIR [--allow ROOT]...``: a remote worker's job folders (transfer.JobFiles)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m da3_blender.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-dir", help="receive job files in folders below DIR (remote workers)")
    parser.add_argument("--allow", action="append", default=[],
                        help="with --jobs-dir: jobs may also name files under ROOT (shared storage)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: protocol on the real stdout, everything else on stderr."""
    args = _parse_args(argv)
    files = None
    if args.jobs_dir:
        from .transfer import JobFiles

        try:
            files = JobFiles(args.jobs_dir, args.allow)
        except (DA3Error, OSError) as exc:  # e.g. a jobs folder others can write: refuse to serve
            print(f"{UNTRUSTED_MARKER}: {exc}", file=sys.stderr)
            return UNTRUSTED_STATUS
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # C-level writes to fd 1 (libraries) land on stderr
    out = os.fdopen(proto_fd, "w", encoding="utf-8", newline="\n")
    sys.stdout = sys.stderr
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("DA3_WORKER_LOG", "INFO"),
                        format="[da3-worker %(asctime)s] %(levelname)s %(message)s")
    log.info("worker started (pid %d, python %s)", os.getpid(), sys.executable)
    try:
        return Worker(out, files).serve(sys.stdin.buffer)
    except KeyboardInterrupt:
        return 130
    finally:
        if files is not None:
            files.close()  # unfinished uploads leave no temporary files


if __name__ == "__main__":
    sys.exit(main())
