"""Triangulation, reprojection and pycolmap bundle adjustment for the camera solve.

Cameras here are in source-image pixels: ``Rig`` holds world-to-camera rotations ``R`` (N,3,3) and
translations ``t`` (N,3), and the lens of each view: focal ``f`` (N,2) (fx, fy), principal point
``c`` (N,2) and radial distortion ``k`` (N,2) (k1, k2; COLMAP's RADIAL and Blender's polynomial
model: r_d = r_u (1 + k1 r_u^2 + k2 r_u^4), r normalised by the focal length).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .features import TrackSet


@dataclass
class Rig:
    R: np.ndarray  # (N,3,3)
    t: np.ndarray  # (N,3)
    f: np.ndarray  # (N,2)
    c: np.ndarray  # (N,2)
    k: np.ndarray  # (N,2)

    def copy(self) -> "Rig":
        return replace(self, **{name: getattr(self, name).copy() for name in ("R", "t", "f", "c", "k")})

    @property
    def centres(self) -> np.ndarray:
        return -np.einsum("nji,nj->ni", self.R, self.t)


def project(rig: Rig, points: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (O,2) of ``points`` (O,3) in ``views`` (O,), and their depths (O,)."""
    cam = np.einsum("oij,oj->oi", rig.R[views], points) + rig.t[views]
    z = cam[:, 2]
    safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
    uv = cam[:, :2] / safe[:, None]
    r2 = np.sum(uv * uv, axis=1)
    k = rig.k[views]
    uv = uv * (1 + k[:, 0] * r2 + k[:, 1] * r2 * r2)[:, None]
    return uv * rig.f[views] + rig.c[views], z


def undistort(rig: Rig, xy: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Normalised (distortion-free) image coordinates (O,2) of pixels ``xy`` in ``views``."""
    d = (xy - rig.c[views]) / rig.f[views]
    k = rig.k[views]
    u = d.copy()
    if np.any(k):
        for _ in range(10):
            r2 = np.sum(u * u, axis=1)
            u = d / (1 + k[:, 0] * r2 + k[:, 1] * r2 * r2)[:, None]
    return u


def triangulate(rig: Rig, tracks: TrackSet) -> np.ndarray:
    """Linear (DLT) triangulation of every track from the cameras, (T,3); NaN where it fails."""
    n_tracks = tracks.num_tracks
    points = np.full((n_tracks, 3), np.nan)
    uv = undistort(rig, tracks.obs_xy, tracks.obs_view)
    P = np.concatenate([rig.R, rig.t[:, :, None]], axis=2)[tracks.obs_view]  # (O,3,4)
    rows = np.concatenate([uv[:, 0, None, None] * P[:, 2:3] - P[:, 0:1], uv[:, 1, None, None] * P[:, 2:3] - P[:, 1:2]], axis=1)  # (O,2,4)
    starts = tracks.starts
    lengths = np.diff(starts)
    for length in np.unique(lengths):
        ids = np.nonzero(lengths == length)[0]
        idx = starts[ids][:, None] + np.arange(length)[None, :]  # observations are sorted by track
        A = rows[idx].reshape(len(ids), 2 * length, 4)
        A = A / np.maximum(np.linalg.norm(A, axis=2, keepdims=True), 1e-12)
        _, _, vt = np.linalg.svd(A)
        X = vt[:, -1]
        ok = np.abs(X[:, 3]) > 1e-12
        points[ids[ok]] = X[ok, :3] / X[ok, 3:4]
    return points


def triangulation_angles(rig: Rig, points: np.ndarray, tracks: TrackSet) -> np.ndarray:
    """The widest angle (degrees) between the rays that see each track."""
    rays = points[tracks.obs_track] - rig.centres[tracks.obs_view]
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    widest = np.full(tracks.num_tracks, 1.0)
    first = np.zeros_like(rays)
    starts = tracks.starts
    first[:] = rays[starts[tracks.obs_track]]
    last = rays[starts[tracks.obs_track + 1] - 1]
    np.minimum.at(widest, tracks.obs_track, np.sum(rays * first, axis=1))
    np.minimum.at(widest, tracks.obs_track, np.sum(rays * last, axis=1))
    return np.degrees(np.arccos(np.clip(widest, -1, 1)))


def residuals(rig: Rig, points: np.ndarray, tracks: TrackSet) -> tuple[np.ndarray, np.ndarray]:
    """Reprojection error (px) of each observation, and whether its point is in front of the camera."""
    xy, z = project(rig, points[tracks.obs_track], tracks.obs_view)
    err = np.linalg.norm(xy - tracks.obs_xy, axis=1)
    return np.where(np.isfinite(err), err, np.inf), z > 0


# -- pycolmap --------------------------------------------------------------------------------------

HELD_LENS_MODEL = "PINHOLE"  # fx, fy, cx, cy as given and held: a known lens (and measuring the input cameras)


def _camera(pycolmap, cam_id: int, model: str, size, f, c, k):
    params = {"SIMPLE_PINHOLE": [f[0], *c], "PINHOLE": [*f, *c], "RADIAL": [f[0], *c, *k]}[model]
    cam = pycolmap.Camera.create_from_model_name(cam_id, model, float(f[0]), int(size[0]), int(size[1]))
    cam.params = np.asarray(params, dtype=np.float64)
    return cam


def to_reconstruction(pycolmap, rig: Rig, points: np.ndarray, tracks: TrackSet, camera_of_view: np.ndarray,
                      model: str, sizes: np.ndarray):
    """A pycolmap Reconstruction: one camera per distinct ``camera_of_view`` id, an image per view."""
    rec = pycolmap.Reconstruction()
    for cam_id in np.unique(camera_of_view):
        v = int(np.nonzero(camera_of_view == cam_id)[0][0])
        rec.add_camera_with_trivial_rig(_camera(pycolmap, int(cam_id) + 1, model, sizes[v], rig.f[v], rig.c[v], rig.k[v]))
    order = np.argsort(tracks.obs_view, kind="stable")
    counts = np.bincount(tracks.obs_view, minlength=len(rig.R))
    starts = np.concatenate([[0], np.cumsum(counts)])
    index_in_view = np.empty(len(order), dtype=np.int64)
    index_in_view[order] = np.arange(len(order)) - starts[tracks.obs_view[order]]
    for v in range(len(rig.R)):
        image = pycolmap.Image(name=f"{v:06d}", keypoints=tracks.obs_xy[order[starts[v]:starts[v + 1]]],
                               camera_id=int(camera_of_view[v]) + 1, image_id=v + 1)
        pose = pycolmap.Rigid3d(np.concatenate([rig.R[v], rig.t[v][:, None]], axis=1))
        rec.add_image_with_trivial_frame(image, pose)
    track_starts = tracks.starts
    views1, idx = (tracks.obs_view + 1).tolist(), index_in_view.tolist()
    point_ids = []
    for p in range(len(points)):
        track = pycolmap.Track()
        for o in range(track_starts[p], track_starts[p + 1]):
            track.add_element(views1[o], idx[o])
        point_ids.append(rec.add_point3D(points[p], track))
    return rec, point_ids


def from_reconstruction(rec, rig: Rig, camera_of_view: np.ndarray, model: str, point_ids: list) -> tuple[Rig, np.ndarray]:
    out = rig.copy()
    for v in range(len(rig.R)):
        m = np.asarray(rec.image(v + 1).cam_from_world().matrix())
        out.R[v], out.t[v] = m[:, :3], m[:, 3]
        p = np.asarray(rec.camera(int(camera_of_view[v]) + 1).params)
        if model == "PINHOLE":
            out.f[v], out.c[v] = p[:2], p[2:4]
        else:
            out.f[v], out.c[v] = p[0], p[1:3]
            if model == "RADIAL":
                out.k[v] = p[3:5]
    points = np.array([rec.point3D(p).xyz for p in point_ids]).reshape(-1, 3)
    return out, points


def adjust(pycolmap, rig: Rig, points: np.ndarray, tracks: TrackSet, *, camera_of_view, model, sizes,
           constant_views=(), refine_cameras=True, loss_scale=None, threads=-1, max_iterations=100) -> tuple[Rig, np.ndarray]:
    """Bundle adjustment (pycolmap/Ceres). View 0 and ``constant_views`` keep their poses; with
    ``refine_cameras=False`` only the points move (the error of the cameras as they are); the
    :data:`HELD_LENS_MODEL` keeps its intrinsics (a known lens: only the poses are solved)."""
    rec, point_ids = to_reconstruction(pycolmap, rig, points, tracks, camera_of_view, model, sizes)
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.refine_principal_point = False
    options.refine_focal_length = refine_cameras and model != HELD_LENS_MODEL
    options.refine_extra_params = refine_cameras and model == "RADIAL"
    options.refine_rig_from_world = refine_cameras
    options.ceres.solver_options.num_threads = threads
    options.ceres.solver_options.max_num_iterations = int(max_iterations)
    options.ceres.solver_options.function_tolerance = 1e-8  # pycolmap's 0 runs every iteration to the cap
    if loss_scale:
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        options.ceres.loss_function_scale = float(loss_scale)
    config = pycolmap.BundleAdjustmentConfig()
    for v in range(len(rig.R)):
        config.add_image(v + 1)
    if refine_cameras:
        for v in {0, *constant_views}:
            config.set_constant_rig_from_world_pose(v + 1)
        config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    else:
        for v in range(len(rig.R)):
            config.set_constant_rig_from_world_pose(v + 1)
        for cam_id in np.unique(camera_of_view):
            config.set_constant_cam_intrinsics(int(cam_id) + 1)
    adjuster = pycolmap.create_default_bundle_adjuster(options, config, rec)
    adjuster.solve()
    return from_reconstruction(rec, rig, camera_of_view, model, point_ids)
