"""Every data-block an import creates carries the ID property ``da3_import`` (the import's key).

That is how a re-import finds what to replace and how a failed import removes what it made,
without touching anything the user created.
"""

from __future__ import annotations

import bpy

TAG = "da3_import"
# bpy.data collections an import can create data-blocks in (objects first: they use the rest)
KINDS = ("objects", "meshes", "cameras", "materials", "images", "node_groups", "actions", "movieclips", "collections")


class Tracker:
    """Callable that tags a new data-block with ``key`` and returns it."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, idblock):
        idblock[TAG] = self.key
        return idblock


def tagged(key: str) -> list:
    """All data-blocks tagged with ``key``."""
    found = []
    for kind in KINDS:
        found.extend(idb for idb in getattr(bpy.data, kind) if idb.get(TAG) == key)
    return found


def remove_tagged(key: str) -> int:
    """Remove every data-block tagged with ``key``; returns how many."""
    ids = tagged(key)
    if ids:
        bpy.data.batch_remove(ids)
    return len(ids)


def retag(old: str, new: str) -> None:
    for idb in tagged(old):
        idb[TAG] = new


def set_aside(key: str) -> list:
    """Rename ``key``'s data-blocks out of the way (so a rebuild gets the clean names); returns
    what :func:`restore_names` needs to undo it."""
    saved = [(idb, idb.name) for idb in tagged(key)]
    for i, (idb, _) in enumerate(saved):
        idb.name = f"~da3-old-{i}"
    return saved


def restore_names(saved: list) -> None:
    for idb, name in saved:
        idb.name = name
