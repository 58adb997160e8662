"""Cameras from DA3's ray map (``use_ray_pose=True``, spec §3.4): weighted homography RANSAC + QL.

The DualDPT aux head predicts, per pixel of an 8h x 8w map, the world direction of the pixel's ray
(channels 0-2, any scale) and the camera centre (channels 3-5). For a pinhole camera the direction is
``R_c2w @ K'^-1 @ [u', v', 1]``, so the map from the pixel's position on a [-1, 1] plane to the
direction's ``(x/z, y/z)`` is a homography ``H ∝ R_c2w @ L``. A weighted DLT RANSAC finds ``H`` and a
QL decomposition splits it into the rotation and the intrinsics.

Official bias, replicated on purpose: QL factors ``H`` as rotation x *lower*-triangular, while a
pinhole's ``K'^-1`` is *upper*-triangular (the principal point sits in its last column). Both agree
only for a centred principal point, the case the network is trained on: then R, the camera centre
and the focal lengths are recovered to float precision and ``c = (W/2, H/2)``. For an off-centre
principal point the rotation is tilted and the principal point is wrong; the official output has the
same error, and we match it.
"""

from __future__ import annotations

import torch

from .transforms import affine_inverse

N_ITER = 100  # RANSAC draws
SUBSET = 8  # points per draw
TOP_FRACTION = 0.3  # draws come from this fraction of highest-weight pixels
INLIER_THRESHOLD = 0.2  # on the z = 1 plane
MAX_REFIT_POINTS = 8000
Z_EPS = 1e-4


def _plane_grid(h: int, w: int, device) -> torch.Tensor:
    """Pixel centres of an h x w grid on the [-1, 1]^2 square, (h*w, 2) as (x, y)."""
    y = (2 * torch.arange(h, device=device, dtype=torch.float32) + 1) / h - 1
    x = (2 * torch.arange(w, device=device, dtype=torch.float32) + 1) / w - 1
    gy, gx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def weighted_dlt(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Homographies [..., 3, 3] (H[2,2] = 1) mapping src -> dst ([..., K, 2]) by weighted DLT."""
    sw = weight.sqrt()[..., None]
    x, y = src[..., 0:1], src[..., 1:2]
    u, v = dst[..., 0:1], dst[..., 1:2]
    zero = torch.zeros_like(x)
    rows_u = torch.cat([-x, -y, -torch.ones_like(x), zero, zero, zero, x * u, y * u, u], dim=-1)
    rows_v = torch.cat([zero, zero, zero, -x, -y, -torch.ones_like(x), x * v, y * v, v], dim=-1)
    a = torch.cat([rows_u * sw, rows_v * sw], dim=-2)
    vh = torch.linalg.svd(a).Vh
    hom = vh[..., -1, :].reshape(*vh.shape[:-2], 3, 3)
    return hom / hom[..., 2:3, 2:3]


def _project(hom: torch.Tensor, src_h: torch.Tensor) -> torch.Tensor:
    proj = src_h @ hom.mT
    return proj[..., :2] / proj[..., 2:3]


def ql_decomposition(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mat = Q @ L`` with Q orthogonal and L lower-triangular with a positive diagonal (3x3)."""
    exch = torch.flip(torch.eye(3, dtype=mat.dtype, device=mat.device), dims=[0])
    q_t, r_t = torch.linalg.qr(mat @ exch)
    q, low = q_t @ exch, exch @ r_t @ exch
    sign = torch.sign(torch.diagonal(low))
    return q * sign[None, :], low * sign[:, None]


def _fit_view(src, src_h, dst, weight, n_cand, subsets, generator):
    """RANSAC over the n_cand highest weights + inlier refit for one view; H [3,3] with det(H) > 0."""
    idx = torch.argsort(weight, descending=True)[:n_cand][subsets]  # [iters, 8]
    homs = weighted_dlt(src[idx], dst[idx], weight[idx])
    err = (_project(homs, src_h) - dst).norm(dim=-1)  # [iters, N]
    inlier = err < INLIER_THRESHOLD
    score = (inlier * weight[None]).sum(dim=-1)
    mask = inlier[torch.argmax(score)]

    ids = torch.nonzero(mask).squeeze(-1)
    ids = ids[torch.argsort(weight[ids], descending=True)]
    if len(ids) > MAX_REFIT_POINTS:
        ids = ids[: max(int(len(ids) * 0.95), MAX_REFIT_POINTS)]
        ids = ids[_randperm(len(ids), generator, ids.device)[:MAX_REFIT_POINTS]]
    hom = weighted_dlt(src[ids], dst[ids], weight[ids])
    return -hom if torch.linalg.det(hom) < 0 else hom


def _randperm(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def solve_ray_pose(
    ray: torch.Tensor,
    ray_conf: torch.Tensor,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera poses and intrinsics from a predicted ray map (official ``get_extrinsic_from_camray``).

    ray [B,S,h,w,6] (world direction, camera centre), ray_conf [B,S,h,w] (weights, >= 0), and the model
    input size (height, width) in pixels. Returns (w2c extrinsics [B,S,3,4], intrinsics [B,S,3,3] in
    model-input pixels), float32. The RANSAC is random; the official code uses the unseeded global
    torch RNG, which is what happens here with ``generator=None``. Pass a ``torch.Generator`` for
    repeatable cameras. Pixels whose direction has ``|z| <= 1e-4`` get zero weight everywhere,
    including the camera-centre average. See the module docstring for the principal-point bias.
    """
    if ray.ndim != 5 or ray.shape[-1] != 6 or ray_conf.shape != ray.shape[:-1]:
        raise ValueError(
            f"expected ray [B,S,h,w,6] and ray_conf [B,S,h,w], got {tuple(ray.shape)} and {tuple(ray_conf.shape)}"
        )
    b, s, h, w, _ = ray.shape
    device = ray.device
    with torch.autocast(device_type=device.type, enabled=False):
        ray = ray.float().reshape(b * s, h * w, 6)
        weight = ray_conf.float().reshape(b * s, h * w).clone()
        d = ray[..., :3]
        valid = d[..., 2].abs() > Z_EPS
        safe_z = torch.where(valid, d[..., 2], torch.ones_like(d[..., 2]))
        # invalid pixels keep their raw (x, y), as in the official code; their weight is zero
        dst = torch.where(valid[..., None], d[..., :2] / safe_z[..., None], d[..., :2])
        weight = torch.where(valid, weight, torch.zeros_like(weight))

        src = _plane_grid(h, w, device)
        src_h = torch.cat([src, torch.ones_like(src[:, :1])], dim=-1)
        n_cand = max(SUBSET, int(TOP_FRACTION * h * w))
        subsets = torch.stack([_randperm(n_cand, generator, device)[:SUBSET] for _ in range(N_ITER)])

        rots, focals, pps = [], [], []
        for v in range(b * s):
            hom = _fit_view(src, src_h, dst[v], weight[v], n_cand, subsets, generator)
            rot, low = ql_decomposition(hom)
            low = low / low[2, 2]
            rots.append(rot)
            focals.append(1.0 / torch.stack([low[0, 0], low[1, 1]]))
            pps.append(torch.stack([low[2, 0], low[2, 1]]) + 1.0)
        rot, focal, pp = torch.stack(rots), torch.stack(focals), torch.stack(pps)
        centre = (ray[..., 3:] * weight[..., None]).sum(dim=1) / weight.sum(dim=1, keepdim=True)

        c2w = torch.cat([rot, centre[..., None]], dim=-1)
        w2c = affine_inverse(c2w)[:, :3, :]
        k = torch.zeros(b * s, 3, 3, dtype=torch.float32, device=device)
        k[:, 0, 0] = focal[:, 0] * width / 2
        k[:, 1, 1] = focal[:, 1] * height / 2
        k[:, 0, 2] = pp[:, 0] * width / 2
        k[:, 1, 2] = pp[:, 1] * height / 2
        k[:, 2, 2] = 1.0
    return w2c.reshape(b, s, 3, 4), k.reshape(b, s, 3, 3)
