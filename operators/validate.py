"""Checks made before a run starts: inputs, worker Python (known camera poses: ``known_poses``).

Each check raises :class:`BadInputError` (or :class:`MissingDependencyError`) with one line that
says what is wrong and what to do; nothing is started or created before they all pass.
"""

from __future__ import annotations

import os
import struct

import bpy

from ..da3_blender.errors import BadInputError, MissingDependencyError
from ..da3_blender.inputs.paths import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_folder_images
from ..da3_blender.inputs.sequences import find_sequence


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _abs(path: str) -> str:
    return os.path.normpath(bpy.path.abspath(path.strip())) if path.strip() else ""


def check_inputs(settings) -> tuple[list[str], list[str]]:
    """The job's input paths and the image files they stand for (empty for a video)."""
    mode = settings.input_mode
    if mode == "IMAGES":
        paths = [_abs(item.filepath) for item in settings.images if item.filepath.strip()]
        if not paths:
            raise BadInputError("no images selected: add images in DA3 > Input (the + button)")
        for path in paths:
            if not os.path.isfile(path):
                raise BadInputError(f"image not found: {path}: remove it from the list or fix its path")
            if _ext(path) not in IMAGE_EXTENSIONS:
                raise BadInputError(f"{os.path.basename(path)} is not a supported image "
                                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}): remove it from the list")
        return paths, paths
    if mode == "FOLDER":
        folder = _abs(settings.folder)
        if not folder:
            raise BadInputError("no folder chosen: pick a folder of images in DA3 > Input")
        if not os.path.isdir(folder):
            raise BadInputError(f"folder not found: {folder}: choose an existing folder of images")
        images = list_folder_images(folder)  # the worker's listing (natural order); one line if none
        if settings.folder_mode != "stills":  # issue 17: a numbered folder is a shot (the worker detects it alike)
            seq = find_sequence(folder, forced=settings.folder_mode == "sequence")
            images = seq.paths if seq is not None else images
        return [folder], images
    if mode == "SEQUENCE":
        path = _abs(settings.sequence)
        if not path:
            raise BadInputError("no sequence chosen: pick one file of the image sequence in DA3 > Input")
        return [path], find_sequence(path, forced=True).paths
    video = _abs(settings.video)
    if not video:
        raise BadInputError("no video chosen: pick a video file in DA3 > Input")
    if not os.path.isfile(video):
        raise BadInputError(f"video not found: {video}: choose an existing video file")
    if _ext(video) not in VIDEO_EXTENSIONS:
        raise BadInputError(f"{os.path.basename(video)} is not a supported video "
                            f"({', '.join(sorted(VIDEO_EXTENSIONS))}): choose another file or convert it to MP4")
    check_video(video, settings)
    return [video], []


def probe_video(path: str) -> dict | None:
    """Frame count, fps and size read by Blender's own decoder; None if Blender cannot probe videos.

    The temporary movie clip is removed again: nothing stays in the file.
    """
    try:
        clip = bpy.data.movieclips.load(path, check_existing=False)
    except (RuntimeError, TypeError):
        return None
    try:
        return {"frames": int(clip.frame_duration), "fps": float(clip.fps), "size": tuple(clip.size)}
    finally:
        bpy.data.movieclips.remove(clip)


def check_video(path: str, settings) -> None:
    info = probe_video(path)
    if info is None:
        return  # the worker reads it and says what is wrong
    if info["frames"] <= 0 or info["fps"] <= 0:
        raise BadInputError(f"cannot read the video {path}: it is damaged or in a format that cannot be decoded; "
                            "re-encode it (e.g. H.264 MP4) or choose another file")
    duration = info["frames"] / info["fps"]
    start, end = settings.video_start, settings.video_end
    if start >= duration:
        raise BadInputError(f"the start time {start:.2f} s is past the end of the video ({duration:.2f} s): lower Start")
    if end and end <= start:
        raise BadInputError(f"the end time {end:.2f} s is not after the start time {start:.2f} s: raise End or set it to 0")


def check_worker(worker: dict) -> str:
    """The worker's interpreter, after checking it exists (managed environment: that it is set up).

    ``worker``: the preferences as read once by ``preferences.read_worker_settings``.
    """
    python = worker["python"]
    if not worker["managed"]:
        if not python:
            raise MissingDependencyError("no Python interpreter set: choose one in Preferences > Add-ons > DA3 for "
                                         "Blender, or use the managed environment")
        if not os.path.isfile(python) or not os.access(python, os.X_OK):
            raise MissingDependencyError(f"the Python interpreter {python} does not exist or is not executable: fix the "
                                         "path in Preferences > Add-ons > DA3 for Blender (Check tests it)")
        return python
    from ..da3_blender.runtime import envs

    if not envs.is_ready(worker["env_dir"]):
        raise MissingDependencyError("the DA3 environment is not set up: open Preferences > Add-ons > DA3 for Blender "
                                     "and press 'Set up environment' (once), or choose your own Python there")
    return python


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _header_size(path: str) -> tuple[int, int] | None:
    """(W, H) from a PNG or JPEG header (a few bytes read); None for other formats."""
    with open(path, "rb") as fh:
        head = fh.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:2] != b"\xff\xd8":
            return None
        fh.seek(2)
        while True:
            marker = fh.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            while marker[1] == 0xFF:  # fill bytes
                marker = marker[1:] + fh.read(1)
            if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:  # markers without a length
                continue
            length = struct.unpack(">H", fh.read(2))[0]
            if marker[1] in _JPEG_SOF:
                h, w = struct.unpack(">xHH", fh.read(5))
                return w, h
            fh.seek(length - 2, os.SEEK_CUR)


def image_size(path: str) -> tuple[int, int]:
    """(W, H) of an image file without creating a Blender data-block: PNG and JPEG from their header,
    other formats through ``imbuf`` (an image buffer outside ``bpy.data``)."""
    try:
        size = _header_size(path)
    except (OSError, struct.error):
        size = None
    if size is None:
        import imbuf

        try:
            buf = imbuf.load(path)
        except (OSError, ValueError) as ex:
            raise BadInputError(f"cannot read the image {path} ({ex}): check the file or remove it") from None
        try:
            size = buf.size
        finally:
            buf.free()
    return int(size[0]), int(size[1])
