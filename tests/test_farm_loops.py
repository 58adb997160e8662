"""The farm's Loops step (da3_blender/farm/loops.py, ``da3 farm loops``): a long shot that comes back to its start,
run as farm tasks (plan, a forward per chunk, align, loops), gets the cameras in-process streaming with loop
closure gives (within 1e-4 of the path, in practice to float rounding); a shot without a loop, loop closure
off or a short shot keep Align's result. On the drifting ground-truth orbit of tests/test_streaming_loops.py,
its frames as PNG files (lossless: the stand-in recognises each frame by its pixels)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from da3_blender.commands.main import main
from da3_blender.errors import BadInputError
from da3_blender.farm import tasks as farm
from da3_blender.farm.loops import close_shot_loops
from da3_blender.farm.solve import solve_shot
from da3_blender.inference import run_inference
from da3_blender.inputs.collect import collect_inputs
from da3_blender.job import build_job
from da3_blender.prediction import load_result

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("loop_shot", Path(__file__).with_name("test_streaming_loops.py"))
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)

N = 48
OPTIONS = {"process_res": shots.W_PX, "chunk_size": shots.CHUNK, "chunk_overlap": shots.OVERLAP}
TOLERANCE = 1e-4  # of the path's size (the orbit's radius, 1 m): cameras and depth, farm against in process
# (measured: 2.4e-7, float32 rounding: the Loops task's model puts the loop chunks in another gauge and scale)


def _frames(folder: Path, turn: float):
    from PIL import Image

    extr, k, images, depth = shots.circle_shot(N, turn)
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"frame{i:03d}.png")
    return folder, (extr, k, images, depth)


def _aligned(frames, truth, plan_dir, **options):
    """A planned shot, its chunks run and aligned by the farm steps -> (plan, the stand-in, the aligned result)."""
    job = build_job([str(frames)], model="depth-anything/DA3-SMALL", device="cpu", options={**OPTIONS, **options},
                    export_dir=str(plan_dir.parent / "exports"), export_format="mini_npz")
    plan = farm.plan_shot(job, plan_dir)
    model = shots.DriftingModel(*truth)
    for c in plan["chunks"]:
        farm.forward_chunk(plan_dir, c["index"], model=model)
    return plan, model, farm.align_shot(plan_dir)[1]


@pytest.fixture(scope="module")
def orbit(tmp_path_factory):
    """The orbit (400 degrees: the last chunk sees the first one's place again), aligned by the farm."""
    work = tmp_path_factory.mktemp("orbit")
    frames, truth = _frames(work / "orbit", 400.0)
    _plan, _model, aligned = _aligned(frames, truth, work / "plan")
    return frames, truth, work / "plan", aligned


def _copy(plan_dir: Path, tmp_path: Path) -> Path:
    """The shared aligned plan, copied, its exports to ``tmp_path/exports`` (the same plan id: exports do not count)."""
    import json

    shutil.copytree(plan_dir, tmp_path / "plan")
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    plan["job"]["export_dir"] = str(tmp_path / "exports")
    (tmp_path / "plan" / "plan.json").write_text(json.dumps(plan))
    return tmp_path / "plan"


def _assert_same(got, ref):
    for key in ("extrinsics", "depth"):
        np.testing.assert_allclose(getattr(got, key), getattr(ref, key), rtol=0, atol=TOLERANCE, err_msg=key)
    np.testing.assert_allclose(got.intrinsics, ref.intrinsics, rtol=TOLERANCE)


def test_farm_loops_step_gives_in_process_loop_closure(orbit, tmp_path):
    frames, truth, shared, aligned = orbit
    plan_dir = _copy(shared, tmp_path)
    exports = tmp_path / "exports" / "exports" / "mini_npz" / "results.npz"
    assert aligned.meta["farm"]["loops"] == "pending" and aligned.meta["farm"]["solve"] is None
    assert not exports.exists()  # the exports wait for the loops
    with pytest.raises(BadInputError, match=r"loops of .* are not closed yet: run `da3 farm loops"):
        farm.build_command(plan_dir)

    model = shots.DriftingModel(*truth)  # the task's own model (another gauge and scale than the chunks')
    path, got, closed = close_shot_loops(plan_dir, model=model)
    ref_model = shots.DriftingModel(*truth)
    ref = run_inference(ref_model, collect_inputs([str(frames)]), **OPTIONS)
    count = len(farm.read_plan(plan_dir)["chunks"])
    assert closed and model.calls and model.calls == ref_model.calls[count:]  # the same loop chunks as in process
    assert all(c != list(range(c[0], c[0] + len(c))) for c in model.calls)  # each from two places of the shot
    figures, expected = got.meta["streaming"]["loop_closure"], ref.meta["streaming"]["loop_closure"]
    assert figures["loops"] and figures["loops"] == expected["loops"]
    assert (figures["candidates"], figures["rejected"]) == (expected["candidates"], expected["rejected"])
    saved = load_result(path)
    for result in (got, saved):
        _assert_same(result, ref)
        assert {k: v for k, v in result.meta["streaming"].items() if k != "loop_closure"} == \
            {k: v for k, v in ref.meta["streaming"].items() if k != "loop_closure"}
    drifted, closed_error = (shots._trajectory_error(p, truth[0]) for p in (aligned, saved))
    assert closed_error * 5 <= drifted, (closed_error, drifted)  # the farm's path closed, Align's drifted
    assert saved.meta["farm"]["loops"] == "done" and exports.is_file()  # the last step wrote the exports
    with np.load(exports, allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["extrinsics"], ref.extrinsics, rtol=0, atol=TOLERANCE)
    calls = len(model.calls)
    assert close_shot_loops(plan_dir, model=model)[2] is False and len(model.calls) == calls  # done: nothing again
    farm.build_command(plan_dir)  # closed: it builds


def test_without_a_loop_the_farm_result_is_align_s(tmp_path):
    frames, truth = _frames(tmp_path / "arc", 150.0)  # never comes back
    plan, model, aligned = _aligned(frames, truth, tmp_path / "plan")
    calls = len(model.calls)
    _, got, closed = close_shot_loops(tmp_path / "plan", model=model)
    assert closed and got.meta["streaming"]["loop_closure"]["loops"] == [] and len(model.calls) == calls  # no loop chunk
    np.testing.assert_array_equal(got.extrinsics, aligned.extrinsics)
    np.testing.assert_array_equal(got.depth, aligned.depth)

    job = build_job([str(frames)], device="cpu", options={**OPTIONS, "loop_closure": False})
    off = farm.plan_shot(job, tmp_path / "off")  # off: Align's result is final, as a short shot's (test_farm)
    assert farm.closes_loops(plan) and not farm.closes_loops(off) and off["plan_id"] != plan["plan_id"]


def test_solve_waits_for_the_loops_and_the_cli_says_what_it_did(orbit, tmp_path, capsys, monkeypatch):
    frames, truth, shared, _aligned_pred = orbit
    plan_dir = _copy(shared, tmp_path)
    result = load_result(plan_dir / "result.npz")
    result.meta["farm"]["solve"] = "pending"  # as a plan with --refine leaves it
    from da3_blender.prediction import save_result

    save_result(plan_dir / "result.npz", result)
    with pytest.raises(BadInputError, match=r"loops of .* not closed yet: run `da3 farm loops"):
        solve_shot(plan_dir)
    assert main(["farm", "loops", str(plan_dir), "--device", "tpu"]) == 2
    assert capsys.readouterr().err.strip().startswith("da3: error: unknown device 'tpu'")
    monkeypatch.setattr(farm, "_load_model", lambda job, device, progress: shots.DriftingModel(*truth))
    assert main(["farm", "loops", str(plan_dir), "-q"]) == 0
    out = capsys.readouterr().out
    figures = load_result(plan_dir / "result.npz").meta["streaming"]["loop_closure"]
    closed, found = len(figures["loops"]), figures["candidates"]
    assert closed >= 1 and f"da3 farm: {N} views, {closed} loop{'s' * (closed != 1)} closed ({found} found, " \
        f"{figures['rejected']} rejected) -> {plan_dir / 'result.npz'}" in out, out
    assert not (tmp_path / "exports").exists()  # Solve writes them
    main(["farm", "loops", str(plan_dir), "-q"])
    assert "loops already closed" in capsys.readouterr().out


SIGTERM_TASK = """
import sys, time
from pathlib import Path
from da3_blender.commands.main import main
from da3_blender.farm import tasks as farm

class Stuck:  # the loop chunk's forward is where the task is stopped
    model_name, device = "da3-small", "cpu"
    def forward(self, *args, **kwargs):
        Path(sys.argv[2]).touch()
        time.sleep(60)

farm._load_model = lambda job, device, progress: Stuck()
sys.exit(main(["farm", "loops", sys.argv[1], "-q"]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_loops_stopped_by_sigterm_keep_align_s_result(orbit, tmp_path):
    plan_dir = _copy(orbit[2], tmp_path)
    before = (plan_dir / "result.npz").read_bytes()
    ready = tmp_path / "running"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_TASK, str(plan_dir), str(ready)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["da3: error: da3 farm loops was terminated (signal 15): its partial files "
                                        "were removed; run it again"]
    assert (plan_dir / "result.npz").read_bytes() == before  # still Align's, loops pending: the step can run again
    assert sorted(p.name for p in plan_dir.iterdir() if p.name.startswith(".tmp-")) == []
