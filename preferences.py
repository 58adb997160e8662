"""Extension preferences: which Python runs the model (managed environment or your own), the model
cache, the hub mirror and offline mode, the default device."""

from __future__ import annotations

import os
import textwrap

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy.types import AddonPreferences

from .da3_blender import options as opt
from .properties import enum_items

OFFLINE_HINT = ("Blender is offline: no downloads (models, environment). Turn on Edit > Preferences > System > "
                "Network > Allow Online Access")


def online_access() -> bool:
    """Whether Blender allows internet access (Preferences > System > Network; Blender 4.2+).

    Scripts (``blender -b``, the bpy module, where Blender reports offline unless told otherwise) follow
    their command line: offline with ``--offline-mode`` (or HF_HUB_OFFLINE in the environment).
    """
    app = bpy.app
    if not hasattr(app, "online_access"):  # before Blender 4.2
        return True
    if app.background and not getattr(app, "online_access_override", False):
        return True
    return bool(app.online_access)


PACKAGE = __package__  # "bl_ext.<repo>.da3_for_blender" when installed, "da3_for_blender" in tests

PYTHON_MODES = (
    ("MANAGED", "Managed environment", "A Python environment with torch that the extension sets up for you", 0),
    ("CUSTOM", "Custom interpreter", "A Python of your own that has torch, numpy, pillow, safetensors, huggingface_hub", 1),
)
ENV_VARIANTS = (  # torch index variants (envs.create_environment's torch_variant)
    ("cpu", "CPU", "torch for the processor only (smaller download, works everywhere, Apple MPS included)", 0),
    ("cu126", "CUDA 12.6", "torch with CUDA 12.6 for NVIDIA GPUs (multi-GB download; needs driver 560+)", 1),
    ("cu128", "CUDA 12.8", "torch with CUDA 12.8 for NVIDIA GPUs (multi-GB download; needs driver 570+, RTX 50xx)", 2),
)
# -- remote worker (issue 11): where the model runs (choices in da3_blender/options.py) --------------------
REMOTE_SETUP_HINT = "Remote environment: made in <remote cache folder>/env by the button, or by the README's one command"


def user_dir(*parts: str, create: bool = False) -> str:
    """A folder in the extension's user directory (kept across extension updates)."""
    try:
        base = bpy.utils.extension_path_user(PACKAGE, path="", create=create)
    except ValueError:  # not installed as an extension (development checkout, tests)
        base = os.path.join(bpy.utils.user_resource("CONFIG"), PACKAGE.rsplit(".", 1)[-1])
    path = os.path.join(base, *parts)
    if create:
        os.makedirs(path, exist_ok=True)
    return path


class DA3Preferences(AddonPreferences):
    bl_idname = PACKAGE

    python_mode: EnumProperty(name="Worker Python", items=PYTHON_MODES, default="MANAGED",
                              description="Which Python runs the model (Blender's own has no torch)")
    env_dir: StringProperty(
        name="Environment folder", subtype="DIR_PATH",
        description="Where the managed environment lives (empty: in the extension's user folder)",
    )
    env_variant: EnumProperty(name="torch build", items=ENV_VARIANTS, default="cpu",
                              description="Which build of torch the managed environment installs")
    custom_python: StringProperty(
        name="Python interpreter", subtype="FILE_PATH", description="Path of the python executable to run the model with"
    )
    model_cache_dir: StringProperty(
        name="Model cache", subtype="DIR_PATH",
        description="Where downloaded weights are kept (empty: the Hugging Face default, ~/.cache/huggingface)",
    )
    hf_endpoint: StringProperty(
        name="Hub mirror", description="HF_ENDPOINT: a Hugging Face mirror URL, e.g. https://hf-mirror.com (empty: huggingface.co)"
    )
    offline: BoolProperty(
        name="Offline", default=False,
        description="Never download: use only weights already in the model cache (HF_HUB_OFFLINE=1). Also on "
                    "whenever Blender's own online access is off (Preferences > System > Network)"
    )
    default_device: EnumProperty(name="Default device", items=enum_items(opt.DEVICES), default=opt.DEFAULT_DEVICE,
                                 description="Where the model runs when a scene's device is 'Preferences default'")
    results_dir: StringProperty(
        name="Results folder", subtype="DIR_PATH",
        description="Where the worker writes result files (.npz) before import, and where 'Keep result files' "
                    "keeps them (empty: the extension's user folder)",
    )
    # remote worker (issue 11)
    worker_location: EnumProperty(name="Run the model", items=enum_items(opt.WORKER_LOCATIONS), default="LOCAL",
                                  description="Where the worker runs: this computer, or another one over SSH")
    remote_host: StringProperty(
        name="Host", description="An ~/.ssh/config alias or user@host; 'ssh HOST' must log in without a password "
                                 "prompt (keys or agent)")
    remote_python: StringProperty(
        name="Remote Python", default=opt.DEFAULT_REMOTE_PYTHON,
        description="The Python on the remote with DA3's packages (e.g. ~/da3-env/bin/python)")
    remote_cache_dir: StringProperty(
        name="Remote cache folder", default=opt.DEFAULT_REMOTE_CACHE_DIR,
        description="Where the remote keeps the DA3 code, job files and sent model folders")
    remote_ssh_options: StringProperty(
        name="SSH options", description="Extra ssh -o options, Key=Value separated by spaces (e.g. Port=2222 "
                                        "IdentityFile=~/.ssh/gpu); usually better in ~/.ssh/config")

    # render farm (issue 20): Submit to Flamenco
    flamenco_manager_url: StringProperty(
        name="Flamenco manager", description="The Flamenco v3 manager the panel's 'Submit to Flamenco' sends shots "
                                             "to, e.g. http://flamenco-manager:8080 (empty: no farm)")
    flamenco_farm_dir: StringProperty(
        name="Farm folder", subtype="DIR_PATH",
        description="Where submitted shots are planned (chunk results, result.npz, the .blend): storage every "
                    "farm worker sees under the same path (or mapped by Flamenco's two-way variables)")
    flamenco_da3_root: StringProperty(
        name="DA3 folder on workers", subtype="DIR_PATH",
        description="The DA3 for Blender folder the farm workers run the steps from (a checkout or the source zip, "
                    "with scripts/; empty: this extension's folder when it has scripts/)")

    def draw(self, context):
        runtime = context.window_manager.da3_runtime
        layout = self.layout
        if not online_access():  # nothing is downloaded: say what to turn on
            _draw_lines(layout, [OFFLINE_HINT], icon="INTERNET_OFFLINE", context=context)
        box = layout.box()  # remote worker (issue 11)
        box.row().prop(self, "worker_location", expand=True)
        if self.worker_location == "REMOTE":
            box.prop(self, "remote_host")
            row = box.row(align=True)
            row.prop(self, "remote_python")
            row.operator("da3.check_interpreter", text="Check", icon="VIEWZOOM")
            box.prop(self, "remote_cache_dir")
            box.prop(self, "remote_ssh_options")
            row = box.row(align=True)
            row.prop(self, "env_variant", expand=True)
            row.operator("da3.setup_environment", text="Set up remote environment", icon="IMPORT")
            box.label(text=REMOTE_SETUP_HINT, icon="INFO")
        box = layout.box()
        box.label(text="Model runtime", icon="SCRIPTPLUGINS")
        box.row().prop(self, "python_mode", expand=True)
        if self.python_mode == "MANAGED":
            _prop(box, self, "env_dir", placeholder=environment_dir(self))
            box.row(align=True).prop(self, "env_variant", expand=True)
            row = box.row()
            row.enabled = not runtime.env_busy
            row.operator("da3.setup_environment", icon="IMPORT")
            status = environment_status(self)
            box.label(text=status, icon="CHECKMARK" if status.startswith("Ready") else "INFO")
        else:
            row = box.row(align=True)
            row.prop(self, "custom_python")
            row.operator("da3.check_interpreter", text="Check", icon="VIEWZOOM")
        _draw_lines(box, runtime.env_log.splitlines()[-8:])
        for text in (runtime.env_result, runtime.interpreter_info):
            if text:
                _draw_lines(box, text.splitlines(), icon="INFO", context=context)

        box = layout.box()
        box.label(text="Model weights", icon="FILE_BLEND")
        _prop(box, self, "model_cache_dir", placeholder="Hugging Face default cache")
        _prop(box, self, "hf_endpoint", placeholder="https://huggingface.co")
        box.prop(self, "offline")
        layout.prop(self, "default_device")
        _prop(layout, self, "results_dir", placeholder=user_dir("results"))
        box = layout.box()  # render farm (issue 20)
        box.label(text="Render farm (Flamenco)", icon="NETWORK_DRIVE")
        _prop(box, self, "flamenco_manager_url", placeholder="http://flamenco-manager:8080")
        _prop(box, self, "flamenco_farm_dir", placeholder="a folder every worker sees")
        _prop(box, self, "flamenco_da3_root", placeholder="a DA3 for Blender checkout the workers see")


def _prop(layout, data, name, placeholder=""):
    """``layout.prop`` with a placeholder where this Blender supports it."""
    try:
        layout.prop(data, name, placeholder=placeholder)
    except TypeError:
        layout.prop(data, name)


CHAR_WIDTH = 7  # pixels per character of the interface font at scale 1 (an average)


def wrap_lines(context, text: str) -> list[str]:
    """``text`` cut into lines that fit the region's width (a long label is otherwise clipped)."""
    region = getattr(context, "region", None)
    scale = getattr(getattr(getattr(context, "preferences", None), "system", None), "ui_scale", 1.0) or 1.0
    width = region.width if region is not None and region.width > 1 else 300
    chars = max(16, int(width / (CHAR_WIDTH * scale)) - 4)
    return textwrap.wrap(text, chars) or [""]


def _draw_lines(layout, lines, icon="NONE", context=None):
    """Labels, each line wrapped to the region's width (when ``context`` is given)."""
    if context is not None:
        lines = [part for line in lines for part in wrap_lines(context, line)]
    col = layout.column(align=True)
    for i, line in enumerate(lines):
        col.label(text=line, icon=icon if i == 0 else "BLANK1" if icon != "NONE" else "NONE")


class _Defaults:
    """Preference values when the extension is registered without the add-on entry (scripts)."""

    python_mode = "MANAGED"
    env_dir = ""
    env_variant = "cpu"
    custom_python = ""
    model_cache_dir = ""
    hf_endpoint = ""
    offline = False
    default_device = opt.DEFAULT_DEVICE
    results_dir = ""
    worker_location = "LOCAL"
    remote_host = ""
    remote_python = opt.DEFAULT_REMOTE_PYTHON
    remote_cache_dir = opt.DEFAULT_REMOTE_CACHE_DIR
    remote_ssh_options = ""
    flamenco_manager_url = ""
    flamenco_farm_dir = ""
    flamenco_da3_root = ""


def get_preferences(context=None):
    """The extension's preferences (defaults when the add-on entry does not exist)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else _Defaults()


def environment_dir(prefs) -> str:
    return bpy.path.abspath(prefs.env_dir) if prefs.env_dir else user_dir("env")


def environment_status(prefs) -> str:
    from .da3_blender.runtime import envs

    path = environment_dir(prefs)
    if envs.is_ready(path):
        return f"Ready: {path}"
    return "Not set up yet: press 'Set up environment' (downloads torch, once)"


def worker_python(prefs) -> str:
    """The interpreter the worker runs with (may not exist: validation says so)."""
    from .da3_blender.runtime import envs

    if prefs.python_mode == "CUSTOM":
        return bpy.path.abspath(prefs.custom_python.strip()) if prefs.custom_python.strip() else ""
    return str(envs.python_in(environment_dir(prefs)))


def worker_env(prefs) -> dict[str, str]:
    """Environment variables for the worker (model cache, hub mirror, offline, its log folder)."""
    from .da3_blender.runtime.protocol import LOG_DIR_ENV

    env = {LOG_DIR_ENV: user_dir("logs")}  # worker.log: named in every worker error
    if prefs.model_cache_dir:
        cache = bpy.path.abspath(prefs.model_cache_dir)
        env["HF_HOME"] = cache
        env["HF_HUB_CACHE"] = os.path.join(cache, "hub")
    if prefs.hf_endpoint.strip():
        env["HF_ENDPOINT"] = prefs.hf_endpoint.strip().rstrip("/")
    if prefs.offline or not online_access():  # Blender offline: the worker never downloads either
        env["HF_HUB_OFFLINE"] = "1"
    return env


def read_worker_settings(prefs) -> dict:
    """Everything a run needs from the preferences, read once: the worker's interpreter (and whether it
    is the managed environment), its environment variables, the results folder and the default device."""
    return {
        "python": worker_python(prefs),
        "managed": prefs.python_mode != "CUSTOM",
        "env_dir": environment_dir(prefs),
        "env": worker_env(prefs),
        "results_dir": results_dir(prefs),
        "default_device": prefs.default_device,
        "offline": prefs.offline or not online_access(),
        "blender_offline": not online_access(),
        "remote": worker_remote(prefs),  # None: the worker runs on this computer
    }


def worker_remote(prefs):
    """The remote worker's RemoteSpec, or None for a local worker (a bad host name: a one-line error)."""
    if getattr(prefs, "worker_location", "LOCAL") != "REMOTE":
        return None
    import shlex

    from .da3_blender.errors import BadInputError
    from .da3_blender.runtime.ssh import RemoteSpec

    try:
        options = tuple(shlex.split(prefs.remote_ssh_options))
    except ValueError as ex:
        raise BadInputError(f"SSH options: {ex}; fix them in Preferences > Add-ons > DA3 for Blender") from None
    return RemoteSpec(prefs.remote_host, python=prefs.remote_python, cache_dir=prefs.remote_cache_dir,
                      ssh_options=options)


def results_dir(prefs) -> str:
    path = bpy.path.abspath(prefs.results_dir) if prefs.results_dir else user_dir("results")
    os.makedirs(path, exist_ok=True)
    return path


def register():
    bpy.utils.register_class(DA3Preferences)


def unregister():
    bpy.utils.unregister_class(DA3Preferences)
