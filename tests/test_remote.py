"""The worker over SSH (a real sshd on 127.0.0.1, throwaway keys) and the job-file confinement on the remote.

The "remote" is this machine seen through sshd, with its job folders in a temporary folder of their
own: nothing relies on shared paths (except the path-map test, which is about exactly that).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from da3_blender.errors import BadInputError
from da3_blender.prediction import load_result
from da3_blender.runtime.ssh import RemoteSpec, check_host, check_ssh_options, sh_path
from da3_blender.runtime.transfer import JobFiles
from da3_blender.runtime.client import WorkerClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback_sshd import free_port  # noqa: E402
from test_worker import run as run_job  # noqa: E402
SMALL = {"process_res": 140}
TIMEOUT = 180


# -- an sshd on loopback (scripts/loopback_sshd.py) ---------------------------------------------------
def make_spec(sshd, cache_dir, **kw) -> RemoteSpec:
    kw.setdefault("python", sys.executable)
    return sshd.spec(cache_dir=str(cache_dir), **kw)


@pytest.fixture(scope="module")
def remote_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("remote-cache")


@pytest.fixture(scope="module")
def remote(sshd, remote_cache):
    client = WorkerClient(remote=make_spec(sshd, remote_cache))
    yield client
    client.shutdown()


@pytest.fixture(scope="module")
def local():
    client = WorkerClient(python=sys.executable)
    yield client
    client.shutdown()


def run(client, job, timeout=TIMEOUT):
    """Submit and wait (test_worker's helper); returns (terminal event, all events of the job)."""
    return run_job(client, job, timeout)


def job_for(fixture_dir, inputs, output, **extra):
    return {"inputs": [str(p) for p in inputs], "output": str(output), "model": str(fixture_dir), "device": "cpu",
            "options": dict(SMALL), **extra}


def assert_same_result(a, b):
    pa, pb = load_result(a), load_result(b)
    for key in ("depth", "conf", "extrinsics", "intrinsics"):
        np.testing.assert_allclose(getattr(pa, key), getattr(pb, key), rtol=1e-5, atol=1e-6, err_msg=key)
    for key in ("processed_images", "orig_size", "proc_to_orig", "frame_numbers", "timestamps"):
        np.testing.assert_array_equal(getattr(pa, key), getattr(pb, key), err_msg=key)
    assert pa.source_paths == pb.source_paths  # the user's own files, not the remote copies
    for key in ("model", "input_kind", "video"):
        assert pa.meta.get(key) == pb.meta.get(key), key
    assert pa.meta["job"]["inputs"] == pb.meta["job"]["inputs"]


def remote_jobs(cache) -> list[str]:
    jobs = Path(cache) / "jobs"
    return sorted(p.name for p in jobs.iterdir() if not p.name.startswith("model-")) if jobs.is_dir() else []


# -- no sshd needed ---------------------------------------------------------------------------------
def test_host_names_options_and_quoting():
    for good in ("gpu-box", "me@gpu.example.org", "render_01", "10.0.0.7", "me@fe80::1"):
        assert check_host(good) == good
    for bad in ("-oProxyCommand=touch /tmp/x", "a b", "host;rm -rf ~", "$(id)", "me@-p", "", "h\nx", "`id`", "a/b"):
        with pytest.raises(BadInputError, match="host"):
            check_host(bad)
    assert check_ssh_options(["ConnectTimeout=5", "ProxyJump=bastion"]) == ("ConnectTimeout=5", "ProxyJump=bastion")
    for bad in (["ProxyCommand=nc %h %p"], ["localcommand=id"], ["-F/etc/passwd"], ["JustAWord"]):
        with pytest.raises(BadInputError):
            check_ssh_options(bad)
    spec = RemoteSpec("gpu", python="/opt/my env/bin/python; rm -rf ~", cache_dir="~/da3 cache")
    argv = spec.worker_argv()
    assert argv[0] == "ssh" and argv[argv.index("--") + 1] == "gpu" and "BatchMode=yes" in argv
    command = argv[-1]
    assert "'/opt/my env/bin/python; rm -rf ~'" in command and '"$HOME"/\'da3 cache/jobs\'' in command
    assert sh_path("~/a'b") == '"$HOME"/\'a\'"\'"\'b\''
    with pytest.raises(BadInputError, match="remote Python"):
        RemoteSpec("gpu", python="-c")


def test_job_folder_confines_every_path(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    files = JobFiles(tmp_path / "jobs", allowed=[tmp_path / "shared"])
    base = Path(files.folder("job-1", create=True))
    (base / "in").mkdir()
    (base / "in" / "ok.png").write_bytes(b"x")
    assert files.resolve("job-1", "in/ok.png") == str(base / "in" / "ok.png")
    assert files.resolve("job-1", str(base / "in" / "ok.png")) == str(base / "in" / "ok.png")  # absolute, inside
    os.symlink(outside / "secret.txt", base / "in" / "link.png")  # a file link leading out
    os.symlink(outside, base / "linkdir")  # a folder link leading out
    cases = {
        "../outside/secret.txt": "'..'",
        "in/../../outside/secret.txt": "'..'",
        "in/./ok.png": "'.'",
        "in//ok.png": "empty",
        str(outside / "secret.txt"): "outside job folder",
        "/etc/passwd": "outside job folder",
        "in\\..\\x": "backslash",
        "in/link.png": "symbolic link",
        "linkdir/secret.txt": "symbolic link",
        "": "non-empty",
    }
    for path, why in cases.items():
        for call in (lambda: files.resolve("job-1", path), lambda: files.stat("r", "job-1", path),
                     lambda: files.get("r", "job-1", path, 0, 10),
                     lambda: files.put("r", "job-1", {"path": path, "offset": 0, "data": "eA==", "final": True,
                                                      "size": 1, "sha256": "0" * 64})):
            with pytest.raises(BadInputError, match=why):
                call()
    for token in ("..", "../jobs", "a/b", "-x", "", "x" * 65, None):
        with pytest.raises(BadInputError, match="job folder name"):
            files.folder(token)
    os.symlink(outside, Path(files.root) / "job-link")
    with pytest.raises(BadInputError, match="symbolic link"):
        files.stat("r", "job-link", "secret.txt")
    assert (outside / "secret.txt").read_text() == "secret" and sorted(os.listdir(outside)) == ["secret.txt"]
    spec = {"inputs": [str(base / "in" / "ok.png")], "output": str(base / "out" / "r.npz"), "export_dir": None}
    files.check_job(spec)
    (tmp_path / "shared").mkdir()
    files.check_job({**spec, "inputs": [str(tmp_path / "shared" / "a.png")]})
    for key, value in (("inputs", [str(outside / "secret.txt")]), ("output", str(outside / "r.npz")),
                       ("export_dir", str(outside)), ("inputs", [str(base / "in" / "link.png")])):
        with pytest.raises(BadInputError, match="outside this remote worker's job folders"):
            files.check_job({**spec, key: value})


def test_upload_checksum_and_order_are_checked(tmp_path):
    import base64
    import hashlib

    files = JobFiles(tmp_path / "jobs")
    data = os.urandom(3000)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    files.put("1", "j", {"path": "in/a.bin", "offset": 0, "data": b64(data[:1000]), "final": False})
    with pytest.raises(BadInputError, match="offset 2000, expected 1000"):
        files.put("2", "j", {"path": "in/a.bin", "offset": 2000, "data": b64(data[2000:]), "final": True})
    files.put("1", "j", {"path": "in/a.bin", "offset": 0, "data": b64(data[:1000]), "final": False})
    with pytest.raises(BadInputError, match="arrived damaged"):
        files.put("2", "j", {"path": "in/a.bin", "offset": 1000, "data": b64(data[1000:]), "final": True,
                             "size": 3000, "sha256": hashlib.sha256(b"other").hexdigest()})
    folder = Path(files.folder("j"))
    assert not (folder / "in" / "a.bin").exists() and os.listdir(folder / "in") == []  # no partial file left
    files.put("1", "j", {"path": "in/a.bin", "offset": 0, "data": b64(data), "final": True, "size": 3000,
                         "sha256": hashlib.sha256(data).hexdigest()})
    assert (folder / "in" / "a.bin").read_bytes() == data
    assert files.stat("s", "j", "in/a.bin")["sha256"] == hashlib.sha256(data).hexdigest()
    with pytest.raises(BadInputError, match="base64"):
        files.put("3", "j", {"path": "in/b.bin", "offset": 0, "data": "not base64!", "final": True})
    files.discard("d", "j")
    assert not folder.exists()


# -- over SSH ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_remote_runs_match_local_worker(remote, local, remote_cache, fixture_dir, soh_images, robot_video, tmp_path):
    """Images and a video through SSH give the result the local worker gives, naming the user's files."""
    hello = remote.hello(timeout=60)
    assert hello["jobs_dir"] == os.path.realpath(remote_cache / "jobs") and hello["torch"]
    for name, inputs, extra in (("images", soh_images, {}),
                                ("video", [robot_video], {"video": {"fps": 1.0, "max_frames": 3}})):
        end_l, _ = run(local, job_for(fixture_dir, inputs, tmp_path / f"local-{name}.npz", **extra))
        out = tmp_path / "fetched" / f"remote-{name}.npz"
        end_r, seen = run(remote, job_for(fixture_dir, inputs, out, **extra))
        assert end_l["event"] == "result", end_l
        assert end_r["event"] == "result", end_r
        assert end_r["path"] == str(out) and end_r["summary"]["views"] == end_l["summary"]["views"]
        assert end_r["summary"]["model"] == end_l["summary"]["model"] == str(fixture_dir)
        stages = [e["stage"] for e in seen if e["event"] == "progress"]
        assert stages[0] == "upload" and stages[-1] == "download" and "forward" in stages
        assert_same_result(out, tmp_path / f"local-{name}.npz")
        assert not [n for n in os.listdir(out.parent) if n.startswith(".")], "temporary files left beside it"
        assert remote_jobs(remote_cache) == [], "the job folder was not removed on the remote"
    # the local model folder went over once and is reused (no second upload)
    uploads = [e for e in seen if e["event"] == "progress" and e["message"].startswith("sending model")]
    assert not uploads
    assert [p.name for p in (remote_cache / "jobs").iterdir()][0].startswith("model-")


@pytest.mark.slow
def test_exports_come_back_and_path_map_skips_the_copy(sshd, remote, remote_cache, fixture_dir, soh_images, tmp_path):
    out = tmp_path / "r.npz"
    end, _ = run(remote, job_for(fixture_dir, soh_images[:1], out, export_dir=str(tmp_path / "ex"),
                                 export_format="glb-mini_npz"))
    assert end["event"] == "result", end
    assert (tmp_path / "ex" / "scene.glb").stat().st_size > 1000
    assert (tmp_path / "ex" / "exports" / "mini_npz" / "results.npz").is_file()

    shared = tmp_path / "shared"  # "storage both machines see": here the same folder
    shared.mkdir()
    for p in soh_images:
        shutil.copy(p, shared / p.name)
    model = shared / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.symlink(fixture_dir / name, model / name)
    spec = make_spec(sshd, remote_cache, path_map=((str(shared), str(shared)),))
    with WorkerClient(remote=spec) as mapped:
        end, seen = run(mapped, {**job_for(model, [shared], shared / "out" / "r.npz")})
    assert end["event"] == "result", end
    assert end["path"] == str(shared / "out" / "r.npz") and load_result(end["path"]).num_views == 2
    messages = [e["message"] for e in seen if e["event"] == "progress" and e["stage"] in ("upload", "download")]
    assert not [m for m in messages if m.startswith(("sending", "fetching"))], messages
    assert load_result(end["path"]).source_paths == [str(shared / p.name) for p in soh_images]


@pytest.mark.slow
def test_cancel_mid_upload_and_mid_run(remote, remote_cache, fixture_dir, soh_images, tmp_path):
    big = tmp_path / "big.mp4"
    with open(big, "wb") as fh:
        fh.truncate(400 << 20)  # sparse: cheap to make, 400 MB to send
    job_id = remote.submit(job_for(fixture_dir, [big], tmp_path / "never.npz"))
    assert remote.wait_for(lambda e: e.get("job") == job_id and e.get("message", "").startswith("sending big"), 60)
    t0 = time.monotonic()
    remote.cancel(job_id)
    end = remote.wait_job(job_id, 30)
    assert end is not None and end["kind"] == "cancelled" and time.monotonic() - t0 < 5, end
    assert not (tmp_path / "never.npz").exists() and remote_jobs(remote_cache) == []
    assert remote._routes == {}  # the chunks in flight at the cancel leave no route behind (issue 19, R5)

    job_id = remote.submit(job_for(fixture_dir, list(soh_images) * 2, tmp_path / "never.npz", options={"process_res": 392}))
    assert remote.wait_for(lambda e: e.get("job") == job_id and e.get("stage") == "forward", 120)
    remote.cancel(job_id)
    end = remote.wait_job(job_id, 30)
    assert end is not None and end["kind"] == "cancelled", end
    assert not (tmp_path / "never.npz").exists() and remote_jobs(remote_cache) == []


@pytest.mark.slow
def test_dropped_connection_is_one_line_and_next_run_reconnects(remote, remote_cache, fixture_dir, soh_images, tmp_path):
    job_id = remote.submit(job_for(fixture_dir, list(soh_images) * 2, tmp_path / "lost.npz", options={"process_res": 392}))
    assert remote.wait_for(lambda e: e.get("job") == job_id and e.get("stage") == "forward", 120)
    os.kill(remote.pid, signal.SIGKILL)  # the link goes down (the local ssh dies)
    end = remote.wait_job(job_id, 30)
    assert end is not None and end["event"] == "error" and end["kind"] == "connection", end
    assert "connection to" in end["message"] and "run the job again" in end["message"] and "\n" not in end["message"]
    assert not (tmp_path / "lost.npz").exists()
    end, _ = run(remote, job_for(fixture_dir, soh_images[:1], tmp_path / "again.npz"))
    assert end["event"] == "result" and load_result(tmp_path / "again.npz").num_views == 1
    assert remote_jobs(remote_cache) == [], "the dropped job's folder was not removed after reconnecting"


@pytest.mark.slow
def test_wrong_host_missing_python_and_fresh_install(sshd, tmp_path, fixture_dir, soh_images):
    with WorkerClient(remote=make_spec(sshd, tmp_path / "c1", port=free_port())) as client:  # nothing listens
        end, _ = run(client, job_for(fixture_dir, soh_images, tmp_path / "x.npz"), timeout=60)
    assert end["kind"] == "connection" and "SSH to" in end["message"] and "refused" in end["message"], end
    assert "\n" not in end["message"]

    with WorkerClient(remote=make_spec(sshd, tmp_path / "c2", python="/nonexistent/bin/python3")) as client:
        end, _ = run(client, job_for(fixture_dir, soh_images, tmp_path / "x.npz"), timeout=60)
    assert end["kind"] == "missing_dependency" and "/nonexistent/bin/python3 was not found" in end["message"], end

    # a Python without the package (the system one): DA3 is installed over the link, then it answers
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3")
    with WorkerClient(remote=make_spec(sshd, tmp_path / "c3", python=system_python)) as client:
        hello = client.hello(timeout=60)
    assert hello["protocol"] and hello["jobs_dir"] == os.path.realpath(tmp_path / "c3" / "jobs")
    installed = list((tmp_path / "c3" / "pkg").iterdir())
    assert len(installed) == 1 and (installed[0] / "da3_blender" / "worker.py").is_file()
    assert not (tmp_path / "x.npz").exists()

    # the preferences' Check, over SSH: what is missing there and the one command that fixes it
    from da3_blender.runtime.envs import check_interpreter
    from da3_blender.runtime.ssh import remote_setup_command

    report = check_interpreter("", remote=make_spec(sshd, tmp_path / "c3", python=system_python))
    if not hello["torch"]:
        assert not report.ok and "lacks" in report.message and "torch" in report.message, report.message
        assert remote_setup_command() in report.message
    report = check_interpreter("", remote=make_spec(sshd, tmp_path / "c3"))
    assert report.ok and report.torch and report.message.startswith("Python 3."), report.message
    report = check_interpreter("", remote=make_spec(sshd, tmp_path / "c3", port=free_port()))
    assert not report.ok and report.kind == "connection" and "SSH to" in report.message


@pytest.mark.slow
def test_remote_refuses_escapes_over_the_protocol(remote, tmp_path):
    from da3_blender.errors import DA3Error

    remote.hello(timeout=60)
    for path in ("../../etc/passwd", "/etc/passwd", "a/../../b"):
        with pytest.raises(DA3Error, match="refused|'..'") as err:
            remote._call("get", timeout=30, folder="job-x", path=path, offset=0, length=10)
        assert err.value.kind == "bad_input" and "\n" not in str(err.value)
    rid = remote._new_id("job")  # a run naming a file outside the job folders
    remote._send({"v": 1, "request": "run", "id": rid, "job": {"inputs": ["/etc/hostname"], "output": str(tmp_path / "o.npz")}})
    end = remote.wait_job(rid, 30)
    assert end["kind"] == "bad_input" and "outside this remote worker's job folders" in end["message"], end
    assert not (tmp_path / "o.npz").exists()


# -- the Blender side: preferences "Remote (SSH)", the operator, headless flags --------------------------------
@pytest.fixture
def blender_remote(extension, sshd, remote_cache, tmp_path):
    """The extension enabled with its worker location set to Remote (SSH) on the loopback sshd."""
    import addon_utils
    import bpy

    addon_utils.enable("da3_for_blender", default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons["da3_for_blender"].preferences
    spec = make_spec(sshd, remote_cache)
    prefs.worker_location, prefs.remote_host = "REMOTE", spec.host
    prefs.remote_python, prefs.remote_cache_dir = sys.executable, str(remote_cache)
    prefs.remote_ssh_options = " ".join([f"Port={sshd.port}", f"IdentityFile={sshd.key}", "IdentitiesOnly=yes",
                                         *spec.ssh_options])
    prefs.results_dir = str(tmp_path / "results")
    scene = bpy.data.scenes.new("da3 remote")
    old = bpy.context.window.scene
    bpy.context.window.scene = scene
    yield bpy, prefs, scene
    bpy.context.window.scene = old
    bpy.data.scenes.remove(scene)
    addon_utils.disable("da3_for_blender", default_set=True, handle_error=None)  # also stops the worker


@pytest.mark.slow
def test_blender_reconstructs_a_video_on_the_remote(blender_remote, sshd, fixture_dir, robot_video, remote_cache):
    bpy, prefs, scene = blender_remote
    s = scene.da3_settings
    s.model, s.custom_model, s.process_res, s.device = "CUSTOM", str(fixture_dir), 140, "cpu"
    s.input_mode, s.video, s.video_fps, s.max_frames = "VIDEO", str(robot_video), 1.0, 3
    s.build_planes = False
    assert bpy.ops.da3.reconstruct() == {"FINISHED"}
    rt = bpy.context.window_manager.da3_runtime
    assert rt.error == "" and rt.summary.startswith("3 view(s)"), rt.summary
    cams = [ob for ob in scene.objects if ob.type == "CAMERA"]
    assert len(cams) == 1 and cams[0].animation_data is not None
    # the footage behind the camera is the user's own video, not the copy on the remote
    assert [os.path.abspath(bpy.path.abspath(c.filepath)) for c in bpy.data.movieclips] == [str(robot_video)]
    assert remote_jobs(remote_cache) == []

    # the preferences' Check asks the remote Python
    assert bpy.ops.da3.check_interpreter() == {"FINISHED"}
    assert rt.interpreter_info.startswith("Python 3.") and "torch" in rt.interpreter_info, rt.interpreter_info

    # a host that does not answer: one line, and the scene is exactly as it was
    before = sorted(ob.name for ob in scene.objects)
    prefs.remote_ssh_options = prefs.remote_ssh_options.replace(f"Port={sshd.port}", f"Port={free_port()}")
    with pytest.raises(RuntimeError, match="SSH to .* failed") as err:
        bpy.ops.da3.reconstruct()
    assert "\n" not in str(err.value).strip()
    assert sorted(ob.name for ob in scene.objects) == before
    prefs.remote_host = "-oProxyCommand=id"
    with pytest.raises(RuntimeError, match="is not a host name"):
        bpy.ops.da3.reconstruct()
    assert sorted(ob.name for ob in scene.objects) == before


def test_reconstruct_script_remote_flags(soh_images, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_script", Path(__file__).resolve().parents[1]
                                                  / "scripts" / "reconstruct.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.parse_args([str(soh_images[0]), "-o", str(tmp_path / "a.blend"), "--remote", "gpu-box",
                              "--remote-python", "~/da3-env/bin/python", "--remote-dir", "/scratch/da3"])
    assert (args.remote, args.remote_python, args.remote_dir) == ("gpu-box", "~/da3-env/bin/python", "/scratch/da3")
    with pytest.raises(SystemExit) as exit_:
        script.parse_args([str(soh_images[0]), "-o", str(tmp_path / "a.blend"), "--remote-python", "python3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "reconstruct: error: --remote-python and --remote-dir need --remote HOST"


def test_docs_gpu_box_command_carries_the_pins():
    """The remote-worker page's one command for the GPU box is the one envs.DEPENDENCIES gives (no drift)."""
    from da3_blender.runtime.ssh import remote_setup_command

    readme = (Path(__file__).resolve().parents[1] / "docs" / "remote-worker.md").read_text()
    assert remote_setup_command() in readme and "torch==2.13.0" in remote_setup_command()


def test_cancel_while_connecting_is_prompt(tmp_path, soh_images):
    """A host that does not answer (here: an ssh that hangs) must not hold a cancel for ConnectTimeout."""
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text("#!/bin/sh\nexec sleep 60\n")
    fake_ssh.chmod(0o755)
    client = WorkerClient(remote=RemoteSpec("gpu-box", ssh=str(fake_ssh)))
    try:
        job_id = client.submit({"inputs": [str(p) for p in soh_images], "output": str(tmp_path / "r.npz")})
        assert client.wait_for(lambda e: e.get("job") == job_id and "connecting" in e.get("message", ""), 10)
        t0 = time.monotonic()
        client.cancel(job_id)
        end = client.wait_job(job_id, 10)
        assert end is not None and end["kind"] == "cancelled" and time.monotonic() - t0 < 2, end
        assert not client.is_alive()
    finally:
        client.kill()


def test_client_does_not_let_the_remote_steer_where_exports_land(tmp_path):
    """A remote listing names files relative to the job's export folder; anything else is refused."""
    from types import SimpleNamespace

    from da3_blender.errors import DA3Error
    from da3_blender.runtime.remote import RemoteJob

    for evil in ("exports/../../.bashrc", "/etc/passwd", "exports//x", "other/x", "exports\\..\\x"):
        client = SimpleNamespace(remote=RemoteSpec("gpu-box"),
                                 _call=lambda kind, timeout, evil=evil, **f: {"files": [{"path": evil, "size": 1}]})
        job = RemoteJob(client, {"inputs": ["a.png"], "output": str(tmp_path / "r.npz")}, "job-1")
        with pytest.raises(DA3Error):
            job.download_folder("exports", str(tmp_path / "ex"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_remote_environment_is_created_over_ssh_and_checked(sshd, tmp_path):
    """The managed environment, made on the remote over the same kind of connection (pip offline here:
    the pins cannot be downloaded in CI, so one offline pip step stands in and the check must refuse it)."""
    from da3_blender.runtime.envs import create_remote_environment
    from da3_blender.errors import MissingDependencyError

    lines = []
    base = getattr(sys, "_base_executable", sys.executable)  # a Python without DA3's packages
    spec = make_spec(sshd, tmp_path / "cache", python=base)
    with pytest.raises(MissingDependencyError, match="does not work: .*lacks .*torch") as err:
        create_remote_environment(spec, torch_variant=None, requirements=["pip"], pip_args=["--no-index"],
                                  progress=lines.append)
    assert "\n" not in str(err.value)
    assert (tmp_path / "cache" / "env" / "bin" / "python").exists()
    assert any("Requirement already satisfied: pip" in line for line in lines), lines[-5:]
    with pytest.raises(MissingDependencyError, match="setting up the environment on .* failed"):
        create_remote_environment(make_spec(sshd, tmp_path / "cache", python="/nonexistent/python3"),
                                  torch_variant=None, requirements=[])


def test_remote_sequence_pattern_sends_its_frames(remote, local, fixture_dir, tmp_path):
    """An image sequence given as a pattern (issue 17) goes over as its frames and comes back as the
    local worker's shot: the same frame numbers (gaps kept), rate and the user's own file names."""
    from PIL import Image

    folder = tmp_path / "plate"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in (1001, 1002, 1004):
        Image.fromarray(rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)).save(folder / f"plate.{n}.png")
    pattern = folder / "plate.####.png"
    extra = {"shot": {"frame_rate": 23.976}}
    end_l, _ = run(local, job_for(fixture_dir, [pattern], tmp_path / "local-seq.npz", **extra))
    end_r, _ = run(remote, job_for(fixture_dir, [pattern], tmp_path / "remote-seq.npz", **extra))
    assert end_l["event"] == end_r["event"] == "result", (end_l, end_r)
    assert_same_result(tmp_path / "remote-seq.npz", tmp_path / "local-seq.npz")
    pred = load_result(tmp_path / "remote-seq.npz")
    assert pred.frame_numbers.tolist() == [1001, 1002, 1004] and pred.meta["video"]["rate"] == [24000, 1001]
    assert pred.source_paths == [str(folder / f"plate.{n}.png") for n in (1001, 1002, 1004)]
