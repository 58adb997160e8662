"""A camera solve that cannot run (issue 25 #7): what can be checked is refused before the network, in one
line; a solve that fails after the network keeps the unrefined result and its exports, with the reason in
``meta["solve"]`` and one warning line on each surface (run_inference's log, the CLI, the worker's events)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_blender.errors import BadInputError, MissingDependencyError
from da3_blender.inference import run_inference

pytest.importorskip("pycolmap")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_extension import registered  # noqa: E402,F401  (the extension enabled on a scene of its own)
import solve_helpers as H  # noqa: E402

_spec = importlib.util.spec_from_file_location("room_scene", Path(__file__).with_name("test_streaming.py"))
room = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(room)

N = 4  # flat grey frames (the frame number in two pixels' colour): no feature to track


class NeverRun(room.RoomModel):
    def forward(self, *args, **kwargs):
        raise AssertionError("the network ran before the camera solve's needs were checked")


def test_what_the_solve_needs_is_checked_before_the_network(monkeypatch):
    one = room.frame_images(1)
    with pytest.raises(BadInputError, match=r"^refining cameras needs at least 2 views \(got 1\).*without --refine$"):
        run_inference(NeverRun(1), one, process_res=room.W, refine=True)
    mono = NeverRun(N)
    mono.capabilities = {**mono.capabilities, "pose": False}
    with pytest.raises(BadInputError, match="predicts no cameras to refine"):
        run_inference(mono, room.frame_images(N), process_res=room.W, refine="zoom")
    with pytest.raises(BadInputError, match="unknown refine lens 'fish'"):
        run_inference(NeverRun(N), room.frame_images(N), process_res=room.W, refine="fish")
    H.hide_pycolmap(monkeypatch)
    with pytest.raises(MissingDependencyError, match=r"pip install pycolmap==4\.2\.1"):
        run_inference(NeverRun(N), room.frame_images(N), process_res=room.W, refine=True)


def _check_kept(pred, model):
    s = pred.meta["solve"]
    assert s["failed"] and "feature tracks" in s["reason"] and s["lens"] == "fixed" and s["rms_px"] is None
    assert len(model.calls) == 1 and pred.num_views == N and pred.extrinsics is not None  # the network's cameras


def test_a_failed_solve_keeps_the_result_its_exports_and_says_why(tmp_path, caplog):
    from da3_blender.prediction import load_result

    model = room.RoomModel(N)
    with caplog.at_level(logging.WARNING, logger="da3_blender"):
        pred = run_inference(model, room.frame_images(N), process_res=room.W, refine=True, export_dir=str(tmp_path),
                             export_format="mini_npz")
    _check_kept(pred, model)
    exported = tmp_path / "exports" / "mini_npz" / "results.npz"
    assert pred.meta["exported_files"] == [str(exported)] and exported.is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("the camera solve failed, the DA3 cameras are kept: the "
                                                         "camera solve found") and "\n" not in warnings[0], warnings
    unrefined = run_inference(room.RoomModel(N), room.frame_images(N), process_res=room.W)
    np.testing.assert_array_equal(pred.extrinsics, unrefined.extrinsics)  # exactly the network's cameras
    from da3_blender.prediction import save_result

    assert load_result(save_result(tmp_path / "r.npz", pred)).meta["solve"]["reason"] == pred.meta["solve"]["reason"]


CLI_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
import test_solve_failure as t
from da3_blender import api
from da3_blender.commands.main import main

api.DepthAnything3.from_pretrained = classmethod(lambda cls, *a, **k: t.room.RoomModel(t.N))
sys.exit(main(["images", sys.argv[2], "--refine", "--process-res", str(t.room.W), "--device", "cpu",
               "--export-dir", sys.argv[3], "--export-format", "mini_npz"]))
"""


def test_the_cli_finishes_with_one_warning_line(tmp_path):
    import os
    import subprocess
    import sys

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, img in enumerate(room.frame_images(N)):
        Image.fromarray(img).save(frames / f"f{i}.png")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", CLI_RUN, str(Path(__file__).parent), str(frames), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("da3: ")]
    assert len(warnings) == 1 and warnings[0].startswith("da3: warning: the camera solve failed, the DA3 cameras are "
                                                         "kept: the camera solve found 0 feature tracks"), proc.stderr
    assert "da3: 4 views" in proc.stdout and (tmp_path / "out" / "exports" / "mini_npz" / "results.npz").is_file()


def test_the_worker_reports_the_warning_with_its_result(tmp_path, monkeypatch):
    from da3_blender.prediction import load_result
    from da3_blender.runtime.protocol import encode, request
    from da3_blender.runtime.worker import Worker

    class Stream:
        def __init__(self):
            self.events = []

        def write(self, line):
            self.events.append(json.loads(line))

        def flush(self):
            pass

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, img in enumerate(room.frame_images(N)):
        Image.fromarray(img).save(frames / f"f{i}.png")
    stream = Stream()
    worker = Worker(stream)
    stand_in = types.SimpleNamespace(inference=lambda inputs, **kw: run_inference(room.RoomModel(N), inputs, **kw))
    monkeypatch.setattr(worker, "_get_model", lambda *a, **k: stand_in)
    job = {"inputs": [str(frames)], "output": str(tmp_path / "r.npz"), "model": "stand-in", "device": "cpu",
           "options": {"process_res": room.W, "refine": True}}
    worker.handle(encode(request("run", "j1", job=job)))
    import time

    deadline = time.monotonic() + 60
    while not any(e.get("event") in ("result", "error") for e in stream.events) and time.monotonic() < deadline:
        time.sleep(0.05)
    end = next(e for e in stream.events if e.get("event") in ("result", "error"))
    assert end["event"] == "result", end
    [warning] = end["summary"]["warnings"]
    assert warning.startswith("the camera solve failed, the DA3 cameras are kept: the camera solve found")
    assert any(e.get("event") == "progress" and e.get("message") == f"warning: {warning}" for e in stream.events)
    assert load_result(tmp_path / "r.npz").meta["solve"]["failed"]


def test_blender_builds_the_scene_and_reports_the_warning(registered, tmp_path):
    """The operator's end of a run whose solve failed: the scene is built from the kept result, the summary
    says the solve failed, and the warning is reported as a WARNING of its own (the panel shows it)."""
    import types

    from da3_for_blender.operators import reconstruct
    from da3_for_blender.operators.run import Run
    from da3_for_blender.scene.importer import ImportOptions

    from da3_blender.inference import solve_warning
    from da3_blender.prediction import save_result

    pred = run_inference(room.RoomModel(N), room.frame_images(N), process_res=room.W, refine=True)
    path = save_result(tmp_path / "r.npz", pred)
    warning = solve_warning(pred.meta)
    run = Run.__new__(Run)  # a run whose job ended with this result event
    run.outcome, run.output = "result", str(path)
    run.event = {"event": "result", "path": str(path), "summary": {"views": N, "size": [room.H, room.W],
                                                                    "warnings": [warning]}}
    run.options, run.keep_results, run.cancel_requested, run.name = ImportOptions(), True, False, "x"
    reports = []
    op = types.SimpleNamespace(_run=run, report=lambda kind, text: reports.append((kind, text)))
    assert reconstruct.DA3_OT_reconstruct._finish(op, registered) == {"FINISHED"}
    rt = registered.window_manager.da3_runtime
    assert reports[0][0] == {"INFO"} and "camera solve failed, DA3 cameras kept: the camera solve found" in reports[0][1]
    assert reports[1] == ({"WARNING"}, warning) and rt.warning == warning and not rt.error


def test_use_backend_logs_the_warning_of_the_backends_task(monkeypatch, caplog):
    """``--use-backend``: the finished task's summary carries the worker's warnings; the CLI logs each once."""
    from da3_blender.job import build_job
    from da3_blender.web import client

    warning = "the camera solve failed, the DA3 cameras are kept: the camera solve found 0 feature tracks"

    class Backend:  # the backend's answers, as BackendClient returns them
        def __init__(self, url):
            self.url = url

        def status(self):
            return {}

        def submit(self, body):
            return "t1"

        def wait(self, task_id, progress=None):
            return {"task_id": task_id, "summary": {"views": 4, "warnings": [warning]}, "files": []}

    monkeypatch.setattr(client, "BackendClient", Backend)
    with caplog.at_level(logging.WARNING, logger="da3_blender"):
        spec = build_job(["a.png", "b.png"], options={"refine": True}, export_dir="out", export_format="glb")
        task = client.run_on_backend("http://127.0.0.1:8008", spec, spec["inputs"])
    assert task["summary"]["views"] == 4
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [warning]
