"""Errors with a *kind* a user (or the worker protocol) can act on.

Every error the core raises on purpose is a :class:`DA3Error`. Its ``kind`` is one of
:data:`ERROR_KINDS`; its message is one line that says what went wrong and what to do.
The CLI prints it without a traceback, the worker sends it as an ``error`` event.
"""

from __future__ import annotations

ERROR_KINDS = (
    "bad_input",  # a file, folder, video or option the user gave is unusable
    "out_of_memory",  # the device ran out of memory
    "model_download",  # weights could not be found, downloaded or read
    "missing_dependency",  # torch (or another package) missing or broken in the worker's Python
    "cancelled",  # the user cancelled the job
    "protocol",  # a malformed request reached the worker
    "connection",  # the SSH link to a remote worker failed or dropped (the next run reconnects)
    "internal",  # a bug: anything else
)


class DA3Error(Exception):
    """Base class: ``str(err)`` is a single line meant for the user."""

    kind = "internal"

    def __init__(self, message: str, kind: str | None = None):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        if kind is not None:
            if kind not in ERROR_KINDS:
                raise ValueError(f"unknown error kind {kind!r}")
            self.kind = kind


class BadInputError(DA3Error, ValueError):
    kind = "bad_input"


class ModelLoadError(DA3Error):
    kind = "model_download"


class MissingDependencyError(DA3Error, ImportError):
    kind = "missing_dependency"


class OutOfMemoryError(DA3Error, MemoryError):
    kind = "out_of_memory"


class CancelledError(DA3Error):
    kind = "cancelled"

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)


class ResultFormatError(BadInputError):
    """A result file (npz) that is corrupt, truncated or of an unknown version."""


def write_error(path, exc: OSError) -> BadInputError:
    """The one-line error for an ``OSError`` while writing ``path`` (full disk, no permission, ...)."""
    import errno

    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), getattr(errno, "EFBIG", -1)):
        return BadInputError(f"cannot write {path}: not enough disk space ({reason}); free some space or choose another folder")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BadInputError(f"cannot write {path}: {reason}; choose a folder you can write to")
    return BadInputError(f"cannot write {path} ({reason}); choose another output folder")
