"""Make ``tests/fixtures/gs_head_official.npz`` (+ ``gs_head_official.ply``) with the OFFICIAL DA3 code.

A dev tool, run only in a throwaway environment that has the official package (never a project
dependency)::

    python3.11 -m venv /tmp/oracle
    /tmp/oracle/bin/pip install torch==2.13.0                       # the CPU wheel
    /tmp/oracle/bin/pip install --no-deps depth-anything-3==0.1.1 evo
    /tmp/oracle/bin/pip install omegaconf einops addict "numpy<2" pillow safetensors plyfile e3nn
    /tmp/oracle/bin/python scripts/make_gs_fixture.py

Recipe: the official ``GSDPT`` (giant's ``gs_head``) with small dims (dim_in 64, features 32,
out_channels 8/16/32/32; random weights from ``torch.manual_seed(0)``) and ``GaussianAdapter`` with the
giant config (sh_degree 2, depth and xy offsets, scales [1e-5, 30]) are run through the official
``DepthAnything3Net._process_gs_head`` on random backbone features, random normalised images, smooth
positive depth and synthetic predicted cameras, at 42x70 (3x5 patches), in fp32 on the CPU:

- ``unposed``: 2 views, no input poses;
- ``posed``: 3 views with input poses whose camera centres are the predicted ones x1.7 (plus noise),
  so the adapter's Umeyama scale step runs.

Saved per case ``<case>/in/*`` (feats (4,1,S,P,C), images, depth, extrinsics (1,S,3,4) w2c,
intrinsics, input_extrinsics) and ``<case>/out/*`` (means, scales, rotations, harmonics, opacities,
plus the head's raw_gs_conf), and the head weights ``w/<state-dict key>``. The ply is the
official ``save_gaussian_ply`` output for the unposed case with the arguments of the official
``export_to_gs_ply`` (DC only, logit opacity, depth-percentile 0.9 and border pruning, every view).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
HEIGHT, WIDTH = 42, 70
DIM_IN, FEATURES, OUT_CHANNELS = 64, 32, (8, 16, 32, 32)


def cameras(n: int, g: torch.Generator):
    """Predicted w2c (1,n,3,4) (view 0 = identity) and pixel K (1,n,3,3)."""
    w2c = torch.eye(4).repeat(1, n, 1, 1)
    for i in range(1, n):
        a, b = math.radians(12.0 * i), math.radians(-7.0 * i)
        ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
        rot = ry @ rx
        centre = torch.tensor([0.4 * i, -0.1 * i, 0.05 * i * i]) + 0.02 * torch.randn(3, generator=g)
        w2c[0, i, :3, :3] = rot.T
        w2c[0, i, :3, 3] = -rot.T @ centre
    k = torch.tensor([[0.8 * WIDTH, 0, WIDTH / 2], [0, 0.85 * WIDTH, HEIGHT / 2], [0, 0, 1]]).repeat(1, n, 1, 1)
    return w2c[:, :, :3, :], k


def scaled_input_poses(w2c34: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    """Input w2c (1,n,4,4): the predicted cameras with centres x factor (+ noise), same rotations."""
    w2c = torch.eye(4).repeat(*w2c34.shape[:2], 1, 1)
    w2c[..., :3, :] = w2c34
    c2w = torch.linalg.inv(w2c)
    c2w[..., :3, 3] = c2w[..., :3, 3] * factor + 0.01 * torch.randn(c2w[..., :3, 3].shape, generator=g)
    return torch.linalg.inv(c2w)


def main() -> int:
    from addict import Dict

    from depth_anything_3.model.da3 import DepthAnything3Net
    from depth_anything_3.model.gs_adapter import GaussianAdapter
    from depth_anything_3.model.gsdpt import GSDPT
    from depth_anything_3.specs import Gaussians  # noqa: F401  (import check)
    from depth_anything_3.utils.gsply_helpers import save_gaussian_ply

    torch.manual_seed(0)
    head = GSDPT(dim_in=DIM_IN, output_dim=38, features=FEATURES, out_channels=OUT_CHANNELS).eval()
    adapter = GaussianAdapter(sh_degree=2, pred_color=False, pred_offset_depth=True, pred_offset_xy=True,
                              gaussian_scale_min=1e-5, gaussian_scale_max=30.0)
    runner = type("GSRunner", (), {})()
    runner.gs_head, runner.gs_adapter = head, adapter

    arrays = {f"w/{k}": v.numpy() for k, v in head.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    ph, pw = HEIGHT // 14, WIDTH // 14
    cases = {"unposed": (2, None), "posed": (3, 1.7)}
    results = {}
    for case, (n, factor) in cases.items():
        feats = [torch.randn(1, n, ph * pw, DIM_IN, generator=g) for _ in range(4)]
        images = torch.randn(1, n, 3, HEIGHT, WIDTH, generator=g)
        low = 1.0 + 2.0 * torch.rand(1, n, 1, 3, 4, generator=g)
        depth = torch.nn.functional.interpolate(low.flatten(0, 1), size=(HEIGHT, WIDTH), mode="bilinear",
                                                align_corners=False).reshape(1, n, HEIGHT, WIDTH)
        w2c, k = cameras(n, g)
        inp = scaled_input_poses(w2c, factor, g) if factor is not None else None
        output = Dict(depth=depth.clone(), extrinsics=w2c.clone(), intrinsics=k.clone())
        raw = {}
        hook = head.register_forward_hook(lambda _m, _i, o: raw.update(raw_gs=o.raw_gs, raw_gs_conf=o.raw_gs_conf))
        with torch.no_grad():
            out = DepthAnything3Net._process_gs_head(runner, [(f, None) for f in feats], HEIGHT, WIDTH, output,
                                                     images, inp, k if inp is not None else None)
        hook.remove()
        gs = out.gaussians
        prefix = f"{case}/"
        arrays[prefix + "in/feats"] = torch.stack(feats).numpy()
        arrays[prefix + "in/images"] = images.numpy()
        arrays[prefix + "in/depth"] = depth.numpy()
        arrays[prefix + "in/extrinsics"] = w2c.numpy()
        arrays[prefix + "in/intrinsics"] = k.numpy()
        if inp is not None:
            arrays[prefix + "in/input_extrinsics"] = inp.numpy()
        for key in ("means", "scales", "rotations", "harmonics", "opacities"):
            arrays[prefix + f"out/{key}"] = getattr(gs, key).numpy()
        arrays[prefix + "out/raw_gs_conf"] = raw["raw_gs_conf"].numpy()
        results[case] = (gs, depth)

    gs, depth = results["unposed"]
    ply = OUT / "gs_head_official.ply"
    save_gaussian_ply(gaussians=gs, save_path=str(ply), ctx_depth=depth[0].unsqueeze(-1), shift_and_scale=False,
                      save_sh_dc_only=True, gs_views_interval=1, inv_opacity=True, prune_by_depth_percent=0.9,
                      prune_border_gs=True, match_3dgs_mcmc_dev=False)
    np.savez_compressed(OUT / "gs_head_official.npz", **arrays)
    sizes = {p.name: p.stat().st_size for p in (OUT / "gs_head_official.npz", ply)}
    print(f"wrote {sizes}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
