"""Rigid camera-matrix helpers in torch (w2c / c2w, OpenCV axes), used by the network's pose code."""

from __future__ import annotations

import torch


def as_4x4(mat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) or (..., 4, 4) -> (..., 4, 4) homogeneous (a 4x4 input is returned as is)."""
    if mat.shape[-2:] == (4, 4):
        return mat
    if mat.shape[-2:] != (3, 4):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4) camera matrices, got {tuple(mat.shape)}")
    bottom = torch.zeros(mat.shape[:-2] + (1, 4), dtype=mat.dtype, device=mat.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([mat, bottom], dim=-2)


def affine_inverse(mat: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms (..., 3|4, 4) -> (..., 4, 4) as ``[R^T | -R^T t]`` (R must be a rotation)."""
    mat = as_4x4(mat)
    rot_t = mat[..., :3, :3].mT
    trans = -rot_t @ mat[..., :3, 3:]
    return torch.cat([torch.cat([rot_t, trans], dim=-1), mat[..., 3:, :]], dim=-2)


def normalize_extrinsics(extrinsics: torch.Tensor) -> torch.Tensor:
    """Normalise user w2c poses [B,N,4,4] for pose conditioning (spec §6.5).

    Poses become relative to view 0 (``E_v @ E_0^-1``, so camera 0 is the world origin), then every
    translation is divided by the median camera-centre distance, clamped to >= 0.1. The median is
    ``torch.median`` (the *lower* middle value for an even count), as in the official code. It is
    taken per batch item; the official takes it over the whole batch, the same for its B = 1.
    """
    if extrinsics.ndim != 4 or extrinsics.shape[-2:] != (4, 4):
        raise ValueError(f"normalize_extrinsics expects [B,N,4,4] w2c matrices, got {tuple(extrinsics.shape)}")
    rel = extrinsics @ affine_inverse(extrinsics[:, :1])
    dists = affine_inverse(rel)[..., :3, 3].norm(dim=-1)  # [B,N]
    scale = torch.clamp(torch.median(dists, dim=-1).values, min=0.1)  # [B]
    out = rel.clone()
    out[..., :3, 3] = rel[..., :3, 3] / scale[:, None, None]
    return out
