"""The Blender session's worker and running job (module-level: one per Blender process).

One :class:`WorkerClient` is kept warm between runs (the model stays loaded) and is replaced when
the worker Python or its environment changes; :func:`shutdown` stops it (on unregister and exit).
``listeners`` are called as ``fn(run, event)`` for every event of a running job: a hook for tests
and scripts (e.g. cancel after the first progress event).
"""

from __future__ import annotations

from ..da3_blender.runtime.client import WorkerClient

_client: WorkerClient | None = None
_client_key: tuple | None = None
active_run = None  # the operators.run.Run in progress, if any
listeners: list = []


def client(python: str, env: dict[str, str], remote=None) -> WorkerClient:
    """The session's worker client for this interpreter and environment (started on first submit);
    ``remote``: a RemoteSpec to run it over SSH."""
    global _client, _client_key
    key = (python, tuple(sorted(env.items())), remote)
    if _client is not None and _client_key != key:
        _client.shutdown(timeout=5)
        _client = None
    if _client is None:
        _client = WorkerClient(python=python, env=env, remote=remote)
        _client_key = key
    return _client


def current() -> WorkerClient | None:
    """The existing client, without creating one."""
    return _client


def is_running() -> bool:
    return active_run is not None


def notify(run, event: dict) -> None:
    for fn in list(listeners):
        fn(run, event)


def shutdown() -> None:
    """Stop the worker (the model is freed with it) and forget the running job."""
    global _client, _client_key, active_run
    if active_run is not None:
        active_run.abandon()
        active_run = None
    if _client is not None:
        _client.shutdown(timeout=5)
    _client = None
    _client_key = None
