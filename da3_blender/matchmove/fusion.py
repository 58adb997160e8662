"""The fused proxy mesh (issue 27): depth maps -> truncated signed distances -> marching cubes.

Every confident, non-sky pixel (confidence-weighted) writes signed distances into the voxels along its
ray within the truncation band (``sdf = depth - distance along the ray``, moved to each voxel's centre),
so only the band around the seen surfaces is touched. The volume is a box around the confident points
(their 0.5..99.5 percentiles, pixels farther than :data:`FAR_FACTOR` times the median depth left out), never
a grid of the far background; its voxel count is capped by ``max_voxels``. torch does the fusion (on the
GPU when ``device`` is one), scikit-image's ``marching_cubes`` the surface; larger marching steps
decimate it to ``max_faces``. Views are fused one at a time: memory is the volume's, whatever the shot length.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from ..errors import BadInputError, MissingDependencyError
from ..geometry import affine_inverse, to_4x4
from ..options import DEFAULT_MESH_MAX_FACES
from .mesh import Mesh

FAR_FACTOR = 4.0  # pixels deeper than this times the median depth are background: not fused
VOXEL_PIXELS = 2.5  # voxel edge = this many pixel footprints at the median depth
TRUNCATION_VOXELS = 3.0
BAND_STRIDE = 2  # pixels between the rays that mark the band (<= VOXEL_PIXELS)
MAX_VOXELS = 24_000_000  # ~0.5 GB of volume (sdf, weight, colour as float32; ~0.2 GB without colour)
MIN_WEIGHT_SHARE = 0.05  # voxels seen with less than this share of one confident pixel's weight are empty


def _need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"the proxy mesh needs {module} in this Python: pip install "
                                     "'da3-blender[mesh]' (scikit-image), or turn Mesh off") from None


def _masks(depth, conf, sky, conf_percentile):
    valid = np.isfinite(depth) & (depth > 0)
    if sky is not None:
        valid &= ~np.asarray(sky, bool)
    if conf is not None and conf_percentile > 0 and valid.any():
        valid &= conf >= np.percentile(conf[valid], conf_percentile)
    if not valid.any():
        raise BadInputError("no proxy mesh: the result has no confident, non-sky depth")
    far = FAR_FACTOR * float(np.median(depth[valid]))
    return valid & (depth <= far)


def _box(depth, k, c2w, valid, voxel_size, max_voxels):
    """(origin (3,), voxel size, grid shape) of the box around the confident points."""
    n, h, w = depth.shape
    step = max(1, int(math.sqrt(n * h * w / 400_000)))
    parts = []
    for i in range(n):
        sel = valid[i, ::step, ::step]
        rows, cols = np.nonzero(sel)
        z = depth[i, ::step, ::step][sel]
        cam = np.stack([((cols * step + 0.5) - k[i, 0, 2]) / k[i, 0, 0] * z,
                        ((rows * step + 0.5) - k[i, 1, 2]) / k[i, 1, 1] * z, z], axis=1)
        parts.append(cam @ c2w[i, :3, :3].T + c2w[i, :3, 3])
    pts = np.concatenate(parts)
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    if voxel_size is None:
        footprint = float(np.median(depth[valid])) / float(np.median(k[:, 0, 0]))
        voxel_size = VOXEL_PIXELS * footprint
    margin = 0.02 * (hi - lo) + TRUNCATION_VOXELS * voxel_size
    lo, hi = lo - margin, hi + margin
    volume = float(np.prod(hi - lo))
    voxel_size = max(float(voxel_size), (volume / max_voxels) ** (1.0 / 3.0))
    shape = tuple(int(v) for v in np.ceil((hi - lo) / voxel_size).astype(int) + 1)
    return lo, voxel_size, shape


def _band_view(torch, mark, origin, voxel, shape, depth, k, c2w, valid, near, device):
    """The flat indices (unique) of the voxels within the truncation band along one view's confident rays (every
    ``BAND_STRIDE``-th pixel nearer than ``near``, where a voxel spans that many pixels or more; every pixel beyond)."""
    use = valid & (depth > near)
    use[::BAND_STRIDE, ::BAND_STRIDE] |= valid[::BAND_STRIDE, ::BAND_STRIDE]
    rows, cols = np.nonzero(use)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)  # noqa: E731
    z = t(depth[rows, cols])
    ray = torch.stack([(t(cols) + 0.5 - float(k[0, 2])) / float(k[0, 0]),
                       (t(rows) + 0.5 - float(k[1, 2])) / float(k[1, 1]), torch.ones_like(z)], dim=1) @ t(c2w[:3, :3]).T
    trunc = TRUNCATION_VOXELS * voxel
    length = ray.norm(dim=1)
    steps = torch.arange(-trunc, trunc + 0.5 * voxel, voxel, device=device, dtype=torch.float32)
    dist = (z * length)[:, None] + steps[None]
    pos = t(c2w[:3, 3]) + (ray / length[:, None])[:, None, :] * dist[..., None]
    idx = torch.round((pos - t(origin)) / voxel).to(torch.int32).reshape(-1, 3)
    inside = ((idx >= 0) & (idx < torch.as_tensor(shape, device=device, dtype=torch.int32))).all(dim=1)
    idx = idx[inside].long()
    mark[(idx[:, 0] * shape[1] + idx[:, 1]) * shape[2] + idx[:, 2]] = True  # each voxel once (no sort)
    flat = torch.nonzero(mark).squeeze(1)
    mark[flat] = False
    return flat


def _fuse_view(torch, acc, flat, origin, shape, voxel, image, hw, k, c2w, device):
    """Projective signed distances of one view's band voxels (``flat`` indices), added to ``acc`` (dense, flat).
    ``image`` (H*W, C) float32 tensor: depth, weight, then colour; bilinear samples where the four pixels around
    the projection are confident and within 5 % in depth, else the nearest pixel (no mixing across silhouettes)."""
    sdf_sum, w_sum, c_sum = acc
    h, w = hw
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)  # noqa: E731
    ijk = torch.stack([flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]], dim=1)
    w2c = np.linalg.inv(c2w)
    cam = (t(origin) + ijk.float() * voxel) @ t(w2c[:3, :3]).T + t(w2c[:3, 3])
    zc = cam[:, 2].clamp(min=1e-6)
    x = float(k[0, 0]) * cam[:, 0] / zc + (float(k[0, 2]) - 0.5)  # pixel-centre coordinates
    y = float(k[1, 1]) * cam[:, 1] / zc + (float(k[1, 2]) - 0.5)
    sel = torch.nonzero((cam[:, 2] > 1e-6) & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).squeeze(1)
    if sel.numel() == 0:
        return
    x, y, zc, ray = x[sel], y[sel], zc[sel], cam[sel].norm(dim=1) / zc[sel]
    x0, y0 = x.floor().clamp(max=w - 2), y.floor().clamp(max=h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    idx = y0.long() * w + x0.long()
    c00, c01, c10, c11 = image[idx], image[idx + 1], image[idx + w], image[idx + w + 1]
    bilinear = (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy
    nearest = image[idx + (fx[:, 0] > 0.5).long() + w * (fy[:, 0] > 0.5).long()]
    dc = torch.stack([c00[:, 0], c01[:, 0], c10[:, 0], c11[:, 0]], dim=1)
    wc = torch.stack([c00[:, 1], c01[:, 1], c10[:, 1], c11[:, 1]], dim=1)
    smooth = (wc > 0).all(dim=1) & (dc.max(dim=1).values <= 1.05 * dc.min(dim=1).values)
    sample = torch.where(smooth[:, None], bilinear, nearest)
    trunc = TRUNCATION_VOXELS * voxel
    sdf = (sample[:, 0] - zc) * ray  # along the ray, in world units
    wt = sample[:, 1]
    keep = (wt > 0) & (sdf >= -trunc)
    sel, sdf, wt = flat[sel[keep]], (sdf[keep] / trunc).clamp(-1.0, 1.0), wt[keep]
    sdf_sum.index_add_(0, sel, sdf * wt)
    w_sum.index_add_(0, sel, wt)
    if c_sum is not None:
        c_sum.index_add_(0, sel, sample[keep, 2:5] * wt[:, None])


def fuse_mesh(depth, intrinsics, extrinsics, conf=None, sky=None, images=None, *, max_faces: int = DEFAULT_MESH_MAX_FACES,
              voxel_size: float | None = None, conf_percentile: float = 20.0, max_voxels: int = MAX_VOXELS,
              device: str = "cpu", progress=None) -> Mesh:
    """The fused mesh of depth maps (N,H,W) seen by cameras K (N,3,3), world-to-camera (N,3|4,4), in their world."""
    torch = _need("torch")
    measure = _need("skimage.measure")
    depth = np.asarray(depth, np.float32)
    n = depth.shape[0]
    k = np.asarray(intrinsics, np.float64).reshape(n, 3, 3)
    c2w = affine_inverse(to_4x4(np.asarray(extrinsics, np.float64).reshape(n, -1, 4)))
    conf = None if conf is None else np.asarray(conf, np.float32)
    valid = _masks(depth, conf, sky, conf_percentile)
    origin, voxel, shape = _box(depth, k, c2w, valid, voxel_size, max_voxels)
    weight = valid.astype(np.float32) if conf is None else np.where(valid, np.maximum(conf, 1e-3), 0).astype(np.float32)
    weight /= max(float(weight[valid].mean()), 1e-9)
    count = int(np.prod(shape))
    near = voxel * float(np.median(k[:, 0, 0])) / BAND_STRIDE  # nearer than this, a voxel spans BAND_STRIDE pixels
    with torch.no_grad():
        acc = (torch.zeros(count, device=device), torch.zeros(count, device=device),
               torch.zeros(count, 3, device=device) if images is not None else None)
        mark = torch.zeros(count, dtype=torch.bool, device=device)
        for i in range(n):
            flat = _band_view(torch, mark, origin, voxel, shape, depth[i], k[i], c2w[i], weight[i] > 0, near, device)
            planes = [depth[i], weight[i]] + ([] if images is None else list(np.moveaxis(np.asarray(images[i]), -1, 0)))
            image = torch.as_tensor(np.stack(planes, axis=-1).reshape(-1, len(planes)), dtype=torch.float32,
                                    device=device)
            _fuse_view(torch, acc, flat, origin, shape, voxel, image, depth.shape[1:], k[i], c2w[i], device)
            if progress is not None:
                progress((i + 1) / n)
        sdf_sum, w_sum = acc[0].cpu().numpy(), acc[1].cpu().numpy()
        c_sum = None if acc[2] is None else acc[2].cpu().numpy()
        del acc
    seen = w_sum > MIN_WEIGHT_SHARE
    sdf = np.ones(count, np.float32)
    np.divide(sdf_sum, w_sum, out=sdf, where=seen)
    del sdf_sum
    colours = None
    if c_sum is not None:
        colours = c_sum
        np.divide(c_sum, np.maximum(w_sum, 1e-9)[:, None], out=colours)
    sdf, seen = sdf.reshape(shape), seen.reshape(shape)
    return _surface(measure, sdf, seen, origin, voxel, shape, colours, max_faces)


def _surface(measure, sdf, seen, origin, voxel, shape, colours, max_faces) -> Mesh:
    if not ((sdf[seen] < 0).any() and (sdf[seen] > 0).any()):
        raise BadInputError("no proxy mesh: the depth maps describe no surface inside the confident box")
    for step in range(1, 9):
        mask = _cube_mask(seen, step)
        verts, faces, _, _ = measure.marching_cubes(sdf, 0.0, spacing=(voxel,) * 3, mask=mask, step_size=step,
                                                    allow_degenerate=False, gradient_direction="descent")
        if len(faces) <= max_faces:
            break
    if len(faces) > max_faces:  # a huge surface even at 8 voxels a step: keep the first max_faces (rare)
        faces = faces[:max_faces]
    idx = np.clip(np.round(verts / voxel).astype(np.int64), 0, np.array(shape) - 1)
    flat = (idx[:, 0] * shape[1] + idx[:, 1]) * shape[2] + idx[:, 2]
    if colours is not None:
        colors = np.clip(colours[flat] + 0.5, 0, 255).astype(np.uint8)
    else:
        colors = np.full((len(verts), 3), 160, np.uint8)
    return Mesh((verts + origin).astype(np.float32), faces.astype(np.int32), colors)


def _cube_mask(seen, step):
    """Marching cubes' mask: a cube is meshed only when its 8 corners (``step`` voxels apart) were all seen, so
    no surface appears between seen and unseen voxels. skimage tests the mask at a cube's far corner."""
    cubes = seen.copy()
    cubes[step:] &= seen[:-step]
    cubes[:, step:] &= cubes[:, :-step]
    cubes[:, :, step:] &= cubes[:, :, :-step]
    return cubes


def mesh_of(pred, max_faces: int = DEFAULT_MESH_MAX_FACES, device: str = "cpu", progress=None) -> Mesh:
    """The result's fused mesh (``pred.mesh``), fused now (and kept on ``pred``) if it has none."""
    if getattr(pred, "mesh", None) is not None:
        return pred.mesh
    if pred.intrinsics is None or (pred.extrinsics is None and pred.num_views > 1):
        raise BadInputError("no proxy mesh: the result has no cameras to fuse its depth with (use a multi-view model)")
    ext = pred.extrinsics if pred.extrinsics is not None else np.eye(4)[None, :3]
    pred.mesh = fuse_mesh(pred.depth, pred.intrinsics, ext, pred.conf, pred.sky, pred.processed_images,
                          max_faces=max_faces, device=device, progress=progress)
    return pred.mesh
