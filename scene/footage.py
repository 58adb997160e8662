"""The source footage in the scene: frame rate, frame range and the video behind the camera.

A result's ``frame_numbers`` are scene frames (a video's frame ``k`` is ``frame_start + k``, chosen
when it ran; a sequence's frames keep their own numbers); results written before that (no
``meta["frame_numbers"]``) stored the 0-based video frame, and ``frame_start`` is added here. The
scene runs at the footage's exact rate (``meta["video"]["rate"]``, :mod:`da3_blender.inputs.rates`) over the
whole clip, and the clip (a movie, or an image sequence Blender reads itself) starts at the scene
frame of its first frame, so the background shows the frame the camera was solved from.
The background is a viewport overlay (``show_background_images``); renders do not include it.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from ..da3_blender.inputs import rates
from ..da3_blender.errors import BadInputError
from ..da3_blender.options import MAX_SCENE_FRAME as MAX_FRAME  # Blender's last frame
from ..da3_blender.prediction import scene_frame_numbers


def video_info(pred) -> dict | None:
    """``meta["video"]`` when every view has a source frame number, else None (an image set)."""
    video = (pred.meta or {}).get("video")
    frames = pred.frame_numbers
    if not isinstance(video, dict) or frames is None or len(frames) == 0 or np.any(np.asarray(frames) < 0):
        return None
    return video


def scene_frames(pred, frame_start: int = 1) -> np.ndarray:
    """The scene frame of each view (``frame_start``: for results before issue 17 only); a one-line
    ``BadInputError`` (the importer checks it before building) outside Blender's frames."""
    frames = scene_frame_numbers(pred, frame_start)
    if frames.max() > MAX_FRAME or frames.min() < 0:
        raise BadInputError(f"frames {int(frames.min())}..{int(frames.max())} are outside Blender's frames "
                            f"0..{MAX_FRAME}: import with another start frame, or a shorter part of the shot")
    return frames


def clip_start(video: dict, frame_start: int = 1) -> int:
    """The scene frame of the footage's first frame (its clip's ``frame_start``)."""
    frame_range = video.get("frame_range")
    return int(frame_range[0]) if frame_range else int(frame_start)


def set_render_size(scene, video: dict) -> None:
    """Render resolution = the footage's frame size (pixel aspect stays the camera's)."""
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width > 0 and height > 0:
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100


def set_scene_timing(scene, video: dict, frames: np.ndarray, frame_start: int) -> None:
    """Scene rate (exact: ``fps / fps_base`` = the footage's rational rate) and frame range: the whole
    clip (``frame_range``; results before issue 17: ``frame_start`` to ``frame_start + frame_count - 1``),
    at least every keyed frame."""
    rate, fps = video.get("rate"), video.get("fps")
    if rate or fps:  # results before issue 17 have only the float rate: snapped to its exact rational
        scene.render.fps, scene.render.fps_base = rates.to_blender(rate or rates.snap_rate(float(fps)))
    frame_range = video.get("frame_range")
    if frame_range:
        start, end = int(frame_range[0]), int(frame_range[1])
    else:
        start, end = frame_start, frame_start + int(video.get("frame_count") or 0) - 1
    start, end = min(start, int(frames.min())), max(end, int(frames.max()))
    scene.frame_start, scene.frame_end = max(0, start), min(end, MAX_FRAME)


def load_clip(path: str, track):
    """The video as a movie clip, or None when the file is missing or unreadable."""
    if not path or not os.path.isfile(path):
        return None
    try:
        return track(bpy.data.movieclips.load(path, check_existing=False))
    except RuntimeError:
        return None


def set_background(cam_obj, clip, frame_start: int) -> None:
    """Show ``clip`` behind ``cam_obj``'s view, frame-aligned with the camera keys."""
    clip.frame_start = frame_start
    cam = cam_obj.data
    bg = cam.background_images.new()
    bg.source = "MOVIE_CLIP"
    bg.clip = clip
    bg.frame_method = "FIT"
    bg.alpha = 1.0
    cam.show_background_images = True
