"""What a web page, a bad client and a careless user can make ``da3 backend`` / ``da3 gallery`` do
(issue 25): HTTP framing (Content-Length, chunk sizes), requests from other sites, concurrent
cancels, ``/tasks`` summaries, a port in use, which paths a request may name (one confinement
rule, Windows UNC and device paths), and one file of a numbered sequence.

The servers here never run a task: their queue's runner is stopped, so a task that gets in stays
``pending`` (and is visible), and no worker or model is started. The end-to-end checks with a
running worker are in tests/test_backend.py.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_blender import files
from da3_blender.commands.main import main
from da3_blender.errors import BadInputError
from da3_blender.web import security
from da3_blender.web.backend import make_server
from da3_blender.web.security import AccessError, Roots

MODEL = "depth-anything/DA3-SMALL"  # never loaded: no task runs here


def png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    return str(path)


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "root"
    for i in (1, 2, 3):
        png(root / "plate" / f"plate.{i:04d}.png")
    return root


@pytest.fixture
def idle(root):
    """A backend whose queue takes tasks but never runs them."""
    srv = make_server(MODEL, device="cpu", port=0, allow_roots=[str(root)], max_body=4096, max_images=2,
                      work_dir=str(root.parent / "work"))
    with srv.queue.cond:
        srv.queue.stopped = True
        srv.queue.cond.notify_all()
    srv.queue.thread.join(5)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.queue.client.shutdown()


def origin(srv) -> str:
    return "http://127.0.0.1:%d" % srv.server_address[1]


def exchange(srv, data: bytes, wait: float = 5.0) -> tuple[list[int], bool]:
    """Send raw bytes, keeping the connection open until a whole answer came (then end our side);
    (statuses of every answer read, whether the server closed the connection)."""
    sock = socket.create_connection(srv.server_address[:2], timeout=wait)
    sock.sendall(data)
    got, closed, ended = b"", False, False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
            head, sep, rest = got.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if sep and length and len(rest) >= length[0] and not ended:
                sock.shutdown(socket.SHUT_WR)  # a client that got its answer, then sends nothing more
                ended = True
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        sock.close()
    statuses = [int(line.split()[1]) for line in got.split(b"\n") if line.startswith(b"HTTP/1.")]  # each JSON body ends in a newline
    return statuses, closed


def request(srv, method: str, path: str, body: bytes = b"", **headers) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.server_address[1]}\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    if body and "Content_Length" not in headers and "Transfer_Encoding" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


def job_body(root: Path, **extra) -> bytes:
    return json.dumps({"image_paths": [str(root / "plate" / "plate.0001.png")],
                       "export_dir": str(root / "out"), **extra}).encode()


# -- framing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [b"-1", b"0x10", b"1_0", b"+5", b"zz", b" ", b"1" * 20])
def test_a_bad_chunk_size_is_400_at_once_and_closes(idle, root, size):
    data = request(idle, "POST", "/inference", Content_Type="application/json", Transfer_Encoding="chunked")
    started = time.monotonic()
    statuses, closed = exchange(idle, data + size + b"\r\n" + b"x" * 64)  # and the client keeps the line open
    assert statuses == [400] and closed, (size, statuses)
    assert time.monotonic() - started < 4.5  # answered at once, not when the client gives up
    assert not idle.queue.tasks


@pytest.mark.parametrize("length", [b"\xb2", b"\xd9\xa1", b"+5", b"0x10", b"1e3", b"-1", b"5, 6"])
def test_content_length_must_be_ascii_digits(idle, root, length):
    head = request(idle, "POST", "/inference", Content_Type="application/json")
    statuses, closed = exchange(idle, head[:-2] + b"Content-Length: " + length + b"\r\n\r\n" + job_body(root))
    assert statuses == [400] and closed, (length, statuses)
    assert not idle.queue.tasks


def test_ambiguous_framing_is_refused(idle, root):
    body = job_body(root)
    for extra in ({"Content_Length": str(len(body)), "Transfer_Encoding": "chunked"},):
        statuses, closed = exchange(idle, request(idle, "POST", "/inference", body, Content_Type="application/json", **extra))
        assert statuses == [400] and closed
    twice = request(idle, "POST", "/inference", body, Content_Type="application/json")
    twice = twice.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body) - 10}\r\n\r\n".encode(), 1)
    assert exchange(idle, twice) == ([400], True)
    assert not idle.queue.tasks


# -- other sites ----------------------------------------------------------------------------------------


def test_a_page_of_another_site_cannot_queue_or_cancel(idle, root):
    body = job_body(root)
    cases = [({"Origin": "http://evil.example", "Content_Type": "application/json"}, 403),
             ({"Origin": "null", "Content_Type": "application/json"}, 403),
             ({"Origin": "http://localhost:1234", "Content_Type": "application/json"}, 403),  # another port
             ({"Sec_Fetch_Site": "cross-site", "Content_Type": "application/json"}, 403),
             ({"Content_Type": "text/plain;charset=UTF-8"}, 415),  # what a form or a no-cors fetch sends
             ({"Content_Type": "application/x-www-form-urlencoded"}, 415),
             ({}, 415)]
    for headers, code in cases:
        statuses, closed = exchange(idle, request(idle, "POST", "/inference", body, **headers))
        assert statuses == [code] and closed, (headers, statuses)
    assert not idle.queue.tasks
    # this server's own page (the dashboard) and a program (no Origin) are served
    own = request(idle, "POST", "/inference", body, Origin=origin(idle), Content_Type="application/json")
    assert exchange(idle, own, wait=2)[0] == [200]
    (task_id,) = idle.queue.tasks
    foreign = request(idle, "DELETE", f"/task/{task_id}", Origin="http://evil.example")
    assert exchange(idle, foreign)[0] == [403] and idle.queue.tasks[task_id].status == "pending"
    mine = request(idle, "DELETE", f"/task/{task_id}", Origin=origin(idle))
    assert exchange(idle, mine, wait=2)[0] == [200] and idle.queue.tasks[task_id].status == "cancelled"


def test_same_origin_is_host_and_port():
    assert not security.cross_site(None, None, "127.0.0.1:8008")
    assert not security.cross_site("http://127.0.0.1:8008", "same-origin", "127.0.0.1:8008")
    assert not security.cross_site("http://[::1]:8008", None, "[::1]:8008")
    for bad in ("http://127.0.0.1:8009", "http://localhost:8008", "null", "file://", "http://127.0.0.1"):
        assert security.cross_site(bad, None, "127.0.0.1:8008"), bad
    assert security.cross_site(None, "same-site", "127.0.0.1:8008")


# -- cancels and listings ---------------------------------------------------------------------------------


def test_two_deletes_of_one_task_give_200_and_404(idle, root):
    assert idle.queue.cancel("0" * 32) is None  # not a KeyError
    for _ in range(10):
        assert exchange(idle, request(idle, "POST", "/inference", job_body(root), Content_Type="application/json"),
                        wait=1)[0] == [200]
        task_id = next(t for t, task in idle.queue.tasks.items() if task.status == "pending")
        assert exchange(idle, request(idle, "DELETE", f"/task/{task_id}"), wait=1)[0] == [200]  # cancelled
        barrier, statuses = threading.Barrier(2), []

        def delete():
            barrier.wait()
            statuses.extend(exchange(idle, request(idle, "DELETE", f"/task/{task_id}"), wait=1)[0])

        threads = [threading.Thread(target=delete) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200, 404], statuses  # forgotten once; the other finds it gone


def test_tasks_lists_summaries_and_the_dashboard_reads_only_those(idle, root):
    cam = np.eye(4)[:3].tolist()
    k = [[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]
    body = job_body(root, extrinsics=[cam], intrinsics=[k])
    assert exchange(idle, request(idle, "POST", "/inference", body, Content_Type="application/json"), wait=1)[0] == [200]
    (task_id,) = idle.queue.tasks
    from tests.test_backend import call

    status, listing = call(idle, "GET", "/tasks")
    assert status == 200 and listing["total_count"] == 1
    (summary,) = listing["tasks"]
    assert "request" not in summary and summary["task_id"] == task_id and summary["status"] == "pending"
    status, task = call(idle, "GET", f"/task/{task_id}")
    assert task["request"]["extrinsics"] == [cam]
    # every field of a task the dashboard's script reads is in the summary
    page = (Path(__file__).parents[1] / "da3_blender" / "web" / "static" / "dashboard.html").read_text()
    import re

    used = set(re.findall(r"\bt\.(\w+)", page))
    assert used and used <= set(summary), used - set(summary)
    assert {"tasks"} <= set(re.findall(r"\blist\.(\w+)", page)) <= set(listing)


# -- a port in use ------------------------------------------------------------------------------------------


def test_a_port_in_use_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        for argv in (["backend", "--model", MODEL, "--device", "cpu", "--gallery-dir", str(tmp_path / "g")],
                     ["gallery", "--gallery-dir", str(tmp_path)],
                     ["gradio", "--model", MODEL, "--device", "cpu", "--workspace-dir", str(tmp_path / "w"),
                      "--gallery-dir", str(tmp_path / "g")]):
            code = main([*argv, "--port", str(port)])
            err = capsys.readouterr().err.strip()
            assert code == 2 and "\n" not in err and str(port) in err and "--port" in err, err
            assert "internal error" not in err
    finally:
        busy.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("da3-backend-")] and not (tmp_path / "w").exists()
    srv = make_server(MODEL, device="cpu", port=0, allow_roots=[str(tmp_path)])  # its own temporary folder
    (work,) = [p for p in tmp_path.iterdir() if p.name.startswith("da3-backend-")]
    srv.server_close()
    srv.stop_backend()
    assert not work.exists()


# -- paths ----------------------------------------------------------------------------------------------------


def test_one_confinement_rule(tmp_path):
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    (tmp_path / "base-other").mkdir()
    (base / "out").symlink_to(tmp_path)
    real = os.path.realpath(base)
    assert files.inside(os.path.join(real, "sub"), real) and files.inside(real, real)
    assert not files.inside(real + "-other", real)
    assert files.confined(str(base / "sub" / ".." / "sub"), [real]) == os.path.join(real, "sub")
    assert files.confined(str(base), [real]) == real
    assert files.confined(str(base), [real], allow_root=False) is None
    for escape in (base / ".." / "base-other", base / "out" / "base-other", tmp_path / "base-other", "", "a\x00b"):
        assert files.confined(str(escape), [real]) is None, escape


WINDOWS_REFUSED = [r"\\server\share\plate.0001.exr", "//server/share/a.png", r"\\?\C:\shots\a.png",
                   r"\\.\PhysicalDrive0", r"\??\C:\a.png", r"C:\shots\CON", r"C:\shots\nul.png", r"C:\shots\COM1.exr",
                   r"C:\shots\a.png:hidden", r"shots\aux"]
WINDOWS_FINE = [r"C:\shots\plate.0001.exr", r"D:\a\b.png", "shots/console.png", "/home/u/a.png", r"C:\contour\a.png"]


def test_windows_unc_and_device_paths_are_refused_before_any_file_access(tmp_path, monkeypatch):
    for path in WINDOWS_REFUSED:
        assert files.windows_refusal(path), path
    for path in WINDOWS_FINE:
        assert files.windows_refusal(path) is None, path
    roots = Roots([str(tmp_path)])
    touched = []
    monkeypatch.setattr(security.os, "name", "nt")
    monkeypatch.setattr(os.path, "realpath", lambda p, **kw: touched.append(p) or p)
    for path in WINDOWS_REFUSED[:5]:
        with pytest.raises(AccessError, match="network|device"):
            roots.resolve(path, "image path")
    assert touched == []  # refused from the string alone: no SMB server was contacted


def test_gallery_files_stay_in_the_gallery(tmp_path):
    from da3_blender.web.gallery import confined
    from da3_blender.web.http import HttpError

    (tmp_path / "g" / "r").mkdir(parents=True)
    (tmp_path / "g" / "r" / "scene.glb").write_bytes(b"glTF")
    (tmp_path / "g" / "link").symlink_to(tmp_path)
    (tmp_path / "secret.txt").write_text("x")
    assert confined(str(tmp_path / "g"), "r/scene.glb") == str((tmp_path / "g" / "r" / "scene.glb").resolve())
    for rel in ("../secret.txt", "link/secret.txt", ".hidden", "", "r/..", "r\\scene.glb"):
        with pytest.raises(HttpError):
            confined(str(tmp_path / "g"), rel)


# -- one file of a numbered sequence ----------------------------------------------------------------------------


def test_one_file_of_a_sequence_is_a_still_unless_the_request_asks_for_a_shot(root, tmp_path):
    from da3_blender.job import is_sequence_job
    from da3_blender.web.payload import job_from_request

    roots = Roots([str(root)])
    frame = str(root / "plate" / "plate.0001.png")

    def job(**body):
        return job_from_request({"image_paths": [frame], **body}, roots, MODEL, "cpu", str(root / "out"), max_images=2)

    official = job()  # the official client's request: one picture
    assert official["shot"]["mode"] == "stills" and not is_sequence_job(official)
    assert official["video"]["max_frames"] is None
    shot = job(shot={"mode": "auto", "frame_start": 1001})  # --use-backend of `da3 auto`: the whole shot
    assert is_sequence_job(shot) and shot["shot"]["frame_start"] == 1001
    assert shot["video"]["max_frames"] == 2  # --max-images holds for a sequence's frames too
    pattern = job_from_request({"image_paths": [str(root / "plate" / "plate.####.png")], "shot": {"mode": "sequence"}},
                               roots, MODEL, "cpu", str(root / "out"), max_images=2)
    assert is_sequence_job(pattern)
    with pytest.raises(BadInputError, match="not a file"):
        job_from_request({"image_paths": [str(root / "plate" / "plate.####.png")]}, roots, MODEL, "cpu", str(root))
    outside = tmp_path / "elsewhere.png"  # a frame linked from outside the allowed folders
    png(outside)
    (root / "plate" / "plate.0004.png").symlink_to(outside)
    with pytest.raises(AccessError, match="outside"):
        job(shot={"mode": "auto"})


def test_a_frame_number_is_ascii_digits(tmp_path):
    from da3_blender.inputs.paths import natural_key
    from da3_blender.inputs.sequences import find_sequence

    for name in ("plate.1.png", "plate.2.png", "plate.\u00b2.png", "\u00b2"):  # "²".isdigit() is True, int("²") fails
        png(tmp_path / name) if name.endswith(".png") else (tmp_path / name).write_text("")
    assert find_sequence(str(tmp_path / "plate.%d.png")).numbers == [1, 2]
    assert sorted(["b", "\u00b2", "a10", "a9"], key=natural_key)[:2] == ["a9", "a10"]


def test_use_backend_sends_the_shot(root):
    from da3_blender.commands.common import job_from_args
    from da3_blender.commands.main import build_parser
    from da3_blender.web.client import request_body

    pattern = str(root / "plate" / "plate.####.png")
    args = build_parser().parse_args(["auto", pattern, "--frame-start", "1001", "--frame-rate", "25",
                                      "--input-colorspace", "srgb", "--export-dir", str(root / "o")])
    body = request_body(job_from_args(args), [pattern])
    assert body["image_paths"] == [pattern]
    assert body["shot"] == {"mode": "auto", "frame_start": 1001, "frame_rate": 25.0, "colorspace": "srgb"}
    frame = str(root / "plate" / "plate.0002.png")
    args = build_parser().parse_args(["image", frame, "--export-dir", str(root / "o")])
    body = request_body(job_from_args(args), [frame])
    assert body["image_paths"] == [frame] and body["shot"]["mode"] == "stills"


# -- one reader of a result's metadata -------------------------------------------------------------------------


def test_one_reader_of_a_results_metadata(tmp_path):
    """``prediction.read_meta`` (the check ``load_result`` makes) is what the backend's task queue and the
    farm read a result's ``meta_json`` with."""
    from da3_blender.farm import tasks as farm
    from da3_blender.errors import ResultFormatError
    from da3_blender.prediction import RESULT_FORMAT, RESULT_VERSION, read_meta
    from da3_blender.web.tasks import _files_and_shot

    meta = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "exported_files": ["/x/scene.glb"],
            "farm": {"plan_id": "p", "chunk": 3}, "video": {"rate": [25, 1], "missing": [5, 6], "missing_text": "5-6"}}
    good = tmp_path / "good.npz"
    np.savez(good, depth=np.zeros((1, 2, 2), np.float32), meta_json=np.asarray(json.dumps(meta)))
    assert read_meta(good) == meta
    assert _files_and_shot(str(good)) == (["/x/scene.glb"], {"rate": [25, 1], "missing_text": "5-6"})
    assert farm._farm_meta(str(good)) == {"plan_id": "p", "chunk": 3}
    newer = tmp_path / "newer.npz"
    np.savez(newer, meta_json=np.asarray(json.dumps({**meta, "version": RESULT_VERSION + 1})))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not a zip")
    for bad in (newer, garbage):
        with pytest.raises(ResultFormatError):
            read_meta(bad)
        assert _files_and_shot(str(bad)) == ([], None) and farm._farm_meta(str(bad)) == {}
