"""Known camera poses from Blender cameras (a tracking solve): the job's ``extrinsics`` and ``intrinsics``.

Matching (the panel's selected cameras, or headless ``--known-cameras TRACK.blend``):

* one camera per view, in natural name order (Cam2 before Cam10), each at the current frame; or
* one animated camera for a shot: each view takes the camera on the scene frame of its source frame
  number (``plate.1001.png`` -> frame 1001).

The poses are the cameras' own world (converted to OpenCV with the import's up axis and scale); the
worker aligns the result to them (``align_to_input_ext_scale``) and the importer builds it in that
same world (``scene.importer.in_input_world``), so a tracked camera comes back where it was.
K is the camera's at the render resolution, scaled to the image's pixels; a render whose aspect
differs from the image's is refused (scaling it would squeeze the lens into fx != fy).
"""

from __future__ import annotations

import os

from ..da3_blender.errors import BadInputError
from ..da3_blender.inputs.paths import frame_number_from_name, natural_key
from .validate import image_size


def is_animated(ob) -> bool:
    """Whether ``ob`` (or a parent) moves over time: keyed, driven or constrained."""
    while ob is not None:
        anim = ob.animation_data
        if anim is not None and (anim.action is not None or len(anim.drivers) or len(anim.nla_tracks)):
            return True
        if len(ob.constraints):
            return True
        ob = ob.parent
    return False


def match_views(cams: list, images: list[str]) -> list[tuple[object, int | None]]:
    """``(camera, scene frame or None)`` per view: one camera per view (None: the current frame), or
    one animated camera on each view's frame number. One-line error when the counts do not fit."""
    cams = sorted(cams, key=lambda ob: natural_key(ob.name))
    if not images:
        raise BadInputError("known camera poses work with images, a folder or an image sequence, not a video: "
                            "turn off 'Use selected cameras' or use extracted frames")
    frames = [frame_number_from_name(p) for p in images]
    numbered = all(f >= 0 for f in frames) and len(set(frames)) == len(frames)
    if len(cams) == 1 and len(images) > 1 and is_animated(cams[0]):
        if not numbered:
            raise BadInputError(f"one animated camera ({cams[0].name}) for {len(images)} images without distinct frame "
                                "numbers in their names: number the images (plate.1001.png ...) to match the camera's "
                                "frames, or give one camera per image")
        return [(cams[0], f) for f in frames]
    if len(cams) != len(images):
        raise BadInputError(f"{len(cams)} camera(s) selected for {len(images)} image(s): select exactly one camera per "
                            "image (matched in natural name order) or one animated camera keyed on the images' frame "
                            "numbers, or turn off 'Use selected cameras' (headless: the cameras of --known-cameras)")
    return [(cam, None) for cam in cams]


def check_aspect(cam_name: str, render: tuple[int, int], path: str, image: tuple[int, int]) -> None:
    """Refuse a render size of another aspect than the image (within a pixel of rounding)."""
    (w, h), (iw, ih) = render, image
    if abs(ih - iw * h / w) > 1.0 + 1e-6 and abs(iw - ih * w / h) > 1.0 + 1e-6:
        raise BadInputError(f"camera {cam_name} renders at {w}x{h} but {os.path.basename(path)} is {iw}x{ih}, "
                            "another aspect ratio: set the render resolution (Output properties) to the image's "
                            "size, or leave this camera out")


def known_poses(context, images: list[str], up="Z_UP", scale: float = 1.0) -> tuple[list, list]:
    """World-to-camera (N,4,4) and K (N,3,3, image pixels) of the selected cameras."""
    from ..scene.cameras import blender_camera_to_opencv

    scene = context.scene
    pairs = match_views([ob for ob in context.selected_objects if ob.type == "CAMERA"], images)
    extrinsics, intrinsics = [], []
    current = (scene.frame_current, scene.frame_subframe)
    try:
        for (cam, frame), path in zip(pairs, images):
            if frame is not None:
                scene.frame_set(frame)
            w2c, k, (w, h) = blender_camera_to_opencv(cam, scene, up=up, scale=scale)
            iw, ih = image_size(path)
            check_aspect(cam.name, (w, h), path, (iw, ih))
            sx, sy = iw / w, ih / h  # the same aspect: a uniform scale up to a pixel of rounding
            k = [[k[0][0] * sx, k[0][1] * sx, k[0][2] * sx], [k[1][0] * sy, k[1][1] * sy, k[1][2] * sy],
                 [0.0, 0.0, 1.0]]
            extrinsics.append([[float(v) for v in row] for row in w2c])
            intrinsics.append([[float(v) for v in row] for row in k])
    finally:
        if scene.frame_current != current[0] or any(f is not None for _c, f in pairs):
            scene.frame_set(current[0], subframe=current[1])
    return extrinsics, intrinsics
