"""Keeping a path someone else gave us inside the folders it may use: the one rule, used by the
backend's allowed roots (``web.security.Roots``), the gallery's file routes (``web.gallery``) and a
remote worker's job folders (``runtime.transfer``).

* :func:`inside` -- a string test on paths already made absolute and real (no file system access).
* :func:`windows_refusal` -- why a path must not even be looked at on Windows: a UNC path
  (``\\\\server\\share``: resolving it contacts that server), the device namespaces (``\\\\.\\``,
  ``\\\\?\\``) and device names (``CON``, ``NUL``, ``COM1``...). A pure function of the string, so it
  is tested on any OS.
* :func:`confined` -- the real path of ``path`` when it lies under one of ``roots``, else None;
  what :func:`windows_refusal` refuses is refused before the file system is touched.

Standard library only.
"""

from __future__ import annotations

import ntpath
import os
from typing import Iterable

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
