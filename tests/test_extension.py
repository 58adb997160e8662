"""The Blender extension without the model: manifest, package build, registration, preferences,
panels and the checks the Run button makes before starting anything."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
import types
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXTENSION_PACKAGE = "da3_for_blender"  # the manifest id (conftest.EXTENSION_PACKAGE)

MANIFEST = REPO_ROOT / "blender_manifest.toml"
BUILD = REPO_ROOT / "scripts" / "build_extension.py"
RUNTIME_DIRS = ("operators/", "panels/", "scene/", "da3_blender/")
RUNTIME_FILES = {"__init__.py", "blender_manifest.toml", "preferences.py", "properties.py", "LICENSE", "README.md"}
NEVER_PACKED = ("tests/", "scripts/", ".ci/", ".venv/", ".git/", "examples/", "dist/")


def _blender_ext():
    """Blender's own extension tool (``blender --command extension``), shipped inside the bpy module."""
    bpy = pytest.importorskip("bpy", reason="the bpy module is needed for Blender's extension tool")
    scripts = Path(bpy.utils.resource_path("LOCAL")) / "scripts"  # the scripts Blender ships
    found = sorted(scripts.glob("addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        pytest.skip("blender_ext.py not found in the bpy module")
    return found[0]


# -- manifest and package ------------------------------------------------------------------------
def test_manifest_has_the_fields_blender_requires():
    m = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min"):
        assert isinstance(m[key], str) and m[key].strip(), key
    assert m["id"] == EXTENSION_PACKAGE
    assert m["type"] == "add-on"
    assert re.fullmatch(r"\d+\.\d+\.\d+", m["version"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", m["blender_version_min"])
    assert tuple(int(x) for x in m["blender_version_min"].split(".")) >= (4, 2, 0)
    assert len(m["tagline"]) <= 64 and not m["tagline"].endswith((".", "!", "?"))
    assert m["license"] == ["SPDX:Apache-2.0"]
    assert set(m["permissions"]) <= {"files", "network", "clipboard", "camera", "microphone"}
    assert {"files", "network"} <= set(m["permissions"])
    assert all(isinstance(v, str) and not v.endswith(".") for v in m["permissions"].values())


def test_manifest_passes_blenders_own_validation():
    spec = importlib.util.spec_from_file_location("blender_ext", _blender_ext())
    blender_ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blender_ext)
    data = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    result = blender_ext.pkg_manifest_from_dict_and_validate_all_errros(data, from_repo=False, strict=True)
    assert not isinstance(result, list), result  # a list holds the errors


def _build(tmp_path, *args, source=REPO_ROOT):
    return subprocess.run([sys.executable, str(BUILD), "--source-dir", str(source), "--output-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)


def test_built_zip_holds_exactly_the_runtime_files(tmp_path):
    proc = _build(tmp_path)
    assert proc.returncode == 0, proc.stderr
    version = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))["version"]
    path = tmp_path / f"{EXTENSION_PACKAGE}-{version}.zip"
    assert proc.stdout.strip().splitlines()[-1] == str(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert tomllib.loads(zf.read("blender_manifest.toml").decode()) == tomllib.loads(MANIFEST.read_text("utf-8"))
    for required in ("__init__.py", "blender_manifest.toml", "preferences.py", "properties.py",
                     "operators/__init__.py", "operators/reconstruct.py", "panels/__init__.py",
                     "scene/importer.py", "da3_blender/worker.py", "da3_blender/runtime/worker.py",
                     "da3_blender/runtime/client.py"):
        assert required in names, required
    for name in names:
        assert name in RUNTIME_FILES or name.startswith(RUNTIME_DIRS), f"unexpected file in the package: {name}"
        assert not name.startswith(NEVER_PACKED) and "__pycache__" not in name and not name.endswith(".pyc"), name
    # every Python source of the runtime packages went in
    for folder in RUNTIME_DIRS:
        for src in (REPO_ROOT / folder).rglob("*.py"):
            rel = src.relative_to(REPO_ROOT).as_posix()
            if "__pycache__" not in rel:
                assert rel in names, f"{rel} missing from the package"


def test_build_matches_blenders_own_builder(tmp_path):
    ours = _build(tmp_path / "ours")
    assert ours.returncode == 0, ours.stderr
    official = tmp_path / "official.zip"
    proc = subprocess.run([sys.executable, str(_blender_ext()), "build", "--source-dir", str(REPO_ROOT),
                           "--output-filepath", str(official)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(official) as a, zipfile.ZipFile(next((tmp_path / "ours").glob("*.zip"))) as b:
        assert sorted(b.namelist()) == sorted(a.namelist())


def test_repo_index_lets_blender_install_the_zip_from_a_web_folder(tmp_path):
    """--repo DIR: the zip plus index.json from Blender's server-generate; Blender's own client reads
    the index and installs the extension from it (a file:// URL stands in for the static web server)."""
    tool = _blender_ext()
    repo = tmp_path / "repo"
    proc = _build(tmp_path, "--repo", str(repo), "--blender-ext", str(tool), "--quiet")
    assert proc.returncode == 1 and "not both" in proc.stderr  # --output-dir elsewhere and --repo
    proc = subprocess.run([sys.executable, str(BUILD), "--repo", str(repo)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    zip_name = f"{EXTENSION_PACKAGE}-{manifest['version']}.zip"
    assert (repo / zip_name).is_file() and (repo / "index.html").is_file()
    spec = importlib.util.spec_from_file_location("blender_ext", tool)
    blender_ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blender_ext)
    assert blender_ext.repo_json_is_valid_or_error(str(repo / "index.json")) is None
    (entry,) = json.loads((repo / "index.json").read_text())["data"]
    assert (entry["id"], entry["version"], entry["archive_url"]) == (EXTENSION_PACKAGE, manifest["version"],
                                                                     "./" + zip_name)
    local = tmp_path / "installed"
    local.mkdir()
    url = (repo / "index.json").as_uri()
    listed = subprocess.run([sys.executable, str(tool), "list", "--remote-url", url, "--local-dir", str(local)],
                            capture_output=True, text=True, timeout=120)
    assert f"{EXTENSION_PACKAGE}({manifest['version']})" in listed.stdout, listed.stdout + listed.stderr
    synced = subprocess.run([sys.executable, str(tool), "sync", "--remote-url", url, "--local-dir", str(local)],
                            capture_output=True, text=True, timeout=120)  # Blender's "Check for Updates"
    assert synced.returncode == 0, synced.stdout + synced.stderr
    inst = subprocess.run([sys.executable, str(tool), "install", "--remote-url", url, "--local-dir", str(local),
                           EXTENSION_PACKAGE], capture_output=True, text=True, timeout=120)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    installed = local / EXTENSION_PACKAGE
    assert tomllib.loads((installed / "blender_manifest.toml").read_text("utf-8")) == manifest
    assert (installed / "__init__.py").is_file() and (installed / "operators" / "gather.py").is_file()


def _tiny_source(tmp_path, manifest_edit=None, extra=None):
    src = tmp_path / "src"
    src.mkdir()
    text = MANIFEST.read_text(encoding="utf-8")
    if manifest_edit:
        text = manifest_edit(text)
    (src / "blender_manifest.toml").write_text(text, encoding="utf-8")
    (src / "__init__.py").write_text("def register():\n    pass\n")
    for name, content in (extra or {}).items():
        (src / name).write_text(content)
    return src


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace('version = "0.1.0"', 'version = "0.1"'), "version"),
    (lambda t: re.sub(r'(?m)^maintainer = .*$', "", t), "maintainer"),
    (lambda t: t.replace('[permissions]', '[permissions]\nmind_reading = "Read minds"'), "permission"),
    (lambda t: t.replace('schema_version = "1.0.0"', 'schema_version = "1.0.0'), "does not parse"),
])
def test_build_refuses_a_bad_manifest(tmp_path, edit, expected):
    proc = _build(tmp_path / "out", source=_tiny_source(tmp_path, edit))
    assert proc.returncode == 1
    assert proc.stderr.startswith("build_extension: error:") and expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list((tmp_path / "out").glob("*.zip"))


def test_build_refuses_python_that_does_not_compile(tmp_path):
    proc = _build(tmp_path / "out", source=_tiny_source(tmp_path, extra={"broken.py": "def f(:\n"}))
    assert proc.returncode == 1 and "broken.py:1" in proc.stderr


# -- registration ---------------------------------------------------------------------------------
CLASS_NAMES = ("DA3_PT_main", "DA3_PT_input", "DA3_PT_model", "DA3_PT_options", "DA3_PT_long_shots", "DA3_PT_build",
               "DA3_PT_export", "DA3_UL_images", "DA3_FH_result",
               "DA3_OT_reconstruct", "DA3_OT_cancel", "DA3_OT_import_result", "DA3_OT_unload_model",
               "DA3_OT_setup_environment", "DA3_OT_check_interpreter", "DA3_OT_add_images")


def _handler_counts(bpy):
    return {name: len(getattr(bpy.app.handlers, name)) for name in dir(bpy.app.handlers)
            if isinstance(getattr(bpy.app.handlers, name), list)}


def test_register_and_unregister_cleanly_twice(extension):
    import addon_utils
    import bpy

    from da3_for_blender import operators, panels, preferences, properties
    from da3_for_blender.operators import environment, files, session

    ours = operators.CLASSES + panels.CLASSES + properties.CLASSES + (preferences.DA3Preferences,)
    assert addon_utils.check(EXTENSION_PACKAGE)[1] is False, "enabled by an earlier test"
    handlers = _handler_counts(bpy)
    for _ in range(2):
        addon_utils.enable(EXTENSION_PACKAGE, default_set=True, handle_error=None)
        for name in CLASS_NAMES:
            assert hasattr(bpy.types, name), f"{name} not registered"
        assert all(cls.is_registered for cls in ours)
        assert "da3_settings" in bpy.types.Scene.bl_rna.properties
        assert "da3_runtime" in bpy.types.WindowManager.bl_rna.properties
        assert bpy.context.scene.da3_settings.process_res == 504
        assert bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences.python_mode == "MANAGED"
        assert bpy.ops.da3.reconstruct.poll()
        assert files.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()  # File > Import
        addon_utils.disable(EXTENSION_PACKAGE, default_set=True, handle_error=None)
        for name in CLASS_NAMES:
            assert not hasattr(bpy.types, name), f"{name} left registered"
        assert not any(cls.is_registered for cls in ours)
        assert "da3_settings" not in bpy.types.Scene.bl_rna.properties
        assert "da3_runtime" not in bpy.types.WindowManager.bl_rna.properties
        assert EXTENSION_PACKAGE not in bpy.context.preferences.addons
        assert _handler_counts(bpy) == handlers
        assert files.menu_import not in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
        assert not bpy.app.timers.is_registered(environment._poll)
        assert session.current() is None and session.active_run is None


@pytest.fixture
def registered(extension, tmp_path):
    import addon_utils
    import bpy

    addon_utils.enable(EXTENSION_PACKAGE, default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons[EXTENSION_PACKAGE].preferences
    prefs.python_mode, prefs.custom_python = "CUSTOM", sys.executable
    prefs.results_dir = str(tmp_path / "results")
    scene = bpy.data.scenes.new("da3 test")
    old = bpy.context.window.scene
    bpy.context.window.scene = scene
    yield bpy.context
    bpy.context.window.scene = old
    bpy.data.scenes.remove(scene)
    addon_utils.disable(EXTENSION_PACKAGE, default_set=True, handle_error=None)


def test_preferences_become_the_workers_environment(registered, tmp_path, monkeypatch):
    from da3_for_blender import preferences
    from da3_for_blender.preferences import get_preferences, worker_env, worker_python

    monkeypatch.setattr(preferences, "online_access", lambda: True)  # Blender's "Allow Online Access" on

    prefs = get_preferences(registered)
    prefs.model_cache_dir = str(tmp_path / "cache")
    prefs.hf_endpoint = "https://hf-mirror.example/ "
    prefs.offline = True
    env = worker_env(prefs)
    assert env["HF_HOME"] == str(tmp_path / "cache")
    assert Path(env["HF_HUB_CACHE"]).parent == tmp_path / "cache"
    assert env["HF_ENDPOINT"] == "https://hf-mirror.example"
    assert env["HF_HUB_OFFLINE"] == "1"
    # the worker's log goes to the extension's user folder (named in its errors)
    assert env["DA3_WORKER_LOG_DIR"] == preferences.user_dir("logs")
    prefs.model_cache_dir, prefs.hf_endpoint, prefs.offline = "", "", False
    assert set(worker_env(prefs)) == {"DA3_WORKER_LOG_DIR"}
    monkeypatch.setattr(preferences, "online_access", lambda: False)  # Blender offline: no hub downloads
    assert worker_env(prefs)["HF_HUB_OFFLINE"] == "1"
    assert worker_python(prefs) == sys.executable
    prefs.python_mode, prefs.env_dir = "MANAGED", str(tmp_path / "env")
    assert Path(worker_python(prefs)).is_relative_to(tmp_path / "env")


# -- panels ---------------------------------------------------------------------------------------
class _Layout:
    """Stands in for UILayout: records what a panel draws and checks every property and operator exists."""

    def __init__(self, log):
        self.log = log
        self.enabled = self.active = self.alert = True
        self.scale_y = 1.0

    def _sub(self, *args, **kwargs):
        return _Layout(self.log)

    row = column = box = split = grid_flow = _sub

    def separator(self, **kwargs):
        pass

    def prop_enum(self, data, name, value, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name}"
        assert value in data.bl_rna.properties[name].enum_items, f"{name} has no item {value}"
        self.log.append(("prop_enum", name, value))

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name}"
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        module, op = idname.split(".")
        assert hasattr(getattr(__import__("bpy").ops, module), op), f"no operator {idname}"
        self.log.append(("operator", idname))

    def label(self, text="", **kwargs):
        self.log.append(("label", text))

    def progress(self, text="", factor=0.0, type="BAR"):
        self.log.append(("progress", text, factor))

    def template_list(self, listtype, list_id, data, prop, active_data, active_prop, **kwargs):
        import bpy

        assert hasattr(bpy.types, listtype) and prop in data.bl_rna.properties
        self.log.append(("list", prop))


def _draw(panel_cls, context):
    log = []
    fake = types.SimpleNamespace(layout=_Layout(log))
    if hasattr(panel_cls, "layout_enabled"):
        fake.layout_enabled = lambda ctx: panel_cls.layout_enabled(fake, ctx)
    panel_cls.draw(fake, context)
    return log


def test_panels_draw_every_mode_with_existing_properties(registered):
    import bpy

    s = registered.scene.da3_settings
    rt = registered.window_manager.da3_runtime
    panels = [getattr(bpy.types, n) for n in ("DA3_PT_main", "DA3_PT_input", "DA3_PT_model", "DA3_PT_options",
                                               "DA3_PT_long_shots", "DA3_PT_build", "DA3_PT_export")]
    for mode in ("IMAGES", "FOLDER", "VIDEO"):
        s.input_mode = mode
        s.model = "CUSTOM" if mode == "FOLDER" else "depth-anything/DA3-LARGE-1.1"
        s.use_selected_cameras = mode == "IMAGES"
        s.export_format = {"glb"} if mode == "VIDEO" else set()
        logs = [_draw(p, registered) for p in panels]
        assert ("operator", "da3.reconstruct") in logs[0]
        shown = {entry[1] for log in logs for entry in log if entry[0] == "prop"}
        assert {"IMAGES": "input_mode", "FOLDER": "folder", "VIDEO": "video_fps"}[mode] in shown
    # the model panel says what the chosen model is and may do
    s.model = "depth-anything/DA3-LARGE-1.1"
    labels = " ".join(e[1] for e in _draw(bpy.types.DA3_PT_model, registered) if e[0] == "label")
    assert "0.35B" in labels and "CC BY-NC 4.0" in labels and "camera poses" in labels
    s.model = "depth-anything/DA3METRIC-LARGE"
    labels = " ".join(e[1] for e in _draw(bpy.types.DA3_PT_model, registered) if e[0] == "label")
    assert "Metric depth" in labels and "no camera poses" in labels
    # the preferences, in both worker modes
    prefs = registered.preferences.addons[EXTENSION_PACKAGE].preferences
    for mode in ("MANAGED", "CUSTOM"):
        prefs.python_mode = mode
        log = []
        proxy = type("Prefs", (), {"layout": _Layout(log), "__getattr__": lambda self, k: getattr(prefs, k)})()
        type(prefs).draw(proxy, registered)
        shown = {entry[1] for entry in log if entry[0] in ("prop", "operator")}
        assert {"python_mode", "model_cache_dir", "hf_endpoint", "offline", "default_device"} <= shown
        assert ("da3.setup_environment" if mode == "MANAGED" else "da3.check_interpreter") in shown
    # while running: a progress bar and Cancel instead of Run
    rt.running, rt.stage, rt.fraction, rt.message = True, "forward", 0.5, "block 3/12"
    try:
        log = _draw(bpy.types.DA3_PT_main, registered)
    finally:
        rt.running = False
    assert ("progress", "Forward: block 3/12", 0.5) in log
    assert ("operator", "da3.cancel") in log and ("operator", "da3.reconstruct") not in log


def test_model_table_agrees_with_the_core(extension):
    from da3_blender.model.config import capabilities, model_name_for_repo

    from da3_for_blender.da3_blender.options import MODEL_ZOO

    for repo, _label, _params, licence, depth, pose in MODEL_ZOO:
        caps = capabilities(model_name_for_repo(repo))
        assert caps["pose"] == pose, repo
        assert caps["metric"] == (depth == "metric"), repo
        assert licence in ("Apache-2.0", "CC BY-NC 4.0")


# -- refused before anything starts ---------------------------------------------------------------
def _refused(context, match):
    """Run da3.reconstruct and check it is refused with ``match`` and starts nothing."""
    import bpy

    from da3_for_blender.operators import session

    before = {k: len(getattr(bpy.data, k)) for k in ("objects", "collections", "images", "movieclips")}
    client = session.current()
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.da3.reconstruct()
    assert context.window_manager.da3_runtime.error and re.search(match, context.window_manager.da3_runtime.error)
    assert not context.window_manager.da3_runtime.running
    assert session.current() is client and session.active_run is None  # no worker started
    assert {k: len(getattr(bpy.data, k)) for k in before} == before


def test_invalid_inputs_are_refused_with_what_to_fix(registered, tmp_path, soh_images):
    from da3_for_blender.preferences import get_preferences

    s = registered.scene.da3_settings
    s.model = "CUSTOM"
    s.custom_model = str(tmp_path)
    s.input_mode = "IMAGES"
    _refused(registered, "no images selected: add images")
    s.images.add().filepath = str(soh_images[0])
    s.images.add().filepath = str(tmp_path / "missing.png")
    _refused(registered, r"image not found: .*missing\.png")

    s.input_mode = "FOLDER"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    s.folder = str(empty)
    _refused(registered, "no images in folder .*empty.*choose a folder of photos or frames")
    s.folder = str(tmp_path / "nowhere")
    _refused(registered, "folder not found")

    s.input_mode = "VIDEO"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    s.video = str(corrupt)
    _refused(registered, "cannot read the video .*corrupt.mp4.*re-encode")
    s.video = str(tmp_path / "missing.mp4")
    _refused(registered, "video not found")

    s.input_mode = "IMAGES"
    s.images.remove(1)
    prefs = get_preferences(registered)
    prefs.custom_python = str(tmp_path / "no" / "python")
    _refused(registered, "does not exist or is not executable: fix the path in Preferences")
    prefs.python_mode, prefs.env_dir = "MANAGED", str(tmp_path / "env")
    _refused(registered, "environment is not set up.*Set up environment")
    prefs.python_mode, prefs.custom_python = "CUSTOM", sys.executable
    s.custom_model = "  "
    _refused(registered, "no custom model given")


def test_selected_cameras_must_match_the_views(registered, soh_images):
    import bpy

    s = registered.scene.da3_settings
    s.input_mode, s.model, s.custom_model = "IMAGES", "CUSTOM", "some/model"
    for path in soh_images:
        s.images.add().filepath = str(path)
    s.use_selected_cameras = True
    cam = bpy.data.objects.new("only one", bpy.data.cameras.new("only one"))
    registered.scene.collection.objects.link(cam)
    try:
        cam.select_set(True)  # the only object of the test scene
        _refused(registered, "1 camera.s. selected for 2 image.s.: select exactly one camera per image")
    finally:
        bpy.data.objects.remove(cam)


def test_depth_only_models_refuse_several_images_with_cameras(registered, soh_images):
    s = registered.scene.da3_settings
    s.input_mode, s.model = "IMAGES", "depth-anything/DA3MONO-LARGE"
    for path in soh_images:
        s.images.add().filepath = str(path)
    _refused(registered, "DA3 Mono Large predicts depth only, no camera poses.*turn off Cameras")


def test_metric_scale_needs_a_metric_model(registered, soh_images):
    s = registered.scene.da3_settings
    s.input_mode, s.model, s.scale_mode = "IMAGES", "depth-anything/DA3-SMALL", "METRIC"
    s.images.add().filepath = str(soh_images[0])
    _refused(registered, "DA3 Small predicts relative depth, so Scale 'Metres' cannot apply")


def test_check_interpreter_shows_torch_and_devices(registered, tmp_path):
    import bpy
    from importlib.metadata import version

    from da3_for_blender.preferences import get_preferences

    assert bpy.ops.da3.check_interpreter() == {"FINISHED"}
    info = registered.window_manager.da3_runtime.interpreter_info.splitlines()
    assert f"torch {version('torch')}" in info[0]
    assert any(line.startswith("device: CPU") for line in info)
    # a Python without torch: the check says so and what to do
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    bare = tmp_path / "bare" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    get_preferences(registered).custom_python = str(bare)
    bpy.ops.da3.check_interpreter()
    info = registered.window_manager.da3_runtime.interpreter_info
    assert "torch is not installed" in info and "environment" in info


def test_extension_runs_without_the_workers_packages(extension):
    """Blender's own Python has numpy but no torch, PIL, moviepy, safetensors or huggingface_hub."""
    code = (
        "import sys\n"
        "for name in ('torch', 'PIL', 'moviepy', 'safetensors', 'huggingface_hub', 'imageio', 'imageio_ffmpeg'):\n"
        "    sys.modules[name] = None  # importing them now fails\n"
        f"sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})\n"
        "import conftest, bpy, addon_utils\n"
        "conftest.import_extension()\n"
        "def fail(ex):\n"
        "    raise ex\n"
        "addon_utils.enable('da3_for_blender', default_set=True, handle_error=fail)\n"
        "import da3_for_blender.scene.importer, da3_for_blender.operators.validate\n"
        "try:\n"
        "    bpy.ops.da3.reconstruct()\n"
        "except RuntimeError as ex:\n"
        "    print('refused:', ex)\n"
        "addon_utils.disable('da3_for_blender', default_set=True, handle_error=fail)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "refused: Error: no images selected" in proc.stdout


# -- the modal run (with a window) ------------------------------------------------------------------
class _FakeRun:
    """Stands in for operators.run.Run: ``steps`` are what step() returns (or raises) in turn."""

    steps: list = []

    def __init__(self, context):
        self.name, self.stage, self.fraction, self.message = "fake", "forward", 0.5, "block 1/2"
        self.cancel_requested = self.abandoned = False
        self.steps = list(type(self).steps)

    def start(self):
        pass

    def step(self):
        out = self.steps.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    def cancel(self):
        self.cancel_requested = True

    def abandon(self):
        self.abandoned = True

    def finish(self, context):
        return False, "Cancelled: the scene was not changed"


class _FakeWindowManager:
    """Records what the operator does to the window manager: timers, progress."""

    def __init__(self, runtime):
        self.da3_runtime, self.windows, self.timers, self.progress = runtime, [], [], None

    def event_timer_add(self, interval, window=None):
        self.timers.append(object())
        return self.timers[-1]

    def event_timer_remove(self, timer):
        self.timers.remove(timer)

    def modal_handler_add(self, op):
        self.handler = op

    def progress_begin(self, lo, hi):
        self.progress = lo

    def progress_update(self, value):
        self.progress = value

    def progress_end(self):
        self.progress = None


class _FakeWorkspace:
    status = None

    def status_text_set(self, text):
        self.status = text


def _modal_op_and_context(registered, monkeypatch, steps):
    from da3_for_blender.operators import reconstruct

    monkeypatch.setattr(reconstruct, "_blocking", lambda context: False)  # as with a window
    monkeypatch.setattr(reconstruct, "Run", type("Run", (_FakeRun,), {"steps": steps}))
    op_cls = reconstruct.DA3_OT_reconstruct
    methods = {name: getattr(op_cls, name) for name in ("execute", "modal", "cancel", "_wait", "_status",
                                                          "_end_modal", "_abandon", "_finish")}
    op = type("Op", (), {**methods, "_run": None, "_timer": None, "reports": None,
                         "report": lambda self, kind, text: setattr(self, "reports", (kind, text))})()
    rt = registered.window_manager.da3_runtime
    rt.running, rt.error, rt.summary = False, "", ""
    ctx = types.SimpleNamespace(window_manager=_FakeWindowManager(rt), workspace=_FakeWorkspace(),
                                window=object(), scene=registered.scene)
    return op, ctx


def _left_clean(ctx):
    rt = ctx.window_manager.da3_runtime
    assert ctx.window_manager.timers == [] and ctx.window_manager.progress is None
    assert ctx.workspace.status is None and not rt.running and not rt.cancel_requested


def _event(kind, value="NOTHING"):
    return types.SimpleNamespace(type=kind, value=value)


def test_modal_run_cleans_up_after_esc(registered, monkeypatch):
    op, ctx = _modal_op_and_context(registered, monkeypatch, [None, "error"])
    assert op.execute(ctx) == {"RUNNING_MODAL"}
    wm = ctx.window_manager
    assert len(wm.timers) == 1 and wm.progress == 0 and "Esc: cancel" in ctx.workspace.status
    assert wm.da3_runtime.running
    assert op.modal(ctx, _event("MOUSEMOVE")) == {"PASS_THROUGH"}
    run = op._run
    assert op.modal(ctx, _event("ESC", "PRESS")) == {"RUNNING_MODAL"} and run.cancel_requested
    assert op.modal(ctx, _event("TIMER")) == {"RUNNING_MODAL"}
    assert wm.progress == 50 and "Forward 50%" in ctx.workspace.status
    assert op.modal(ctx, _event("TIMER")) == {"CANCELLED"}
    _left_clean(ctx)
    assert wm.da3_runtime.error == "Cancelled: the scene was not changed"


def test_modal_run_cleans_up_when_polling_fails(registered, monkeypatch):
    op, ctx = _modal_op_and_context(registered, monkeypatch, [None, RuntimeError("pipe broke")])
    op.execute(ctx)
    run = op._run
    assert op.modal(ctx, _event("TIMER")) == {"RUNNING_MODAL"}
    assert op.modal(ctx, _event("TIMER")) == {"CANCELLED"}
    _left_clean(ctx)
    assert run.abandoned and "pipe broke" in ctx.window_manager.da3_runtime.error
    assert op.reports[0] == {"ERROR"}


def test_modal_run_cleans_up_when_blender_ends_it(registered, monkeypatch):
    """Opening another file, closing the window or disabling the extension calls the operator's cancel."""
    op, ctx = _modal_op_and_context(registered, monkeypatch, [None])
    op.execute(ctx)
    run = op._run
    op.cancel(ctx)
    _left_clean(ctx)
    assert run.abandoned and ctx.window_manager.da3_runtime.error.startswith("Cancelled")


def test_a_result_that_fails_to_import_is_kept_for_a_retry(registered, tmp_path):
    """The worker's result arrived but the import failed: the file stays, the message says where."""
    import bpy

    from da3_for_blender.operators.run import Run
    from da3_for_blender.scene.importer import ImportOptions

    bad = tmp_path / "result with spaces é.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    run = Run.__new__(Run)  # a run whose job ended with a result event
    run.outcome, run.event, run.output = "result", {"event": "result", "path": str(bad)}, str(bad)
    run.options, run.keep_results, run.cancel_requested, run.name = ImportOptions(), False, False, "x"
    before = {k: len(getattr(bpy.data, k)) for k in ("objects", "collections", "meshes", "images")}
    ok, message = run.finish(registered)
    assert not ok and f"the result is kept at {bad}" in message and "File > Import > DA3 result" in message
    assert bad.is_file()
    assert {k: len(getattr(bpy.data, k)) for k in before} == before


def test_build_options_reach_the_importer(registered):
    """Confidence cut, max points, point spacing, plane detail/texture and packing: panel -> import."""
    import bpy

    from da3_for_blender.properties import import_options

    s = registered.scene.da3_settings
    s.conf_percentile, s.max_points, s.point_stride, s.plane_stride = 25.0, 5000, 3, 2
    s.plane_texture, s.pack_images, s.fuse_points = "original", False, False
    opts = import_options(s)
    assert (opts.conf_percentile, opts.max_points, opts.point_stride, opts.plane_stride) == (25.0, 5000, 3, 2)
    assert (opts.plane_texture, opts.pack_images, opts.fuse_points) == ("original", False, False)
    shown = {e[1] for e in _draw(bpy.types.DA3_PT_build, registered) if e[0] == "prop"}
    assert {"conf_percentile", "max_points", "point_stride", "plane_stride", "plane_texture", "pack_images"} <= shown
    s.plane_edge_threshold, s.fixed_intrinsics, s.interpolation = 0.25, True, "CONSTANT"
    s.scale_mode, s.scale_factor = "FACTOR", 2.5
    opts = import_options(s)
    assert (opts.plane_edge_threshold, opts.fixed_intrinsics, opts.interpolation) == (0.25, True, "CONSTANT")
    assert opts.scale == 2.5
    s.scale_mode = "METRIC"
    assert import_options(s).scale == "metric"
    shown = {e[1] for e in _draw(bpy.types.DA3_PT_build, registered) if e[0] == "prop"}
    assert {"plane_edge_threshold", "fixed_intrinsics", "interpolation", "scale_mode"} <= shown



def test_build_choices_and_defaults_come_from_options(registered):
    """Up axis, plane texture, key interpolation and plane spacing: one table each in options.py, which the
    panel, the importer's defaults and checks, and the scene conventions all follow."""
    from da3_for_blender.da3_blender import options as opt
    from da3_for_blender.da3_blender.errors import BadInputError
    from da3_for_blender.scene import conventions, importer

    s = registered.scene.da3_settings
    for name, table, default in (("up_axis", opt.UP_AXES, opt.DEFAULT_UP_AXIS),
                                 ("plane_texture", opt.PLANE_TEXTURES, opt.DEFAULT_PLANE_TEXTURE),
                                 ("interpolation", opt.KEY_INTERPOLATIONS, opt.DEFAULT_KEY_INTERPOLATION)):
        prop = s.bl_rna.properties[name]
        assert tuple(item.identifier for item in prop.enum_items) == opt.choice_ids(table)
        assert prop.default == default == getattr(importer.ImportOptions(), name)
    assert s.bl_rna.properties["plane_stride"].default == opt.DEFAULT_PLANE_STRIDE == importer.ImportOptions().plane_stride
    assert set(conventions.UP_AXES) | {"FLOOR"} == set(opt.choice_ids(opt.UP_AXES))  # FLOOR: from the floor found (issue 27)
    with pytest.raises(BadInputError, match="interpolation='BEZIER' is unknown; use one of LINEAR, CONSTANT"):
        importer._check_options(importer.ImportOptions(interpolation="BEZIER"))


# -- the first hour: one job, natural order, wording, File > Import ---------------------------------
def _png(path: Path, width: int, height: int) -> Path:
    """A tiny grey PNG written with the standard library."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_known_poses_follow_the_images_natural_order(registered, tmp_path):
    """frame_2 gets cam_2's pose, not cam_10's: cameras are matched in the images' natural order."""
    import bpy
    import numpy as np

    from da3_for_blender.operators.gather import gather_job
    from da3_for_blender.scene.cameras import blender_camera_to_opencv

    n = 12
    folder = tmp_path / "shot"
    folder.mkdir()
    for i in range(1, n + 1):
        _png(folder / f"frame_{i}.png", 32, 24)
    s = registered.scene.da3_settings
    s.input_mode, s.folder = "FOLDER", str(folder)
    s.model, s.custom_model = "CUSTOM", str(tmp_path)  # a local folder: nothing to download
    s.use_selected_cameras = True
    registered.scene.render.resolution_x, registered.scene.render.resolution_y = 32, 24  # the images' aspect
    cams = []
    try:
        for i in range(1, n + 1):
            cam = bpy.data.objects.new(f"cam_{i}", bpy.data.cameras.new(f"cam_{i}"))
            cam.location = (float(i), 0.0, 0.0)
            registered.scene.collection.objects.link(cam)
            cam.select_set(True)
            cams.append(cam)
        registered.view_layer.update()  # world matrices from the locations
        images_before = len(bpy.data.images)
        extrinsics = gather_job(registered)["options"]["extrinsics"]
        assert len(bpy.data.images) == images_before  # image sizes read without data-blocks
        for i, cam in enumerate(cams):  # cams[i] is cam_{i+1}, for frame_{i+1}.png
            w2c, _k, _size = blender_camera_to_opencv(cam, registered.scene)
            assert np.allclose(extrinsics[i], np.asarray(w2c, dtype=float), atol=1e-6), cam.name
        assert len({round(e[0][3], 6) for e in extrinsics} | {round(e[1][3], 6) for e in extrinsics}
                   | {round(e[2][3], 6) for e in extrinsics}) > n  # the poses differ
    finally:
        for cam in cams:
            bpy.data.objects.remove(cam)


def _known_camera_scene(registered, tmp_path, names, size):
    """Numbered PNGs in a folder as the input, known poses on, a local model folder."""
    folder = tmp_path / "plates"
    folder.mkdir()
    for name in names:
        _png(folder / name, *size)
    s = registered.scene.da3_settings
    s.input_mode, s.folder = "FOLDER", str(folder)
    s.model, s.custom_model = "CUSTOM", str(tmp_path)
    s.use_selected_cameras = True
    return folder


def _camera(registered, name, location=(0.0, 0.0, 0.0)):
    import bpy

    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    cam.location = location
    registered.scene.collection.objects.link(cam)
    cam.select_set(True)
    return cam


def test_a_render_of_another_aspect_than_the_images_is_refused(registered, tmp_path):
    """K is the render's; scaling it to an image of another aspect would make fx != fy silently (issue 17)."""
    import bpy
    import numpy as np

    from da3_for_blender.operators.gather import gather_job
    from da3_for_blender.scene.cameras import blender_camera_to_opencv

    _known_camera_scene(registered, tmp_path, ["a.png", "b.png"], (32, 24))
    cams = [_camera(registered, "cam_a", (1.0, -3.0, 1.0)), _camera(registered, "cam_b", (1.5, -3.0, 1.0))]
    render = registered.scene.render
    try:
        render.resolution_x, render.resolution_y, render.resolution_percentage = 1920, 1080, 100
        _refused(registered, r"camera cam_a renders at 1920x1080 but a.png is 32x24, another aspect ratio: set the "
                             r"render resolution")
        render.resolution_x, render.resolution_y = 64, 48  # the same aspect, twice the size: K scales uniformly
        registered.view_layer.update()
        intrinsics = np.asarray(gather_job(registered)["options"]["intrinsics"])
        _w2c, k, _size = blender_camera_to_opencv(cams[0], registered.scene)
        assert np.allclose(intrinsics[0][:2], np.asarray(k)[:2] / 2) and intrinsics[0][0, 0] == intrinsics[0][1, 1]
    finally:
        for cam in cams:
            bpy.data.objects.remove(cam)


def test_one_animated_camera_gives_a_pose_per_frame(registered, tmp_path):
    """A tracked shot: one animated camera, each view on the scene frame of its source frame number
    (plate.1004.png: frame 1004; 1003 is missing), lens keys included; the current frame is kept."""
    import bpy
    import numpy as np

    from da3_for_blender.operators.gather import gather_job
    from da3_for_blender.scene.cameras import blender_camera_to_opencv

    _known_camera_scene(registered, tmp_path, ["plate.1001.png", "plate.1002.png", "plate.1004.png"], (32, 24))
    scene = registered.scene
    scene.render.resolution_x, scene.render.resolution_y = 320, 240
    cam = _camera(registered, "TrackCam")
    try:
        for frame in range(1001, 1005):
            cam.location = (2.0 + 0.1 * (frame - 1000) ** 2, -5.0, 1.6)
            cam.rotation_euler = (1.3, 0.0, 0.05 * (frame - 1000))
            cam.data.lens = 30.0 + frame - 1000
            cam.keyframe_insert("location", frame=frame)
            cam.keyframe_insert("rotation_euler", frame=frame)
            cam.data.keyframe_insert("lens", frame=frame)
        scene.frame_set(7)
        options = gather_job(registered)["options"]
        assert scene.frame_current == 7
        for i, frame in enumerate((1001, 1002, 1004)):
            scene.frame_set(frame)
            w2c, k, _size = blender_camera_to_opencv(cam, scene)
            assert np.allclose(options["extrinsics"][i], w2c, atol=1e-6), frame
            assert np.allclose(np.asarray(options["intrinsics"][i])[:2], np.asarray(k)[:2] / 10, atol=1e-6), frame
        assert len({round(e[0][3], 4) for e in options["extrinsics"]}) == 3  # three different poses

        cam.animation_data_clear()  # a still camera cannot stand for three views
        cam.data.animation_data_clear()
        _refused(registered, r"1 camera.s. selected for 3 image.s.: select exactly one camera per image .* or one "
                             r"animated camera keyed on the images' frame numbers")
    finally:
        bpy.data.objects.remove(cam)


def test_image_sizes_are_read_without_data_blocks(registered, tmp_path):
    import bpy
    from PIL import Image

    from da3_for_blender.operators.validate import image_size

    paths = {_png(tmp_path / "a.png", 37, 21): (37, 21)}
    for name, kwargs in (("b.jpg", {}), ("c.jpg", {"progressive": True}), ("d.bmp", {}), ("e.tif", {})):
        Image.new("RGB", (45, 19), (10, 200, 30)).save(tmp_path / name, **kwargs)
        paths[tmp_path / name] = (45, 19)
    before = len(bpy.data.images)
    for path, size in paths.items():
        assert image_size(str(path)) == size, path.name
    assert len(bpy.data.images) == before


def test_the_job_is_gathered_once_in_the_protocol_format(registered, tmp_path, robot_video, monkeypatch):
    from da3_for_blender.da3_blender import options as opt
    from da3_for_blender.da3_blender.runtime import protocol
    from da3_for_blender.operators import gather
    from da3_for_blender.preferences import get_preferences

    s = registered.scene.da3_settings
    assert s.model == opt.default_model() and s.video_fps == opt.DEFAULT_SHOT_FPS == 0  # shots: every frame
    s.input_mode, s.video = "VIDEO", str(robot_video)
    s.model, s.custom_model = "CUSTOM", str(tmp_path)
    s.video_fps, s.max_frames = 0.0, 5
    s.export_format, s.export_dir = {"ply", "glb"}, str(tmp_path / "exports")
    get_preferences(registered).default_device = "cpu"
    job = gather.gather_job(registered)
    assert protocol.normalize_job(job)  # the worker takes it as it is
    assert set(job) == {"inputs", "output", "model", "device", "dtype", "options", "video", "export_dir",
                        "export_format", "shot"}
    assert job["shot"] == {"mode": "auto", "frame_start": 1, "frame_rate": None, "colorspace": "auto"}
    assert job["inputs"] == [str(robot_video)] and job["model"] == str(tmp_path) and job["device"] == "cpu"
    assert os.path.dirname(job["output"]) == str(tmp_path / "results")
    assert job["video"]["max_frames"] == 5 and job["export_format"] == "glb-ply"
    assert job["options"]["process_res"] == opt.DEFAULT_PROCESS_RES
    # streaming: videos by default, with automatic sizes (no overlap given: chosen with the chunk size)
    assert job["video"]["fps"] == 0.0  # every frame
    assert {k: job["options"].get(k) for k in ("chunk_size", "chunk_overlap", "chunk_align")} == \
        {"chunk_size": "auto", "chunk_overlap": None, "chunk_align": "auto"}
    s.chunk_size, s.chunk_overlap, s.chunk_align = 16, 4, "se3"
    assert gather.gather_job(registered)["options"]["chunk_size"] == 16
    s.chunking = "OFF"
    assert "chunk_size" not in gather.gather_job(registered)["options"]
    s.chunking, s.chunk_overlap = "ALWAYS", 16
    _refused(registered, "overlap 16 must be smaller than the chunk size 16")
    s.input_mode, s.chunking = "FOLDER", "VIDEO"
    s.folder = str(_png(tmp_path / "one.png", 16, 16).parent)
    assert "chunk_size" not in gather.gather_job(registered)["options"]  # image sets: one pass


def test_offline_blender_downloads_nothing_and_says_what_to_turn_on(registered, tmp_path, monkeypatch):
    import bpy

    from da3_for_blender import preferences
    from da3_for_blender.preferences import get_preferences

    monkeypatch.setattr(preferences, "online_access", lambda: False)
    s = registered.scene.da3_settings
    s.input_mode = "IMAGES"
    s.images.add().filepath = str(_png(tmp_path / "a.png", 16, 16))
    s.model = "depth-anything/DA3-BASE"
    get_preferences(registered).model_cache_dir = str(tmp_path / "empty cache")
    _refused(registered, "DA3-BASE is not downloaded yet.*Allow Online Access")
    with pytest.raises(RuntimeError, match="Allow Online Access"):
        bpy.ops.da3.setup_environment()
    assert not registered.window_manager.da3_runtime.env_busy


def test_every_property_has_a_tooltip_and_the_labels_read_well(registered):
    import bpy

    from da3_for_blender.preferences import DA3Preferences
    from da3_for_blender.properties import DA3ImagePath, DA3Runtime, DA3Settings

    structs = [cls.bl_rna for cls in (DA3Settings, DA3ImagePath, DA3Runtime, DA3Preferences)]
    structs += [bpy.ops.da3.import_result.get_rna_type(), bpy.ops.da3.setup_environment.get_rna_type()]
    for rna in structs:
        for prop in rna.properties:
            if prop.identifier in ("rna_type", "bl_idname"):
                continue
            assert prop.description.strip(), f"{rna.identifier}.{prop.identifier} has no tooltip"
            for item in getattr(prop, "enum_items", ()):
                assert item.description.strip(), f"{rna.identifier}.{prop.identifier}: item {item.identifier}"
    names = {p.identifier: p.name for p in DA3Settings.bl_rna.properties}
    assert names["process_res"] == "Processing resolution"
    assert names["plane_stride"] == "Plane vertex spacing"
    assert names["plane_edge_threshold"] == "Cut stretched edges"
    assert names["interpolation"] == "Key interpolation" and names["up_axis"] == "Up axis"
    assert names["use_ray_pose"] == "Camera poses from rays"
    items = DA3Settings.bl_rna.properties["device"].enum_items
    assert items["DEFAULT"].name == "Preferences default" and items["auto"].name == "Best available"
    assert DA3Settings.bl_rna.properties["ref_view_strategy"].enum_items["saddle_balanced"].name == "Most central view"
    # the import operator and the panel share the same import settings, with the same defaults
    op = bpy.ops.da3.import_result.get_rna_type().properties
    for name in ("build_planes", "plane_stride", "plane_edge_threshold", "up_axis", "planes_max_views", "planes_every"):
        assert op[name].name == DA3Settings.bl_rna.properties[name].name
        assert op[name].default == DA3Settings.bl_rna.properties[name].default


def test_long_errors_wrap_and_the_long_shots_section_says_what_it_does(registered, monkeypatch):
    import bpy

    from da3_for_blender import panels

    monkeypatch.setattr(panels, "online_access", lambda: True)
    rt = registered.window_manager.da3_runtime
    message = "DA3 failed: " + "a very long explanation of what went wrong and what to do " * 4
    rt.error = message
    try:
        lines = [e[1] for e in _draw(bpy.types.DA3_PT_main, registered) if e[0] == "label"]
    finally:
        rt.error = ""
    wrapped = [line for line in lines if line and line not in ("Import Result",)]
    assert len(wrapped) > 2 and " ".join(wrapped).split() == message.split()
    assert all(len(line) <= 60 for line in wrapped)
    s = registered.scene.da3_settings
    s.planes_every, s.planes_max_views = 3, 200
    log = _draw(bpy.types.DA3_PT_long_shots, registered)
    shown = {e[1] for e in log if e[0] == "prop"}
    assert {"chunking", "chunk_size", "chunk_overlap", "chunk_align", "planes_every", "planes_max_views"} <= shown
    text = " ".join(e[1] for e in log if e[0] == "label")
    assert "every 3rd view" in text and "more than 200 views" in text and "chunks" in text
    export = _draw(bpy.types.DA3_PT_export, registered)
    from da3_for_blender.da3_blender.options import EXPORT_FORMAT_NAMES

    assert [e[2] for e in export if e[0] == "prop_enum"] == list(EXPORT_FORMAT_NAMES)


def test_file_import_names_the_result_after_its_file_and_takes_import_options(registered, tmp_path):
    import bpy
    import numpy as np

    from da3_for_blender.scene import importer

    rng = np.random.default_rng(0)
    n, h, w = 2, 12, 16
    ext = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    ext[1, 0, 3] = -0.2
    k = np.tile(np.array([[14.0, 0, 8], [0, 14.0, 6], [0, 0, 1]], np.float32), (n, 1, 1))
    path = tmp_path / "my shot.npz"  # the official DA3 npz layout
    np.savez_compressed(path, image=rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
                        depth=rng.uniform(1, 2, (n, h, w)).astype(np.float32),
                        conf=rng.uniform(1, 5, (n, h, w)).astype(np.float32), extrinsics=ext, intrinsics=k)
    assert bpy.types.DA3_FH_result.bl_import_operator == "da3.import_result"
    assert bpy.types.DA3_FH_result.bl_file_extensions == ".npz"
    try:
        assert bpy.ops.da3.import_result(filepath=str(path), build_planes=False, up_axis="KEEP") == {"FINISHED"}
        root = registered.scene.collection.children["DA3 my shot"]
        assert root["da3_up_axis"] == "KEEP"
        roles = sorted(c["da3_role"] for c in root.children)
        assert roles == ["cameras", "points"]
        importer.remove_import(root["da3_key"])
        # a drop on the viewport (the FileHandler invokes with the path): imports at once, starting from
        # the panel's Build settings
        s = registered.scene.da3_settings
        s.build_points, s.build_planes = False, True
        op_cls = bpy.types.DA3_OT_import_result  # background Blender skips invoke(): call it on a stand-in
        op = types.SimpleNamespace(filepath=str(path), directory="", files=[], reports=[])
        op.report = lambda kind, text: op.reports.append(text)
        op.paths = lambda: op_cls.paths(op)
        op.execute = lambda context: op_cls.execute(op, context)
        assert op_cls.invoke(op, registered, None) == {"FINISHED"}, op.reports
        root = registered.scene.collection.children["DA3 my shot"]
        assert sorted(c["da3_role"] for c in root.children) == ["cameras", "planes"]
    finally:
        for col in [c for c in registered.scene.collection.children if c.get("da3_role") == "root"]:
            importer.remove_import(col["da3_key"])


def test_long_shot_plane_settings_reach_an_importer_that_takes_them(registered, monkeypatch):
    """planes_every / planes_max_views go to ImportOptions when scene/importer.py has them (issue 9 item 5)."""
    import dataclasses

    from da3_for_blender.properties import import_options
    from da3_for_blender.scene import importer

    s = registered.scene.da3_settings
    s.planes_every, s.planes_max_views = 5, 300
    known = {f.name for f in dataclasses.fields(importer.ImportOptions)}
    opts = import_options(s)
    assert all(getattr(opts, k) == v for k, v in (("planes_every", 5), ("planes_max_views", 300)) if k in known)

    @dataclasses.dataclass
    class WithLongShots(importer.ImportOptions):
        planes_max_views: int = 0
        planes_every: int = 1

    monkeypatch.setattr(importer, "ImportOptions", WithLongShots)
    opts = import_options(s)
    assert (opts.planes_every, opts.planes_max_views) == (5, 300)


def test_the_export_panel_offers_the_exr_options_when_exr_is_on(registered):
    """Issue 17: EXR resolution, half floats and plate filter in the Export sub-panel, from options.py."""
    import bpy

    from da3_for_blender.da3_blender import options as opt

    s = registered.scene.da3_settings
    s.export_format = {"glb"}
    shown = {e[1] for e in _draw(bpy.types.DA3_PT_export, registered) if e[0] == "prop"}
    assert not shown & set(opt.EXR_OPTION_KEYS)
    s.export_format = {"glb", "exr"}
    shown = {e[1] for e in _draw(bpy.types.DA3_PT_export, registered) if e[0] == "prop"}
    assert set(opt.EXR_OPTION_KEYS) <= shown
    props = s.bl_rna.properties
    assert [i.identifier for i in props["exr_resolution"].enum_items] == list(opt.choice_ids(opt.EXR_RESOLUTIONS))
    assert [i.identifier for i in props["exr_plate_filter"].enum_items] == list(opt.choice_ids(opt.EXR_PLATE_FILTERS))
    assert (s.exr_resolution, s.exr_half, s.exr_plate_filter) == (
        opt.DEFAULT_EXR_RESOLUTION, opt.DEFAULT_EXR_HALF, opt.DEFAULT_EXR_PLATE_FILTER)


def test_the_options_panel_says_how_selected_cameras_match(registered):
    import bpy

    s = registered.scene.da3_settings
    s.use_selected_cameras = True
    cam = bpy.data.objects.new("Solve", bpy.data.cameras.new("Solve"))
    registered.scene.collection.objects.link(cam)
    try:
        cam.select_set(True)
        labels = [e[1] for e in _draw(bpy.types.DA3_PT_options, registered) if e[0] == "label"]
        assert "1 camera(s) selected, matched by name" in labels
        cam.keyframe_insert("location", frame=1001)
        labels = [e[1] for e in _draw(bpy.types.DA3_PT_options, registered) if e[0] == "label"]
        assert "1 camera(s) selected, a pose per frame number" in labels
    finally:
        bpy.data.objects.remove(cam)


def test_one_animated_camera_needs_numbered_images(registered, tmp_path):
    import bpy

    _known_camera_scene(registered, tmp_path, ["left.png", "right.png"], (32, 24))
    registered.scene.render.resolution_x, registered.scene.render.resolution_y = 32, 24
    cam = _camera(registered, "Solve")
    try:
        cam.keyframe_insert("location", frame=1)
        _refused(registered, r"one animated camera \(Solve\) for 2 images without distinct frame numbers in their "
                             r"names: number the images")
    finally:
        bpy.data.objects.remove(cam)
