"""Rotating real spherical-harmonic (SH) colour coefficients, as the official Gaussian adapter does.

The official code rotates SH bands with e3nn: the 3x3 rotation is conjugated by the axis permutation
yzx -> xyz, projected onto SO(3), turned into e3nn's Y-X-Y Euler angles (alpha, beta, gamma), and the
band-l coefficients are multiplied by the Wigner matrix ``D_l(alpha, -beta, gamma)`` (note the sign
of beta: the network was trained with it). e3nn builds ``D_l = exp(a X_y) exp(b X_x) exp(c X_y)`` from
the so(3) generators of its real SH basis; we build the same generators from their definition
(SU(2) ladder operators, then the complex -> real change of basis) and use ``torch.matrix_exp``.
Only l <= 2 is needed (DA3-GIANT predicts SH degree 2); the formulas hold for any l.
"""

from __future__ import annotations

import functools
import math

import torch

_YZX_TO_XYZ = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@functools.lru_cache(maxsize=None)
def so3_generators(l: int) -> torch.Tensor:
    """(3, 2l+1, 2l+1) float64 generators of band l in e3nn's real SH basis: [0] rotates about X,
    [1] about Y (e3nn's "up" axis), [2] about -Z. e3nn computes them in fp32; fp64 here."""
    m = torch.arange(-l, l, dtype=torch.float64)
    raising = torch.diag(-torch.sqrt(l * (l + 1) - m * (m + 1)), diagonal=-1).to(torch.complex128)
    m = torch.arange(-l + 1, l + 1, dtype=torch.float64)
    lowering = torch.diag(torch.sqrt(l * (l + 1) - m * (m - 1)), diagonal=1).to(torch.complex128)
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    su2 = torch.stack([0.5 * (raising + lowering), torch.diag(1j * m), -0.5j * (raising - lowering)])
    # complex -> real SH basis (Wikipedia "real form"), times (-i)^l so that couplings are real
    q = torch.zeros((2 * l + 1, 2 * l + 1), dtype=torch.complex128)
    r2 = 2**-0.5
    for k in range(-l, 0):
        q[l + k, l - k] = r2
        q[l + k, l + k] = -1j * r2
    q[l, l] = 1
    for k in range(1, l + 1):
        q[l + k, l + k] = (-1) ** k * r2
        q[l + k, l - k] = 1j * (-1) ** k * r2
    q = (-1j) ** l * q
    gens = q.conj().T @ su2 @ q
    return gens.real.contiguous()


def wigner_d(l: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(..., 2l+1, 2l+1) float64 Wigner matrices of the rotation Y(alpha) X(beta) Y(gamma)."""
    gens = so3_generators(l).to(alpha.device)
    a, b, c = (torch.remainder(t.double(), 2 * math.pi)[..., None, None] for t in (alpha, beta, gamma))
    return torch.matrix_exp(a * gens[1]) @ torch.matrix_exp(b * gens[0]) @ torch.matrix_exp(c * gens[1])


def _rot_x(angle: torch.Tensor) -> torch.Tensor:
    c, s, o, z = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], -2)


def _rot_y(angle: torch.Tensor) -> torch.Tensor:
    c, s, o, z = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)


def matrix_to_angles(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y-X-Y Euler angles (alpha, beta, gamma) with ``rot = Y(alpha) X(beta) Y(gamma)``."""
    y_axis = torch.nn.functional.normalize(rot[..., :, 1], dim=-1).clamp(-1, 1)  # rot @ e_y
    beta = torch.acos(y_axis[..., 1])
    alpha = torch.atan2(y_axis[..., 0], y_axis[..., 2])
    rest = (_rot_y(alpha) @ _rot_x(beta)).transpose(-1, -2) @ rot
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return alpha, beta, gamma


def project_to_so3(mat: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (SVD, reflections flipped), rescaled so that det is 1 to float precision."""
    u, _, vh = torch.linalg.svd(mat)
    flip = torch.det(u) * torch.det(vh.mH) < 0
    sign = torch.ones(mat.shape[:-2] + (3,), dtype=mat.dtype, device=mat.device)
    sign[..., 2] = torch.where(flip, -1.0, 1.0).to(mat.dtype)
    rot = (u * sign[..., None, :]) @ vh
    return rot * torch.pow(torch.det(rot), -1.0 / 3.0)[..., None, None]


def rotate_sh(sh: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate SH coefficients ``sh`` (..., n) with n = (degree+1)^2 by world rotations ``rot`` (..., 3, 3).

    ``rot`` broadcasts against ``sh``'s leading dimensions (e.g. one rotation per view). Band 0 is
    unchanged. Computed in fp32 (angles) and fp64 (Wigner matrices), returned in ``sh``'s dtype.
    """
    perm = _YZX_TO_XYZ.to(device=rot.device)
    permuted = project_to_so3(perm.T @ rot.float() @ perm)
    alpha, beta, gamma = matrix_to_angles(permuted)
    degree = math.isqrt(sh.shape[-1]) - 1
    out = [sh[..., :1]]
    for l in range(1, degree + 1):
        d = wigner_d(l, alpha, -beta, gamma).to(sh.dtype)
        out.append(torch.einsum("...ij,...j->...i", d, sh[..., l * l:(l + 1) ** 2]))
    return torch.cat(out, dim=-1)
