"""An official ``POST /inference`` body -> our job description, checked before any work.

Official fields (``depth_anything_3.services.backend.InferenceRequest``): ``image_paths``,
``export_dir``, ``export_format`` (default ``mini_npz-glb``), ``extrinsics``, ``intrinsics``,
``process_res``, ``process_res_method``, ``export_feat_layers`` (only ``[]``: feature export is not
supported), ``align_to_input_ext_scale``, ``use_ray_pose``, ``ref_view_strategy``,
``conf_thresh_percentile``, ``num_max_points``, ``show_cameras``, ``feat_vis_fps`` (ignored).
Ours on top: the other inference options of :data:`da3_blender.job.OPTION_TYPES` (``chunk_size``,
``exif_transpose``, ...), ``video`` {fps, start, end, max_frames} for a request whose one path
is a video or an image sequence, and ``shot`` {mode, frame_start, frame_rate, colorspace} (as in
:mod:`da3_blender.job`; official DA3's server ignores both). Every path must lie under the server's
allowed roots; at most ``max_images`` images (a video or a sequence is sampled to at most that many
frames).

Every path is a still unless the request asks for a shot (``shot.mode`` ``auto`` or ``sequence``):
then one numbered file, a folder of one sequence or a pattern (``plate.####.exr``) is expanded here,
on the server, and every one of its frames must lie under the allowed roots.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import BadInputError
from ..job import OPTION_TYPES, build_job, check_shot
from .security import Roots

OFFICIAL_DEFAULT_FORMAT = "mini_npz-glb"
IGNORED = ("feat_vis_fps",)
DEFAULT_MAX_IMAGES = 500
OPTION_FIELDS = tuple(OPTION_TYPES)
FIELDS = ("image_paths", "export_dir", "export_format", "export_feat_layers", "video", "shot", *IGNORED,
          *OPTION_FIELDS)


def job_from_request(body: Any, roots: Roots, model: str, device: str, default_export_dir: str,
                     max_images: int = DEFAULT_MAX_IMAGES) -> dict[str, Any]:
    """The worker job for a request body (``output`` left for the task queue to fill)."""
    from ..inputs.paths import is_video_path

    if not isinstance(body, dict):
        raise BadInputError("the body must be a JSON object with at least 'image_paths'")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadInputError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    paths = body.get("image_paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise BadInputError("'image_paths' must be a non-empty list of image paths (or one video path)")
    if len(paths) > max_images:
        raise BadInputError(f"{len(paths)} images is over this server's limit of {max_images} (--max-images)")
    shot = request_shot(body.get("shot"))
    inputs = [roots.resolve(p, "image path") for p in paths]
    sequence = len(inputs) == 1 and shot["mode"] != "stills" and _sequence(paths[0], inputs[0], shot, roots)
    if not sequence:
        _check_files(paths, inputs)
    if body.get("export_feat_layers"):
        raise BadInputError("export_feat_layers: feature export is not supported by this backend; send []")
    export_dir = roots.resolve(body.get("export_dir") or default_export_dir, "export_dir")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise BadInputError(f"export_dir {export_dir} is a file: choose a folder")
    options = {k: body[k] for k in OPTION_FIELDS if body.get(k) is not None}
    video = body.get("video") or {}
    if not isinstance(video, dict):
        raise BadInputError("'video' must be an object with some of fps, start, end, max_frames")
    if sequence or is_video_path(inputs[0]):
        video = {**video, "max_frames": min(video.get("max_frames") or max_images, max_images)}
    elif video:
        raise BadInputError("'video' applies only to a request whose one path is a video or an image sequence")
    return build_job(inputs, None, model=model, device=device, video=video, options=options, shot=shot,
                     export_dir=export_dir, export_format=body.get("export_format") or OFFICIAL_DEFAULT_FORMAT)


def request_shot(shot: Any) -> dict[str, Any]:
    """The request's ``shot``, checked; its mode is ``stills`` unless the request names another."""
    if shot is None:
        shot = {}
    if not isinstance(shot, dict):
        raise BadInputError("'shot' must be an object with some of mode, frame_start, frame_rate, colorspace")
    return check_shot({**shot, "mode": shot.get("mode") or "stills"})


def _sequence(given: str, real: str, shot: dict[str, Any], roots: Roots) -> bool:
    """True when the one path of a request that asks for a shot is an image sequence, every frame of
    which lies under the allowed roots (a frame linked from elsewhere is refused)."""
    from ..inputs.sequences import find_sequence

    seq = find_sequence(real, forced=shot["mode"] == "sequence")
    if seq is None:
        return False
    for frame in seq.paths:
        roots.resolve(frame, f"frame {os.path.basename(frame)} of {given}")
    return True


def _check_files(given_paths: list[str], inputs: list[str]) -> None:
    from ..inputs.paths import is_image_path, is_video_path

    for given, real in zip(given_paths, inputs):
        if not os.path.isfile(real):
            raise BadInputError(f"image path {given} is not a file" + (" (a pattern needs \"shot\": {\"mode\": "
                                                                       "\"sequence\"})" if "#" in given else ""))
        video = is_video_path(real)
        if not (is_image_path(real) or video) or (video and len(inputs) > 1):
            raise BadInputError(f"image path {given} is not an image file (a video must be the only path)")
