"""Job files across the worker link (remote workers): the worker's side of put/stat/get/list/discard.

A worker started with ``--jobs-dir DIR`` (the SSH client does this) keeps each job's files in
``DIR/<folder>``, where ``<folder>`` is a token the client picks. Every path a request names is
confined to its folder: relative (or absolute but inside the folder), no ``..`` or empty parts, no
backslashes, and no symbolic link on the way (a link planted inside the folder cannot lead out of
it). Data moves in chunks of at most :data:`protocol.CHUNK_SIZE` bytes, base64 in the JSON line, so
neither side ever holds a whole file; an upload is written to a temporary file, checked against the
sha256 and size the client sends with the last chunk, and only then renamed into place.

With ``--jobs-dir`` the worker also checks each ``run`` job: its inputs, output and export folder
must lie in the jobs folder or under a root named with ``--allow`` (the remote side of a path map,
for shared storage). Nothing received is ever executed or unpickled: chunks are bytes written to
files, everything else is JSON.

Standard library only (the worker answers ``hello`` before torch is imported).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from typing import Any

from ..files import confined, inside, is_windows_device
from ..errors import BadInputError
from .protocol import CHUNK_SIZE, event

FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STALE_SECONDS = 3 * 24 * 3600  # job folders left by dropped connections are removed after this
STALE_UPLOAD_SECONDS = 3600  # a partial upload untouched this long was left by a dropped link
UPLOAD_PREFIX = ".up-"
MAX_PATH = 4096


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_SIZE), b""):
            h.update(block)
    return h.hexdigest()


def check_relative(path: Any, what: str = "path") -> list[str]:
    """The parts of a client-given relative path; :class:`BadInputError` for anything that could leave
    its folder (also used by the client on names the worker sends back)."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\0" in path:
        raise BadInputError(f"{what} must be a non-empty file path, got {path!r:.80}")
    if "\\" in path:
        raise BadInputError(f"{what} {path!r:.200} contains a backslash: use '/' between folders")
    if path.startswith("/"):
        raise BadInputError(f"{what} {path!r:.200} is absolute: give it relative to the job folder")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadInputError(f"{what} {path!r:.200} has an empty, '.' or '..' part: paths stay inside the job folder")
    return parts


_NOT_PORTABLE = frozenset('<>:"|?*') | frozenset(chr(i) for i in range(32))


def local_path(base: str, path: Any, pathmod=os.path, what: str = "file") -> str:
    """Where a file the remote names (``a/b.exr``, relative) lands under the local folder ``base``.

    Refused on every OS (one-line :class:`BadInputError`), so a remote cannot write outside ``base`` on
    any client: what :func:`check_relative` refuses, and names Windows would read as a drive
    (``C:``), an NTFS stream (``a:b``), a device (``CON``, ``nul.txt``) or silently change (a trailing
    dot or space). ``pathmod``: ``ntpath`` or ``posixpath`` (tests check Windows rules on any OS).
    """
    parts = check_relative(path, what)
    for part in parts:
        if any(c in _NOT_PORTABLE for c in part) or part[-1] in ". " or is_windows_device(part):
            raise BadInputError(f"{what} {path!r:.200} is not a portable file name (no drive, stream or device "
                                "names, no <>:\"|?* or trailing dot/space): refused")
    root = pathmod.normpath(pathmod.abspath(base)) if pathmod is os.path else pathmod.normpath(base)
    target = pathmod.normpath(pathmod.join(root, *parts))
    if pathmod.splitdrive(target)[0] != pathmod.splitdrive(root)[0] or pathmod.commonpath([root, target]) != root:
        raise BadInputError(f"{what} {path!r:.200} would land outside {base}: refused")
    return target


class _Upload:
    def __init__(self, target: str, tmp: str, fh):
        self.target, self.tmp, self.fh = target, tmp, fh
        self.size = 0
        self.hash = hashlib.sha256()

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def check_private(path: str, what: str = "folder") -> None:
    """POSIX: :class:`BadInputError` unless ``path`` is this user's and no one else can write it (models
    and inputs kept there are trusted as this user's own)."""
    if os.name != "posix":
        return
    st = os.stat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise BadInputError(f"the {what} {path} is not private (owner uid {st.st_uid}, mode {st.st_mode & 0o777:o}): "
                            "remove it or make it yours alone (chmod 700)")


class JobFiles:
    """The jobs folder of a remote worker and the transfer requests on it."""

    def __init__(self, root: str, allowed: list[str] | tuple[str, ...] = ()):
        root = os.path.abspath(os.path.expanduser(root))
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.root = os.path.realpath(root)
        check_private(self.root, "jobs folder")
        self.allowed = [os.path.realpath(os.path.expanduser(a)) for a in allowed]
        self._uploads: dict[tuple[str, str], _Upload] = {}
        self.purge_stale()

    # -- paths ----------------------------------------------------------------------------------
    def folder(self, token: Any, create: bool = False) -> str:
        if not isinstance(token, str) or not FOLDER_RE.match(token):
            raise BadInputError(f"job folder name {token!r:.80} is not valid (letters, digits, '_', '-', '.'; "
                                "at most 64)")
        path = os.path.join(self.root, token)
        if os.path.islink(path):
            raise BadInputError(f"job folder {token} is a symbolic link: refused")
        if create:
            os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def resolve(self, token: Any, path: Any, create_parents: bool = False) -> str:
        """The absolute path of ``path`` inside job folder ``token``; BadInputError if it would leave it."""
        base = self.folder(token, create=create_parents)
        if isinstance(path, str) and path.startswith("/"):  # absolute: only inside the folder
            if not inside(path, base) or path == base:
                raise BadInputError(f"path {path!r:.200} is outside job folder {token}: refused")
            path = path[len(base):].lstrip("/")
        parts = check_relative(path)
        target = os.path.join(base, *parts)
        current = base
        for i, part in enumerate(parts):
            current = os.path.join(current, part)
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if create_parents and i < len(parts) - 1:
                    os.mkdir(current, 0o700)
                    continue
                break  # nothing below a missing part exists
            if stat.S_ISLNK(mode):
                raise BadInputError(f"path {path!r:.200} goes through a symbolic link in job folder {token}: refused")
        if not inside(os.path.realpath(os.path.dirname(target)), os.path.realpath(base)):
            raise BadInputError(f"path {path!r:.200} is outside job folder {token}: refused")
        return target

    def check_job(self, spec: dict[str, Any]) -> None:
        """A ``run`` job of a remote worker may name only files in the jobs folder or an allowed root."""
        roots = [self.root] + self.allowed
        named = [("input", p) for p in spec["inputs"]] + [("output", spec["output"])]
        if spec.get("export_dir"):
            named.append(("export folder", spec["export_dir"]))
        for what, path in named:
            if confined(os.path.expanduser(path), roots) is None:
                raise BadInputError(f"the {what} {path} is outside this remote worker's job folders: send the file "
                                    "with the job, or add its folder to the path map")

    def purge_stale(self) -> None:
        """Remove job folders untouched for :data:`STALE_SECONDS` (left by dropped connections), and partial
        uploads (``.up-*``, written to at least every few seconds while alive) untouched for
        :data:`STALE_UPLOAD_SECONDS` in the folders that stay (kept models are refreshed by ``stat``)."""
        now = time.time()
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    if name.startswith(UPLOAD_PREFIX) and now - os.lstat(path).st_mtime > STALE_UPLOAD_SECONDS:
                        os.unlink(path)
                except OSError:
                    pass

    # -- requests -------------------------------------------------------------------------------
    def handle(self, kind: str, rid: str, message: dict[str, Any]) -> dict[str, Any]:
        """The event answering transfer request ``kind``; raises BadInputError for a bad request."""
        token = message.get("folder")
        if kind == "put":
            return self.put(rid, token, message)
        if kind == "stat":
            return self.stat(rid, token, message.get("path"))
        if kind == "get":
            return self.get(rid, token, message.get("path"), message.get("offset"), message.get("length"))
        if kind == "list":
            return self.listing(rid, token, message.get("path"))
        if kind == "discard":
            return self.discard(rid, token)
        raise BadInputError(f"unknown transfer request {kind!r}")

    def put(self, rid: str, token: Any, message: dict[str, Any]) -> dict[str, Any]:
        path, offset, data = message.get("path"), message.get("offset"), message.get("data")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise BadInputError(f"put: offset must be a whole number >= 0, got {offset!r:.40}")
        if not isinstance(data, str) or len(data) > 4 * (CHUNK_SIZE // 3 + 1):
            raise BadInputError(f"put: data must be base64 text of at most {CHUNK_SIZE} bytes")
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadInputError("put: data is not valid base64") from None
        key = (str(token), str(path))
        if offset == 0:
            old = self._uploads.pop(key, None)
            if old is not None:
                old.abort()
            target = self.resolve(token, path, create_parents=True)
            if os.path.isdir(target):
                raise BadInputError(f"put: {path} is a folder in job folder {token}")
            fd, tmp = tempfile.mkstemp(prefix=UPLOAD_PREFIX, dir=os.path.dirname(target))
            upload = self._uploads[key] = _Upload(target, tmp, os.fdopen(fd, "wb"))
        else:
            upload = self._uploads.get(key)
            if upload is None or upload.size != offset:
                expected = None if upload is None else upload.size
                raise BadInputError(f"put: chunk of {path} at offset {offset}, expected {expected}: "
                                    "start the upload again")
        try:
            upload.fh.write(chunk)
        except OSError as exc:
            self._uploads.pop(key, None)
            upload.abort()
            raise BadInputError(f"cannot store {path} on the remote ({exc.strerror or exc}): free some space "
                                "in the remote cache folder") from None
        upload.hash.update(chunk)
        upload.size += len(chunk)
        done = bool(message.get("final"))
        if done:
            self._uploads.pop(key, None)
            upload.fh.close()
            digest = upload.hash.hexdigest()
            if message.get("size") != upload.size or message.get("sha256") != digest:
                upload.abort()
                raise BadInputError(f"{path} arrived damaged ({upload.size} bytes, sha256 {digest[:12]}..., "
                                    f"expected {message.get('size')} bytes, {str(message.get('sha256'))[:12]}...): "
                                    "run the job again")
            # the target may have been replaced by a link since the first chunk: check again
            self.resolve(token, path)
            os.replace(upload.tmp, upload.target)
        return event("stored", rid, None, folder=token, path=path, bytes=upload.size, done=done)

    def stat(self, rid: str, token: Any, path: Any) -> dict[str, Any]:
        target = self.resolve(token, path)
        info: dict[str, Any] = {"exists": False, "size": None, "sha256": None}
        try:
            st = os.stat(target, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(st.st_mode):
                info = {"exists": True, "size": st.st_size, "sha256": sha256_file(target)}
                os.utime(self.folder(token))  # a kept folder (a model) stays fresh
        return event("stat", rid, None, folder=token, path=path, **info)

    def get(self, rid: str, token: Any, path: Any, offset: Any, length: Any) -> dict[str, Any]:
        for name, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadInputError(f"get: {name} must be a whole number >= 0, got {value!r:.40}")
        target = self.resolve(token, path)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(target, flags)
        except OSError as exc:
            raise BadInputError(f"cannot read {path} in job folder {token} ({exc.strerror or exc})") from None
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(offset)
            chunk = fh.read(min(length, CHUNK_SIZE))
        return event("chunk", rid, None, folder=token, path=path, offset=offset, size=size,
                     data=base64.b64encode(chunk).decode("ascii"), eof=offset + len(chunk) >= size)

    def listing(self, rid: str, token: Any, path: Any) -> dict[str, Any]:
        """Regular files below ``path`` (relative to the job folder), links not followed."""
        top = self.resolve(token, path)
        files = []
        base = self.folder(token)
        for folder, dirs, names in os.walk(top, followlinks=False):
            for name in sorted(names):
                full = os.path.join(folder, name)
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode):
                    files.append({"path": os.path.relpath(full, base).replace(os.sep, "/"), "size": st.st_size})
            dirs.sort()
        return event("listing", rid, None, folder=token, path=path, files=files)

    def discard(self, rid: str, token: Any) -> dict[str, Any]:
        base = self.folder(token)
        for key in [k for k in self._uploads if k[0] == token]:
            self._uploads.pop(key).abort()
        existed = os.path.isdir(base)
        if existed:
            shutil.rmtree(base, ignore_errors=True)
        return event("discarded", rid, None, folder=token, existed=existed)

    def close(self) -> None:
        for upload in self._uploads.values():
            upload.abort()
        self._uploads.clear()


def map_prefix(path: str, pairs, sep: str = "/", to_sep: str = "/") -> str | None:
    """The one path map: ``path`` at or under the first prefix ``a`` of ``pairs`` [(a, b), ...] -> the same
    place under ``b``; ``sep`` separates ``path``'s parts, ``to_sep`` the result's. None if under none.
    (Local -> remote for a path-mapped job, remote -> local for the names in its result.)"""
    for a, b in pairs:
        head = a.rstrip(sep)
        if path == a or path == head:
            return b
        if path.startswith(head + sep):
            return b.rstrip(to_sep) + to_sep + path[len(head) + 1:].replace(sep, to_sep)
    return None


def _map_path(value: str, pairs: list[tuple[str, str, str]]) -> str:
    for remote, local, sep in pairs:
        mapped = map_prefix(value, [(remote, local)], "/", sep)
        if mapped is not None:
            return mapped
    return value


def _map_all(value: Any, pairs):
    if isinstance(value, str):
        return _map_path(value, pairs)
    if isinstance(value, list):
        return [_map_all(v, pairs) for v in value]
    if isinstance(value, dict):
        return {k: _map_all(v, pairs) for k, v in value.items()}
    return value


def check_sources(sources: Any) -> list[tuple[str, str, str]]:
    """``run`` requests of a remote client carry ``sources``: [[remote, local, sep], ...], the client's
    names for the files it sent, so the result names the user's own files. Longest first."""
    if sources is None:
        return []
    if not isinstance(sources, list) or not all(
            isinstance(s, list) and len(s) == 3 and all(isinstance(x, str) and x for x in s) for s in sources):
        raise BadInputError("'sources' must be a list of [remote path, local path, separator]")
    return sorted((tuple(s) for s in sources), key=lambda s: -len(s[0]))


def restore_sources(pred, meta: dict[str, Any], pairs: list[tuple[str, str, str]]) -> None:
    """Put the client's paths back into a prediction and its result metadata (in place)."""
    if not pairs:
        return
    if pred.source_paths is not None:
        pred.source_paths = [_map_path(str(p), pairs) for p in pred.source_paths]
    pred.meta = _map_all(pred.meta or {}, pairs)
    meta.update(_map_all(meta, pairs))
