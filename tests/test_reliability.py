"""The process boundary when things go wrong (issue 19, R1-R5): damaged result files, cancel inside
long steps without a kill, partial uploads, re-exports over an older sequence, a full disk while a
remote result comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_blender.errors import ResultFormatError
from da3_blender.prediction import load_result
from da3_blender.runtime.protocol import encode, request
from da3_blender.runtime.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_extension import registered  # noqa: E402,F401  (the extension enabled on a scene of its own)


# -- R1: damaged result files --------------------------------------------------------------------------
def _good_npz(path: Path, n=2, h=12, w=16, **extra) -> Path:
    rng = np.random.default_rng(0)
    ext = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    ext[1, 0, 3] = -0.2
    k = np.tile(np.array([[14.0, 0, 8], [0, 14.0, 6], [0, 0, 1]], np.float32), (n, 1, 1))
    arrays = dict(image=rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
                  depth=rng.uniform(1, 2, (n, h, w)).astype(np.float32),
                  conf=rng.uniform(1, 5, (n, h, w)).astype(np.float32), extrinsics=ext, intrinsics=k)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def _with_member(path: Path, member: str, data: bytes) -> Path:
    """Rewrite one member of an npz (zip) with raw bytes."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[member] = data
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return path


def damaged_results(folder: Path) -> dict[str, Path]:
    """Result files damaged in the ways a disk, a copy or a hand edit damages them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    good = _good_npz(folder / "good.npz")
    blob = good.read_bytes()
    (folder / "truncated.npz").write_bytes(blob[: len(blob) // 2])
    out["truncated"] = folder / "truncated.npz"
    (folder / "noise.npz").write_bytes(np.random.default_rng(1).bytes(3000))
    out["noise"] = folder / "noise.npz"
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 12"  # cut inside the header dict
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    out["header"] = _with_member(_good_npz(folder / "header.npz"), "depth.npy", npy)
    out["meta_list"] = _good_npz(folder / "meta_list.npz", meta_json=np.asarray(json.dumps([1, 2])))
    out["meta_deep"] = _good_npz(folder / "meta_deep.npz", meta_json=np.asarray("[" * 100_000))
    out["depth_text"] = _good_npz(folder / "depth_text.npz", depth=np.asarray([["a", "b"], ["c", "d"]]))
    out["scale_array"] = _good_npz(folder / "scale_array.npz", scale_factor=np.ones(3))
    out["metric_array"] = _good_npz(folder / "metric_array.npz", is_metric=np.ones(4, dtype=bool))
    out["paths_2d"] = _good_npz(folder / "paths_2d.npz", source_paths=np.asarray([["a"], ["b"]]))
    good.unlink()
    return out


def test_a_damaged_result_is_one_line_never_a_traceback(tmp_path):
    for what, path in damaged_results(tmp_path).items():
        with pytest.raises(ResultFormatError) as err:
            load_result(path)
        text = str(err.value)
        assert path.name in text and "\n" not in text and len(text) < 400, (what, text)


def test_the_cli_says_one_line_for_a_damaged_result(tmp_path):
    for what, path in damaged_results(tmp_path).items():
        out = subprocess.run([sys.executable, "-m", "da3_blender", "export", str(path), "--export-format", "glb",
                              "--export-dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, (what, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("da3: error: ") and path.name in lines[0], (what, out.stderr)
        assert not (tmp_path / "out").exists()
    good = _good_npz(tmp_path / "fine.npz")  # and the command itself works
    out = subprocess.run([sys.executable, "-m", "da3_blender", "export", str(good), "--export-format", "glb-ply",
                          "--export-dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "scene.glb").is_file() and (tmp_path / "out" / "points.ply").is_file()


def _scene_state(bpy):
    return (sorted(bpy.data.objects.keys()), sorted(bpy.data.collections.keys()), sorted(bpy.data.meshes.keys()),
            sorted(bpy.data.cameras.keys()), bpy.context.scene.frame_start, bpy.context.scene.frame_end)


def test_damaged_results_through_file_import_and_drag_and_drop_change_nothing(registered, tmp_path):
    import bpy

    files = damaged_results(tmp_path)
    from da3_blender.prediction import RESULT_FORMAT

    far = _good_npz(tmp_path / "far_frames.npz", frame_numbers=np.array([5, 2_000_000]),
                    meta_json=np.asarray(json.dumps({"format": RESULT_FORMAT, "version": 1,
                                                     "video": {"fps": 24, "path": "/x.mp4"}})))
    files["far_frames"] = far
    op_cls = bpy.types.DA3_OT_import_result
    before = _scene_state(bpy)
    for what, path in files.items():
        # File > Import (the operator run with a path)
        with pytest.raises(RuntimeError) as err:  # bpy.ops turns an ERROR report into RuntimeError
            bpy.ops.da3.import_result(filepath=str(path))
        message = str(err.value).strip().splitlines()
        assert path.name in message[-1] and "Traceback" not in str(err.value), (what, str(err.value))
        assert _scene_state(bpy) == before, what
        # a drop on the viewport (the FileHandler invokes with the path; background Blender skips invoke)
        op = types.SimpleNamespace(filepath=str(path), directory="", files=[], reports=[])
        op.report = lambda kind, text, op=op: op.reports.append((kind, text))
        op.paths = lambda op=op: op_cls.paths(op)
        op.execute = lambda context, op=op: op_cls.execute(op, context)
        assert op_cls.invoke(op, registered, None) == {"CANCELLED"}, (what, op.reports)
        assert len(op.reports) == 1 and op.reports[0][0] == {"ERROR"} and "\n" not in op.reports[0][1], op.reports
        assert _scene_state(bpy) == before, what


# -- R2: cancel inside model loading, saving and a long export: no kill, no temp file --------------------
class _Stream:
    """The worker's protocol stream, in process: records events and cancels the job on a chosen one."""

    def __init__(self):
        self.events: list[dict] = []
        self.worker: Worker | None = None
        self.cancel_on = None
        self.ended = threading.Event()

    def write(self, line: str):
        event = json.loads(line)
        self.events.append(event)
        if self.cancel_on is not None and event.get("job") and self.cancel_on(event):
            self.cancel_on = None  # the job is running: this cancel sends nothing back (no re-entry)
            self.worker.handle(encode(request("cancel", "c-" + event["job"], job=event["job"])))
        if event.get("event") in ("result", "error") and event.get("job"):
            self.ended.set()

    def flush(self):
        pass


def _run(worker: Worker, stream: _Stream, job: dict, job_id: str, timeout: float = 120) -> dict:
    stream.ended.clear()
    worker.handle(encode(request("run", job_id, job=job)))
    assert stream.ended.wait(timeout), f"job {job_id} did not end"
    return next(e for e in stream.events if e.get("job") == job_id and e["event"] in ("result", "error"))


def _temp_files(*folders) -> list[str]:
    return [os.path.join(d, n) for f in folders if os.path.isdir(f) for d, _, ns in os.walk(f) for n in ns
            if n.startswith(".tmp-") or n.startswith(".up-")]


@pytest.mark.slow
def test_cancel_during_model_load_and_save_ends_the_job_without_a_kill(tmp_path, fixture_dir, soh_images):
    stream = _Stream()
    worker = stream.worker = Worker(stream)
    job = {"inputs": [str(p) for p in soh_images], "output": str(tmp_path / "res" / "r.npz"), "model": str(fixture_dir),
           "device": "cpu", "options": {"process_res": 70}}
    # during the model load: cancelled between two tensors, the model never counted as loaded
    stream.cancel_on = lambda e: e.get("stage") == "load" and e.get("message", "").startswith("loading")
    t0 = time.monotonic()
    end = _run(worker, stream, job, "j-load")
    assert end["event"] == "error" and end["kind"] == "cancelled", end
    assert worker.loads == 0 and not any(e["event"] == "loaded" for e in stream.events)
    # during the save: no result, no temporary file; the same worker then runs the job to the end
    stream.cancel_on = lambda e: e.get("stage") == "save" and e.get("fraction") == 0.0
    end = _run(worker, stream, job, "j-save")
    assert end["event"] == "error" and end["kind"] == "cancelled", end
    assert not (tmp_path / "res" / "r.npz").exists() and _temp_files(tmp_path) == []
    end = _run(worker, stream, job, "j-ok")
    assert end["event"] == "result" and worker.loads == 1 and (tmp_path / "res" / "r.npz").is_file()
    assert time.monotonic() - t0 < 120


def test_cancel_during_a_hub_download_answers_at_once(tmp_path, monkeypatch, soh_images):
    """A Hugging Face download is a cancel point: the job ends as cancelled within a moment while the
    stand-in download (blocking, as a large file on a slow link) is still running; no kill."""
    import huggingface_hub

    started, release = threading.Event(), threading.Event()

    def slow_download(repo_id, filename, **kwargs):  # the hub download, held until the test lets it go
        started.set()
        release.wait(60)
        raise OSError("the stand-in download was let go")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", slow_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no probe request: straight to the (stand-in) download
    stream = _Stream()
    worker = stream.worker = Worker(stream)
    job = {"inputs": [str(p) for p in soh_images], "output": str(tmp_path / "r.npz"), "model": "depth-anything/DA3-SMALL",
           "device": "cpu", "options": {"process_res": 70}}
    stream.ended.clear()
    worker.handle(encode(request("run", "j-hub", job=job)))
    try:
        assert started.wait(60), "the download never started"
        t0 = time.monotonic()
        worker.handle(encode(request("cancel", "c-hub", job="j-hub")))
        assert stream.ended.wait(10), "the job did not end while its download ran"
        waited = time.monotonic() - t0
        end = next(e for e in stream.events if e.get("job") == "j-hub" and e["event"] in ("result", "error"))
        assert end["event"] == "error" and end["kind"] == "cancelled", end
        assert waited < 1.0 and not release.is_set()  # answered while the download still blocks
        assert worker._job is None and worker.loads == 0 and not (tmp_path / "r.npz").exists()
    finally:
        release.set()


class _DepthStandIn:
    """A stand-in network (run_inference's contract: forward, model_name, capabilities, device): depth only."""

    model_name = "da3mono-large"
    capabilities = {"pose": False, "conf": False, "sky": False, "metric": False, "pose_conditioning": False}
    device = "cpu"

    def forward(self, image, extrinsics=None, intrinsics=None, use_ray_pose=False, ref_view_strategy=None,
                progress=None):
        return {"depth": 1.0 + image[:, :, 0].abs()}


def test_cancel_in_a_500_file_export_stops_within_a_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from da3_blender.inference import run_inference

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(500):
        Image.fromarray(rng.integers(0, 255, (28, 42, 3), dtype=np.uint8)).save(frames / f"f{i:04d}.png")
    export = tmp_path / "exports"
    stream = _Stream()
    worker = stream.worker = Worker(stream)
    stand_in = types.SimpleNamespace(inference=lambda inputs, **kw: run_inference(_DepthStandIn(), inputs, **kw))
    monkeypatch.setattr(worker, "_get_model", lambda *a, **k: stand_in)
    job = {"inputs": [str(frames)], "output": str(tmp_path / "r.npz"), "model": "stand-in", "device": "cpu",
           "options": {"process_res": 28}, "export_dir": str(export), "export_format": "depth_vis"}
    from da3_blender.exports import depth_vis

    real_image, made = depth_vis.depth_vis_image, []

    def picture_then_cancel(pred, i):  # as a user pressing Esc while the 51st picture is made
        made.append(i)
        if len(made) == 51:
            worker.handle(encode(request("cancel", "c-export", job="j-export")))
        return real_image(pred, i)

    monkeypatch.setattr(depth_vis, "depth_vis_image", picture_then_cancel)
    end = _run(worker, stream, job, "j-export", timeout=300)
    written = len(list((export / "depth_vis").glob("*.png")))
    assert end["event"] == "error" and end["kind"] == "cancelled", end
    assert written == 50 and len(made) == 51, (written, len(made))  # stopped at the next file: nothing after it
    assert _temp_files(tmp_path) == [] and not (tmp_path / "r.npz").exists()
    assert worker._job is None  # the worker is free for the next job: nothing was killed


# -- R3: partial uploads left by a dropped link --------------------------------------------------------
def test_partial_uploads_in_kept_model_folders_are_purged(tmp_path):
    from da3_blender.runtime.transfer import STALE_UPLOAD_SECONDS, JobFiles

    root = tmp_path / "jobs"
    model = root / "model-abc"
    model.mkdir(parents=True, mode=0o700)
    os.chmod(root, 0o700)
    (model / "model.safetensors").write_bytes(b"kept")
    old, fresh = model / ".up-old123", model / ".up-fresh456"
    nested = root / "job-1" / "in" / "0" / ".up-nested"
    nested.parent.mkdir(parents=True)
    for f in (old, fresh, nested):
        f.write_bytes(b"partial")
    long_ago = time.time() - STALE_UPLOAD_SECONDS - 60
    for f in (old, nested):
        os.utime(f, (long_ago, long_ago))
    os.utime(model, None)  # the folder itself is fresh: a "stat" of the kept model refreshed it
    JobFiles(root)  # what a new connection's worker does first
    assert not old.exists() and not nested.exists()
    assert fresh.exists() and (model / "model.safetensors").read_bytes() == b"kept"


# -- R4: exporting again into a folder that holds a longer, older sequence --------------------------------
def test_a_re_export_leaves_no_frames_of_the_older_longer_sequence(tmp_path):
    from da3_blender import exports
    from da3_blender.prediction import Prediction

    def pred(n):
        rng = np.random.default_rng(n)
        return Prediction(depth=rng.uniform(1, 2, (n, 14, 21)).astype(np.float32),
                          processed_images=rng.integers(0, 255, (n, 14, 21, 3), dtype=np.uint8))

    folder = tmp_path / "shot"
    first = exports.export(pred(6), "depth_vis", folder)
    assert len(first) == 6
    (folder / "depth_vis" / "notes.txt").write_text("mine")  # not part of the sequence: stays
    (folder / "depth_vis" / "0003-graded.png").write_bytes(b"also mine")
    second = exports.export(pred(3), "depth_vis", folder)
    names = sorted(os.listdir(folder / "depth_vis"))
    assert names == sorted([os.path.basename(p) for p in second] + ["notes.txt", "0003-graded.png"]), names
    assert len(second) == 3


def test_a_failed_re_export_leaves_no_mixed_sequence_either(tmp_path, monkeypatch):
    """R4 on failure: an export that stops after its 2nd picture (a full disk, a cancel) over an older
    6-frame one leaves that export's 2 frames, not 2 new frames among 4 old ones."""
    from da3_blender import exports
    from da3_blender.errors import CancelledError
    from da3_blender.exports import depth_vis
    from da3_blender.prediction import Prediction

    def pred(n, seed):
        rng = np.random.default_rng(seed)
        return Prediction(depth=rng.uniform(1, 2, (n, 14, 21)).astype(np.float32),
                          processed_images=rng.integers(0, 255, (n, 14, 21, 3), dtype=np.uint8))

    folder = tmp_path / "shot"
    old = exports.export(pred(6, 1), "depth_vis-mini_npz", folder)
    (folder / "depth_vis" / "notes.txt").write_text("mine")
    real_image, made = depth_vis.depth_vis_image, []

    def stop_at_the_third(p, i):
        made.append(i)
        if len(made) == 3:
            raise CancelledError()
        return real_image(p, i)

    monkeypatch.setattr(depth_vis, "depth_vis_image", stop_at_the_third)
    new = pred(6, 2)
    with pytest.raises(CancelledError):
        exports.export(new, "mini_npz-depth_vis", folder)
    names = sorted(os.listdir(folder / "depth_vis"))
    assert names == sorted([os.path.basename(p) for p in old[:2]] + ["notes.txt"]), names  # the new 2, no old frame
    for name in names[:2]:  # they are the new export's pictures
        assert (folder / "depth_vis" / name).read_bytes() == _png_bytes(real_image(new, int(name[:4])))
    assert (folder / "exports" / "mini_npz" / "results.npz").is_file() and _temp_files(folder) == []


def _png_bytes(image) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# -- R5: a full local disk while a finished remote result comes back -------------------------------------
@pytest.mark.slow
def test_a_full_disk_during_download_keeps_the_remote_result_and_says_how_to_fetch_it(
        sshd, tmp_path, fixture_dir, soh_images, monkeypatch):
    import contextlib
    import errno

    from da3_blender import files
    from da3_blender.runtime import protocol
    from da3_blender.runtime.client import WorkerClient

    cache = tmp_path / "remote-cache"
    out = tmp_path / "local" / "shot.npz"
    job = {"inputs": [str(p) for p in soh_images], "output": str(out), "model": str(fixture_dir), "device": "cpu",
           "options": {"process_res": 70}, "export_dir": str(tmp_path / "local" / "ex"), "export_format": "depth_vis"}
    real = files.open_atomic

    @contextlib.contextmanager
    def full_disk(path, mode="wb"):
        with real(path, mode) as fh:
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = write
            yield fh

    client = WorkerClient(remote=sshd.spec(cache_dir=str(cache), python=sys.executable))
    try:
        monkeypatch.setattr(files, "open_atomic", full_disk)
        monkeypatch.setattr(protocol, "CHUNK_SIZE", 4096)  # several requests in flight when the write fails
        job_id = client.submit(job)
        end = client.wait_job(job_id, 300)
        monkeypatch.undo()
        assert end is not None and end["event"] == "error", end
        message = end["message"]
        assert "disk space" in message and "kept on" in message and "scp" in message and "\n" not in message, message
        assert client._routes == {}, "answers no one waits for are not routed"
        kept = [p for p in (cache / "jobs").iterdir() if p.name.startswith("job-")]
        assert len(kept) == 1 and (kept[0] / "out" / "shot.npz").is_file()
        assert not out.exists() and _temp_files(tmp_path / "local") == []
        # the command in the message fetches it (as the user would paste it into a terminal)
        command = message.split("fetch it with: ", 1)[1]
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        assert load_result(out).num_views == 2
        assert len(list((tmp_path / "local" / "ex" / "depth_vis").glob("*.png"))) == 2
        # the next connection does not discard the kept folder
        client.shutdown()
        client.hello(timeout=60)
        assert kept[0].is_dir()
    finally:
        client.shutdown()
