"""Compare our DA3 networks with the OFFICIAL code, config by config (optional dev tool, not run in CI).

Needs the official package importable next to ours, in a throwaway environment (never a project
dependency)::

    python3 -m venv /tmp/official-venv && /tmp/official-venv/bin/pip install torch==2.13.0
    /tmp/official-venv/bin/pip install --no-deps depth-anything-3==0.1.1
    /tmp/official-venv/bin/pip install omegaconf einops addict numpy==1.26.4 pillow safetensors huggingface_hub moviepy
    /tmp/official-venv/bin/pip install --no-deps -e .
    /tmp/official-venv/bin/python scripts/check_official_parity.py --configs da3-small da3-base

Per config: the official network is built with ``torch.manual_seed(0)``, perturbed like the shared
fixture (so positional embeddings, FOV and sky are not degenerate), run on every case in fp32 (autocast
off, as the fixtures), saved in the HF layout with safetensors (shared LayerNorm de-duplicated) and
freed; then ours is loaded from that folder with our strict ``DepthAnything3.from_pretrained`` and
run on the same tensors. Printed: max |ours - official| and that divided by max |official|.

Only the network (``DepthAnything3Net.forward``) is imported from the official package: its
``api`` module imports exporters (moviepy 1.x, cv2, open3d...) that the comparison does not need.

3D Gaussians: giant and nested configs run with ``infer_gs=True`` and compare every Gaussian field
(``gs_means`` ... ``gs_opacities``; needs ``e3nn`` and, for posed cases, ``evo`` in the throwaway
environment: ``pip install e3nn && pip install --no-deps evo``). The pseudo-config ``gs-head`` compares
only the Gaussian head + adapter, at the giant's dims (dim_in 3072, features 256) and at the small
dims of ``tests/fixtures/gs_head_official.npz`` (see ``scripts/make_gs_fixture.py``), on random
features and cameras, unposed and posed: seconds instead of a full GIANT forward.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "da3" / "examples"
ANY_VIEW = ("da3-small", "da3-base", "da3-large", "da3-giant")
MONO = ("da3metric-large", "da3mono-large")
NESTED = "da3nested-giant-large"
DEFAULT_CONFIGS = ["da3-small", "da3-base", "da3metric-large", "da3mono-large", "da3-large", NESTED]
GS_CONFIGS = ("da3-giant", NESTED)  # networks with the 3D-Gaussian head: run with infer_gs
GS_FIELDS = ("means", "scales", "rotations", "harmonics", "opacities")
QUANTILE_SAMPLES = 100_000  # both codes subsample the sky-fill quantile above this many pixels


# ---------------------------------------------------------------------------------------------
# inputs


def load_images(kind: str, process_res: int) -> torch.Tensor:
    """(1,N,3,H,W) ImageNet-normalised: the example photos if present, else smooth random images."""
    from da3_blender.pipeline.preprocess import preprocess_images

    names = {"soh": ["SOH/000.png", "SOH/010.png"], "robot": [f"robot_frames/robot_unitree_f{i:03d}.png" for i in (30, 90, 150)]}[kind]
    paths = [EXAMPLES / n for n in names]
    if all(p.is_file() for p in paths):
        from da3_blender.inputs.images import load_image

        images = [load_image(p) for p in paths]
    else:
        g = torch.Generator().manual_seed(len(names))
        low = torch.rand(len(names), 3, 6, 10, generator=g)
        images = [(torch.nn.functional.interpolate(low[i:i + 1], size=(576, 1024), mode="bicubic", align_corners=False)
                   .clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for i in range(len(names))]
    return preprocess_images(images, process_res=process_res).tensor[None]


def synthetic_cameras(n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised w2c (1,n,4,4) (view 0 = identity) and pixel K (1,n,3,3) for a small rig."""
    ext = torch.eye(4).repeat(1, n, 1, 1)
    for i in range(n):
        a = np.deg2rad(4.0 * i)
        rot = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], dtype=torch.float32)
        centre = torch.tensor([0.25 * i, 0.02 * i * i, 0.0])
        ext[0, i, :3, :3] = rot.T
        ext[0, i, :3, 3] = -rot.T @ centre
    if n > 1:  # translations over the median camera distance, like the official normalisation
        ext[..., :3, 3] /= torch.linalg.norm(torch.linalg.inv(ext)[0, :, :3, 3], dim=-1).median().clamp_min(0.1)
    k = torch.tensor([[0.9 * width, 0, width / 2], [0, 0.9 * width, height / 2], [0, 0, 1]]).repeat(1, n, 1, 1)
    return ext, k


def cases_for(name: str, res: int) -> list[dict]:
    if name in MONO:
        small = 392 if res >= 392 else res  # 1 view at 392x224 has < 100k pixels: no subsampling
        return [dict(case=f"1 view {small}", x=load_images("soh", small)[:, :1]),
                dict(case=f"2 views {res} (sampled)", x=load_images("soh", res))]
    if name == NESTED:
        return [dict(case=f"1 view {res}", x=load_images("soh", res)[:, :1])]
    robot = load_images("robot", res)
    ext, k = synthetic_cameras(3, *robot.shape[-2:])
    return [dict(case=f"1 view {res}", x=load_images("soh", res)[:, :1], ray=True),
            dict(case="3 views saddle_balanced", x=robot),
            dict(case="3 views ref=middle", x=robot, strategy="middle"),
            dict(case="3 views posed", x=robot, ext=ext, k=k),
            dict(case="1 view use_ray_pose", x=load_images("soh", res)[:, :1], use_ray_pose=True)]


# ---------------------------------------------------------------------------------------------
# official side


def stub_evo():
    """The giant's Gaussian adapter imports ``evo`` (pose alignment, unused here): a stub if absent."""
    import importlib.util
    import types

    if "evo" in sys.modules or importlib.util.find_spec("evo") is not None:
        return
    for mod in ("evo", "evo.core", "evo.core.trajectory"):
        sys.modules.setdefault(mod, types.ModuleType(mod))
    sys.modules["evo.core.trajectory"].PosePath3D = None


def official_network(name: str):
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    stub_evo()
    torch.manual_seed(0)
    net = create_object(load_config(MODEL_REGISTRY[name])).eval()
    wrapper = torch.nn.Module()
    wrapper.model = net  # state-dict keys get the official "model." prefix
    return wrapper


def perturb(wrapper: torch.nn.Module):
    """Like the fixture recipe: +0.02 N(0,1) on every parameter (shared ones once); FOV head near 1 rad."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, t in sorted(wrapper.named_parameters()):
            t += 0.02 * torch.randn(t.shape, generator=g)
        for mod in wrapper.modules():
            if hasattr(mod, "fc_fov"):  # FOV near 1 rad: focal lengths of a few hundred px, not 1e7
                mod.fc_fov[0].weight *= 0.01
                mod.fc_fov[0].bias.fill_(1.0)


def calibrate_sky(wrapper: torch.nn.Module, x: torch.Tensor):
    """Shift each sky head's last bias so that about 30 % of the pixels are sky (both paths used)."""
    for net in wrapper.modules():
        head = getattr(net, "head", None)
        conv = getattr(getattr(head, "scratch", None), "sky_output_conv2", None)
        if conv is None:
            continue
        seen = []
        h = conv.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            net(x)
        h.remove()
        with torch.no_grad():
            conv[-1].bias += 0.3 - torch.quantile(seen[0].flatten().float(), 0.7)


def run_official(wrapper, c: dict) -> dict:
    net = wrapper.model
    raw = {}
    head = net.da3.head if hasattr(net, "da3") else net.head
    hooks = [head.register_forward_hook(lambda _m, _i, out: raw.update(ray=out.get("ray"), ray_conf=out.get("ray_conf")))]
    if hasattr(net, "da3_metric"):  # the nested net returns no sky map: keep the metric branch's
        hooks.append(net.da3_metric.register_forward_hook(lambda _m, _i, out: raw.update(metric_sky=out.sky.clone())))
    if c.get("use_ray_pose"):
        torch.manual_seed(1234)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        out = net(c["x"], c.get("ext"), c.get("k"), [], bool(c.get("gs")), c.get("use_ray_pose", False),
                  c.get("strategy", "saddle_balanced"))
    for h in hooks:
        h.remove()
    res = {k: out[k] for k in ("depth", "depth_conf", "extrinsics", "intrinsics", "sky", "scale_factor") if k in out}
    if out.get("gaussians") is not None:
        res.update({f"gs_{k}": getattr(out.gaussians, k) for k in GS_FIELDS})
    if c.get("ray") and raw.get("ray") is not None:
        res.update(ray=raw["ray"], ray_conf=raw["ray_conf"])
    if "metric_sky" in raw:
        res["metric_sky"] = raw["metric_sky"]
    return res


def save_hf_folder(wrapper, name: str, folder: Path):
    from safetensors.torch import save_model

    save_model(wrapper, str(folder / "model.safetensors"))  # the official save_pretrained path
    (folder / "config.json").write_text(json.dumps({"model_name": name}))


# ---------------------------------------------------------------------------------------------
# our side


def run_ours(model, c: dict) -> dict:
    if c.get("use_ray_pose"):
        torch.manual_seed(1234)  # our solver uses the global RNG like the official one when unseeded
    out = model(c["x"], c.get("ext"), c.get("k"), use_ray_pose=c.get("use_ray_pose", False),
                ref_view_strategy=c.get("strategy", "saddle_balanced"), compute_dtype="fp32", keep_ray=bool(c.get("ray")),
                infer_gs=bool(c.get("gs")))
    res = {k: v for k, v in out.items() if k in ("depth", "depth_conf", "extrinsics", "intrinsics", "sky", "scale_factor", "ray", "ray_conf")}
    res.update({f"gs_{k}": v for k, v in (out.get("gaussians") or {}).items() if k in GS_FIELDS})
    return res


# ---------------------------------------------------------------------------------------------
# comparison


def errors(ours, ref) -> tuple[float, float, float]:
    a = torch.as_tensor(ours, dtype=torch.float64)
    b = torch.as_tensor(ref, dtype=torch.float64)
    if a.shape != b.shape:
        a, b = a[..., :3, :] if a.shape[-2:] == (4, 4) else a, b[..., :3, :] if b.shape[-2:] == (4, 4) else b
    if a.shape != b.shape:
        raise AssertionError(f"shape {tuple(a.shape)} vs official {tuple(b.shape)}")
    d, m = (a - b).abs().max().item(), b.abs().max().item()
    return d, d / max(m, 1e-12), m


def compare(ours: dict, ref: dict, x: torch.Tensor) -> list[tuple[str, str]]:
    rows = []
    sampled = "sky" in ref and x.shape[1] * x.shape[-1] * x.shape[-2] > QUANTILE_SAMPLES
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "sky", "ray", "ray_conf", "scale_factor",
                *(f"gs_{k}" for k in GS_FIELDS)):
        if key not in ref and key not in ours:
            continue
        if key not in ref or key not in ours:
            rows.append((key, f"only in {'ours' if key in ours else 'official'}"))
            continue
        if key == "depth" and sampled:
            non_sky = ref["sky"] < 0.3
            d, r, m = errors(ours["depth"][non_sky], ref["depth"][non_sky])
            fill_o, fill_r = ours["depth"][~non_sky].max().item(), ref["depth"][~non_sky].max().item()
            rows.append(("depth (non-sky)", f"{d:.2e} / {r:.1e}   (max|official| {m:.3g})"))
            rows.append(("sky fill value", f"{fill_o:.5g} vs {fill_r:.5g} (rel {abs(fill_o - fill_r) / abs(fill_r):.1e}; random 100k-sample 99% quantile)"))
            continue
        d, r, m = errors(ours[key], ref[key])
        rows.append((key, f"{d:.2e} / {r:.1e}   (max|official| {m:.3g})"))
    sky = ref.get("sky", ref.get("metric_sky"))
    if sky is not None:
        frac = (sky >= 0.3).float().mean().item()
        rows.append(("sky pixels", f"{100 * frac:.0f} % of the image (fill path exercised: {'yes' if 0 < frac < 1 else 'no'})"))
    return rows


def check_config(name: str, res: int, workdir: Path, only: list[str] | None = None) -> list[tuple]:
    from da3_blender.api import DepthAnything3

    t0 = time.perf_counter()
    cases = [c for c in cases_for(name, res) if not only or any(o in c["case"] for o in only)]
    if name in GS_CONFIGS:
        for c in cases:
            c["gs"] = True
    wrapper = official_network(name)
    perturb(wrapper)
    if name in MONO or name == NESTED:
        calibrate_sky(wrapper, cases[0]["x"])
    refs = [run_official(wrapper, c) for c in cases]
    chosen = ref_views(wrapper, cases)
    folder = workdir / name
    folder.mkdir()
    save_hf_folder(wrapper, name, folder)
    del wrapper
    gc.collect()
    model = DepthAnything3.from_pretrained(folder, device="cpu", compute_dtype="fp32")
    rows = []
    for c, ref in zip(cases, refs):
        label = c["case"] + (f" (ref view {chosen[c['case']]})" if c["case"] in chosen else "")
        for key, text in compare(run_ours(model, c), ref, c["x"]):
            rows.append((name, label, key, text))
    del model
    gc.collect()
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    print(f"# {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows


def check_ray_solver(seeds=(0, 1, 2)) -> list[tuple]:
    """Both ray-pose solvers on a well-conditioned ray map (a real pinhole camera plus noise), same RNG seed.

    Random-weight ray maps are nearly degenerate, so there float-level differences move the RANSAC
    result; this case shows what the solvers themselves do.
    """
    from depth_anything_3.utils.ray_utils import get_extrinsic_from_camray

    from da3_blender.model.ray_pose import solve_ray_pose
    from da3_blender.model.transforms import affine_inverse

    height, width, h, w = 280, 504, 160, 288
    g = torch.Generator().manual_seed(0)
    a = np.deg2rad(10.0)
    rot = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], dtype=torch.float32)
    v, u = torch.meshgrid((torch.arange(h) + 0.5) * height / h, (torch.arange(w) + 0.5) * width / w, indexing="ij")
    d = torch.stack([(u - width / 2) / 400.0, (v - height / 2) / 410.0, torch.ones_like(u)], -1) @ rot.T
    centre = torch.tensor([0.3, -0.1, 0.2]).expand(h, w, 3)
    ray = torch.cat([d + 0.01 * torch.randn(d.shape, generator=g), centre + 0.01 * torch.randn(centre.shape, generator=g)], -1)[None, None]
    conf = 1 + 3 * torch.rand(1, 1, h, w, generator=g)
    worst = dict(extrinsics=(0.0, 0.0, 1.0), intrinsics=(0.0, 0.0, 1.0))
    for seed in seeds:
        torch.manual_seed(seed)
        c2w, focal, pp = get_extrinsic_from_camray(ray.clone(), conf.clone(), h, w)
        torch.manual_seed(seed)
        ext, k = solve_ray_pose(ray.clone(), conf.clone(), height, width)
        ref_k = torch.zeros_like(k)
        ref_k[..., 0, 0], ref_k[..., 1, 1] = focal[..., 0] * width / 2, focal[..., 1] * height / 2
        ref_k[..., 0, 2], ref_k[..., 1, 2], ref_k[..., 2, 2] = pp[..., 0] * width / 2, pp[..., 1] * height / 2, 1.0
        for key, ours, ref in (("extrinsics", ext, affine_inverse(c2w)[..., :3, :]), ("intrinsics", k, ref_k)):
            e = errors(ours, ref)
            worst[key] = max(worst[key], e)
    case = f"synthetic pinhole ray map (fx 400, fy 410), seeds {list(seeds)}"
    return [("ray solver", case, key, f"{d:.2e} / {r:.1e}   (max|official| {m:.3g})") for key, (d, r, m) in worst.items()]


def check_gs_head(seed: int = 0) -> list[tuple]:
    """The Gaussian head + adapter alone (official vs ours, same random weights), at the giant's dims and
    at the fixture's small dims, 2 views unposed and 3 views posed (input centres x1.7: the Umeyama step)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from addict import Dict
    from depth_anything_3.model.da3 import DepthAnything3Net as OfficialNet
    from depth_anything_3.model.gs_adapter import GaussianAdapter as OfficialAdapter
    from depth_anything_3.model.gsdpt import GSDPT as OfficialGSDPT
    from make_gs_fixture import cameras, scaled_input_poses

    from da3_blender.model.dpt import GSDPT
    from da3_blender.model.gs_adapter import GaussianAdapter

    rows = []
    for label, dim_in, features, out_channels, (height, width) in (
            ("giant dims", 3072, 256, (256, 512, 1024, 1024), (56, 84)),
            ("fixture dims", 64, 32, (8, 16, 32, 32), (42, 70))):
        torch.manual_seed(seed)
        official = OfficialGSDPT(dim_in=dim_in, output_dim=38, features=features, out_channels=out_channels).eval()
        runner = type("GSRunner", (), {})()
        runner.gs_head = official
        runner.gs_adapter = OfficialAdapter(sh_degree=2, pred_offset_depth=True, pred_offset_xy=True)
        ours = GSDPT(dim_in, features, out_channels).eval()
        ours.load_state_dict(official.state_dict(), strict=True)
        g = torch.Generator().manual_seed(seed + 1)
        for n, factor in ((2, None), (3, 1.7)):
            feats = [torch.randn(1, n, (height // 14) * (width // 14), dim_in, generator=g) for _ in range(4)]
            images = torch.randn(1, n, 3, height, width, generator=g)
            depth = 1.0 + 2.0 * torch.rand(1, n, height, width, generator=g)
            w2c, k = cameras(n, g)
            inp = scaled_input_poses(w2c, factor, g) if factor else None
            with torch.no_grad():
                ref = OfficialNet._process_gs_head(runner, [(f, None) for f in feats], height, width,
                                                   Dict(depth=depth, extrinsics=w2c, intrinsics=k), images, inp, k)
                raw = ours(feats, height, width, images)
                mine = GaussianAdapter()(w2c, k, depth, raw["raw_gs_conf"], raw["raw_gs"], (height, width), inp)
            case = f"{label}, {n} views {height}x{width}" + (" posed" if inp is not None else "")
            for key in GS_FIELDS:
                d, r, m = errors(mine[key], getattr(ref.gaussians, key))
                rows.append(("gs-head", case, f"gs_{key}", f"{d:.2e} / {r:.1e}   (max|official| {m:.3g})"))
    return rows


def ref_views(wrapper, cases) -> dict:
    """Which view the official saddle_balanced selection picks in the unposed 3-view case."""
    import depth_anything_3.model.dinov2.vision_transformer as vt

    picked = {}
    original = vt.select_reference_view
    for c in cases:
        if c["x"].shape[1] < 3 or "ext" in c or c.get("strategy") or c.get("use_ray_pose") or hasattr(wrapper.model, "da3"):
            continue
        vt.select_reference_view = lambda x, strategy, _o=original: picked.setdefault(c["case"], _o(x, strategy=strategy))
        try:
            run_official(wrapper, c)
        finally:
            vt.select_reference_view = original
        picked[c["case"]] = int(picked[c["case"]].flatten()[0])
    return picked


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
    p.add_argument("--res", type=int, default=None, help="process_res (default: 504 for small/base, 392 for large, 280 for giant)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-ray-solver", action="store_true", help="skip the synthetic ray-pose solver comparison")
    p.add_argument("--cases", nargs="*", default=None,
                   help="only the cases whose label contains one of these (e.g. '1 view' posed): a GIANT on a CPU is slow")
    args = p.parse_args(argv)
    try:
        import depth_anything_3  # noqa: F401
    except ImportError:
        print("the official depth_anything_3 package is not importable here; see this script's docstring")
        return 2
    torch.set_num_threads(args.threads)
    rows = [] if args.skip_ray_solver else check_ray_solver()
    with tempfile.TemporaryDirectory(prefix="da3-parity-") as tmp:
        for name in args.configs:
            if name == "gs-head":
                rows += check_gs_head()
                continue
            res = args.res or (504 if name in ("da3-small", "da3-base") else 280 if "giant" in name else 392)
            rows += check_config(name, res, Path(tmp), args.cases)
    widths = [max(len(str(r[i])) for r in rows + [("config", "case", "output", "")]) for i in range(3)]
    print(f"{'config':<{widths[0]}}  {'case':<{widths[1]}}  {'output':<{widths[2]}}  max|ours-official| / rel to max|official|")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
