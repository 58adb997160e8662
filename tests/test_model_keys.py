"""Every official DA3 architecture builds with exactly the official checkpoint keys, shapes and sizes."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from da3_blender.api import DepthAnything3  # noqa: E402
from da3_blender.errors import ModelLoadError  # noqa: E402
from da3_blender.model.config import MODEL_NAMES, capabilities, model_name_for_repo  # noqa: E402
from da3_blender.model.loading import shared_groups  # noqa: E402


def _manifest(keys_dir, name):
    return json.loads((keys_dir / f"{name}.json").read_text())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keys_shapes_and_param_counts_match_official_manifest(keys_dir, name):
    man = _manifest(keys_dir, name)
    model = DepthAnything3(name, device="meta")
    state = model.state_dict()
    assert len(state) == man["num_state_dict_entries"]

    aliases = man["safetensors_metadata_aliases"]  # dropped name -> kept name
    stored = {k: v for k, v in state.items() if k not in aliases}
    expected = {t["key"]: tuple(t["shape"]) for t in man["tensors"]}
    assert set(stored) == set(expected), (sorted(set(stored) ^ set(expected)))[:10]
    assert {k: tuple(v.shape) for k, v in stored.items()} == expected

    # aliases are one shared tensor (saving de-duplicates them, loading must fill them all)
    groups = {g[0]: g for g in shared_groups(model) if len(g) > 1}
    assert {alias: kept for kept, g in groups.items() for alias in g[1:]} == aliases

    assert sum(p.numel() for p in model.parameters()) == man["num_params_unique"]
    for prefix, count in man["param_counts_by_module"].items():
        sub = model.get_submodule(prefix)
        assert sum(p.numel() for p in sub.parameters()) == count, prefix


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_repo_table_and_capabilities(keys_dir, name):
    man = _manifest(keys_dir, name)
    for repo in man["hf_repo_ids"]:
        assert model_name_for_repo(repo) == name
    caps = capabilities(name)
    any_view = "model.cam_dec.fc_t.weight" in {t["key"] for t in man["tensors"]} or name.startswith("da3nested")
    assert caps["pose"] == caps["conf"] == caps["pose_conditioning"] == any_view
    has_sky_head = any(t["key"].endswith("sky_output_conv2.0.weight") for t in man["tensors"])
    assert caps["sky"] == (has_sky_head and not any_view)  # the nested model uses its sky map internally only


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ModelLoadError) as err:
        DepthAnything3("da3-huge", device="meta")
    msg = str(err.value)
    assert "da3-huge" in msg and all(n in msg for n in MODEL_NAMES) and "\n" not in msg


def test_import_is_light_and_exports_api():
    """``import da3_blender`` must not import torch (Blender imports the core without it)."""
    import subprocess
    import sys

    code = ("import sys, da3_blender; assert 'torch' not in sys.modules, 'torch imported'\n"
            "from da3_blender import DepthAnything3, Prediction\n"
            "print(DepthAnything3.__name__, Prediction.__name__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["DepthAnything3", "Prediction"]
