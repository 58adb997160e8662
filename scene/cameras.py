"""Blender cameras that line up with the footage, and the way back (Blender camera -> OpenCV).

Image sets get one camera per view, named after the image; a video gets one camera animated on
the views' scene frames (the result's frame numbers), keyed in bulk: location,
rotation (quaternion, sign-continuous), and lens/shifts only where they vary (or their median with
fixed intrinsics). Intrinsics follow :mod:`.conventions` with the original image's K and size; each
camera object stores ``da3_width``, ``da3_height``, ``da3_pixel_aspect`` so
:func:`apply_camera_render_settings` can set the (global) render resolution for it.
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from mathutils import Matrix

from . import compat
from .conventions import SENSOR_WIDTH, blender_to_intrinsics, matrix_to_w2c, rotations_to_quaternions, up_matrix


def view_names(source_paths, n: int) -> list[str]:
    """Camera names: the image file name without extension, else ``view_000``...; made unique."""
    names, seen = [], set()
    for i in range(n):
        path = source_paths[i] if source_paths and i < len(source_paths) else ""
        name = os.path.splitext(os.path.basename(path))[0] if path else f"view_{i:03d}"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


def _new_camera(name: str, track, width: int, height: int, aspect: tuple[float, float], display_size: float):
    data = track(bpy.data.cameras.new(name))
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = SENSOR_WIDTH
    data.clip_start, data.clip_end = 0.01, 1000.0
    data.display_size = display_size
    obj = track(bpy.data.objects.new(name, data))
    obj["da3_width"], obj["da3_height"] = int(width), int(height)
    obj["da3_pixel_aspect"] = [float(aspect[0]), float(aspect[1])]
    return obj


def still_cameras(names, matrices, params, sizes, track, display_size=0.2) -> list:
    """One camera per view. ``params``: arrays from ``conventions.intrinsics_to_blender``."""
    objs = []
    for i, name in enumerate(names):
        obj = _new_camera(name, track, sizes[i][0], sizes[i][1],
                          (params["pixel_aspect_x"][i], params["pixel_aspect_y"][i]), display_size)
        obj.data.lens = float(params["lens"][i])
        obj.data.shift_x = float(params["shift_x"][i])
        obj.data.shift_y = float(params["shift_y"][i])
        obj.matrix_world = Matrix(matrices[i].tolist())
        objs.append(obj)
    return objs


def animated_camera(name, matrices, params, frames, size, track, *, fixed_intrinsics=False, tolerance=1e-4,
                    interpolation="LINEAR", display_size=0.2):
    """One camera keyed at ``frames``. Pixel aspect (scene-wide in Blender) uses the median fx/fy;
    lens and shifts are keyed only if they vary more than ``tolerance`` (relative for lens)."""
    ratio = float(np.median(params["ratio"]))
    aspect = (1.0, ratio) if ratio >= 1 else (1.0 / ratio, 1.0)
    obj = _new_camera(name, track, size[0], size[1], aspect, display_size)
    obj.rotation_mode = "QUATERNION"
    frames = np.asarray(frames, dtype=np.float64)

    obj_action = track(bpy.data.actions.new(f"{name} Action"))
    compat.assign_action(obj, obj_action)
    quats = rotations_to_quaternions(matrices[:, :3, :3])
    for idx in range(3):
        compat.set_keyframes(compat.fcurve(obj_action, obj, "location", idx), frames, matrices[:, idx, 3], interpolation)
    for idx in range(4):
        compat.set_keyframes(compat.fcurve(obj_action, obj, "rotation_quaternion", idx), frames, quats[:, idx], interpolation)
    obj.location = matrices[0, :3, 3]
    obj.rotation_quaternion = quats[0]

    lens = np.asarray(params["lens"], dtype=np.float64)
    values = {"lens": lens, "shift_x": np.asarray(params["shift_x"]), "shift_y": np.asarray(params["shift_y"])}
    tol = {"lens": tolerance * float(np.median(lens)), "shift_x": tolerance, "shift_y": tolerance}
    keyed = [k for k, v in values.items() if not fixed_intrinsics and np.ptp(v) > tol[k]]
    for key, v in values.items():
        setattr(obj.data, key, float(v[0] if key in keyed else np.median(v)))
    if keyed:
        data_action = track(bpy.data.actions.new(f"{name} Lens"))
        compat.assign_action(obj.data, data_action)
        for key in keyed:
            compat.set_keyframes(compat.fcurve(data_action, obj.data, key, 0), frames, values[key], interpolation)
    return obj


def apply_camera_render_settings(cam_obj, scene) -> None:
    """Make ``cam_obj`` the scene camera and set resolution/pixel aspect from its stored props."""
    scene.camera = cam_obj
    if "da3_width" in cam_obj:
        render = scene.render
        render.resolution_x, render.resolution_y = int(cam_obj["da3_width"]), int(cam_obj["da3_height"])
        render.resolution_percentage = 100
        render.pixel_aspect_x, render.pixel_aspect_y = (float(a) for a in cam_obj["da3_pixel_aspect"])


def blender_camera_to_opencv(cam_obj, scene, up=None, scale: float = 1.0):
    """A scene camera (at the current frame) -> (w2c 4x4, K 3x3 in render pixels, (W, H)).

    ``up`` is the up-axis matrix C (or its option name, default ``Z_UP``) and ``scale`` the scale
    the scene was imported with; the returned w2c is in that DA3 frame (the reference camera's),
    in OpenCV axes: the inverse of the import mapping.
    """
    c = up_matrix(up or "Z_UP") if up is None or isinstance(up, str) else np.asarray(up, dtype=np.float64)
    render = scene.render
    width = int(render.resolution_x * render.resolution_percentage / 100)
    height = int(render.resolution_y * render.resolution_percentage / 100)
    cam = cam_obj.data
    k = blender_to_intrinsics(cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit, cam.shift_x,
                              cam.shift_y, width, height, render.pixel_aspect_x, render.pixel_aspect_y)
    w2c = matrix_to_w2c(np.array(cam_obj.matrix_world), c, float(scale))
    return w2c, k, (width, height)
