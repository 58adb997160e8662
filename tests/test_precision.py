"""The CPU precision policy: ``auto`` picks bf16 only on a processor with native bf16 that measures
faster; bf16 keeps the heads, cameras and residual stream in fp32 and stays within the limits of
``docs/precision.md`` on the DA3-SMALL fixture (against the official fp32 outputs)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from da3_blender.api import DepthAnything3  # noqa: E402
from da3_blender.errors import BadInputError  # noqa: E402
from da3_blender.model import cpu_bf16  # noqa: E402
from da3_blender.model.precision import backbone_dtype  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from check_precision import LIMITS, errors, over_limits  # noqa: E402


@pytest.fixture
def fresh_decision(monkeypatch):
    """Forget this process's measurement, so each test decides again."""
    monkeypatch.setattr(cpu_bf16, "_decision", {})


def test_auto_is_fp32_without_native_bf16(fresh_decision, monkeypatch):
    monkeypatch.setattr(cpu_bf16, "native_bf16", lambda: None)
    monkeypatch.setattr(cpu_bf16, "_best_times", lambda budget: pytest.fail("no micro-benchmark without native bf16"))
    assert backbone_dtype(torch.device("cpu"), "auto") is None
    assert backbone_dtype(torch.device("cpu"), "bf16") is torch.bfloat16  # asked for explicitly


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(1.0, 0.4, torch.bfloat16), (1.0, 0.95, None)])
def test_auto_measures_once_and_picks_bf16_only_when_faster(fresh_decision, monkeypatch, fp32_s, bf16_s, expected):
    calls = []
    monkeypatch.setattr(cpu_bf16, "native_bf16", lambda: "avx512_bf16")
    monkeypatch.setattr(cpu_bf16, "_best_times", lambda budget: calls.append(budget) or (fp32_s, bf16_s))
    assert backbone_dtype(torch.device("cpu"), "auto") is expected
    assert backbone_dtype(torch.device("cpu"), "auto") is expected
    assert len(calls) == 1 and calls[0] <= 1.0  # once per process, within a second
    assert backbone_dtype(torch.device("cpu"), "fp32") is None  # fp32 forces the old path


def test_micro_benchmark_is_quick_and_restores_threads():
    threads = torch.get_num_threads()
    fp32_s, bf16_s = cpu_bf16._best_times(0.2)
    assert fp32_s > 0 and bf16_s > 0
    assert torch.get_num_threads() == threads


@pytest.fixture(scope="module")
def bf16_model(fixture_dir):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return DepthAnything3.from_pretrained(fixture_dir, device="cpu", compute_dtype="bf16")


@pytest.fixture(scope="module")
def pair(bf16_model, fixture_dir):
    ref = dict(np.load(fixture_dir / "pair_000_010.npz"))
    out = bf16_model(torch.from_numpy(ref["input_tensor"]))
    return ref, out


def test_bf16_converts_only_the_block_weights_once(bf16_model, pair):
    net = bf16_model.model
    blk = net.backbone.pretrained.blocks[0]
    assert blk.attn.qkv.weight.dtype == torch.bfloat16 and blk.mlp.fc1.weight.dtype == torch.bfloat16
    assert blk.norm1.weight.dtype == torch.float32 and blk.ls1.gamma.dtype == torch.float32
    assert net.backbone.pretrained.patch_embed.proj.weight.dtype == torch.float32
    heads_and_cameras = [p for m in (net.head, net.cam_dec, net.cam_enc) for p in m.parameters()]
    assert all(p.dtype == torch.float32 for p in heads_and_cameras)
    _, out = pair
    assert all(v.dtype == torch.float32 for v in out.values())
    with pytest.raises(BadInputError, match="compute_dtype='fp32'"):
        bf16_model(torch.zeros(1, 1, 3, 28, 28), compute_dtype="fp32")


def test_bf16_error_against_the_official_fp32_outputs_is_within_the_limits(pair):
    ref, out = pair
    got = {k: out[k][0].numpy() for k in ("depth", "extrinsics", "intrinsics")}
    errs = errors({"depth": ref["depth"], "extrinsics": ref["extrinsics"], "intrinsics": ref["intrinsics"]}, got)
    assert set(errs) == set(LIMITS)
    assert not over_limits(errs), errs
    assert errs["depth_rel_max"] > 0  # bf16 really ran (an fp32 forward matches to 1e-6)


def test_limits_catch_a_real_error(pair):
    """The metric sees what a user would: 2 % off in depth or a 5 degree turned camera fails."""
    ref, out = pair
    got = {k: out[k][0].numpy().copy() for k in ("depth", "extrinsics", "intrinsics")}
    base = {"depth": ref["depth"], "extrinsics": ref["extrinsics"], "intrinsics": ref["intrinsics"]}
    scaled = dict(got, depth=got["depth"] * 1.02)
    assert any(k.startswith("depth") for k in " ".join(over_limits(errors(base, scaled))).split())
    a = np.radians(5.0)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = got["extrinsics"].copy()
    turned[1, :, :3] = turn @ turned[1, :, :3]
    assert "rot_deg" in " ".join(over_limits(errors(base, dict(got, extrinsics=turned))))
