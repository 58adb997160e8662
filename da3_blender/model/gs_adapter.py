"""The Gaussian adapter: per-pixel raw GS-head channels -> world-space 3D Gaussians (spec §4.5).

Follows the official ``GaussianAdapter`` (``sh_degree=2``, ``pred_offset_xy``, ``pred_offset_depth``,
scales in [1e-5, 30]) including its quirks, which the network was trained through:

- depth is used as the distance along a *unit* ray (not as z-depth), after adding the predicted
  depth offset (raw channel 36);
- with input poses, the predicted camera centres and depths are scaled by the Umeyama Sim(3) scale
  between the predicted and the input poses (clamped to [1/3, 3]; 1 when the fit is degenerate, e.g.
  one or two views);
- the raw quaternion is read as x y z w, reordered to w x y z and fed to a *scalar-last*
  quaternion-to-matrix function; the world rotation is then turned back into a scalar-last
  quaternion that is *labelled* w x y z (gsplat, PLY ``rot_0..3``). ``rotations`` below are that
  labelled quaternion: read them as (w, x, y, z);
- SH bands 1-2 are damped by ``[1, 0.025 x3, 0.00625 x5]`` and rotated to world by
  :func:`.sh_rotation.rotate_sh`.

Everything runs in fp32. Output (dict of tensors, B = batch, M = S*H*W Gaussians per batch item):
``means`` (B,M,3), ``scales`` (B,M,3), ``rotations`` (B,M,4), ``harmonics`` (B,M,3,9) (colour-major:
3 colours x 9 coefficients), ``opacities`` (B,M), and ``pose_scale`` (B,) (the scale applied above).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..geometry import _umeyama
from .camera import mat_to_quat, quat_to_mat
from .sh_rotation import rotate_sh
from .transforms import affine_inverse, as_4x4

SH_DEGREE = 2
SCALE_MIN, SCALE_MAX = 1e-5, 30.0
RAW_CHANNELS = 2 + 3 + 4 + 3 * (SH_DEGREE + 1) ** 2 + 1  # xy offset, scale, quaternion, SH, depth offset
POSE_SCALE_CLAMP = (1 / 3.0, 3.0)


def sh_mask(degree: int = SH_DEGREE) -> torch.Tensor:
    """Per-coefficient damping: 1 for band 0, 0.1 * 0.25**l for band l."""
    mask = torch.ones((degree + 1) ** 2)
    for l in range(1, degree + 1):
        mask[l * l:(l + 1) ** 2] = 0.1 * 0.25**l
    return mask


def pdf_to_opacity(p: torch.Tensor) -> torch.Tensor:
    """The official ``map_pdf_to_opacity`` at step 0 (exponent 1): p, with its exact rounding."""
    return 0.5 * (1 - (1 - p) + p)


def pose_scale(pred_w2c: torch.Tensor, input_w2c: torch.Tensor) -> torch.Tensor:
    """(B,) Umeyama scale taking the predicted camera centres onto the input ones, clamped to [1/3, 3].

    As the official ``batch_align_poses_umeyama`` (evo): 1 where the fit is degenerate (fewer than
    three non-collinear centres).
    """
    pred_c = affine_inverse(pred_w2c)[..., :3, 3].detach().double().cpu().numpy()
    in_c = affine_inverse(input_w2c)[..., :3, 3].detach().double().cpu().numpy()
    scales = []
    for est, ref in zip(pred_c, in_c):
        s, _, _, ok = _umeyama(est, ref)
        scales.append(s if ok and np.isfinite(s) else 1.0)
    out = torch.tensor(scales, dtype=torch.float32, device=pred_w2c.device)
    return out.clamp(*POSE_SCALE_CLAMP)


class GaussianAdapter(nn.Module):
    """No parameters; see the module docstring."""

    def forward(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, depth: torch.Tensor,
                opacity: torch.Tensor, raw: torch.Tensor, image_hw, input_extrinsics: torch.Tensor | None = None,
                eps: float = 1e-8) -> dict[str, torch.Tensor]:
        """extrinsics (B,S,3|4,4) predicted w2c; intrinsics (B,S,3,3) px; depth, opacity (B,S,H,W);
        raw (B,S,H,W,37); input_extrinsics (B,S,4,4) normalised input w2c or None."""
        height, width = (int(v) for v in image_hw)
        b, s = raw.shape[:2]
        w2c = as_4x4(extrinsics.float())
        c2w = affine_inverse(w2c).clone()
        k_n = intrinsics.float().clone()
        k_n[..., 0, :] /= width
        k_n[..., 1, :] /= height

        gs_depth = depth + raw[..., -1]
        scale_fix = torch.ones(b, device=raw.device)
        if input_extrinsics is not None:
            input_w2c = as_4x4(input_extrinsics.float())
            if not torch.equal(w2c, input_w2c):
                scale_fix = pose_scale(w2c, input_w2c)
                c2w[..., :3, 3] = c2w[..., :3, 3] * scale_fix[:, None, None]
                gs_depth = gs_depth * scale_fix[:, None, None, None]

        # means: unit rays through the (offset) pixel centres, depth as the distance along them
        ys = (torch.arange(height, device=raw.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=raw.device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H,W,2) as (x, y)
        xy = grid + raw[..., :2] * torch.tensor([1.0 / width, 1.0 / height], device=raw.device)
        k_inv = torch.linalg.inv(k_n)[:, :, None, None]  # (B,S,1,1,3,3)
        pix = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
        dirs = (k_inv @ pix[..., None])[..., 0]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        dirs = (c2w[:, :, None, None, :3, :3] @ dirs[..., None])[..., 0]
        means = c2w[:, :, None, None, :3, 3] + dirs * gs_depth[..., None]

        # scales: resolution-independent, proportional to depth
        unit = torch.sigmoid(raw[..., 2:5]) * (SCALE_MAX - SCALE_MIN) + SCALE_MIN
        pixel = torch.tensor([1.0 / width, 1.0 / height], device=raw.device)
        multiplier = 0.1 * (torch.linalg.inv(k_n[..., :2, :2]) @ pixel).sum(-1)  # (B,S)
        scales = unit * gs_depth[..., None] * multiplier[..., None, None, None]

        # rotations: the official channel shuffles (see module docstring)
        q = raw[..., 5:9]
        q = q / (q.norm(dim=-1, keepdim=True) + eps)
        q = torch.cat([q[..., 3:4], q[..., 0:3]], dim=-1)  # "xyzw -> wxyz", then read as scalar-last
        rot_world = c2w[:, :, None, None, :3, :3] @ quat_to_mat(q)
        rotations = mat_to_quat(rot_world)

        # colour: damped SH coefficients rotated to world
        sh = raw[..., 9:9 + 3 * (SH_DEGREE + 1) ** 2].unflatten(-1, (3, (SH_DEGREE + 1) ** 2))
        sh = sh * sh_mask().to(sh.device)
        sh = rotate_sh(sh, c2w[:, :, None, None, None, :3, :3])

        flat = lambda t: t.reshape(b, -1, *t.shape[4:])  # noqa: E731  (B,S,H,W,...) -> (B,M,...)
        return {"means": flat(means), "scales": flat(scales), "rotations": flat(rotations), "harmonics": flat(sh),
                "opacities": flat(pdf_to_opacity(opacity)), "pose_scale": scale_fix}


def similarity_transform(gs: dict[str, torch.Tensor], scale: float, rotation=None, translation=None) -> dict:
    """Gaussians (B,M,...) mapped by ``x -> scale * R x + t``: centres moved, sizes scaled, axes and SH
    colours rotated (with the same :func:`rotate_sh` as the adapter, so the result is as if the
    cameras had been moved). ``rotation`` (3,3) and ``translation`` (3,) default to identity/zero."""
    out = dict(gs)
    means, scales = gs["means"].float(), gs["scales"].float()
    if rotation is not None:
        rot = torch.as_tensor(np.asarray(rotation), dtype=torch.float32, device=means.device)
        means = means @ rot.T
        wxyz = gs["rotations"].float()
        axes = rot @ quat_to_mat(torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1))  # renderers read w x y z
        xyzw = mat_to_quat(axes)
        out["rotations"] = torch.cat([xyzw[..., 3:], xyzw[..., :3]], dim=-1)
        out["harmonics"] = rotate_sh(gs["harmonics"].float(), rot)
    means = means * float(scale)
    if translation is not None:
        means = means + torch.as_tensor(np.asarray(translation), dtype=torch.float32, device=means.device)
    out["means"], out["scales"] = means, scales * float(scale)
    return out
