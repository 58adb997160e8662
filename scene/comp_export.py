"""Nuke (``.nk``, ``.chan``) camera files from the scene's DA3 camera, for :mod:`.exchange`.

The scene's camera is read frame by frame (``matrix_world``, lens, shifts, sensor and the render size
and pixel aspect) and written by the core's Nuke writer (:mod:`da3_blender.exports.nuke`), so a script
from the scene and one from ``--export-format nuke`` follow the same conventions: world Y up (Blender's
``(X, Y, Z)`` is ``(X, Z, -Y)``), rotation order ZXY, 36 mm horizontal aperture, the principal point
in ``win_translate``. The camera's background movie clip (the footage) becomes the script's plate Read.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction

import bpy
import numpy as np

from ..da3_blender.errors import BadInputError
from ..da3_blender.exports.nuke import write_nuke
from ..da3_blender.exports.shot_camera import ShotCamera
from .conventions import blender_to_intrinsics

Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # (X, Y, Z) -> (X, Z, -Y)


def _plate(cam_obj) -> dict:
    """The footage of the camera's background clip: a movie, or an image sequence as a #### pattern."""
    for bg in getattr(cam_obj.data, "background_images", []):
        clip = getattr(bg, "clip", None)
        if clip is None or not clip.filepath:
            continue
        path = bpy.path.abspath(clip.filepath)
        first, count = int(clip.frame_start), int(clip.frame_duration)
        if clip.source == "SEQUENCE":
            folder, name = os.path.split(path)
            m = re.match(r"^(.*?)(\d+)(\.[^.]+)$", name)
            if m:
                number = int(m.group(2))
                path = os.path.join(folder, m.group(1) + "#" * len(m.group(2)) + m.group(3))
                return {"path": path, "first": number, "last": number + count - 1, "movie": False}
        return {"path": path, "first": first, "last": first + count - 1, "movie": clip.source == "MOVIE"}
    return {}


def scene_shot_camera(cams: list, scene, start: int, end: int) -> ShotCamera:
    """One camera on scene frames ``start..end``, or still cameras (an image set) one per frame from 1
    (as the ``nuke`` export keys them); the current frame is restored."""
    render = scene.render
    width = int(render.resolution_x * render.resolution_percentage / 100)
    height = int(render.resolution_y * render.resolution_percentage / 100)
    stills = len(cams) > 1
    frames = np.arange(1, len(cams) + 1) if stills else np.arange(int(start), int(end) + 1)
    c2w = np.tile(np.eye(4), (len(frames), 1, 1))
    k = np.zeros((len(frames), 3, 3))
    current = scene.frame_current
    try:
        for i, frame in enumerate(frames):
            cam_obj = cams[i] if stills else cams[0]
            if not stills:
                scene.frame_set(int(frame))
            m = np.array(cam_obj.matrix_world, dtype=np.float64)
            rot = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0, keepdims=True)  # a scaled camera: rotation only
            c2w[i, :3, :3] = Z_UP_TO_Y_UP @ rot
            c2w[i, :3, 3] = Z_UP_TO_Y_UP @ m[:3, 3]
            cam = cam_obj.data
            k[i] = blender_to_intrinsics(cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit, cam.shift_x,
                                         cam.shift_y, width, height, render.pixel_aspect_x, render.pixel_aspect_y)
    finally:
        scene.frame_set(current)
    cam_obj = cams[0]
    rate = (Fraction(render.fps) / Fraction(render.fps_base).limit_denominator(100000)).limit_denominator(1001)
    return ShotCamera(frames=frames, c2w=c2w, k=k, width=width, height=height,
                      rate=(rate.numerator, rate.denominator), near=float(cam_obj.data.clip_start),
                      far=float(cam_obj.data.clip_end), plate=_plate(cam_obj))


def write_nuke_file(path: str, cams: list, scene, start: int, end: int) -> str:
    """``path`` (.nk: a script with the camera and the plate; .chan: the camera's channels). Still cameras
    (an image set) become one camera keyed on frames 1..N, one view per frame, in name order."""
    animated = [o.name for o in cams if o.animation_data is not None and o.animation_data.action is not None]
    if len(cams) > 1 and animated:
        raise BadInputError(f"camera export: a {os.path.splitext(path)[1]} file holds one camera and the animated "
                            f"{animated[0]} is one of {len(cams)}; pass one camera, or export to .abc")
    cam = scene_shot_camera(cams, scene, start, end)
    folder, name = os.path.split(path)
    if path.lower().endswith(".nk"):
        return write_nuke(cam, folder, None, nk_name=name, chan_name=None)[0]
    return write_nuke(cam, folder, None, nk_name=None, chan_name=name)[0]
