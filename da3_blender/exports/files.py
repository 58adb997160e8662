"""Atomic file writing: a temp file in the target folder, renamed into place when complete.

A reader (Blender, another program) never sees a half-written export, and a crash leaves the
previous file (or none) instead of a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "wb"):
    """Open ``path`` for writing (``"wb"`` or ``"w"``); the file appears only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
