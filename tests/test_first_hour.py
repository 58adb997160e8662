"""The defects a new user met in the first hour (issue 13), each checked as that user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "reconstruct.py"


# -- files honour the umask -------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_exports_and_result_files_get_the_umask_mode(tmp_path, umask):
    """mkstemp creates 0600 files; an export must be readable by whoever any other new file would be."""
    from da3_blender.files import open_atomic

    old = os.umask(umask)
    try:
        with open_atomic(tmp_path / "scene.glb") as fh:
            fh.write(b"glb")
        with open_atomic(tmp_path / "cameras.txt", "w") as fh:
            fh.write("text")
        with open(tmp_path / "plain.bin", "wb") as fh:  # what any program would create
            fh.write(b"x")
    finally:
        os.umask(old)
    want = (tmp_path / "plain.bin").stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    for name in ("scene.glb", "cameras.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name


# -- a bad npz --------------------------------------------------------------------------------------


def test_an_npz_with_python_objects_is_explained_without_numpy_jargon(tmp_path):
    from da3_blender.errors import ResultFormatError
    from da3_blender.prediction import load_result

    path = tmp_path / "weird.npz"
    np.savez(path, depth=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ResultFormatError) as err:
        load_result(path)
    text = str(err.value)
    assert "weird.npz is not a DA3 result" in text and "Python objects" in text
    assert "allow_pickle" not in text and "\n" not in text


# -- one version ------------------------------------------------------------------------------------


def test_the_package_version_has_one_source():
    """meta['package_version'] was 'unknown' where the package is not pip-installed (the managed env)."""
    import da3_blender
    from da3_blender.runtime.worker import package_version

    manifest = tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert package_version() == da3_blender.__version__ == manifest["version"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "da3_blender.__version__"}
    code = "from da3_blender.runtime.worker import package_version; print(package_version())"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd="/",
                         timeout=60)  # -S: no site-packages, so no installed metadata (as the managed env)
    assert out.returncode == 0 and out.stdout.strip() == da3_blender.__version__, out.stderr


def test_the_licence_is_an_spdx_string():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"  # the table form is deprecated by setuptools
    assert any(r.startswith("setuptools>=77") for r in pyproject["build-system"]["requires"])


# -- progress ---------------------------------------------------------------------------------------


def test_video_progress_never_counts_past_its_total(robot_video):
    """The total shown is estimated from the container (duration x average fps: 173 for robot_unitree.mp4)
    while 174 frames decode: the count grows with the frames read, never past its total."""
    from da3_blender.inputs import collect as inputs

    seen = []
    got = inputs.collect_inputs([robot_video], fps=0, progress=lambda s, f, m: seen.append((f, m)))
    decoded = got.video["frame_count"]
    assert len(got) == decoded and decoded > round(got.video["duration"] * got.video["average_fps"])  # the estimate is short
    counts = [tuple(map(int, re.search(r"video frame (\d+)/(\d+)", m).groups())) for _, m in seen]
    assert counts[-1] == (decoded, decoded)
    assert all(done <= total for done, total in counts), counts
    assert all(0 < f <= 1 for f, _ in seen)
    seen.clear()  # with max_frames, the count is of the frames read up to the last one kept
    inputs.collect_inputs([robot_video], fps=0, max_frames=3, progress=lambda s, f, m: seen.append((f, m)))
    assert [m.split(",")[0] for _, m in seen] == ["video frame 1/3", "video frame 2/3", "video frame 3/3"]
    assert seen[-1][0] == 1.0


def test_progress_messages_are_never_empty():
    """The network reports bare fractions: the CLI and the worker repeat the stage's message."""
    from da3_blender.commands.common import ProgressPrinter
    from da3_blender.runtime.worker import _Job, _Progress

    class Stream:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    plain = Stream()
    printer = ProgressPrinter(plain, tty=False)
    printer("forward", 0.0, "running the network")
    for f in (0.3, 0.6, 1.0):
        printer("forward", f, "")
    assert all(line.endswith("running the network") for line in plain.text.splitlines()), plain.text

    sent = []

    class Worker:
        def send(self, message):
            sent.append(message)

    progress = _Progress(Worker(), _Job("j", {}))
    progress("forward", 0.0, "running the network")
    for f in (0.25, 0.5, 0.75, 1.0):
        time.sleep(0.11)  # past the throttle
        progress("forward", f, "")
    messages = [m["message"] for m in sent]
    assert messages == ["running the network", "running the network (20%)", "running the network (50%)",
                        "running the network (70%)", "running the network (100%)"]

    sent.clear()  # reading the inputs, loading the model, then the inference's own "load": never backwards
    reading = progress.part(0.0, 0.6)
    for call, fraction, message in ((reading, 0.5, "video frame 2/4"), (reading, 1.0, "video frame 4/4"),
                                    (progress, 0.6, "loading the model"), (progress, 0.0, "reading images")):
        time.sleep(0.11)  # past the throttle
        call("load", fraction, message)
    fractions = [m["fraction"] for m in sent if m["stage"] == "load"]
    assert fractions == [0.3, 0.6, 0.6, 0.6]


# -- the hub ----------------------------------------------------------------------------------------


def test_an_unreachable_hub_fails_fast_in_one_line(tmp_path):
    """It used to take ~25 s and 22 retry warnings (each twice) before the error."""
    code = (
        "import time\n"
        "from da3_blender.model.loading import locate\n"
        "from da3_blender.errors import ModelLoadError\n"
        "t = time.monotonic()\n"
        "try:\n    locate('depth-anything/DA3-SMALL')\n"
        "except ModelLoadError as e:\n    print('ERR', e)\n"
        "print('SECONDS', time.monotonic() - t)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO_ROOT)}
    for key in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(key, None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    error = next(line for line in lines if line.startswith("ERR"))
    for hint in ("http://127.0.0.1:9", "HF_ENDPOINT", "local model folder", "HF_HUB_OFFLINE"):
        assert hint in error, error
    assert float(lines[-1].split()[1]) < 8.0  # no retries with back-off
    assert "Retrying" not in res.stderr


# -- the worker log ---------------------------------------------------------------------------------


def test_worker_stderr_goes_to_a_log_file_named_in_its_errors(tmp_path):
    from da3_blender.runtime.client import WorkerClient
    from da3_blender.runtime.protocol import LOG_DIR_ENV

    client = WorkerClient(python=sys.executable, log_dir=str(tmp_path / "logs"))
    try:
        assert client.hello(timeout=60)["event"] == "hello"
        job_id = client.submit({"inputs": [str(tmp_path / "missing.png")], "output": str(tmp_path / "o.npz"),
                                "device": "cpu"})
        end = client.wait_job(job_id, 60)
        assert end["event"] == "error" and end["log"] == str(tmp_path / "logs" / "worker.log")
        assert client.shutdown(timeout=30) == 0
    finally:
        client.kill()
    log = (tmp_path / "logs" / "worker.log").read_text()
    assert "worker started" in log and "missing.png" in log  # the worker's own log lines
    assert client.env[LOG_DIR_ENV] == str(tmp_path / "logs")
    kind, text = client._death(-9)
    assert f"the full log is {client.log_path}" in text


def test_an_internal_worker_error_names_the_log(monkeypatch, tmp_path):
    from da3_blender.runtime import worker

    monkeypatch.setenv("DA3_WORKER_LOG_DIR", str(tmp_path))
    kind, text = worker.classify(ZeroDivisionError("boom"))
    assert kind == "internal" and str(tmp_path / "worker.log") in text
    monkeypatch.delenv("DA3_WORKER_LOG_DIR")
    assert "stderr" in worker.classify(ZeroDivisionError("boom"))[1]


# -- --debug ----------------------------------------------------------------------------------------


def test_debug_prints_the_traceback(monkeypatch, capsys):
    from da3_blender.commands import main as cli, reconstruct

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(reconstruct, "run", bug)
    monkeypatch.delenv("DA3_DEBUG", raising=False)
    assert cli.main(["image", "x.png"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--debug" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["image", "x.png", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and err.strip().splitlines()[-1].startswith("da3: error:")
    monkeypatch.setenv("DA3_DEBUG", "1")
    assert cli.main(["image", "x.png"]) == 1
    assert "Traceback" in capsys.readouterr().err


# -- headless: outputs checked first, the CLI's messages --------------------------------------------


def _headless(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _one_line(proc, code, *words):
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconstruct: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root can write anywhere")
def test_headless_unwritable_output_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    try:
        _one_line(_headless(img, "--output", locked / "x.blend"), 2, "cannot write the .blend", str(locked))
        _one_line(_headless(img, "--output", tmp_path / "x.blend", "--export-dir", locked / "exp"), 2, "exports")
    finally:
        locked.chmod(0o700)


def test_headless_output_in_a_file_is_refused_before_any_work(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = _headless(img, "--output", blocker / "x.blend")
    _one_line(proc, 2, "cannot write the .blend", str(blocker))
    assert "DA3" not in proc.stdout  # no run started


def test_headless_unknown_export_format_gets_the_cli_message(tmp_path, capsys):
    from da3_blender.commands.main import main

    img = tmp_path / "a.png"
    img.write_bytes(b"")
    proc = _headless(img, "--output", tmp_path / "x.blend", "--export-dir", tmp_path / "e", "--export-format", "gltf")
    _one_line(proc, 2, "unknown export format 'gltf'", "valid formats are")
    main(["image", str(img), "--export-dir", str(tmp_path / "e"), "--export-format", "gltf"])
    cli_line = capsys.readouterr().err.strip()
    assert cli_line.removeprefix("da3: error: ") == proc.stderr.strip().removeprefix("reconstruct: error: ")


def test_headless_build_options_reach_the_scene_settings(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_build", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    args = script.parse_args([str(img), "--output", str(tmp_path / "x.blend"), "--plane-detail", "2",
                              "--plane-texture", "original", "--conf-thresh-percentile", "25", "--num-max-points",
                              "5000", "--up-axis", "keep", "--scale", "2.5", "--fixed-lens", "--keys", "constant",
                              "--chunk-size", "16", "--chunk-overlap", "4", "--chunk-align", "sim3"])
    s = script.scene_settings(args)
    assert {k: s[k] for k in ("plane_stride", "plane_texture", "conf_percentile", "max_points", "up_axis",
                              "scale_mode", "scale_factor", "fixed_intrinsics", "interpolation", "chunk_size",
                              "chunk_overlap", "chunk_align")} == {
        "plane_stride": 2, "plane_texture": "original", "conf_percentile": 25.0, "max_points": 5000,
        "up_axis": "KEEP", "scale_mode": "FACTOR", "scale_factor": 2.5, "fixed_intrinsics": True,
        "interpolation": "CONSTANT", "chunk_size": 16, "chunk_overlap": 4, "chunk_align": "sim3"}
    s = script.scene_settings(script.parse_args([str(img), "--output", str(tmp_path / "x.blend"), "--scale", "metric"]))
    assert s["scale_mode"] == "METRIC" and "plane_stride" not in s and "chunk_size" not in s


def test_headless_build_option_names_are_scene_settings(extension, tmp_path):
    """Every setting the headless script fills exists on scene.da3_settings (streaming ones once the panel has them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_names", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # every option the script has, set away from its default, parsed by the script's own parser
    (tmp_path / "in.png").write_bytes(b"")
    args = script.parse_args([str(tmp_path / "in.png"), "--output", str(tmp_path / "out.blend"), "--no-points", "--no-planes", "--no-cameras",
                              "--keep-result", "--use-ray-pose", "--fixed-lens", "--device", "cpu", "--process-res", "140",
                              "--ref-view-strategy", "first", "--conf-thresh-percentile", "10", "--num-max-points", "10",
                              "--plane-detail", "2", "--plane-texture", "original", "--up-axis", "keep", "--keys",
                              "constant", "--chunk-size", "8", "--chunk-overlap", "2", "--chunk-align", "se3", "--scale",
                              "2", "--refine", "radial", "--refine-motion", "nodal", "--dtype", "fp32", "--mesh",
                              "--mesh-max-faces", "1000", "--mesh-holdout", "--camera-height", "1.6", "--gaussians",
                              "--shadow-catcher", "--no-loop-closure"])
    import importlib

    names = set(importlib.import_module(f"{extension.__name__}.properties").DA3Settings.__annotations__)
    settings = script.scene_settings(args)
    assert set(settings) <= names
    assert settings["chunking"] == "ALWAYS"  # a chunk size given on the command line applies to image sets too


# -- set-up and CI ----------------------------------------------------------------------------------


def test_ci_turns_missing_reference_data_into_failures(tmp_path):
    """Under DA3_REQUIRE_ALL=1 (.ci/run) a test that needs ../shared fails instead of skipping."""
    test = "tests/test_cli.py::test_missing_path"
    env = {**os.environ, "DA3_SHARED": str(tmp_path / "no-shared")}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    skipped = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                             env={**env, "DA3_REQUIRE_ALL": "0"})
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    failed = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                            env={**env, "DA3_REQUIRE_ALL": "1"})
    assert failed.returncode == 1 and "DA3_REQUIRE_ALL=1" in failed.stdout, failed.stdout
    assert "export DA3_REQUIRE_ALL=1" in (REPO_ROOT / ".ci" / "run").read_text()


def test_setup_is_quiet_and_skips_an_unchanged_install():
    stamp = REPO_ROOT / ".venv" / ".da3-setup-stamp"
    if not stamp.is_file():
        pytest.skip("the environment was not made by scripts/setup.sh")
    before = stamp.stat().st_mtime_ns
    res = subprocess.run(["bash", "scripts/setup.sh"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and res.stdout.splitlines() == [res.stdout.strip()] and res.stdout.startswith("setup: ok")
    assert stamp.stat().st_mtime_ns == before  # nothing reinstalled


def test_headless_cuda_n_is_a_device_name_and_fails_in_one_line_without_cuda(tmp_path, soh_images, fixture_dir):
    pytest.importorskip("bpy")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: cuda:1 might run")
    proc = _headless(soh_images[0], "--output", tmp_path / "x.blend", "--device", "cuda:1", "--model", fixture_dir,
                     "--python", sys.executable)
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconstruct: error: ") and "cuda" in lines[0].lower(), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.blend").exists()
