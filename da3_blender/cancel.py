"""Cancel points inside long steps that take no progress callback (model loading, file writing).

The worker runs a job inside ``with cancellable(check):``; :func:`checkpoint` (called between two
tensors of a checkpoint, on every file opened by :func:`da3_blender.files.open_atomic` and between
writes to it) calls ``check``, which raises :class:`~da3_blender.errors.CancelledError` once the
user cancelled. So a cancel during a model load, a result save or a 1,000-file export ends within a
moment, without a kill, and the temporary file being written is removed. Outside a job (tests, the
CLI, scripts) :func:`checkpoint` does nothing. Per thread: a job thread's check never stops another.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

_local = threading.local()


@contextlib.contextmanager
def cancellable(check: Callable[[], None]):
    """Make :func:`checkpoint` call ``check`` (which raises to cancel) on this thread inside the block."""
    previous = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = previous


def checkpoint() -> None:
    """Raise (through the current check) if this thread's job was cancelled; else nothing."""
    check = getattr(_local, "check", None)
    if check is not None:
        check()


@contextlib.contextmanager
def terminate_as_cancel(what: str = "the step"):
    """Inside the block, SIGTERM (a farm manager stopping a task) raises CancelledError on the main thread, so
    ``finally`` blocks run: :func:`da3_blender.files.open_atomic` removes its temporary file instead of leaving
    a ``.tmp-*`` behind. Elsewhere (another thread, no SIGTERM) it does nothing."""
    import signal

    from .errors import CancelledError

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def _raise(signum, _frame):
        raise CancelledError(f"{what} was terminated (signal {signum}): its partial files were removed; run it again")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
