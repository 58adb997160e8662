"""Frames read one step ahead in a background thread, while the solve works on the current one.

Decoding a 1080p PNG takes ~50-70 ms and releases the GIL; SIFT (pycolmap) holds it for ~170 ms a frame
and the sub-pixel alignment is numpy: reading the next frames meanwhile, two files at once, hides the
decode (a 50-frame 1080p solve reads its frames twice: ~7 s of 41, issue 30). At most ``depth`` frames
wait decoded, so memory stays that of a few frames; a video still decodes once, in order. An error while reading is raised in the consumer,
at the frame it concerns; when the consumer stops early (a cancel, an error), the thread stops too.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


@contextlib.contextmanager
def read_ahead(items: Iterable, load: Callable, depth: int = 3, workers: int = 2) -> Iterator[Iterator]:
    """``with read_ahead(items, load) as loaded:`` ``loaded`` yields ``load(item, i)`` for each item in order.
    A thread walks ``items`` (a video's frames decode there, in order) and hands each to ``workers`` threads
    that run ``load`` (image files decode side by side), at most ``depth`` ahead; leaving the block stops them."""
    slots: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="da3-read")

    def put(value) -> bool:
        while not stop.is_set():
            try:
                slots.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def walk():
        source = iter(items)
        try:
            for i, item in enumerate(source):
                if stop.is_set() or not put(pool.submit(load, item, i)):
                    return
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, raised there)
            put(_Failed(exc))
            return
        finally:
            if hasattr(source, "close"):  # a video's frame generator closes its reader here
                source.close()
        put(_DONE)

    def consume():
        while True:
            value = slots.get()
            if value is _DONE:
                return
            if isinstance(value, _Failed):
                raise value.exc
            yield value.result()

    thread = threading.Thread(target=walk, name="da3-read-ahead", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
        pool.shutdown(wait=True, cancel_futures=True)
