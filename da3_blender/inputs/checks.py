"""The checks of a shot's video options and frame start (fps, start, end, max_frames; the first frame's
scene number), shared by the readers here and the job (:mod:`da3_blender.job`, which imports them).

Standard library only: Blender's Python imports it through the job.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .. import options as opt
from ..errors import BadInputError

VIDEO_KEYS = ("fps", "start", "end", "max_frames")


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers too


def check_video(video: dict[str, Any]) -> dict[str, Any]:
    """fps >= 0 (0: every frame), start >= 0, end after start, max_frames >= 1; None = not set."""
    for key in ("fps", "start", "end"):
        value = video.get(key)
        if value is not None and not (is_number(value) and value >= 0):
            raise BadInputError(f"video {key} must be a number >= 0, got {value!r}"
                                + (" (0 takes every frame)" if key == "fps" else ""))
    start, end = video.get("start"), video.get("end")
    if end is not None and end <= (start or 0):
        raise BadInputError(f"video end ({end!r} s) must be after start ({start or 0} s)")
    max_frames = video.get("max_frames")
    if max_frames is not None and not (is_whole(max_frames) and max_frames >= 1):
        raise BadInputError(f"video max_frames must be a whole number >= 1, got {max_frames!r}")
    return {k: video.get(k) for k in VIDEO_KEYS}


def check_frame_start(frame_start) -> int:
    """The scene frame of a video's first frame: a whole number in Blender's frames (0..1048574)."""
    if isinstance(frame_start, bool) or not isinstance(frame_start, numbers.Integral) \
            or not 0 <= frame_start <= opt.MAX_SCENE_FRAME:
        raise BadInputError(f"frame start must be a whole number from 0 to {opt.MAX_SCENE_FRAME} (e.g. 1, or 1001 "
                            f"for a VFX plate), got {frame_start!r}")
    return int(frame_start)
