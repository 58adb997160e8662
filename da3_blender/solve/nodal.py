"""The nodal (tripod) solve: every view turns about one centre; rotations, lens and track directions.

A shot from a tripod has no parallax: its tracks cannot be triangulated and a free bundle adjustment
has nothing that fixes the camera positions, so matchmove tools solve it as a pan about one point
(Blender's "Tripod" solve, SynthEyes' tripod mode). Here each track is a direction ``d`` from the
common centre and view ``v`` sees it at ``f * distort(project(R_v d)) + c``. Levenberg-Marquardt on
the rotations (view 0 and the held views stay), the focal length(s), k1/k2 for the radial lens, and
the directions, which are eliminated per track (2x2 Schur blocks) so the reduced system only holds
the camera parameters. Numpy only; errors in source pixels like the free solve.

The rig here has its centre at the origin (``t = 0``) and the "points" are unit directions, so
:func:`bundle.project` / :func:`bundle.residuals` measure them unchanged.
"""

from __future__ import annotations

import numpy as np

from ..cancel import checkpoint
from .bundle import Rig, undistort
from .features import TrackSet

MAX_ITERATIONS = 60
TOLERANCE = 1e-6  # stop when an iteration lowers the cost by less than this fraction (Ceres' function tolerance)
SCHUR_FLOATS = 1 << 23  # camera rows x track columns per chunk of the Schur complement (64 MiB)


def _hat(v: np.ndarray) -> np.ndarray:
    out = np.zeros((len(v), 3, 3))
    out[:, 0, 1], out[:, 0, 2], out[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    return out - out.transpose(0, 2, 1)


def _exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrices (n,3,3) of axis-angle vectors (n,3) (Rodrigues)."""
    angle = np.linalg.norm(w, axis=1)
    k = _hat(w / np.maximum(angle, 1e-300)[:, None])
    s, c = np.sin(angle)[:, None, None], (1 - np.cos(angle))[:, None, None]
    return np.eye(3) + s * k + c * (k @ k)


def _basis(d: np.ndarray) -> np.ndarray:
    """(T,3,2): two unit vectors orthogonal to each unit direction ``d`` and to each other."""
    helper = np.where(np.abs(d[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    a = np.cross(d, helper)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return np.stack([a, np.cross(d, a)], axis=2)


def directions(rig: Rig, tracks: TrackSet) -> np.ndarray:
    """(T,3) unit directions: the mean of each track's rays (world frame, centre at the origin)."""
    uv = undistort(rig, tracks.obs_xy, tracks.obs_view)
    rays = np.concatenate([uv, np.ones((len(uv), 1))], axis=1)
    rays = np.einsum("oji,oj->oi", rig.R[tracks.obs_view], rays / np.linalg.norm(rays, axis=1, keepdims=True))
    d = np.stack([np.bincount(tracks.obs_track, weights=rays[:, i], minlength=tracks.num_tracks) for i in range(3)], 1)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)


class _Problem:
    """The residuals and Jacobians of one nodal bundle adjustment (fixed layout of the camera parameters)."""

    def __init__(self, rig: Rig, tracks: TrackSet, camera_of_view, radial: bool, held_views, hold_lens=False):
        self.tracks, self.radial = tracks, radial
        n = len(rig.R)
        self.cams = np.asarray(camera_of_view).reshape(-1)
        n_cams = int(self.cams.max()) + 1
        self.n_params = 3 * n + n_cams + (2 if radial else 0)
        view, cam = tracks.obs_view, self.cams[tracks.obs_view]
        cols = [3 * view, 3 * view + 1, 3 * view + 2, 3 * n + cam]
        if radial:
            cols += [np.full_like(view, 3 * n + n_cams), np.full_like(view, 3 * n + n_cams + 1)]
        self.idx = np.stack(cols, axis=1)  # (O,m) where each observation's camera-side derivatives go
        self.free = np.ones(self.n_params, bool)
        for v in held_views:
            self.free[3 * v:3 * v + 3] = False
        if hold_lens:  # a known lens: only the rotations (and directions) move
            self.free[3 * n:] = False
        self.n = n

    def project(self, rig: Rig, d: np.ndarray, jacobians: bool):
        t, v = self.tracks.obs_track, self.tracks.obs_view
        R = rig.R[v]
        p = np.matmul(R, d[t][:, :, None])[:, :, 0]
        z = p[:, 2]
        u = p[:, :2] / z[:, None]
        r2 = np.sum(u * u, axis=1)
        k1, k2 = rig.k[v, 0], rig.k[v, 1]
        s = 1 + k1 * r2 + k2 * r2 * r2
        f, fxy = rig.f[v, 0], rig.f[v]  # fx = fy unless a known lens says otherwise (then it is held)
        res = (s[:, None] * u) * fxy + rig.c[v] - self.tracks.obs_xy
        if not jacobians:
            return res, z
        du_dp = np.zeros((len(p), 2, 3))
        du_dp[:, 0, 0] = du_dp[:, 1, 1] = 1 / z
        du_dp[:, :, 2] = -u / z[:, None]
        dg_du = s[:, None, None] * np.eye(2) + ((2 * k1 + 4 * k2 * r2)[:, None, None] * u[:, :, None] * u[:, None, :])
        D = fxy[:, :, None] * dg_du @ du_dp  # (O,2,3) pixels per camera-frame point
        j_rot = -D @ _hat(p)
        j_dir = D @ (R @ _basis(d)[t])
        blocks = [j_rot, (s[:, None] * u)[:, :, None]]
        if self.radial:
            blocks.append(np.stack([f[:, None] * u * r2[:, None], f[:, None] * u * (r2 * r2)[:, None]], axis=2))
        j_cam = np.concatenate(blocks, axis=2)
        j_cam *= self.free[self.idx][:, None, :]
        return res, z, j_cam, j_dir

    def update(self, rig: Rig, d: np.ndarray, step_cam: np.ndarray, step_dir: np.ndarray) -> tuple[Rig, np.ndarray]:
        out = rig.copy()
        n = self.n
        out.R = _exp(step_cam[:3 * n].reshape(n, 3)) @ rig.R
        df = step_cam[3 * n:3 * n + int(self.cams.max()) + 1][self.cams]
        out.f = rig.f + df[:, None]
        if self.radial:
            out.k = rig.k + step_cam[-2:][None, :]
        d_new = d + np.einsum("tij,tj->ti", _basis(d), step_dir)
        return out, d_new / np.linalg.norm(d_new, axis=1, keepdims=True)


def _robust(err2: np.ndarray, scale: float | None) -> tuple[np.ndarray, float]:
    """IRLS weights and the cost of squared errors under the Cauchy loss (least squares without a scale)."""
    if not scale:
        return np.ones_like(err2), float(np.sum(err2))
    a = err2 / scale ** 2
    return 1 / (1 + a), float(np.sum(scale ** 2 * np.log1p(a)))


def _normal_equations(prob: _Problem, res, j_cam, j_dir, w, lam):
    """The reduced (Schur) system of the camera parameters and what back-substitution needs."""
    P, tracks = prob.n_params, prob.tracks
    T = tracks.num_tracks
    res, j_cam, j_dir = res * np.sqrt(w)[:, None], j_cam * np.sqrt(w)[:, None, None], j_dir * np.sqrt(w)[:, None, None]
    m = j_cam.shape[2]
    pair = (prob.idx[:, :, None] * P + prob.idx[:, None, :]).reshape(-1)
    j_cam_t, j_dir_t = j_cam.transpose(0, 2, 1), j_dir.transpose(0, 2, 1)
    A = np.bincount(pair, weights=np.matmul(j_cam_t, j_cam).reshape(-1), minlength=P * P).reshape(P, P)
    g = np.bincount(prob.idx.reshape(-1), weights=np.matmul(j_cam_t, res[:, :, None]).reshape(-1), minlength=P)
    t = tracks.obs_track
    C = np.stack([np.bincount(t, weights=v, minlength=T) for v in np.matmul(j_dir_t, j_dir).reshape(-1, 4).T], 1).reshape(T, 2, 2)
    gp = np.stack([np.bincount(t, weights=v, minlength=T) for v in np.matmul(j_dir_t, res[:, :, None])[:, :, 0].T], 1)
    A[np.diag_indices(P)] *= 1 + lam
    A[np.diag_indices(P)] += 1e-9
    C[:, [0, 1], [0, 1]] = C[:, [0, 1], [0, 1]] * (1 + lam) + 1e-9
    det = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] * C[:, 1, 0]
    Cinv = np.stack([C[:, 1, 1], -C[:, 0, 1], -C[:, 1, 0], C[:, 0, 0]], 1).reshape(T, 2, 2) / det[:, None, None]
    B = np.matmul(j_cam_t, j_dir)  # (O,m,2)
    starts = tracks.starts
    chunk = max(1, SCHUR_FLOATS // (2 * P))
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        o0, o1 = starts[t0], starts[t1]
        local = (t[o0:o1] - t0)
        flat = (prob.idx[o0:o1, :, None] * (t1 - t0) + local[:, None, None]) * 2 + np.arange(2)[None, None, :]
        M = np.bincount(np.broadcast_to(flat, (o1 - o0, m, 2)).reshape(-1), weights=B[o0:o1].reshape(-1),
                        minlength=P * (t1 - t0) * 2).reshape(P, t1 - t0, 2)
        c = Cinv[t0:t1]
        MC = (M[:, :, 0:1] * c[None, :, 0, :] + M[:, :, 1:2] * c[None, :, 1, :]).reshape(P, -1)
        A -= MC @ M.reshape(P, -1).T
        g -= MC @ gp[t0:t1].reshape(-1)
    return A, g, B, Cinv, gp


def adjust(rig: Rig, d: np.ndarray, tracks: TrackSet, *, camera_of_view, radial: bool, held_views=(),
           loss_scale=None, hold_lens=False) -> tuple[Rig, np.ndarray]:
    """Nodal bundle adjustment from ``rig`` (``t`` ignored: centre at the origin) and directions ``d``;
    ``hold_lens``: the focal lengths stay as given (a known lens)."""
    prob = _Problem(rig, tracks, camera_of_view, radial, {0, *held_views}, hold_lens)
    lam = 1e-4
    for _ in range(MAX_ITERATIONS):
        checkpoint()
        res, _, j_cam, j_dir = prob.project(rig, d, True)
        w, cost = _robust(np.sum(res * res, axis=1), loss_scale)
        improved = False
        while lam < 1e8:
            A, g, B, Cinv, gp = _normal_equations(prob, res, j_cam, j_dir, w, lam)
            fixed = ~prob.free
            A[fixed, :], A[:, fixed] = 0, 0
            A[fixed, fixed] = 1
            g[fixed] = 0
            step_cam = np.linalg.solve(A, -g)
            back = np.matmul(step_cam[prob.idx][:, None, :], B)[:, 0, :]
            rhs = gp + np.stack([np.bincount(tracks.obs_track, weights=back[:, i], minlength=len(d)) for i in range(2)], 1)
            step_dir = -np.einsum("tij,tj->ti", Cinv, rhs)
            rig_new, d_new = prob.update(rig, d, step_cam, step_dir)
            res_new, z = prob.project(rig_new, d_new, False)
            _, cost_new = _robust(np.sum(res_new * res_new, axis=1), loss_scale)
            if cost_new < cost and np.all(z > 0):
                rig, d, improved = rig_new, d_new, True
                lam = max(lam / 3, 1e-7)
                break
            lam *= 4
        if not improved or (cost - cost_new) < TOLERANCE * cost:
            break
    return rig, d
