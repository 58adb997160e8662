"""Which files are images or videos (by extension), frame numbers in names, natural sort order, and a
folder's images in that order (:func:`list_folder_images`, the one folder listing of every surface).

Standard library only: the job checks (:mod:`da3_blender.job`), the plate reader and Blender's Python use it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..errors import BadInputError

log = logging.getLogger("da3_blender")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".webp", ".bmp",
                    ".exr", ".dpx", ".cin", ".hdr")  # the last four through OpenImageIO (plates.py)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".mts", ".m2ts", ".3gp", ".ogv")


def _ext(path) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def is_image_path(path) -> bool:
    return _ext(path) in IMAGE_EXTENSIONS


def is_video_path(path) -> bool:
    return _ext(path) in VIDEO_EXTENSIONS


def frame_number_from_name(path) -> int:
    """Trailing digits of the file stem (``shot_1001.png`` -> 1001), else -1."""
    m = re.search(r"(\d+)$", Path(os.fspath(path)).stem)
    return int(m.group(1)) if m else -1


def natural_key(name: str):
    """Sort key putting ``frame2`` before ``frame10`` (case-insensitive)."""
    return [(0, int(t), "") if t.isdecimal() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def list_folder_images(folder, extensions=None) -> list[str]:
    """The image files of ``folder`` in natural order (frame2 before frame10), hidden files skipped.

    The one folder listing of every surface (CLI, worker, panel, headless). ``extensions`` (e.g.
    ``(".png", ".jpg")``) narrows :data:`IMAGE_EXTENSIONS`. :class:`BadInputError` if none is there.
    """
    folder = os.fspath(folder)
    wanted = tuple(e.lower() for e in extensions) if extensions else IMAGE_EXTENSIONS
    names = sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=natural_key)
    files = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    images = [f for f in files if _ext(f) in wanted]
    skipped = [os.path.basename(f) for f in files if _ext(f) not in wanted]
    if skipped:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.info("%s: skipped %d file(s) of other types: %s%s", folder, len(skipped), ", ".join(skipped[:5]), more)
    if not images:
        videos = [n for n in skipped if is_video_path(n)]
        hint = f"; to use a video, give the video file itself ({videos[0]})" if videos else ""
        raise BadInputError(
            f"no images in folder {folder} (looked for {', '.join(wanted)}){hint}; choose a folder of photos or frames"
        )
    return images
