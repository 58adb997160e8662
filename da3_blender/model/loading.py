"""Find, check and load DA3 checkpoints (HF layout: ``config.json`` + one ``model.safetensors``).

A source is a local directory holding both files, or a hub repo id fetched with
``huggingface_hub.hf_hub_download`` (honours ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` and the
HF cache). Loading is strict: every model tensor must be in the file (the shared aux LayerNorm
may be stored under any one of its four names, as ``save_pretrained`` de-duplicates it) and
nothing else may be. F32, F16 and BF16 tensors are accepted and cast to fp32. The network is built
on the ``meta`` device and the file's tensors are assigned in place, so no second copy is made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..cancel import checkpoint
from ..errors import CancelledError, DA3Error, ModelLoadError
from .config import check_model_name, model_name_for_repo

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_NO_HUB = ("check the connection, set HF_ENDPOINT to a mirror, or pass a local directory "
           f"with {CONFIG_FILE} and {WEIGHTS_FILE}")


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def locate(source: str | os.PathLike) -> tuple[Path, Path, str | None]:
    """(config.json, model.safetensors, repo id or None) for a local directory or a hub repo id."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        files = path / CONFIG_FILE, path / WEIGHTS_FILE
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise ModelLoadError(f"{path} has no {' or '.join(absent)}; a DA3 model folder needs {CONFIG_FILE} and {WEIGHTS_FILE}")
        return files[0], files[1], None
    repo_id = str(source).strip().strip("/")
    if path.exists() or repo_id.count("/") != 1 or repo_id.startswith((".", "~")):
        raise ModelLoadError(f"{source!r} is neither a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a hub repo id like depth-anything/DA3-LARGE-1.1")
    return _download(repo_id, CONFIG_FILE), _download(repo_id, WEIGHTS_FILE), repo_id


HUB_PROBE_TIMEOUT = 5.0  # seconds for the one quick request that tells whether the hub answers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _probe_hub(repo_id: str, filename: str) -> str | None:
    """One request (short timeout, no retries) for ``filename`` of ``repo_id``: None if the hub has it,
    else a one-line reason. Without it, huggingface_hub retries an unreachable hub for ~25 s."""
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    url = hf_hub_url(repo_id, filename)
    try:
        response = get_session().head(url, headers=build_hf_headers(), timeout=HUB_PROBE_TIMEOUT, follow_redirects=True)
    except Exception as err:  # connection refused, DNS, timeout, TLS
        reason = " ".join(str(err).split()) or type(err).__name__
        return (f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({reason[:150]}): set HF_ENDPOINT to a "
                f"mirror that answers, choose a local model folder with {CONFIG_FILE} and {WEIGHTS_FILE}, or work "
                "offline (HF_HUB_OFFLINE=1) with models already in the Hugging Face cache")
    if response.status_code == 404:
        if response.headers.get("x-error-code") == "EntryNotFound":
            return f"hub repo {repo_id} has no {filename}; it is not a DA3 model repo"
        return (f"hub repo {repo_id} not found at {constants.ENDPOINT}; check the name "
                "(e.g. depth-anything/DA3-LARGE-1.1) or choose a local model folder")
    if response.status_code in (401, 403):
        return (f"hub repo {repo_id} is private or gated at {constants.ENDPOINT}: accept its licence on the hub "
                "and log in (hf auth login), or check the name")
    return None  # any other answer: the download below reports it


def cancellable_call(fn, *args, poll: float = 0.1):
    """``fn(*args)`` on a daemon thread while this one waits at a cancel point every ``poll`` seconds
    (:func:`da3_blender.cancel.checkpoint`; Ctrl-C in the CLI): a hub download, which has no cancel of its
    own, stops the job at once. A cancelled download goes on in the background until it ends (the
    Hugging Face cache keeps it, or its partial file, for the next load)."""
    import threading

    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting thread)
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"da3-hub-{getattr(fn, '__name__', 'call')}", daemon=True)
    thread.start()
    while thread.is_alive():
        checkpoint()
        thread.join(poll)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _download(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub import errors as hf

    if not _offline():
        problem = cancellable_call(_probe_hub, repo_id, filename)
        if problem is not None:
            cached = try_to_load_from_cache(repo_id, filename)
            if isinstance(cached, str) and problem.startswith("cannot reach"):
                log.warning("%s; using the cached %s of %s", problem.split(":")[0], filename, repo_id)
                return Path(cached)
            raise ModelLoadError(problem)
    try:
        return Path(cancellable_call(hf_hub_download, repo_id, filename))  # a cancel point while it downloads
    except CancelledError:
        raise
    except hf.GatedRepoError:
        raise ModelLoadError(f"{repo_id} is gated: accept its licence on the hub and log in (hf auth login)") from None
    except hf.RepositoryNotFoundError:
        raise ModelLoadError(f"hub repo {repo_id} not found; check the name (e.g. depth-anything/DA3-LARGE-1.1)") from None
    except hf.RemoteEntryNotFoundError:
        raise ModelLoadError(f"hub repo {repo_id} has no {filename}; it is not a DA3 model repo") from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled):
        offline = " (HF_HUB_OFFLINE is set)" if _offline() else ""
        raise ModelLoadError(f"cannot download {filename} of {repo_id} and it is not in the Hugging Face cache{offline}: {_NO_HUB}") from None
    except Exception as err:  # connection, HTTP, disk errors
        raise ModelLoadError(f"downloading {filename} of {repo_id} failed ({type(err).__name__}: {err}): {_NO_HUB}") from None


def read_model_name(config_path: Path, repo_id: str | None = None) -> str:
    """``model_name`` from config.json, else from the known repo table."""
    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read {config_path} ({err}); delete it (from the HF cache) and download again") from None
    name = config.get("model_name") if isinstance(config, dict) else None
    if name is None and repo_id:
        name = model_name_for_repo(repo_id)
    if name is None:
        raise ModelLoadError(f"{config_path} has no \"model_name\" (e.g. \"da3-large\") and the repo is not a known DA3 repo")
    return check_model_name(name)


def shared_groups(module: nn.Module) -> list[list[str]]:
    """State-dict names grouped by tensor: one group per tensor, several names for shared ones."""
    groups = defaultdict(list)
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False)):
        groups[id(t)].append(name)
    persistent = set(module.state_dict(keep_vars=True))
    return [sorted(n for n in names if n in persistent) for names in groups.values() if any(n in persistent for n in names)]


def _drop_absent_gs_heads(module: nn.Module, in_file: set[str]) -> None:
    """The optional 3D-Gaussian head: a checkpoint without ANY of its keys loads without it (the net's
    ``gs_head``/``gs_adapter`` become None; ``infer_gs`` then says the weights are missing)."""
    for prefix, net in list(module.named_modules()):
        if getattr(net, "gs_head", None) is None:
            continue
        head = f"{prefix}.gs_head." if prefix else "gs_head."
        if not any(k.startswith(head) for k in in_file):
            net.gs_head = net.gs_adapter = None


BLOCK_WEIGHT = re.compile(r"backbone\.pretrained\.blocks\.\d+\.(attn|mlp)\.")  # see DinoVisionTransformer.set_block_dtype


_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class _FileReader:
    """Reads one safetensors tensor at a time with plain file reads (no memory map: the file's pages
    stay in the OS cache, not in this process's memory next to the converted copies)."""

    def __init__(self, path: Path):
        self.f = open(path, "rb")
        n = int.from_bytes(self.f.read(8), "little")
        self.header = json.loads(self.f.read(n))
        self.base = 8 + n

    def get_tensor(self, name: str) -> torch.Tensor:
        info = self.header[name]
        dtype = _FLOAT_DTYPES.get(info["dtype"])
        if dtype is None:
            return torch.zeros(0, dtype=torch.int64)  # rejected by the caller's float check
        begin, end = info["data_offsets"]
        if end == begin:
            return torch.empty(info["shape"], dtype=dtype)
        buf = bytearray(end - begin)
        self.f.seek(self.base + begin)
        if self.f.readinto(buf) != len(buf):
            raise ValueError(f"tensor {name} is cut short")
        return torch.frombuffer(buf, dtype=dtype).reshape(info["shape"])

    def close(self):
        self.f.close()


DEFERRED = re.compile(r"(^|\.)cam_enc\.")  # read at the first posed forward: see DeferredWeights


class DeferredWeights:
    """Checkpoint tensors checked at load (names, shapes, dtypes) but read only when first needed.

    The camera encoder (``cam_enc``: 27 MiB of DA3-SMALL's 90 MiB on a CPU, 6.6 % of DA3-LARGE's
    weights) runs only when known poses are given, which most runs do not: its tensors stay on the
    ``meta`` device until :meth:`load_into` (the first posed forward, or a ``state_dict()``).
    """

    def __init__(self, path: Path, groups: list[tuple[str, list[str]]], device: torch.device):
        self.path, self.groups, self.device = Path(path), groups, device
        st = os.stat(self.path)
        self.stamp = (st.st_size, st.st_mtime_ns)

    def load_into(self, module: nn.Module) -> None:
        """Read the deferred tensors into ``module`` (``groups`` name its tensors relative to it)."""
        why = "since the model was loaded (its camera encoder is read at the first run with known poses); " \
              "load the model again"
        try:
            st = os.stat(self.path)
        except OSError:
            raise ModelLoadError(f"{self.path} is gone {why}") from None
        if (st.st_size, st.st_mtime_ns) != self.stamp:
            raise ModelLoadError(f"{self.path} changed {why}")
        state = {}
        with torch.inference_mode(False), contextlib.closing(_FileReader(self.path)) as reader:
            for key, names in self.groups:
                t = reader.get_tensor(key).to(device=self.device, dtype=torch.float32)
                for n in names:
                    state[n] = t
        result = module.load_state_dict(state, strict=False, assign=True)
        if result.unexpected_keys:
            raise ModelLoadError(f"internal: deferred tensors not in the model: {_few(result.unexpected_keys)}")


def load_safetensors_into(module: nn.Module, weights: Path, device: torch.device, label: str = "",
                          from_hub: bool = False, block_dtype: torch.dtype | None = None,
                          defer: bool = False) -> DeferredWeights | None:
    """Strictly load ``weights`` into ``module`` (may live on ``meta``); tensors go to ``device`` as fp32.

    ``block_dtype`` (bf16 on a CPU): the transformer blocks' attention and MLP weights are stored in
    that dtype straight away, and every tensor is copied out of the file's memory map, so the fp32
    file pages are not kept resident next to the converted weights. ``defer``: the camera encoder's
    tensors (:data:`DEFERRED`) are checked but left unread; returns them as :class:`DeferredWeights`
    (None when there are none).
    """
    from safetensors import safe_open

    fix = (f"delete {Path(weights).resolve()} and load again to re-download it" if from_hub
           else "replace the file with a complete download")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f, (
                contextlib.closing(_FileReader(weights)) if block_dtype is not None else contextlib.nullcontext(f)) as reader:
            in_file = set(f.keys())
            _drop_absent_gs_heads(module, in_file)
            groups = shared_groups(module)
            expected = {n: t for n, t in module.state_dict(keep_vars=True).items()}
            missing = [g[0] for g in groups if not any(n in in_file for n in g)]
            unexpected = in_file - set(expected)
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
                if unexpected:
                    parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
                raise ModelLoadError(f"{weights} does not match {label or 'the model'}: {'; '.join(parts)}; "
                                     "check model_name in config.json or re-download the checkpoint")
            state, deferred = {}, []
            for group in groups:
                checkpoint()  # a cancel during the load ends it between two tensors
                name = next(n for n in group if n in in_file)
                shape = tuple(f.get_slice(name).get_shape())
                if shape != tuple(expected[name].shape):
                    raise ModelLoadError(f"{weights}: tensor {name} has shape {shape}, {label or 'the model'} needs "
                                         f"{tuple(expected[name].shape)}; check model_name in config.json")
                if defer and DEFERRED.search(name) and str(f.get_slice(name).get_dtype()) in _FLOAT_DTYPES:
                    deferred.append((name, group))
                    continue
                t = reader.get_tensor(name)
                if not t.is_floating_point():
                    raise ModelLoadError(f"{weights}: tensor {name} has dtype {t.dtype}; expected F32, F16 or BF16")
                t = t.to(device=device, dtype=block_dtype if block_dtype and BLOCK_WEIGHT.search(name) else torch.float32)
                for n in group:
                    state[n] = t
    except DA3Error:  # ModelLoadError, CancelledError
        raise
    except Exception as err:  # SafetensorError, truncated or corrupt file, OSError
        raise ModelLoadError(f"cannot read {weights} (corrupt or truncated: {type(err).__name__}: {err}); {fix}") from None
    module.load_state_dict(state, strict=not deferred, assign=True)
    later = {n for _, group in deferred for n in group}
    left = [n for n, p in module.named_parameters() if p.is_meta and n not in later]
    if left:
        raise ModelLoadError(f"internal: parameters left unloaded: {_few(left)}")
    return DeferredWeights(weights, deferred, device) if deferred else None
