"""A camera solve in the scene (``pred.meta["solve"]``, ``pred.tracks``; see da3_blender/solve).

* every camera gets the custom property ``da3_solve_error`` (RMS px of its view; -1 for a view with no
  tracks, where nothing was measured: ``per_view_rms_px`` holds None there), keyed per frame (constant)
  on an animated camera so the Graph Editor shows the bad frames; the collection holds the shot's
  ``da3_solve_rms_px`` and ``da3_solve_rms_px_before``;
* the tracks become tracking markers of a MovieClip of the footage (the video, or the numbered image
  sequence), the longest :data:`MAX_TRACKS` of them, so the Clip Editor shows them and Blender's own
  solver can continue from them;
* an estimated distortion goes to that clip's tracking camera (polynomial k1, k2, focal length and
  principal point in pixels), with compositor node groups "Undistort" and "Redistort" (Movie
  Distortion nodes on the clip) for the plate; with Blender 5's per-scene compositor group the
  Undistort group becomes the scene's compositor when it has none.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from ..da3_blender.prediction import video_frame_indices
from .compat import action_fcurves

MAX_TRACKS = 400  # markers are bpy data: the longest tracks only
NO_TRACKS = -1.0  # da3_solve_error of a view with no tracks (no error is negative; 0.0 would read as perfect)


def summary_line(pred) -> str | None:
    """"solve error 12.3 -> 0.42 px (6885 tracks)" or the reason the cameras were kept; None without a solve."""
    s = (pred.meta or {}).get("solve")
    if not s:
        return None
    if s.get("failed"):  # the solve failed after the network: the DA3 cameras were kept (inference.refine_or_keep)
        return f"camera solve failed, DA3 cameras kept: {s.get('reason')}"
    motion = ", nodal (tripod)" if s.get("motion") == "nodal" else ""
    text = f"solve error {s['rms_px_before']:.2f} -> {s['rms_px']:.2f} px ({s['tracks']} tracks, lens {s['lens']}{motion})"
    kept = s.get("kept_input_camera") or []
    if kept and not s.get("reason"):
        text += f"; {len(kept)} view(s) kept their input camera (the solve raised their error): {kept[:8]}"
    return text + (f"; {s['reason']}" if s.get("reason") else "")


def build(pred, root, cams, names, frames, track, clip_first=None) -> None:
    """Solve properties on ``root`` and ``cams``, the clip with markers and the distortion set-up.

    ``frames``: the scene frame of each view of a video (None: one still camera per view);
    ``clip_first``: the scene frame of the video's first frame (its clip starts there).
    """
    s = (pred.meta or {}).get("solve")
    if not s:
        return
    if s.get("failed"):
        root["da3_solve_summary"] = summary_line(pred)
        return
    root["da3_solve_rms_px"], root["da3_solve_rms_px_before"] = float(s["rms_px"]), float(s["rms_px_before"])
    root["da3_solve_summary"] = summary_line(pred)
    per_view = [NO_TRACKS if v is None else float(v) for v in s["per_view_rms_px"]]
    if frames is not None and cams:
        cam = cams[0]
        for i in np.argsort(frames):
            _set_error(cam, per_view[i])
            cam.keyframe_insert('["da3_solve_error"]', frame=float(frames[i]))
        _constant_keys(cam)
    else:
        for cam, value in zip(cams, per_view):
            _set_error(cam, value)
    clip = _clip(pred, track)
    if clip is None:
        return
    root["da3_solve_clip"] = clip.name
    clip.tracking.settings.use_tripod_solver = s.get("motion") == "nodal"  # Blender's solver continues as a pan
    if frames is not None and clip_first is not None:  # a video or sequence: on the scene frames the camera keys use
        clip.frame_start = int(clip_first)
        decoded = video_frame_indices(pred)  # a video: its clip's frame k + 1 is the decoded frame k
        clip_of_view = decoded + 1 if decoded is not None else np.asarray(frames, dtype=np.int64) - int(clip_first) + 1
    else:
        clip_of_view = clip_frames(pred)
    if pred.tracks is not None:
        add_markers(clip, pred, clip_of_view)
    if s.get("distortion"):
        set_lens(clip, pred, s["distortion"])
        distortion_groups(clip, track)


def _set_error(cam, value: float) -> None:
    cam["da3_solve_error"] = value
    cam.id_properties_ui("da3_solve_error").update(
        description="RMS reprojection error of this view's tracked features in source pixels (camera solve); "
                    "-1: no tracks on this frame, nothing measured", min=NO_TRACKS)


def _constant_keys(cam) -> None:
    """Each view's error holds until the next view's (no blend into a -1 "no tracks" key)."""
    action = cam.animation_data.action if cam.animation_data else None
    for fc in action_fcurves(action, cam) if action is not None else []:
        if fc.data_path == '["da3_solve_error"]':
            for key in fc.keyframe_points:
                key.interpolation = "CONSTANT"


def _clip(pred, track):
    """The footage as a movie clip: the video, or the image sequence starting at the first view's file."""
    paths = [p for p in pred.source_paths if p]
    if not paths or not os.path.isfile(paths[0]):
        return None
    try:
        clip = track(bpy.data.movieclips.load(paths[0], check_existing=False))
    except RuntimeError:
        return None
    clip.name = f"DA3 {os.path.splitext(os.path.basename(paths[0]))[0]} tracks"
    return clip


def clip_frames(pred) -> np.ndarray:
    """The clip frame (1-based) of each view of an image sequence: its frame number counted from the
    first view's (the clip starts at the first view's file); views in order without numbers."""
    numbers = np.asarray(pred.frame_numbers, dtype=np.int64)
    if np.any(numbers < 0):
        return np.arange(1, pred.num_views + 1)
    return numbers - int(numbers[0]) + 1


def add_markers(clip, pred, frames) -> int:
    """The longest tracks as clip tracks: a marker on each observed frame (``frames``: each view's
    clip frame), disabled after the last."""
    tr = pred.tracks
    width, height = (int(v) for v in clip.size) if clip.size[0] else pred.orig_size[0]
    lengths = np.bincount(tr.obs_track, minlength=len(tr))
    chosen = np.argsort(-lengths, kind="stable")[:MAX_TRACKS]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for t in chosen:
        sel = np.arange(starts[t], starts[t + 1])
        order = sel[np.argsort(frames[tr.obs_view[sel]])]
        f = frames[tr.obs_view[order]]
        xy = tr.obs_xy[order]
        mt = clip.tracking.tracks.new(name=f"da3_{int(t)}", frame=int(f[0]))
        for frame, (x, y) in zip(f.tolist(), xy.tolist()):
            marker = mt.markers.find_frame(frame) or mt.markers.insert_frame(frame)
            marker.co = (x / width, 1.0 - y / height)  # normalised, origin bottom-left
        end = mt.markers.insert_frame(int(f[-1]) + 1)
        end.mute = True
    return len(chosen)


def set_lens(clip, pred, distortion: dict) -> None:
    cam = clip.tracking.camera
    k_orig = pred.original_intrinsics()
    fx = float(np.median(k_orig[:, 0, 0]))
    cam.sensor_width = 36.0
    cam.units = "PIXELS"
    cam.focal_length_pixels = fx
    cam.principal_point_pixels = (float(np.median(k_orig[:, 0, 2])), float(clip.size[1] - np.median(k_orig[:, 1, 2])))
    cam.distortion_model = "POLYNOMIAL"
    cam.k1, cam.k2, cam.k3 = float(distortion["k1"]), float(distortion["k2"]), 0.0


def distortion_groups(clip, track) -> list:
    """Compositor node groups that undistort the clip and redistort a render, with the clip's lens."""
    groups = []
    for mode in ("UNDISTORT", "DISTORT"):
        tree = track(bpy.data.node_groups.new(f"{clip.name} {mode.title()}", "CompositorNodeTree"))
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        out = tree.nodes.new("NodeGroupOutput")
        node = tree.nodes.new("CompositorNodeMovieDistortion")
        node.clip = clip
        _set_distortion_type(node, mode)
        if mode == "UNDISTORT":
            src = tree.nodes.new("CompositorNodeMovieClip")
            src.clip = clip
            tree.links.new(src.outputs["Image"], node.inputs["Image"])
        else:
            tree.interface.new_socket("Image", in_out="INPUT", socket_type="NodeSocketColor")
            inp = tree.nodes.new("NodeGroupInput")
            tree.links.new(inp.outputs[0], node.inputs["Image"])
        tree.links.new(node.outputs["Image"], out.inputs[0])
        groups.append(tree)
    scene = bpy.context.scene
    if hasattr(scene, "compositing_node_group") and scene.compositing_node_group is None:
        scene.compositing_node_group = groups[0]
    return groups


def _set_distortion_type(node, mode: str) -> None:
    if hasattr(node, "distortion_type"):
        node.distortion_type = mode
        return
    for sock in node.inputs:  # Blender 5: a menu socket
        if sock.name.lower() in ("type", "distortion type") and hasattr(sock, "default_value"):
            try:
                sock.default_value = mode.title()
            except (TypeError, ValueError):
                pass
