"""Loading DA3 checkpoints: official layout in F16/BF16, strict keys, clear errors, HF hub cache offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from da3_blender.api import DepthAnything3  # noqa: E402
from da3_blender.errors import ModelLoadError  # noqa: E402
from da3_blender.model.loading import BLOCK_WEIGHT  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
LN = "model.head.scratch.output_conv2_aux.{}.2.{}"


@pytest.fixture(scope="module")
def official(fixture_dir):
    """The fixture checkpoint as written by the official save_pretrained: tensors + __metadata__."""
    with safe_open(str(fixture_dir / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _write(folder: Path, tensors: dict, metadata=None, config=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config if config is not None else {"model_name": "da3-small"}))
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
    return folder


def _params(model) -> dict:
    return dict(model.state_dict())


@pytest.mark.parametrize("compute", ["fp32", "bf16"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_official_layout_loads_in_f16_and_bf16(tmp_path, official, dtype, compute):
    """fp32: every tensor as fp32. bf16 (a CPU's bf16 backbone, read without a memory map): the
    transformer blocks' attention/MLP weights as bf16, everything else as fp32."""
    tensors, meta = official
    assert len(meta) == 6  # the shared aux LayerNorm aliases, as written by save_pretrained
    assert LN.format(3, "weight") not in tensors
    cast = {k: v.to(dtype) for k, v in tensors.items()}
    model = DepthAnything3.from_pretrained(_write(tmp_path / "ckpt", cast, meta), device="cpu", compute_dtype=compute)
    assert model.model_name == "da3-small" and model.device == torch.device("cpu")
    state = _params(model)
    in_bf16 = 0
    for k, v in cast.items():
        want = torch.bfloat16 if compute == "bf16" and BLOCK_WEIGHT.search(k) else torch.float32
        in_bf16 += want == torch.bfloat16
        assert state[k].dtype == want, k
        assert torch.equal(state[k], v.to(want)), k
    assert in_bf16 == (0 if compute == "fp32" else 12 * 8 + 8 * 4)  # qkv, proj, fc1, fc2 (w, b); q/k-norms (w, b) from block 4
    # the ray head uses level 3: it must hold the stored level-0 LayerNorm, not an initial one
    for level in (1, 2, 3):
        for part in ("weight", "bias"):
            assert torch.equal(state[LN.format(level, part)], cast[LN.format(0, part)].float())


def test_all_four_layernorm_names_stored_also_load(tmp_path, official):
    tensors, _ = official
    full = dict(tensors)
    for level in (1, 2, 3):
        for part in ("weight", "bias"):
            full[LN.format(level, part)] = tensors[LN.format(0, part)].clone()
    model = DepthAnything3.from_pretrained(_write(tmp_path / "ckpt", full), device="cpu")
    assert torch.equal(_params(model)[LN.format(3, "weight")], tensors[LN.format(0, "weight")].float())


def test_missing_key_is_named(tmp_path, official):
    tensors, meta = official
    broken = {k: v for k, v in tensors.items() if k != "model.cam_dec.fc_t.bias"}
    with pytest.raises(ModelLoadError, match=r"1 missing key\(s\): model\.cam_dec\.fc_t\.bias"):
        DepthAnything3.from_pretrained(_write(tmp_path / "ckpt", broken, meta), device="cpu")


def test_missing_shared_layernorm_is_named(tmp_path, official):
    tensors, meta = official
    broken = {k: v for k, v in tensors.items() if ".output_conv2_aux.0.2." not in k}
    with pytest.raises(ModelLoadError, match=r"output_conv2_aux\.0\.2\.bias"):
        DepthAnything3.from_pretrained(_write(tmp_path / "ckpt", broken, meta), device="cpu")


def test_unexpected_key_is_named(tmp_path, official):
    tensors, meta = official
    extra = dict(tensors, **{"model.head.extra_conv.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelLoadError, match=r"1 unexpected key\(s\): model\.head\.extra_conv\.weight") as err:
        DepthAnything3.from_pretrained(_write(tmp_path / "ckpt", extra, meta), device="cpu")
    assert "\n" not in str(err.value)


def test_wrong_architecture_is_reported(tmp_path, official):
    """A da3-small file under a da3-base config: a clear mismatch, not a crash."""
    tensors, meta = official
    with pytest.raises(ModelLoadError, match="does not match da3-base|needs"):
        DepthAnything3.from_pretrained(_write(tmp_path / "ckpt", tensors, meta, {"model_name": "da3-base"}), device="cpu")


def test_truncated_and_corrupt_files_say_redownload(tmp_path, fixture_dir):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(fixture_dir / "config.json", folder / "config.json")
    data = (fixture_dir / "model.safetensors").read_bytes()
    for content in (data[: len(data) // 2], b"\x00garbage" * 100):
        (folder / "model.safetensors").write_bytes(content)
        with pytest.raises(ModelLoadError, match="corrupt or truncated.*(complete download|re-download)") as err:
            DepthAnything3.from_pretrained(folder, device="cpu")
        assert "\n" not in str(err.value)


def test_unknown_model_name_in_config(tmp_path, fixture_dir):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_name": "da3-tiny"}))
    os.symlink(fixture_dir / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"unknown DA3 model name 'da3-tiny'; valid names: da3-small"):
        DepthAnything3.from_pretrained(folder, device="cpu")


def test_folder_without_weights_and_bad_source(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="has no model.safetensors"):
        DepthAnything3.from_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="neither a model folder"):
        DepthAnything3.from_pretrained(str(tmp_path / "not-here" / "x" / "y"))


def _run_offline(code: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_hub_offline_without_cache_explains_what_to_do(tmp_path):
    code = (
        "from da3_blender.api import DepthAnything3\n"
        "from da3_blender.errors import ModelLoadError\n"
        "try:\n    DepthAnything3.from_pretrained('depth-anything/DA3-SMALL')\n"
        "except ModelLoadError as e:\n    print('ERR', e)\n"
    )
    res = _run_offline(code, tmp_path / "empty-hf-home")
    assert res.returncode == 0, res.stderr[-2000:]
    line = res.stdout.strip()
    assert line.startswith("ERR") and "depth-anything/DA3-SMALL" in line
    for hint in ("check the connection", "HF_ENDPOINT", "local directory", "config.json", "model.safetensors"):
        assert hint in line


def _cache_repo(hub: Path, repo_id: str, config: dict, weights: Path, rev: str):
    """The huggingface_hub cache layout: blobs, snapshots/<rev>/ (links to blobs), refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    (repo / "blobs" / "cfg").write_text(json.dumps(config))
    os.symlink(weights, repo / "blobs" / "weights")
    os.symlink(Path("../../blobs/cfg"), snap / "config.json")
    os.symlink(Path("../../blobs/weights"), snap / "model.safetensors")


def test_hub_cache_loads_by_repo_id_offline(tmp_path, fixture_dir):
    hf_home = tmp_path / "hf-home"
    hub = hf_home / "hub"
    weights = fixture_dir / "model.safetensors"
    config = json.loads((fixture_dir / "config.json").read_text())
    _cache_repo(hub, "someone/my-da3-small", config, weights, "a" * 40)
    # a config.json without model_name: the known repo id decides the architecture
    _cache_repo(hub, "depth-anything/DA3-SMALL", {}, weights, "b" * 40)
    code = (
        "import torch\n"
        "from da3_blender.api import DepthAnything3\n"
        "a = DepthAnything3.from_pretrained('someone/my-da3-small', device='cpu')\n"
        "b = DepthAnything3.from_pretrained('depth-anything/DA3-SMALL', device='cpu')\n"
        "k = 'model.head.scratch.output_conv2_aux.3.2.weight'\n"
        "print(a.model_name, b.model_name, torch.equal(a.state_dict()[k], b.state_dict()[k]))\n"
    )
    res = _run_offline(code, hf_home)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["da3-small", "da3-small", "True"]


def _posed_inputs(views=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, views, 3, 56, 84, generator=g)
    ext = torch.eye(4).repeat(1, views, 1, 1)
    ext[0, 1, 0, 3] = 0.3
    k = torch.tensor([[60.0, 0, 42], [0, 60.0, 28], [0, 0, 1]]).repeat(1, views, 1, 1)
    return image, ext, k


def test_camera_encoder_is_read_at_the_first_posed_run(tmp_path, official):
    """The camera encoder (unused without known poses) stays unread at load, so a plain run does not
    hold its weights; the first posed run reads it and gives what a fully read model gives."""
    tensors, meta = official
    folder = _write(tmp_path / "ckpt", tensors, meta)
    lazy = DepthAnything3.from_pretrained(folder, device="cpu", compute_dtype="fp32")
    enc = lazy.model.cam_enc
    assert all(p.is_meta for p in enc.parameters())
    assert not any(p.is_meta for n, p in lazy.named_parameters() if ".cam_enc." not in n)
    image, ext, k = _posed_inputs()
    lazy(image)  # a plain run leaves it unread
    assert all(p.is_meta for p in enc.parameters())
    full = DepthAnything3.from_pretrained(folder, device="cpu", compute_dtype="fp32")
    full.state_dict()  # a state_dict() reads it too
    assert not any(p.is_meta for p in full.parameters())
    torch.testing.assert_close(full.state_dict()["model.cam_enc.trunk.0.norm1.weight"],
                               tensors["model.cam_enc.trunk.0.norm1.weight"].float())
    posed = lazy(image, extrinsics=ext, intrinsics=k)
    assert not any(p.is_meta for p in lazy.parameters())
    torch.testing.assert_close(posed["depth"], full(image, extrinsics=ext, intrinsics=k)["depth"], rtol=0, atol=0)


def test_a_checkpoint_changed_before_the_first_posed_run_is_a_clear_error(tmp_path, official):
    tensors, meta = official
    folder = _write(tmp_path / "ckpt", tensors, meta)
    model = DepthAnything3.from_pretrained(folder, device="cpu", compute_dtype="fp32")
    image, ext, k = _posed_inputs()
    (folder / "model.safetensors").write_bytes(b"replaced")
    with pytest.raises(ModelLoadError, match="changed since the model was loaded.*load the model again") as err:
        model(image, extrinsics=ext, intrinsics=k)
    assert "\n" not in str(err.value)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="is gone since the model was loaded"):
        model(image, extrinsics=ext, intrinsics=k)
    model(image)  # runs without poses still work
