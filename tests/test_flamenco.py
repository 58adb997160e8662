"""Flamenco v3: the job type (farm/flamenco/da3_reconstruct.js, compiled in Node with a stand-in for the
manager's ``author``/``path``) and the submission (``da3 farm submit``, ``reconstruct.py --submit-flamenco``)
against a stub manager on 127.0.0.1 that records what it is sent."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from da3_blender.farm import tasks as farm, flamenco
from da3_blender.commands.main import main

ROOT = Path(__file__).resolve().parents[1]
JOB_TYPE_JS = ROOT / "farm" / "flamenco" / "da3_reconstruct.js"
HARNESS = ROOT / "tests" / "js" / "flamenco_compile.js"
RECONSTRUCT = ROOT / "scripts" / "reconstruct.py"


def compile_job(job: dict) -> dict:
    """The job compiled by the job type in Node (the harness checks names, dependencies, command types)."""
    if shutil.which("node") is None:
        pytest.skip("no node executable on PATH (Node.js runs the Flamenco job type)")
    proc = subprocess.run(["node", str(HARNESS), str(JOB_TYPE_JS), json.dumps(job)], capture_output=True, text=True,
                          timeout=60)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (proc.returncode == 0) == ("error" not in out), proc.stdout + proc.stderr
    return out


class StubManager:
    """A Flamenco manager stand-in: records POSTs; answers with ``status`` and ``answer``."""

    def __init__(self, status=200, answer=None):
        self.requests: list[dict] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                      "job": json.loads(body)})
                data = json.dumps(answer if answer is not None else {"id": "4f1c-job", "status": "queued"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shot(tmp_path_factory) -> Path:
    """Ten small PNG frames."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("flamenco") / "sh010"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((28, 42, 3), 20 * i, np.uint8)).save(folder / f"f{i:02d}.png")
    return folder


def _planned(shot, tmp_path) -> Path:
    plan_dir = tmp_path / "plan"
    assert main(["farm", "plan", str(shot), "--out", str(plan_dir), "--chunk-size", "4", "--chunk-overlap", "1",
                 "--process-res", "42", "--device", "cuda", "-q"]) == 0
    return plan_dir


def test_job_type_compiles_a_forward_task_per_chunk_then_align_loops_solve_build():
    settings = {"input": "/shots/sh010.mp4", "output": "/shots/sh010.blend", "model": "depth-anything/DA3-SMALL",
                "chunks": 3, "plan_dir": "/shots/sh010_farm", "da3_root": "/opt/da3"}
    out = compile_job({"settings": settings})
    tasks = {t["name"]: t for t in out["tasks"]}
    assert list(tasks) == ["forward-0", "forward-1", "forward-2", "align", "loops", "solve", "build"]
    farm_py = "/opt/da3/scripts/da3_farm.py"
    for k in range(3):
        task = tasks[f"forward-{k}"]
        assert task["type"] == "da3-gpu" and task["dependencies"] == []
        assert task["commands"] == [{"name": "exec", "parameters": {
            "exe": "{da3_python}",  # the manager variable: the workers' Python
            "args": [farm_py, "forward", "/shots/sh010_farm", "--chunk", str(k), "--device", "auto"]}}]
    assert tasks["align"]["type"] == "da3-align" and tasks["align"]["dependencies"] == ["forward-0", "forward-1", "forward-2"]
    assert tasks["align"]["commands"][0]["parameters"]["args"] == [farm_py, "align", "/shots/sh010_farm"]
    assert tasks["loops"]["type"] == "da3-gpu" and tasks["loops"]["dependencies"] == ["align"]  # loop chunks: the model
    assert tasks["loops"]["commands"][0]["parameters"]["args"] == [farm_py, "loops", "/shots/sh010_farm", "--device", "auto"]
    assert tasks["solve"]["type"] == "da3-align" and tasks["solve"]["dependencies"] == ["loops"]  # CPU, after loops
    assert tasks["solve"]["commands"][0]["parameters"]["args"] == [farm_py, "solve", "/shots/sh010_farm"]
    assert tasks["build"]["type"] == "da3-build" and tasks["build"]["dependencies"] == ["solve"]
    assert tasks["build"]["commands"][0]["parameters"]["args"] == [
        farm_py, "build", "/shots/sh010_farm", "--output", "/shots/sh010.blend", "--blender", "{blender}"]
    assert "error" in compile_job({"settings": {**settings, "chunks": 0}})  # refused, not an empty job


def test_job_type_settings_are_what_the_submission_sends(shot, tmp_path):
    plan_dir = _planned(shot, tmp_path)
    job = flamenco.job_for_plan(farm.read_plan(plan_dir), str(plan_dir))
    out = compile_job(job)
    assert {s["key"] for s in out["jobType"]["settings"]} == set(job["settings"])
    required = {s["key"] for s in out["jobType"]["settings"] if s.get("required")}
    assert required <= set(job["settings"])
    gpu = [t["name"] for t in out["tasks"] if t["type"] == "da3-gpu"]
    assert gpu == [f"forward-{k}" for k in range(len(farm.read_plan(plan_dir)["chunks"]))] + ["loops"] and len(gpu) == 4


def test_da3_farm_submit_posts_the_job(shot, tmp_path, capsys):
    plan_dir = _planned(shot, tmp_path)
    plan = farm.read_plan(plan_dir)
    with StubManager() as manager:
        code = main(["farm", "submit", str(plan_dir), "--flamenco", manager.url + "/", "--priority", "70"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "submitted to" in out.out and "job 4f1c-job" in out.out
    [request] = manager.requests
    assert request["path"] == "/api/v3/jobs" and request["content_type"] == "application/json"
    job = request["job"]
    assert job["type"] == "da3-reconstruct" and job["name"] == "DA3 sh010" and job["priority"] == 70
    assert job["submitter_platform"] == sys.platform.replace("win32", "windows")
    settings = job["settings"]
    assert settings["chunks"] == len(plan["chunks"]) == 3 and settings["plan_dir"] == str(plan_dir)
    assert settings["input"] == str(shot) and settings["output"] == str(plan_dir / "sh010.blend")
    assert settings["device"] == "cuda" and settings["model"] == plan["job"]["model"]
    assert settings["python"] == "{da3_python}" and settings["blender"] == "{blender}"
    assert (Path(settings["da3_root"]) / "scripts" / "da3_farm.py").is_file()
    assert job["metadata"]["da3.plan_id"] == plan["plan_id"]


@pytest.mark.parametrize("status, answer, match", [
    (412, {"code": 412, "message": "job type etag does not match"}, "refused the job (HTTP 412: job type etag does not match)"),
    (400, {"message": "unknown job type da3-reconstruct"}, "da3_reconstruct.js in the manager's scripts folder"),
])
def test_a_refused_job_is_one_line(shot, tmp_path, capsys, status, answer, match):
    plan_dir = _planned(shot, tmp_path)
    with StubManager(status, answer) as manager:
        code = main(["farm", "submit", str(plan_dir), "--flamenco", manager.url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match in err[0], err


def test_an_unreachable_manager_or_bad_url_is_one_line(shot, tmp_path, capsys):
    plan_dir = _planned(shot, tmp_path)
    with StubManager() as manager:
        url = manager.url  # closed on exit: nothing listens there any more
    for bad, match in ((url, f"cannot reach the Flamenco manager at {url}"), ("ftp://x", "is not an http(s) address")):
        code = main(["farm", "submit", str(plan_dir), "--flamenco", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and match in err[0], err


def test_headless_submit_flamenco_plans_and_posts(shot, tmp_path):
    out = tmp_path / "blends" / "sh010.blend"
    with StubManager() as manager:
        proc = subprocess.run([sys.executable, str(RECONSTRUCT), str(shot), "--output", str(out), "--chunk-size", "4",
                               "--chunk-overlap", "2", "--process-res", "42", "--submit-flamenco", manager.url],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    farm_dir = tmp_path / "blends" / "sh010_farm"
    assert f"submitted to {manager.url} as job 4f1c-job" in proc.stdout
    [request] = manager.requests
    settings = request["job"]["settings"]
    plan = farm.read_plan(farm_dir)
    assert settings["plan_dir"] == str(farm_dir) and settings["output"] == str(out) == plan["blend"]
    assert settings["chunks"] == len(plan["chunks"]) == 4 and plan["job"]["options"]["process_res"] == 42
    assert not out.exists()  # nothing is built here: the farm's build task writes it


@pytest.fixture
def panel(extension, tmp_path, fixture_dir, shot):
    """The extension enabled, a scene whose DA3 settings take the shot folder with the fixture model."""
    import addon_utils
    import bpy

    addon_utils.enable("da3_for_blender", default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons["da3_for_blender"].preferences
    prefs.python_mode, prefs.custom_python = "CUSTOM", sys.executable
    scene = bpy.data.scenes.new("da3 farm")
    old = bpy.context.window.scene
    bpy.context.window.scene = scene
    s = scene.da3_settings
    s.input_mode, s.folder = "FOLDER", str(shot)
    s.model, s.custom_model = "CUSTOM", str(fixture_dir)
    s.process_res, s.device = 42, "cpu"
    s.chunking, s.chunk_size, s.chunk_overlap = "ALWAYS", 4, 1
    yield bpy, prefs
    bpy.context.window.scene = old
    bpy.data.scenes.remove(scene)
    addon_utils.disable("da3_for_blender", default_set=True, handle_error=None)


def test_panel_submit_to_flamenco(panel, tmp_path):
    bpy, prefs = panel
    objects = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="no Flamenco manager: set its URL in the DA3 preferences"):
        bpy.ops.da3.submit_flamenco()
    with StubManager() as manager:
        prefs.flamenco_manager_url, prefs.flamenco_farm_dir = manager.url, str(tmp_path / "farm")
        assert bpy.ops.da3.submit_flamenco() == {"FINISHED"}
    [request] = manager.requests
    job = request["job"]
    plan_dir = Path(job["settings"]["plan_dir"])
    assert plan_dir.parent == tmp_path / "farm" and farm.read_plan(plan_dir)["views"]["count"] == 10
    assert job["type"] == "da3-reconstruct" and job["settings"]["chunks"] == 3  # 10 views, chunks of 4 sharing 1
    assert job["settings"]["output"].startswith(str(plan_dir)) and job["settings"]["output"].endswith(".blend")
    runtime = bpy.context.window_manager.da3_runtime
    assert "submitted to Flamenco as job 4f1c-job" in runtime.summary and not runtime.error
    assert len(bpy.data.objects) == objects  # nothing built here
