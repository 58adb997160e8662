"""Render-farm jobs (da3_blender/farm/tasks.py, ``da3 farm``, farm/openjd/da3-shot.yaml): a shot planned, its
chunks run as separate steps, stitched and built, giving what in-process streaming gives.

The fast tests use the ground-truth stand-in of tests/test_streaming.py (a camera in a box room, each
chunk in its own random gauge, with noise) on PNG frames; the slow ones run the fixture model on a tiny
video through ``openjd run`` and Blender (the bpy module).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from da3_blender.farm import tasks as farm
from da3_blender.commands.main import main
from da3_blender.errors import BadInputError
from da3_blender.inference import run_inference
from da3_blender.inputs.collect import collect_inputs
from da3_blender.job import build_job
from da3_blender.prediction import load_result

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "farm" / "openjd" / "da3-shot.yaml"
_spec = importlib.util.spec_from_file_location("room_scene", Path(__file__).with_name("test_streaming.py"))
room = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(room)

N, SIZE, OVERLAP = 20, 8, 2
ROOM_OPTIONS = {"process_res": room.W, "chunk_size": SIZE, "chunk_overlap": OVERLAP}


def _model():
    return room.RoomModel(N, depth_noise=0.01, pose_noise=(0.1, 0.001), seed=3)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """The stand-in's frames as PNG files (lossless: the frame number survives in the pixels)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("room") / "room_shot"
    folder.mkdir()
    for i, img in enumerate(room.frame_images(N)):
        Image.fromarray(img).save(folder / f"frame{i:03d}.png")
    return folder


def _plan(frames, out, **options) -> dict:
    job = build_job([str(frames)], model="depth-anything/DA3-SMALL", device="cpu", options={**ROOM_OPTIONS, **options})
    return farm.plan_shot(job, out)


def _run_chunks(plan_dir, count, model):
    return [farm.forward_chunk(plan_dir, k, model=model) for k in range(count)]


def test_align_gives_in_process_streaming(frames, tmp_path):
    plan_dir = tmp_path / "plan"
    plan = _plan(frames, plan_dir)
    count = len(plan["chunks"])
    assert [(c["start"], c["end"]) for c in plan["chunks"]] == [(0, 8), (6, 14), (12, 20)]
    assert plan["views"]["frame_numbers"] == list(range(N)) and plan["views"]["processed_size"] == [room.H, room.W]
    params = json.loads((plan_dir / "openjd-params.json").read_text())
    assert params["Chunks"] == "0-2" and params["PlanDir"] == str(plan_dir) and params["Python"] == sys.executable

    model = _model()
    done = _run_chunks(plan_dir, count, model)
    assert [skipped for _, skipped in done] == [False] * count
    assert [c[0] for c in model.calls] == [0, 6, 12]  # one forward per chunk, its own views only
    path, pred = farm.align_shot(plan_dir)

    ref = run_inference(_model(), collect_inputs([str(frames)]), process_res=room.W, chunk_size=SIZE, chunk_overlap=OVERLAP)
    saved = load_result(path)
    for got in (pred, saved):
        for key in ("depth", "conf", "extrinsics", "intrinsics", "proc_to_orig"):
            np.testing.assert_allclose(getattr(got, key), getattr(ref, key), rtol=1e-5, atol=1e-5, err_msg=key)
        np.testing.assert_array_equal(got.processed_images, ref.processed_images)
        np.testing.assert_array_equal(got.frame_numbers, ref.frame_numbers)
        np.testing.assert_array_equal(got.orig_size, ref.orig_size)
        assert got.source_paths == ref.source_paths
        assert got.meta["streaming"] == ref.meta["streaming"]
        for a, b in zip(got.meta["chunks"], ref.meta["chunks"]):
            assert (a["start"], a["end"], a["fallback"]) == (b["start"], b["end"], b["fallback"])
            assert a["scale"] == pytest.approx(b["scale"], rel=1e-5) and a["residual"] == pytest.approx(b["residual"], abs=1e-6)
    assert saved.meta["farm"]["plan_id"] == plan["plan_id"] and saved.meta["farm"]["loops"] is None  # 20 views: no loops
    assert len({round(c["scale"], 3) for c in saved.meta["chunks"]}) == count  # each chunk's gauge was undone


def test_reruns_are_safe_and_a_new_plan_refuses_old_chunks(frames, tmp_path):
    plan_dir = tmp_path / "plan"
    plan = _plan(frames, plan_dir)
    with pytest.raises(BadInputError, match=r"3 of 3 chunk results missing .*da3 farm forward"):
        farm.align_shot(plan_dir)
    model = _model()
    _run_chunks(plan_dir, 3, model)
    assert all(skipped for _, skipped in _run_chunks(plan_dir, 3, model)) and len(model.calls) == 3  # done: skipped
    assert _plan(frames, plan_dir)["plan_id"] == plan["plan_id"]  # the same plan again keeps its chunks
    exports = tmp_path / "exports"
    job = build_job([str(frames)], model="depth-anything/DA3-SMALL", device="cpu", options=ROOM_OPTIONS,
                    export_dir=str(exports), export_format="mini_npz")
    assert farm.plan_shot(job, plan_dir)["plan_id"] == plan["plan_id"]  # other exports: the chunks stay valid
    assert (exports / "exports" / "mini_npz" / "results.npz").as_posix() in farm.align_shot(plan_dir)[1].meta["exported_files"]

    replanned = _plan(frames, plan_dir, chunk_overlap=1)  # other chunks: the old results must not be used
    count = len(replanned["chunks"])
    assert replanned["plan_id"] != plan["plan_id"] and count == 3
    with pytest.raises(BadInputError, match="is not chunk 0 of this plan"):
        farm.align_shot(plan_dir)
    assert not any(skipped for _, skipped in _run_chunks(plan_dir, count, _model()))
    assert load_result(farm.align_shot(plan_dir)[0]).meta["streaming"]["chunk_overlap"] == 1
    with pytest.raises(BadInputError, match="not in this plan: it has chunks 0 to 2"):
        farm.forward_chunk(plan_dir, count, model=_model())


def test_a_failed_solve_step_keeps_the_stitched_shot_and_writes_the_exports(frames, tmp_path, capsys):
    pytest.importorskip("pycolmap")
    plan_dir = tmp_path / "plan"
    exports = tmp_path / "exports"
    job = build_job([str(frames)], model="depth-anything/DA3-SMALL", device="cpu", options={**ROOM_OPTIONS, "refine": True},
                    export_dir=str(exports), export_format="mini_npz")
    farm.plan_shot(job, plan_dir)
    _run_chunks(plan_dir, 3, _model())
    _, aligned = farm.align_shot(plan_dir)
    assert not exports.exists()  # the exports wait for the solve
    code, stdout, err = _cli(["farm", "solve", str(plan_dir)], capsys)  # flat frames: no feature tracks
    assert code == 0, err
    assert "da3 farm: 20 views, the camera solve failed, the DA3 cameras are kept" in stdout
    saved = load_result(plan_dir / "result.npz")
    assert saved.meta["solve"]["failed"] and "feature tracks" in saved.meta["solve"]["reason"]
    np.testing.assert_array_equal(saved.extrinsics, aligned.extrinsics)  # the stitched cameras, kept
    assert (exports / "exports" / "mini_npz" / "results.npz").is_file()
    one = tmp_path / "one"
    one.mkdir()
    (one / "frame000.png").write_bytes((frames / "frame000.png").read_bytes())
    with pytest.raises(BadInputError, match="refining cameras needs at least 2 views"):
        farm.plan_shot(build_job([str(one)], device="cpu", options={**ROOM_OPTIONS, "refine": True}), tmp_path / "p1")


def test_re_rendered_plates_are_a_new_plan(frames, tmp_path):
    """Plates rendered again under the same names: the plan id changes (sizes, mtimes), no stale chunk is reused."""
    import os
    import shutil

    shot = tmp_path / "room_shot"
    shutil.copytree(frames, shot)
    plan_dir = tmp_path / "plan"
    plan = _plan(shot, plan_dir)
    _run_chunks(plan_dir, 3, _model())
    frame = shot / "frame010.png"
    stamp = frame.stat()
    frame.write_bytes(frame.read_bytes())  # the same name and bytes, written again (a re-render)
    os.utime(frame, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    for step in (lambda: farm.forward_chunk(plan_dir, 1, model=_model()), lambda: farm.align_shot(plan_dir)):
        with pytest.raises(BadInputError, match=r"frame010.png changed since the shot was planned .*da3 farm plan"):
            step()  # the old plan refuses the changed input, also where its chunk was done
    replanned = _plan(shot, plan_dir)
    assert replanned["plan_id"] != plan["plan_id"]
    model = _model()
    assert not any(skipped for _, skipped in _run_chunks(plan_dir, 3, model)) and len(model.calls) == 3  # all recomputed
    assert _plan(shot, plan_dir)["plan_id"] == replanned["plan_id"]  # untouched inputs: the same id again


SIGTERM_TASK = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_farm
from da3_blender.commands.main import main
from da3_blender.farm import tasks as farm

farm._load_model = lambda job, device, progress: test_farm._model()
def slow_save(fh, **arrays):  # the task is killed while it writes its chunk
    fh.write(b"part of a chunk")
    fh.flush()
    open(sys.argv[3], "w").close()
    time.sleep(60)
np.savez_compressed = slow_save
sys.exit(main(["farm", "forward", sys.argv[2], "--chunk", "0", "-q"]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_a_task_stopped_by_sigterm_leaves_no_temp_file(frames, tmp_path):
    import os
    import signal
    import time

    plan_dir = tmp_path / "plan"
    _plan(frames, plan_dir)
    ready = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_TASK, str(Path(__file__).parent), str(plan_dir), str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate(timeout=10)
    assert list((plan_dir / "chunks").glob(".tmp-*"))  # the chunk is being written
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["da3: error: da3 farm forward was terminated (signal 15): its partial files "
                                        "were removed; run it again"]
    assert not list((plan_dir / "chunks").iterdir())  # no .tmp-*.npz, no chunk


def test_plan_refuses_what_chunks_cannot_do(frames, tmp_path):
    with pytest.raises(BadInputError, match="chunk-overlap 1 or more"):
        _plan(frames, tmp_path / "a", chunk_overlap=0, chunk_align="se3")
    with pytest.raises(BadInputError, match="known camera poses"):
        _plan(frames, tmp_path / "b", extrinsics=np.tile(np.eye(4), (N, 1, 1)).tolist(),
              intrinsics=np.tile(room.K, (N, 1, 1)).tolist())
    from PIL import Image

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (84, 56)).save(mixed / "a.png")
    Image.new("RGB", (56, 84)).save(mixed / "b.png")  # portrait: in-process streaming would crop both to 56x56
    with pytest.raises(BadInputError, match="2 different sizes .*farm chunks need one size"):
        farm.plan_shot(build_job([str(mixed)], device="cpu", options={"process_res": 84}), tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")  # refused before writing anything


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_plans_several_shots_and_fails_in_one_line(frames, tmp_path, capsys):
    from PIL import Image

    other = tmp_path / "other_shot"
    other.mkdir()
    for i, img in enumerate(room.frame_images(6)):
        Image.fromarray(img).save(other / f"f{i}.png")
    out = tmp_path / "farm"
    code, stdout, err = _cli(["farm", "plan", str(frames), str(other), "--out", str(out), "--process-res", str(room.W),
                              "--chunk-size", "4", "--chunk-overlap", "1", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    assert "room_shot: 20 views in 7 chunks of 4 (overlap 1)" in stdout and "other_shot: 6 views in 2 chunks" in stdout
    for name, count in (("room_shot", 7), ("other_shot", 2)):
        plan = farm.read_plan(out / name)
        assert len(plan["chunks"]) == count and plan["blend"] == str(out / name / f"{name}.blend")
        assert json.loads((out / name / "openjd-params.json").read_text())["Chunks"] == f"0-{count - 1}"

    for args, match in [
        (["farm", "forward", str(out / "room_shot"), "--chunk", "7"], "chunk 7 is not in this plan: it has chunks 0 to 6"),
        (["farm", "align", str(tmp_path / "nothing")], "no farm plan at"),
        (["farm", "align", str(out / "other_shot")], "2 of 2 chunk results missing"),
        (["farm", "build", str(out / "other_shot")], "no result.npz in"),
        (["farm", "plan", str(frames), "--out", str(tmp_path / "x"), "--export-format", "glb"], "--export-format needs --export-dir"),
        (["farm", "forward", str(out / "room_shot"), "--chunk", "0", "--device", "tpu"], "unknown device 'tpu'"),
    ]:
        code, stdout, err = _cli(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("da3: error: ") and match in lines[0], (args, err)
        assert "Traceback" not in err


def test_openjd_template_passes_openjd_check():
    proc = subprocess.run([sys.executable, "-m", "openjd", "check", str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passes validation" in proc.stdout
    text = TEMPLATE.read_text()
    for step in ("Forward", "Align", "Loops", "Solve", "Build"):
        assert f"- name: {step}" in text
    run = "\n  script:\n    actions:\n      onRun:\n        command: \"{{Param.Python}}\"\n        args: [\"{{Param.Da3Root}}/scripts/da3_farm.py\", "
    assert f'dependsOn: Loops{run}"solve"' in text and "dependsOn: Solve" in text  # Align, Loops, Solve, Build
    assert f'dependsOn: Align\n  hostRequirements:\n    amounts:\n    - name: amount.worker.gpu\n      min: ' \
           f'"{{{{Param.WorkerGpus}}}}"{run}"loops", "{{{{Param.PlanDir}}}}", "--device", "{{{{Param.Device}}}}"]' in text
    assert "amount.worker.gpu" in text and 'range: "{{Param.Chunks}}"' in text


# ---------------------------------------------------------------------------------------------------
# the fixture model on a tiny video: openjd run, and the build into a .blend


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 7-frame 64x48 clip of a sliding pattern (H.264)."""
    from moviepy import ImageSequenceClip

    yy, xx = np.mgrid[0:48, 0:64]
    frames = [np.dstack([(np.sin((xx + 3 * i) / 5.0) * 120 + 128).astype(np.uint8),
                         (np.cos(yy / 4.0 + i / 3.0) * 120 + 128).astype(np.uint8),
                         ((xx * 3 + yy * 2 + i * 8) % 256).astype(np.uint8)]) for i in range(7)]
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    ImageSequenceClip(frames, fps=24).write_videofile(str(path), codec="libx264", audio=False, logger=None)
    return path


CLIP_OPTIONS = ["--fps", "0", "--chunk-size", "4", "--chunk-overlap", "2", "--process-res", "56", "--device", "cpu",
                "--export-format", "mini_npz"]


@pytest.fixture(scope="module")
def openjd_shot(clip, fixture_dir, tmp_path_factory):
    """The clip planned and run by ``openjd run ... --step Solve --run-dependencies`` (a process per task)."""
    work = tmp_path_factory.mktemp("openjd")
    plan_dir = work / "plan"
    assert main(["farm", "plan", str(clip), "--out", str(plan_dir), "--model", str(fixture_dir), *CLIP_OPTIONS,
                 "--export-dir", str(work / "farm_exports"), "-q"]) == 0
    proc = subprocess.run([sys.executable, "-m", "openjd", "run", str(TEMPLATE), "-p",
                           f"file://{plan_dir / 'openjd-params.json'}", "--step", "Solve", "--run-dependencies"],
                          capture_output=True, text=True, timeout=600, cwd=work, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return work, plan_dir, proc.stdout


def _env():
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_openjd_run_matches_da3_video_streaming(openjd_shot, clip, fixture_dir, tmp_path):
    work, plan_dir, log = openjd_shot
    plan = farm.read_plan(plan_dir)
    assert len(plan["chunks"]) == 2 <= plan["views"]["count"]  # chunks overlapping by 2 views
    assert log.count("da3 farm: chunk ") == len(plan["chunks"]) and "da3 farm: 6 views from 2 chunks" in log
    assert "da3 farm: 6 views, nothing to solve: the plan does not refine cameras" in log  # the Solve step ran
    assert "da3 farm: 6 views, no loop closure in this plan" in log  # so did Loops: a short shot, nothing to close

    assert main(["video", str(clip), "--model", str(fixture_dir), *CLIP_OPTIONS, "--export-dir", str(tmp_path), "-q"]) == 0
    with np.load(tmp_path / "exports" / "mini_npz" / "results.npz", allow_pickle=False) as ref, \
            np.load(work / "farm_exports" / "exports" / "mini_npz" / "results.npz", allow_pickle=False) as got:
        assert sorted(got.files) == sorted(ref.files)
        for key in ref.files:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-5, err_msg=key)
        result = load_result(plan_dir / "result.npz")  # the worker's result format, as File > Import reads it
        np.testing.assert_allclose(result.depth, ref["depth"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.extrinsics, ref["extrinsics"], rtol=1e-5, atol=1e-5)
    assert list(result.frame_numbers) == list(range(1, result.num_views + 1))  # scene frames: from frame 1 (issue 17)


@pytest.mark.slow
def test_build_writes_a_blend_with_the_panels_builders(openjd_shot, tmp_path, capsys):
    pytest.importorskip("bpy")
    _work, plan_dir, _log = openjd_shot
    out = tmp_path / "shot.blend"
    code, stdout, err = _cli(["farm", "build", str(plan_dir), "--output", str(out), "--", "--no-planes"], capsys)
    assert code == 0, stdout + err
    assert out.is_file() and f"saved {out}" in stdout
    code = ("import bpy, json, sys\n"
            "bpy.ops.wm.open_mainfile(filepath=sys.argv[1])\n"
            "print(json.dumps(sorted((o.type, o.users_collection[0].name) for o in bpy.data.objects)))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    objects = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ["CAMERA", "Cameras"] in objects and ["MESH", "Points"] in objects  # one animated camera, the cloud
    assert not any(kind == "MESH" and col == "Planes" for kind, col in objects)  # --no-planes reached the builder
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically
    code, _stdout, err = _cli(["farm", "build", str(plan_dir), "--output", str(tmp_path / "x.txt")], capsys)
    assert code == 2 and err.strip() == f"da3: error: --output must be a .blend file, got {tmp_path / 'x.txt'}"


@pytest.mark.slow
def test_openjd_build_step_writes_the_blend(openjd_shot, tmp_path):
    pytest.importorskip("bpy")
    work, plan_dir, _log = openjd_shot
    blend = tmp_path / "from_openjd.blend"
    proc = subprocess.run([sys.executable, "-m", "openjd", "run", str(TEMPLATE), "-p", f"file://{plan_dir / 'openjd-params.json'}",
                           "-p", f"BlendFile={blend}", "--step", "Build", "--no-run-dependencies"],
                          capture_output=True, text=True, timeout=600, cwd=work, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert blend.is_file() and f"farm-build: saved {blend}" in proc.stdout
