"""A camera solve in Blender and in the COLMAP export: solve error per camera (keyed), tracks as
MovieClip markers, the lens distortion on the clip's tracking camera with the compositor groups, and
COLMAP tracks with all their observations. Ten barrel-distorted frames of the ground-truth shot."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solve_helpers as H  # noqa: E402

from da3_blender import solve  # noqa: E402
from da3_blender.exports.colmap import export_colmap, qvec_to_rotmat, read_colmap_text  # noqa: E402
from da3_blender.prediction import load_result, save_result  # noqa: E402

VIEWS = 10


@pytest.fixture(scope="module")
def solved(shot, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("radial")
    paths = []
    for i, frame in enumerate(H.radial_frames(shot["folder"], {**shot, "intrinsics": shot["intrinsics"][:VIEWS]}, -0.05)):
        paths.append(str(folder / f"frame_{i:04d}.png"))
        Image.fromarray(frame).save(paths[-1])
    e, k = H.perturb(shot["extrinsics"][:VIEWS], shot["intrinsics"][:VIEWS], seed=5)
    pred = H.prediction(e, k, shot["size"], paths=paths)
    pred.frame_numbers = np.arange(VIEWS)
    out = solve.refine(pred, paths, lens="radial")
    assert out.meta["solve"]["reason"] is None and out.tracks is not None
    return out


def test_result_file_keeps_tracks(solved, tmp_path):
    back = load_result(save_result(tmp_path / "r.npz", solved))
    np.testing.assert_allclose(back.tracks.xyz, solved.tracks.xyz)
    np.testing.assert_array_equal(back.tracks.obs_view, solved.tracks.obs_view)
    assert back.meta["solve"]["rms_px"] == pytest.approx(solved.meta["solve"]["rms_px"])


def test_colmap_export_writes_tracks_with_every_observation(solved, tmp_path):
    export_colmap(solved, str(tmp_path))
    cameras, images, points = read_colmap_text(tmp_path / "colmap" / "sparse" / "0")
    assert len(points) == len(solved.tracks) and len(images) == VIEWS
    lengths = np.array([len(p.image_ids) for p in points.values()])
    assert lengths.min() >= 2 and lengths.mean() > 2.5
    cam = cameras[1]
    assert cam.model == "RADIAL" and cam.params[3] == pytest.approx(solved.meta["solve"]["distortion"]["k1"])
    errors = []  # every observation reprojects through its image's pose and the RADIAL camera
    for p in list(points.values())[:300]:
        for image_id, idx in zip(p.image_ids, p.point2D_idxs):
            img = images[image_id]
            f, cx, cy, k1, k2 = cameras[img.camera_id].params
            x = qvec_to_rotmat(img.qvec) @ p.xyz + img.tvec
            u = x[:2] / x[2]
            r2 = u @ u
            uv = u * (1 + k1 * r2 + k2 * r2 * r2) * f + [cx, cy]
            assert img.point3D_ids[idx] == p.id
            errors.append(np.linalg.norm(uv - img.xys[idx]))
    assert np.sqrt(np.mean(np.square(errors))) < 1.0


def test_blender_scene_shows_the_solve(solved, extension):
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer = importlib.import_module(f"{extension.__name__}.scene.importer")
    root = importer.import_prediction(solved, "solved")
    s = solved.meta["solve"]
    assert root["da3_solve_rms_px"] == pytest.approx(s["rms_px"])
    assert "->" in root["da3_solve_summary"]
    cams = [ob for ob in bpy.data.objects if ob.type == "CAMERA"]
    assert len(cams) == VIEWS
    errors = sorted(float(c["da3_solve_error"]) for c in cams)
    np.testing.assert_allclose(errors, sorted(s["per_view_rms_px"]), rtol=1e-6)
    clip = bpy.data.movieclips[root["da3_solve_clip"]]
    tracks = clip.tracking.tracks
    assert len(tracks) == min(len(solved.tracks), 400)
    # a marker sits where the feature was seen (normalised, origin bottom-left)
    t = int(tracks[0].name.split("_")[1])
    ids, xy = solved.tracks.obs_track, solved.tracks.obs_xy
    first = np.nonzero(ids == t)[0][0]
    frame = int(solved.tracks.obs_view[first]) + 1
    marker = tracks[0].markers.find_frame(frame)
    np.testing.assert_allclose(marker.co, [xy[first, 0] / 960, 1 - xy[first, 1] / 540], atol=1e-5)
    cam = clip.tracking.camera
    assert cam.distortion_model == "POLYNOMIAL" and cam.k1 == pytest.approx(s["distortion"]["k1"], abs=1e-6)
    assert cam.focal_length_pixels == pytest.approx(s["focal_px"][0], rel=1e-4)
    groups = [g for g in bpy.data.node_groups if g.name.startswith(clip.name)]
    assert {g.name.rsplit(" ", 1)[1] for g in groups} == {"Undistort", "Distort"}
    node = next(n for n in groups[0].nodes if n.bl_idname == "CompositorNodeMovieDistortion")
    assert node.clip == clip
    assert not clip.tracking.settings.use_tripod_solver  # a free solve


def test_video_camera_keys_its_solve_error_per_frame(solved, extension):
    """A shot from a video: one animated camera whose da3_solve_error is keyed on each solved frame."""
    import copy

    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer = importlib.import_module(f"{extension.__name__}.scene.importer")
    video = copy.copy(solved)
    video.meta = dict(solved.meta, video={"path": "/nonexistent/shot.mp4", "fps": 24.0, "frame_count": VIEWS,
                                          "width": 960, "height": 540})
    video.frame_numbers = np.arange(VIEWS)
    importer.import_prediction(video, "video")
    cams = [ob for ob in bpy.data.objects if ob.type == "CAMERA"]
    assert len(cams) == 1
    curves = [fc for fc in cams[0].animation_data.action.fcurves if fc.data_path == '["da3_solve_error"]'] \
        if hasattr(cams[0].animation_data.action, "fcurves") else None
    values = []
    for i in range(VIEWS):
        bpy.context.scene.frame_set(bpy.context.scene.frame_start + i)
        values.append(float(cams[0]["da3_solve_error"]))
    np.testing.assert_allclose(values, solved.meta["solve"]["per_view_rms_px"], rtol=1e-5)
    assert curves is None or len(curves[0].keyframe_points) == VIEWS


def test_tripod_pan_gives_one_camera_position_and_a_tripod_clip(nodal_shot, extension):
    """A nodal solve of a video: the animated camera turns in place (one location on every frame), the
    summary says nodal, and the clip is set for Blender's tripod solver."""
    import copy

    bpy = pytest.importorskip("bpy")
    views = 12
    e, k = H.perturb(nodal_shot["extrinsics"][:views], nodal_shot["intrinsics"][:views], seed=6)
    e[:, :, 3] += np.random.default_rng(6).normal(scale=0.05, size=(views, 3))  # DA3 wobbles a little
    pred = H.prediction(e, k, nodal_shot["size"], paths=nodal_shot["paths"][:views])
    pred.frame_numbers = np.arange(views)
    solved = solve.refine(pred, nodal_shot["paths"][:views])
    assert solved.meta["solve"]["motion"] == "nodal"
    video = copy.copy(solved)
    video.meta = dict(solved.meta, video={"path": nodal_shot["paths"][0], "fps": 24.0, "frame_count": views,
                                          "width": 960, "height": 540})
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer = importlib.import_module(f"{extension.__name__}.scene.importer")
    root = importer.import_prediction(video, "pan")
    assert "nodal" in root["da3_solve_summary"]
    cam = next(ob for ob in bpy.data.objects if ob.type == "CAMERA")
    locations, rotations = [], []
    for i in range(views):
        bpy.context.scene.frame_set(bpy.context.scene.frame_start + i)
        locations.append(np.array(cam.matrix_world.translation))
        rotations.append(np.array(cam.matrix_world.to_3x3()))
    assert np.ptp(np.array(locations), axis=0).max() < 1e-4  # turns in place
    assert np.degrees(np.arccos(np.clip((np.trace(rotations[0].T @ rotations[-1]) - 1) / 2, -1, 1))) > 5  # and pans
    clip = bpy.data.movieclips[root["da3_solve_clip"]]
    assert clip.tracking.settings.use_tripod_solver


def test_a_view_without_tracks_reads_no_tracks_not_zero(solved, extension):
    """per_view_rms_px None (no tracks on that frame): da3_solve_error is -1 on that frame (0.0 would read as
    a perfect view), its tooltip says so, and the animated camera's keys hold (no blend into the -1)."""
    import copy

    bpy = pytest.importorskip("bpy")
    importer = importlib.import_module(f"{extension.__name__}.scene.importer")
    shot = copy.copy(solved)
    per_view = list(solved.meta["solve"]["per_view_rms_px"])
    per_view[3] = None
    shot.meta = dict(solved.meta, solve=dict(solved.meta["solve"], per_view_rms_px=per_view))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer.import_prediction(shot, "stills")
    cams = sorted((ob for ob in bpy.data.objects if ob.type == "CAMERA"), key=lambda ob: ob.name)
    values = [float(c["da3_solve_error"]) for c in cams]
    assert values.count(-1.0) == 1 and all(v > 0 for v in values if v != -1.0)
    assert "no tracks" in cams[0].id_properties_ui("da3_solve_error").as_dict()["description"]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    shot.meta["video"] = {"path": "/nonexistent/shot.mp4", "fps": 24.0, "frame_count": VIEWS, "width": 960, "height": 540}
    shot.frame_numbers = np.arange(VIEWS)
    importer.import_prediction(shot, "video")
    cam = next(ob for ob in bpy.data.objects if ob.type == "CAMERA")
    start = bpy.context.scene.frame_start
    seen = []
    for frame in (start + 2, start + 3, start + 3.5, start + 4):
        bpy.context.scene.frame_set(int(frame), subframe=frame % 1)
        seen.append(float(cam["da3_solve_error"]))
    assert seen[1] == -1.0 and seen[2] == -1.0  # held through the frame, not blended towards frame 4
    assert seen[0] == pytest.approx(per_view[2], rel=1e-5) and seen[3] == pytest.approx(per_view[4], rel=1e-5)
