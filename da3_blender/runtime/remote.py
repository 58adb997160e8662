"""One job on a remote worker (:class:`RemoteJob`): upload its files, run it, fetch the result.

The SSH command lines, the package upload and the host checks are in :mod:`.ssh`; the remote's side
of the file requests is :class:`.transfer.JobFiles`. Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import binascii
import hashlib
import io
import os
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError, DA3Error
from .ssh import RemoteSpec, _join
from .transfer import check_relative, local_path, sha256_file

# -- job files: the client side --------------------------------------------------------------------
def encode_chunk(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_chunk(text: Any, limit: int | None = None) -> bytes:
    """The bytes of a ``chunk`` event's base64 ``data``: at most ``limit`` (default CHUNK_SIZE) bytes."""
    from .protocol import CHUNK_SIZE

    limit = CHUNK_SIZE if limit is None else limit
    if not isinstance(text, str):
        raise DA3Error("the remote worker sent a chunk without data", kind="protocol")
    if len(text) > 4 * (limit // 3 + 1):
        raise DA3Error(f"the remote worker sent a chunk of over {limit} bytes", kind="protocol")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DA3Error("the remote worker sent a chunk that is not base64", kind="protocol") from None


WINDOW = 4  # chunks in flight each way: bounded memory, and the link stays busy
LOCAL_MODEL_FILES = ("config.json", "model.safetensors")  # what the loader reads from a model folder
_local_hashes: dict[tuple[str, int, int], str] = {}


def local_sha256(path: str) -> str:
    """sha256 of a local file, remembered by (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _local_hashes:
        _local_hashes[key] = sha256_file(path)
    return _local_hashes[key]


@dataclass
class _Plan:
    job: dict[str, Any]  # the job as the remote sees it
    sources: list[list[str]]  # [remote, local, sep]: the result names local files
    uploads: list[tuple[str, str, str, bool]]  # (local file, folder token, relative path, skip if present)
    output: tuple[str, str] | None  # (remote relative path, local path) to download, None if mapped
    exports: tuple[str, str] | None  # (remote relative folder, local folder) to download, None if mapped/none


class RemoteJob(threading.Thread):
    """One job on a remote worker: send its files, run it, fetch the result; events go to the client's queue.

    Runs on its own thread so :meth:`WorkerClient.submit` returns at once. Stages ``upload`` and
    ``download`` report the transfer as progress events; :meth:`cancel` stops it between two chunks.
    """

    def __init__(self, client, job: dict[str, Any], job_id: str):
        super().__init__(name=f"da3-remote-{job_id}", daemon=True)
        self.client = client
        self.spec: RemoteSpec = client.remote
        self.job = job
        self.job_id = job_id
        self.token = "job-" + hashlib.sha256(f"{job_id}-{os.getpid()}-{id(self)}".encode()).hexdigest()[:16]
        self.cancelled = threading.Event()
        self._last_progress = 0.0
        self._pairs: list[list[str]] = []
        self.kept = False  # the remote job folder stays (a finished result that could not be written here)

    def cancel(self) -> None:
        """Stop at the next chunk (or while connecting: the ssh is killed within 0.1 s)."""
        self.cancelled.set()

    def check(self) -> None:
        from ..errors import CancelledError

        if self.cancelled.is_set():
            raise CancelledError()

    # -- the job ------------------------------------------------------------------------------------
    def run(self) -> None:
        from ..errors import CancelledError
        from .protocol import error_event

        c = self.client
        final = None
        connected = False
        try:
            self.progress("upload", 0.0, f"connecting to {self.spec.label}", force=True)
            hello = c._connect(job=self)
            connected = True
            root = hello.get("jobs_dir")
            if not isinstance(root, str) or not root.startswith("/"):
                raise DA3Error(f"the worker on {self.spec.label} takes no files (old version?)", kind="protocol")
            self.check()
            plan = self.plan(root)
            self.upload(plan.uploads)
            self.check()
            end = c._run_remote(self.job_id, plan.job, plan.sources, self)
            if end.get("event") == "error":
                final = dict(end, message=self.localize(str(end.get("message", ""))))
            else:
                self.fetch(plan, root)
                final = dict(end, path=plan.output[1] if plan.output else self.job["output"])
                if isinstance(end.get("summary"), dict):  # the user's model name, not the remote copy's
                    final["summary"] = dict(end["summary"], model=self.job.get("model", end["summary"].get("model")))
        except CancelledError as exc:
            final = error_event(self.job_id, self.job_id, "cancelled", str(exc))
        except DA3Error as exc:
            if self.cancelled.is_set():  # e.g. the connection ended by a cancel
                final = error_event(self.job_id, self.job_id, "cancelled", "cancelled by the user")
            else:
                text = str(exc) if self.kept else self.localize(str(exc))  # a kept job's message names remote paths
                final = error_event(self.job_id, self.job_id, exc.kind, text)
        except OSError as exc:  # a local file could not be read or written
            name = getattr(exc, "filename", None) or ""
            final = error_event(self.job_id, self.job_id, "bad_input",
                                f"{name}: {exc.strerror or exc}; check the file and run again")
        except Exception as exc:  # noqa: BLE001 - a bug: still one terminal event
            final = error_event(self.job_id, self.job_id, "internal", f"{type(exc).__name__}: {exc}")
        finally:
            if connected and not self.kept:  # the job folder goes; if the link is down, after the next connect
                c._orphans.add(self.token)
                c._discard_orphans()
            c._job_done(self.job_id, final)

    def fetch(self, plan: _Plan, root: str) -> None:
        """Download the result and exports. A local write failure (full disk, no permission) keeps the
        finished job on the remote and says how to fetch it: a long GPU run is not lost."""
        try:
            if plan.output is not None:
                self.download(plan.output[0], plan.output[1], "result")
            if plan.exports is not None:
                self.download_folder(*plan.exports)
        except (BadInputError, OSError) as exc:
            if isinstance(exc, BadInputError) and "cannot write" not in str(exc):
                raise
            self.kept = True
            folder = _join(root, self.token)
            commands = []
            if plan.output is not None:
                commands.append(self.spec.fetch_command(_join(folder, plan.output[0]), plan.output[1]))
            if plan.exports is not None:
                commands.append(self.spec.fetch_command(_join(folder, plan.exports[0]), plan.exports[1], folder=True))
            reason = str(exc) if isinstance(exc, BadInputError) else f"{exc.strerror or exc}"
            raise DA3Error(f"{reason.rstrip('.')}. The finished result is kept on {self.spec.label} in {folder} for "
                           f"3 days: free some space, then fetch it with: {' && '.join(commands)}", kind="bad_input")

    def localize(self, text: str) -> str:
        """Remote paths in a message replaced by the user's."""
        for remote, local, _sep in self._pairs:
            text = text.replace(remote, local)
        return text

    def progress(self, stage: str, fraction: float, message: str, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if force or fraction >= 1.0 or now - self._last_progress >= 0.1:
            self._last_progress = now
            self.client._emit({"event": "progress", "id": self.job_id, "job": self.job_id, "stage": stage,
                               "fraction": round(min(max(fraction, 0.0), 1.0), 4), "message": message})

    # -- what goes where ---------------------------------------------------------------------------
    def plan(self, root: str) -> _Plan:
        """Remote names for the job's files; which to upload and which to fetch afterwards."""
        from .protocol import normalize_job

        spec, job = self.spec, normalize_job(self.job)
        folder = _join(root, self.token)
        uploads: list[tuple[str, str, str, bool]] = []
        pairs: list[list[str]] = []
        remote_inputs = []
        for i, local in enumerate(job["inputs"]):
            local = os.path.abspath(os.path.expanduser(local))
            frames = _sequence_files(local, job)  # issue 17: a sequence's pattern or file sends its frames
            if not os.path.exists(local) and frames is None:
                raise BadInputError(f"{local}: file or folder not found; check the path")
            mapped = spec.map_path(local)
            if mapped is not None:
                remote_inputs.append(mapped)
                pairs.append([mapped, local, os.sep])
                continue
            rel = f"in/{i}"
            if frames is not None:
                for path in frames:
                    _check_name(os.path.basename(path), path)
                    uploads.append((path, self.token, f"{rel}/{os.path.basename(path)}", False))
                    pairs.append([_join(folder, rel, os.path.basename(path)), path, os.sep])
                remote = _join(folder, rel, os.path.basename(local))
            elif os.path.isdir(local):
                for name in sorted(os.listdir(local)):
                    path = os.path.join(local, name)
                    if name.startswith(".") or not os.path.isfile(path) or not _is_input_file(name):
                        continue
                    _check_name(name, path)
                    uploads.append((path, self.token, f"{rel}/{name}", False))
                    pairs.append([_join(folder, rel, name), path, os.sep])
                remote = _join(folder, rel)  # a folder without images: the remote says so (named locally)
                uploads.append(("", self.token, f"{rel}/.keep", False))
            else:
                name = os.path.basename(local)
                _check_name(name, local)
                uploads.append((local, self.token, f"{rel}/{name}", False))
                remote = _join(folder, rel, name)
            pairs.append([remote, local, os.sep])
            remote_inputs.append(remote)
        out_local = os.path.abspath(os.path.expanduser(job["output"]))
        out_remote = spec.map_path(out_local)
        output = None
        if out_remote is None:
            name = os.path.basename(out_local)
            _check_name(name, out_local)
            output = (f"out/{name}", out_local)
            out_remote = _join(folder, "out", name)
        pairs.append([out_remote, out_local, os.sep])
        remote_job = dict(self.job, inputs=remote_inputs, output=out_remote)
        exports = None
        if job["export_dir"]:
            ex_local = os.path.abspath(os.path.expanduser(job["export_dir"]))
            ex_remote = spec.map_path(ex_local)
            if ex_remote is None:
                exports = ("exports", ex_local)
                ex_remote = _join(folder, "exports")
            remote_job["export_dir"] = ex_remote
            pairs.append([ex_remote, ex_local, os.sep])
        model = job["model"]
        if os.path.isdir(os.path.expanduser(model)):  # a local model folder: mapped, or sent once and kept
            local = os.path.abspath(os.path.expanduser(model))
            mapped = spec.map_path(local)
            if mapped is None:
                files = [os.path.join(local, n) for n in LOCAL_MODEL_FILES if os.path.isfile(os.path.join(local, n))]
                ident = hashlib.sha256("\0".join(f"{f}:{os.stat(f).st_size}:{os.stat(f).st_mtime_ns}"
                                                 for f in files).encode()).hexdigest()[:20]
                token = f"model-{ident}"
                uploads += [(f, token, os.path.basename(f), True) for f in files]
                mapped = _join(root, token)
            remote_job["model"] = mapped
            pairs.append([mapped, model, os.sep])
        self._pairs = sorted(pairs, key=lambda p: -len(p[0]))
        return _Plan(remote_job, pairs, uploads, output, exports)

    # -- transfers -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _forget(self, pending):
        """Requests still in flight when a transfer stops (cancel, error): their answers are not waited
        for, so their routes go (no entry left in the client's table)."""
        try:
            yield
        finally:
            for rid, _route in pending:
                self.client._routes.pop(rid, None)

    def upload(self, uploads) -> None:
        todo, kept = [], []
        for local, token, rel, reuse in uploads:
            if not local:
                todo.append((local, token, rel, 0))
                continue
            size = os.path.getsize(local)
            if reuse:  # a kept file (a model): sent before, to this worker or an earlier one?
                known = (token, rel, size, local_sha256(local))
                if known in self.client._kept:
                    continue
                st = self.client._call("stat", timeout=120, folder=token, path=rel)
                if st.get("exists") and (st.get("size"), st.get("sha256")) == known[2:]:
                    self.client._kept.add(known)
                    continue
                kept.append(known)
            todo.append((local, token, rel, size))
        total = sum(t[3] for t in todo) or 1
        done = 0
        for local, token, rel, size in todo:
            done = self.upload_file(local, token, rel, done, total)
        self.client._kept.update(kept)
        self.progress("upload", 1.0, f"sent {done / 1e6:.1f} MB", force=True)

    def upload_file(self, local: str, token: str, rel: str, before: int, total: int) -> int:
        """Stream one file in chunks (WINDOW in flight); returns ``before`` + its size."""
        from collections import deque

        from .protocol import CHUNK_SIZE

        c = self.client
        h = hashlib.sha256()
        pending: deque = deque()
        name = os.path.basename(local) or rel
        offset = 0
        with (open(local, "rb") if local else io.BytesIO(b"")) as fh, self._forget(pending):
            chunk = fh.read(CHUNK_SIZE)
            while True:
                self.check()
                ahead = fh.read(CHUNK_SIZE) if chunk else b""
                final = not ahead
                h.update(chunk)
                fields = {"folder": token, "path": rel, "offset": offset, "data": encode_chunk(chunk), "final": final}
                if final:
                    fields.update(size=offset + len(chunk), sha256=h.hexdigest())
                pending.append(c._call_async("put", **fields))
                offset += len(chunk)
                while pending and (len(pending) >= WINDOW or final):
                    ack = c._await(pending.popleft(), timeout=300, job=self)
                    self.progress("upload", (before + int(ack.get("bytes") or 0)) / total, f"sending {name}")
                if final:
                    return before + offset
                chunk = ahead

    def download(self, rel: str, local: str, what: str) -> None:
        """Fetch ``rel`` of the job folder into ``local`` (atomically; checked against the remote sha256)."""
        from collections import deque

        from ..files import open_atomic
        from .protocol import CHUNK_SIZE

        c = self.client
        st = c._call("stat", timeout=300, folder=self.token, path=rel)
        if not st.get("exists"):
            raise DA3Error(f"the {what} file {rel} is missing on {self.spec.label}", kind="internal")
        size = int(st["size"])
        h = hashlib.sha256()
        pending: deque = deque()
        asked = received = 0
        name = os.path.basename(local)
        with open_atomic(local, "wb") as fh, self._forget(pending):
            while True:
                while asked < size and len(pending) < WINDOW:
                    pending.append(c._call_async("get", folder=self.token, path=rel, offset=asked, length=CHUNK_SIZE))
                    asked += CHUNK_SIZE
                if not pending:
                    break
                self.check()
                reply = c._await(pending.popleft(), timeout=300, job=self)
                data = decode_chunk(reply.get("data"))
                if reply.get("offset") != received or not data:
                    raise DA3Error(f"{name}: the remote sent bytes out of order; run the job again", kind="protocol")
                fh.write(data)
                h.update(data)
                received += len(data)
                self.progress("download", received / max(size, 1), f"fetching {name}")
            if received != size or h.hexdigest() != st.get("sha256"):
                raise DA3Error(f"{name} arrived damaged ({received} of {size} bytes, checksum "
                               f"{'ok' if h.hexdigest() == st.get('sha256') else 'different'}); run the job again",
                               kind="connection")
        self.progress("download", 1.0, f"fetched {name}", force=True)

    def download_folder(self, rel: str, local: str) -> None:
        """Fetch every file below ``rel`` into ``local``, keeping the layout (names checked)."""
        listing = self.client._call("list", timeout=120, folder=self.token, path=rel)
        for item in listing.get("files") or []:
            path = item.get("path") if isinstance(item, dict) else None
            parts = check_relative(path, "exported file")  # the remote cannot steer writes out of the folder
            if parts[0] != rel or len(parts) < 2:
                raise DA3Error(f"the remote listed {path!r:.100} outside {rel}", kind="protocol")
            self.download(path, local_path(local, "/".join(parts[1:]), what="exported file"), "export")


def _sequence_files(local: str, job: dict) -> list[str] | None:
    """The frames a pattern or one file of an image sequence stands for (sent together), else None."""
    from ..inputs.sequences import find_sequence

    if os.path.isdir(local) or (job.get("shot") or {}).get("mode") == "stills":
        return None
    seq = find_sequence(local, forced=(job.get("shot") or {}).get("mode") == "sequence")
    return None if seq is None else seq.paths


def _is_input_file(name: str) -> bool:
    from ..inputs.paths import IMAGE_EXTENSIONS

    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_name(name: str, path: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise BadInputError(f"{path}: this file name cannot be sent to a remote worker (it has a '\\\\'); rename it")
