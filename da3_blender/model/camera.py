"""Camera modules and the 9-D pose encoding ``[t(3), quat xyzw (4), fov_h, fov_w]`` (c2w, radians).

Quaternions are scalar-last (x, y, z, w) everywhere. Extrinsics are OpenCV world-to-camera.
Both modules run in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, Mlp
from .transforms import affine_inverse


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """(...,4) xyzw -> (...,3,3); q need not be unit (scaled by 2/|q|^2)."""
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    return torch.stack((
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ), -1).reshape(q.shape[:-1] + (3, 3))


def mat_to_quat(m: torch.Tensor) -> torch.Tensor:
    """(...,3,3) -> (...,4) xyzw with w >= 0 (PyTorch3D's best-conditioned candidate, floor 0.1)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.reshape(m.shape[:-2] + (9,)).unbind(-1)
    t = torch.stack((1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                     1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22), dim=-1)
    q_abs = torch.where(t > 0, torch.sqrt(t.clamp_min(0)), torch.zeros_like(t))
    cand = torch.stack((  # rows: candidates from r, i, j, k; columns: (r, i, j, k)
        torch.stack((q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), -1),
        torch.stack((m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20), -1),
        torch.stack((m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21), -1),
        torch.stack((m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2), -1),
    ), -2)
    cand = cand / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = F.one_hot(q_abs.argmax(-1), 4) > 0.5
    rijk = cand[best, :].reshape(m.shape[:-2] + (4,))
    q = rijk[..., [1, 2, 3, 0]]
    return torch.where(q[..., 3:4] < 0, -q, q)


def extri_intri_to_pose_encoding(c2w: torch.Tensor, intrinsics: torch.Tensor, image_hw) -> torch.Tensor:
    """c2w (B,S,3|4,4) + pixel K (B,S,3,3) -> (B,S,9)."""
    h, w = image_hw
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    quat = mat_to_quat(c2w[..., :3, :3])
    return torch.cat((c2w[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]), dim=-1).float()


def pose_encoding_to_extri_intri(enc: torch.Tensor, image_hw) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,S,9) -> c2w (B,S,3,4), K (B,S,3,3) with the principal point at the image centre."""
    h, w = image_hw
    c2w = torch.cat((quat_to_mat(enc[..., 3:7]), enc[..., :3, None]), dim=-1)
    fy = (h / 2.0) / torch.clamp(torch.tan(enc[..., 7] / 2.0), 1e-6)
    fx = (w / 2.0) / torch.clamp(torch.tan(enc[..., 8] / 2.0), 1e-6)
    k = torch.zeros(enc.shape[:2] + (3, 3), device=enc.device)
    k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = fx, fy, w / 2, h / 2, 1.0
    return c2w, k


class CameraEnc(nn.Module):
    """Pose conditioning: normalised w2c + pixel K -> one token per view (B,S,C), attention across views."""

    def __init__(self, dim_out: int, trunk_depth: int = 4, num_heads: int = 16):
        super().__init__()
        self.trunk = nn.Sequential(*(Block(dim_out, num_heads, norm_eps=1e-5, init_value=0.01)
                                     for _ in range(trunk_depth)))
        self.token_norm = nn.LayerNorm(dim_out)
        self.trunk_norm = nn.LayerNorm(dim_out)
        self.pose_branch = Mlp(9, dim_out // 2, dim_out)

    def forward(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw) -> torch.Tensor:
        enc = extri_intri_to_pose_encoding(affine_inverse(extrinsics), intrinsics, image_hw)
        return self.trunk_norm(self.trunk(self.token_norm(self.pose_branch(enc))))


class CameraDec(nn.Module):
    """Last-layer camera token (B,S,2C) -> pose encoding (B,S,9)."""

    def __init__(self, dim_in: int):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_in), nn.ReLU())
        self.fc_t = nn.Linear(dim_in, 3)
        self.fc_qvec = nn.Linear(dim_in, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim_in, 2), nn.ReLU())

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        b, s = token.shape[:2]
        feat = self.backbone(token.reshape(b * s, -1).float())
        return torch.cat((self.fc_t(feat), self.fc_qvec(feat), self.fc_fov(feat)), dim=-1).reshape(b, s, 9)

    def decode(self, pose_enc: torch.Tensor, image_hw) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose encoding -> (w2c extrinsics (B,S,3,4), intrinsics (B,S,3,3))."""
        c2w, k = pose_encoding_to_extri_intri(pose_enc, image_hw)
        return affine_inverse(c2w)[..., :3, :], k
