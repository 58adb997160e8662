"""Files: atomic writing, and keeping given paths inside their folders.

Atomic file writing (exports, result files): a temp file in the target folder, renamed into
place when complete.

A reader (Blender, another program) never sees a half-written export, and a crash leaves the
previous file (or none) instead of a truncated one.

Confinement: the one rule for keeping a path someone else gave us inside the folders it may use,
used by the backend's allowed roots (``web.security.Roots``), the gallery's file routes (``web.gallery``)
and a remote worker's job folders (``runtime.transfer``):

* :func:`inside` -- a string test on paths already made absolute and real (no file system access).
* :func:`windows_refusal` -- why a path must not even be looked at on Windows: a UNC path
  (``\\\\server\\share``: resolving it contacts that server), the device namespaces (``\\\\.\\``,
  ``\\\\?\\``) and device names (``CON``, ``NUL``, ``COM1``...). A pure function of the string, so it
  is tested on any OS.
* :func:`confined` -- the real path of ``path`` when it lies under one of ``roots``, else None;
  what :func:`windows_refusal` refuses is refused before the file system is touched.
"""

from __future__ import annotations

import contextlib
import ntpath
import os
import tempfile
import threading
from typing import Iterable

from .cancel import checkpoint
from .errors import BadInputError, write_error


def make_folder(folder: str | os.PathLike) -> str:
    """``os.makedirs(folder, exist_ok=True)``, with a one-line :class:`BadInputError` on failure."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise write_error(os.fspath(folder), exc) from None
    return os.fspath(folder)


def check_writable_folder(folder: str | os.PathLike, doing: str) -> None:
    """Create ``folder`` if needed and write a probe file in it, before any work; one-line
    :class:`BadInputError` ("cannot <doing> (reason): ...") if it cannot be written."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadInputError(f"cannot {doing} ({reason}): choose a writable output folder") from None


_placed = threading.local()  # the list record_placed() collects into, per thread


@contextlib.contextmanager
def record_placed():
    """Inside the block, every file :func:`open_atomic` puts in place on this thread is appended to the
    yielded list (also when the block then fails: what a cancelled export did write)."""
    outer = getattr(_placed, "paths", None)
    paths: list[str] = []
    _placed.paths = paths
    try:
        yield paths
    finally:
        _placed.paths = outer
        if outer is not None:
            outer.extend(paths)


TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600  # a temporary file this old was left by a killed process


class _Checked:
    """A file whose writes are cancel points (:func:`da3_blender.cancel.checkpoint`)."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        checkpoint()
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def remove_stale_temp_files(folder: str | os.PathLike, depth: int = 0, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove :func:`open_atomic` temporary files older than ``older_than`` seconds in ``folder`` and its
    sub-folders down to ``depth`` levels (left by a process killed while writing); returns how many.
    Never raises."""
    import time

    removed = 0
    limit = time.time() - older_than
    top = os.fspath(folder).rstrip(os.sep) or os.sep
    for dirpath, dirs, names in os.walk(top):
        if dirpath[len(top):].count(os.sep) >= depth:
            dirs[:] = []  # no deeper
        for name in names:
            if name.startswith(TEMP_PREFIX) and not name.startswith(TEMP_PREFIX + "probe-"):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < limit:
                        os.unlink(path)
                        removed += 1
    return removed


def _umask() -> int:
    """The process umask, read without changing it where the system tells (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """0o666 less the umask: the mode ``open()`` gives a new file (mkstemp's is 0o600)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "wb"):
    """Open ``path`` for writing (``"wb"`` or ``"w"``); the file appears only if the block succeeds.

    The file gets the permissions of any new file (0o666 less the umask), not mkstemp's 0o600.

    Text is UTF-8, with file names that are not valid UTF-8 written back as their original bytes.
    An ``OSError`` (full disk, no permission) becomes a one-line :class:`BadInputError`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    checkpoint()  # a cancelled job writes no further file
    make_folder(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1], dir=folder)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}
        with os.fdopen(fd, mode, **text) as raw:
            fh = _Checked(raw)
            yield fh
            checkpoint()
            fh.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), _file_mode())
            else:  # Windows: only the read-only bit exists
                os.chmod(tmp, _file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        placed = getattr(_placed, "paths", None)
        if placed is not None:
            placed.append(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


# ----------------------------------------------------------------------------------------------
# confinement

# names Windows reads as a device (CON, NUL, COM1, ...), whatever the extension
WINDOWS_DEVICES = frozenset(["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"] +
                            [f"{p}{i}" for p in ("COM", "LPT") for i in "0123456789¹²³"])


def inside(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or lies below it (both absolute and normalised the same way)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_windows_device(name: str) -> bool:
    """True for a file name Windows opens as a device (``NUL``, ``con.txt``, ``COM1 .png``)."""
    return name.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES


def windows_refusal(path: str) -> str | None:
    """Why ``path`` must not be resolved on Windows (a UNC or device path, a device name), else None."""
    if not isinstance(path, str):
        return "not a path"
    flat = path.replace("/", "\\")
    if flat.startswith("\\\\"):
        if flat[2:4] in ("?\\", ".\\"):
            return "a Windows device path (\\\\?\\ or \\\\.\\)"
        return "a network (UNC) path"
    if flat.startswith("\\??\\"):
        return "a Windows device path (\\??\\)"
    drive, rest = ntpath.splitdrive(flat)
    if drive.startswith("\\\\"):  # what splitdrive still reads as a share
        return "a network (UNC) path"
    for part in rest.split("\\"):
        if part and is_windows_device(part):
            return f"a Windows device name ({part})"
        if ":" in part:
            return "an NTFS stream or a second drive letter"
    return None


def confined(path: str, roots: Iterable[str], *, allow_root: bool = True, windows: bool | None = None) -> str | None:
    """The real path of ``path`` (made absolute against the current folder) when it is one of ``roots``
    (if ``allow_root``) or lies below one, else None. ``roots`` must be real paths already. On Windows
    (``windows`` None: this OS) a UNC or device path is refused before anything is resolved."""
    if not isinstance(path, str) or not path or "\x00" in path:
        return None
    if (os.name == "nt" if windows is None else windows) and windows_refusal(path):
        return None
    real = os.path.realpath(os.path.abspath(path))
    for root in roots:
        if inside(real, root) and (allow_root or real != root):
            return real
    return None
