"""The source footage in the scene: frame rate, frame range and the video behind the camera.

Video frame ``k`` (0-based source frame number) is scene frame ``frame_start + k``; the movie
clip starts at ``frame_start`` so the background shows the frame the camera was solved from.
The background is a viewport overlay (``show_background_images``); renders do not include it.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from ..da3_blender.errors import BadInputError
from .conventions import fps_to_blender

MAX_FRAME = 1_048_574  # Blender's last frame


def video_info(pred) -> dict | None:
    """``meta["video"]`` when every view has a source frame number, else None (an image set)."""
    video = (pred.meta or {}).get("video")
    frames = pred.frame_numbers
    if not isinstance(video, dict) or frames is None or len(frames) == 0 or np.any(np.asarray(frames) < 0):
        return None
    return video


def scene_frames(frame_numbers, frame_start: int) -> np.ndarray:
    """Scene frame of each source frame number; a one-line ``BadInputError`` past Blender's last frame."""
    numbers = np.asarray(frame_numbers, dtype=np.int64)
    if numbers.size and (int(numbers.max()) > MAX_FRAME - frame_start or int(numbers.min()) < -MAX_FRAME):
        raise BadInputError(f"source frame {int(numbers.max())} at start frame {frame_start} is past Blender's last "
                            f"frame {MAX_FRAME}: import with an earlier start frame, or a shorter part of the video")
    return frame_start + numbers


def set_render_size(scene, video: dict) -> None:
    """Render resolution = the footage's frame size (pixel aspect stays the camera's)."""
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width > 0 and height > 0:
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100


def set_scene_timing(scene, video: dict, frames: np.ndarray, frame_start: int) -> None:
    """Scene fps (NTSC-aware) and frame range: ``frame_start`` to the video's last decoded frame
    (``frame_count - 1``, as the decoder numbered them; at least the last keyed frame)."""
    fps = video.get("fps")
    if fps:
        scene.render.fps, scene.render.fps_base = fps_to_blender(float(fps))
    count = int(video.get("frame_count") or 0)
    end = max(int(frames.max()), frame_start + count - 1)
    scene.frame_start, scene.frame_end = frame_start, min(end, MAX_FRAME)


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
