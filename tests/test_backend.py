"""``da3 backend`` through a plain standard-library HTTP client and through ``--use-backend``: the
official routes, the warm model (the second request loads nothing), the same result as a direct run,
and the safety rules (paths outside the allowed roots, a missing token on a non-loopback bind, a
200 MB body, garbage JSON): one-line JSON errors, and the server keeps serving."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from da3_blender.commands.main import main
from da3_blender.web.backend import make_server

RES = 140
BIG = 200 * 1024 * 1024  # the body a careless or hostile client sends
MAX_BODY = 1 << 20


def call(server, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """(status, JSON answer) through http.client."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    ctype = resp.getheader("Content-Type", "")
    if ctype.startswith("application/json"):
        return resp.status, json.loads(data)
    return resp.status, (data.decode() if ctype.startswith("text/") else data)


def assert_one_line_error(status, answer, code, *words):
    assert status == code, answer
    assert answer["success"] is False and "\n" not in answer["detail"], answer
    for word in words:
        assert word in answer["detail"], answer


def wait_task(server, task_id, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, task = call(server, "GET", f"/task/{task_id}")
        assert status == 200, task
        if task["status"] in ("completed", "failed", "cancelled"):
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not end: {task}")


@pytest.fixture(scope="module")
def root(tmp_path_factory, soh_images) -> Path:
    root = tmp_path_factory.mktemp("backend-root")
    (root / "imgs").mkdir()
    for path in soh_images:  # copies: a link would resolve outside the allowed root
        shutil.copy(path, root / "imgs" / path.name)
    return root


@pytest.fixture(scope="module")
def server(root, fixture_dir):
    srv = make_server(str(fixture_dir), device="cpu", port=0, gallery_dir=str(root / "gallery"),
                      allow_roots=[str(root)], max_body=MAX_BODY, max_images=4, work_dir=str(root / ".work"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.queue.stop()


def images(root):
    return [str(p) for p in sorted((root / "imgs").iterdir())]


def depth_of(folder: Path) -> np.ndarray:
    with np.load(folder / "exports" / "mini_npz" / "results.npz") as npz:
        return npz["depth"]


def test_inference_task_status_and_warm_model(server, root):
    status, before = call(server, "GET", "/status")
    assert status == 200 and before["model_loaded"] is False and before["model_loads"] == 0
    tasks = []
    for name in ("first", "second"):
        status, answer = call(server, "POST", "/inference", {
            "image_paths": images(root), "export_dir": str(root / name), "process_res": RES,
            "export_feat_layers": [], "feat_vis_fps": 15, "show_cameras": True})  # the official client's fields
        assert status == 200 and answer["success"] and answer["export_format"] == "mini_npz-glb", answer
        tasks.append(wait_task(server, answer["task_id"]))
    for name, task in zip(("first", "second"), tasks):
        assert task["status"] == "completed" and task["progress"] == 1.0, task
        assert task["num_images"] == 2 and task["summary"]["views"] == 2
        assert sorted(Path(f).name for f in task["files"]) == ["results.npz", "scene.glb"]
        assert all(Path(f).is_file() and str(root / name) in f for f in task["files"])
    # the worker loaded the model once: the second task found it warm
    assert [t["summary"]["model_loads"] for t in tasks] == [1, 1]
    status, after = call(server, "GET", "/status")
    assert after["model_loaded"] is True and after["model_loads"] == 1 and after["load_time"] > 0
    np.testing.assert_array_equal(depth_of(root / "first"), depth_of(root / "second"))
    status, listing = call(server, "GET", "/tasks")
    assert {t["task_id"] for t in listing["completed_tasks"]} >= {t["task_id"] for t in tasks}
    for page in ("/", "/dashboard", "/gallery/"):
        status, html = call(server, "GET", page)
        assert status == 200 and "<html" in html


def test_use_backend_gives_the_same_result_as_a_direct_run(server, root, fixture_dir, capsys):
    url = "http://%s:%d" % server.server_address[:2]
    common = ["--process-res", str(RES), "--export-format", "mini_npz-glb-depth_vis", "--quiet"]
    assert main(["images", str(root / "imgs"), "--use-backend", "--backend-url", url,
                 "--export-dir", str(root / "via-backend"), *common]) == 0
    out = capsys.readouterr().out
    assert "2 views at" in out and str(root / "via-backend" / "scene.glb") in out
    assert main(["images", str(root / "imgs"), "--model", str(fixture_dir), "--device", "cpu",
                 "--export-dir", str(root / "direct"), *common]) == 0
    capsys.readouterr()
    np.testing.assert_allclose(depth_of(root / "via-backend"), depth_of(root / "direct"), rtol=1e-4, atol=1e-5)
    # depth_vis files are named by the views' frame numbers (issue 17), as the direct run names them
    assert sorted(p.name for p in (root / "via-backend" / "depth_vis").iterdir()) == \
        sorted(p.name for p in (root / "direct" / "depth_vis").iterdir())
    assert len(list((root / "via-backend" / "depth_vis").iterdir())) == 2
    _, status = call(server, "GET", "/status")
    assert status["model_loads"] == 1  # still the first load


def test_use_backend_refusal_is_one_line(server, root, capsys, tmp_path):
    url = "http://%s:%d" % server.server_address[:2]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(images(root)[0], outside / "a.png")
    code = main(["image", str(outside / "a.png"), "--use-backend", "--backend-url", url, "--export-dir", str(root / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "outside the folders" in err, err


def test_bad_requests_get_one_line_errors_and_the_server_keeps_serving(server, root, tmp_path):
    outside = tmp_path / "b.png"
    shutil.copy(images(root)[0], outside)
    cases = [
        ({"image_paths": [str(outside)]}, 403, "outside the folders"),
        ({"image_paths": images(root), "export_dir": str(tmp_path / "out")}, 403, "export_dir"),
        ({"image_paths": [str(root / "imgs" / ".." / ".." / outside.name)]}, 403, "outside"),
        ({"image_paths": images(root) * 3}, 400, "limit of 4"),
        ({"image_paths": images(root), "surprise": 1}, 400, "unknown field"),
        ({"image_paths": images(root), "export_feat_layers": [3]}, 400, "feature export"),
        ({"image_paths": images(root), "process_res": "big"}, 400, "process_res"),
        ({"image_paths": []}, 400, "image_paths"),
        ([1, 2], 400, "JSON object"),
    ]
    for body, code, word in cases:
        assert_one_line_error(*call(server, "POST", "/inference", body), code, word)
    assert_one_line_error(*call(server, "POST", "/inference", raw=b'{"image_paths": [,,'), 400, "not valid JSON")
    assert_one_line_error(*call(server, "POST", "/inference", raw=b"\xff\xfe"), 400, "UTF-8")
    assert_one_line_error(*call(server, "POST", "/inference", raw=b"{}", headers={"Content-Type": "text/plain"}), 415, "application/json")
    assert_one_line_error(*call(server, "GET", "/task/0123abcd"), 404, "not found")
    assert_one_line_error(*call(server, "GET", "/nothing"), 404, "not a route")
    assert_one_line_error(*call(server, "GET", "/status", headers={"Host": "attacker.example:8008"}), 403, "loopback")
    assert_one_line_error(*call(server, "GET", "/gallery/files/../../etc/passwd"), 404, "no such file")
    status, _ = call(server, "GET", "/status")
    assert status == 200


def raw_request(server, head: str) -> socket.socket:
    sock = socket.create_connection(server.server_address[:2], timeout=30)
    sock.sendall(head.encode())
    return sock


def read_answer(sock) -> tuple[int, dict]:
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            if len(body) >= length:
                return int(head.split()[1]), json.loads(body[:length])
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole answer: {data!r}"
        data += chunk


def test_a_200_mb_content_length_is_refused_before_reading(server):
    sock = raw_request(server, "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {BIG}\r\n\r\n")
    started = time.monotonic()
    status, answer = read_answer(sock)  # answered although not one byte of the body was sent
    sock.close()
    assert_one_line_error(status, answer, 413, "over this server's limit")
    assert time.monotonic() - started < 10
    assert call(server, "GET", "/status")[0] == 200


def test_a_streamed_200_mb_body_is_cut_off_at_the_limit(server):
    sock = raw_request(server, "POST /inference HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n")
    block = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"  # one 1 MiB chunk, sent again and again
    sent = [0]

    def stream():
        try:
            while sent[0] < BIG:
                sock.sendall(block)
                sent[0] += 1 << 20
        except OSError:
            pass  # the server closed the connection

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    status, answer = read_answer(sock)
    sender.join(timeout=60)
    sock.close()
    assert_one_line_error(status, answer, 413, "chunked")
    assert not sender.is_alive() and sent[0] < BIG // 4  # the server stopped reading long before 200 MB
    assert call(server, "GET", "/status")[0] == 200


def test_cancel_pending_and_running_tasks_then_serve_the_next(server, root):
    body = {"image_paths": images(root) * 2, "export_dir": str(root / "cancelled"), "process_res": 280}
    running = call(server, "POST", "/inference", body)[1]["task_id"]
    pending = call(server, "POST", "/inference", body)[1]["task_id"]
    status, answer = call(server, "DELETE", f"/task/{pending}")
    assert status == 200 and answer["status"] == "cancelled"
    assert wait_task(server, pending)["status"] == "cancelled"
    call(server, "DELETE", f"/task/{running}")
    assert wait_task(server, running)["status"] in ("cancelled", "completed")  # it may have finished already
    after = call(server, "POST", "/inference", {"image_paths": images(root)[:1], "export_dir": str(root / "after"),
                                                 "process_res": RES})[1]["task_id"]
    assert wait_task(server, after)["status"] == "completed"
    status, answer = call(server, "DELETE", f"/task/{after}")  # a finished task is forgotten
    assert status == 200 and answer["status"] == "deleted"
    assert call(server, "GET", f"/task/{after}")[0] == 404


def test_non_loopback_bind_needs_the_token(root, fixture_dir):
    srv = make_server(str(fixture_dir), device="cpu", host="0.0.0.0", port=0, allow_remote=True,
                      allow_roots=[str(root)], work_dir=str(root / ".work-remote"))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert srv.token and len(srv.token) >= 32
        local = type("S", (), {"server_address": ("127.0.0.1", srv.server_address[1])})
        assert_one_line_error(*call(local, "GET", "/status"), 401, "token")
        assert_one_line_error(*call(local, "POST", "/inference", {"image_paths": images(root)}), 401, "token")
        assert_one_line_error(*call(local, "GET", "/status", headers={"Authorization": "Bearer wrong"}), 401, "token")
        status, answer = call(local, "GET", "/status", headers={"Authorization": f"Bearer {srv.token}"})
        assert status == 200 and answer["model_dir"] == str(fixture_dir)
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("GET", f"/dashboard?token={srv.token}")  # a browser's first visit: a cookie, then the page
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303 and "HttpOnly" in resp.getheader("Set-Cookie")
        cookie = resp.getheader("Set-Cookie").split(";")[0]
        assert call(local, "GET", "/dashboard", headers={"Cookie": cookie})[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
        srv.queue.stop()


def test_backend_command_refuses_a_remote_bind_without_the_flag(capsys, fixture_dir):
    code = main(["backend", "--model", str(fixture_dir), "--host", "0.0.0.0", "--port", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--allow-remote" in err, err


def test_video_and_colmap_commands_through_the_backend(server, root, robot_video, capsys):
    """``video --use-backend`` sends the video with its sampling; ``colmap --use-backend`` sends the COLMAP
    cameras as extrinsics/intrinsics and gets them back in the exported model."""
    from da3_blender.exports import read_colmap_text

    url = "http://%s:%d" % server.server_address[:2]
    shutil.copy(robot_video, root / "shot.mp4")
    assert main(["video", str(root / "shot.mp4"), "--fps", "2", "--max-frames", "2", "--use-backend", "--backend-url",
                 url, "--process-res", str(RES), "--export-dir", str(root / "video"), "--export-format", "mini_npz",
                 "--quiet"]) == 0
    assert "2 views" in capsys.readouterr().out
    assert depth_of(root / "video").shape[0] == 2
    status, answer = call(server, "POST", "/inference", {"image_paths": images(root), "export_dir": str(root / "model"),
                                                         "export_format": "colmap", "process_res": RES})
    assert wait_task(server, answer["task_id"])["status"] == "completed"
    model = root / "model" / "colmap" / "sparse" / "0"
    assert main(["colmap", str(model), "--image-dir", str(root / "imgs"), "--use-backend", "--backend-url", url,
                 "--process-res", str(RES), "--export-dir", str(root / "again"), "--export-format", "colmap",
                 "--quiet"]) == 0
    capsys.readouterr()
    cams_a, imgs_a, _ = read_colmap_text(model)
    cams_b, imgs_b, _ = read_colmap_text(root / "again" / "colmap" / "sparse" / "0")
    assert [im.name for im in imgs_a.values()] == [im.name for im in imgs_b.values()]
    for key in cams_a:
        np.testing.assert_allclose(cams_b[key].params, cams_a[key].params, rtol=1e-4)
    for key in imgs_a:
        np.testing.assert_allclose(np.abs(imgs_b[key].qvec @ imgs_a[key].qvec), 1.0, atol=1e-5)
        np.testing.assert_allclose(imgs_b[key].tvec, imgs_a[key].tvec, atol=1e-4)


def test_a_full_queue_is_refused(server, root, monkeypatch):
    from da3_blender.web import tasks

    monkeypatch.setattr(tasks, "MAX_PENDING", 0)
    assert_one_line_error(*call(server, "POST", "/inference", {"image_paths": images(root)}), 429, "waiting")
    assert call(server, "GET", "/status")[0] == 200


def test_malformed_http_gets_a_json_line_too(server):
    for head in ("GET / two spaces HTTP/1.1\r\n\r\n", "BREW /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                 "GET /status HTTP/1.1\r\n" + "X: " + "y" * 70000 + "\r\n\r\n"):
        sock = raw_request(server, head)
        status, answer = read_answer(sock)
        sock.close()
        assert status in (400, 431, 501) and answer["success"] is False and "\n" not in answer["detail"], answer
    assert call(server, "GET", "/status")[0] == 200


def test_a_task_without_export_dir_lands_in_the_gallery(server, root):
    status, answer = call(server, "POST", "/inference", {"image_paths": images(root)[:1], "process_res": RES,
                                                         "export_format": "glb-depth_vis"})
    assert status == 200 and answer["export_dir"] == str((root / "gallery" / "backend" / answer["task_id"]).resolve())
    assert wait_task(server, answer["task_id"])["status"] == "completed"
    status, index = call(server, "GET", "/gallery/index.json")
    item = next(i for i in index["items"] if i["id"] == f"backend/{answer['task_id']}")
    assert item["model"].endswith("scene.glb") and len(item["depth_images"]) == 1
    status, glb = call(server, "GET", "/gallery/" + item["model"])
    assert status == 200 and glb[:4] == b"glTF"


def test_use_backend_says_which_model_runs(server, root, caplog):
    url = "http://%s:%d" % server.server_address[:2]
    assert main(["image", images(root)[0], "--model", "depth-anything/DA3-GIANT-1.1", "--use-backend", "--backend-url",
                 url, "--process-res", str(RES), "--export-dir", str(root / "which"), "--export-format", "mini_npz"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("runs " + server.queue.model in w and "--model" in w for w in warnings), warnings


def smuggling(server, root, outer: str, browser: bool) -> bytes:
    """What a page on any site sends with ``fetch(url, {method: "POST", mode: "no-cors", body})``: a body
    that is itself a whole ``POST /inference`` request (issue 25)."""
    port = server.server_address[1]
    inner_body = json.dumps({"image_paths": images(root), "export_dir": str(root / "smuggled"), "process_res": RES})
    inner = (f"POST /inference HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(inner_body)}\r\n\r\n{inner_body}")
    headers = ("Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\nContent-Type: text/plain;charset=UTF-8\r\n"
               if browser else "Content-Type: application/json\r\n")  # the second: a program, no Origin
    return (f"POST {outer} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {len(inner)}\r\n"
            f"Connection: keep-alive\r\n\r\n{inner}").encode()


def answers_until_closed(server, data: bytes) -> list[int]:
    """The status of every answer the server sends on one connection (read until it closes, or 5 s)."""
    sock = socket.create_connection(server.server_address[:2], timeout=5)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)  # all sent: a server that reads on finds the hidden request, then the end
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    sock.close()
    return [int(line.split()[1]) for line in got.split(b"\n") if line.startswith(b"HTTP/1.1 ")]


def test_a_web_page_cannot_make_the_backend_run_a_job(server, root):
    before = set(server.queue.tasks)
    for outer in ("/status", "/nothing", "/task/none"):
        for browser in (True, False):
            statuses = answers_until_closed(server, smuggling(server, root, outer, browser))
            assert len(statuses) == 1 and statuses[0] in (403, 404, 405, 415), (outer, browser, statuses)
    # a page's own POST /inference: text/plain (no preflight) from another Origin
    body = json.dumps({"image_paths": images(root), "export_dir": str(root / "smuggled"), "process_res": RES}).encode()
    for headers in ({"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://evil.example"},
                    {"Content-Type": "application/json", "Origin": "https://evil.example"}):
        status, answer = call(server, "POST", "/inference", raw=body, headers=headers)
        assert status in (403, 415) and answer["success"] is False, answer
    assert set(server.queue.tasks) == before  # no task queued
    time.sleep(0.5)
    assert not (root / "smuggled").exists()  # and no file written
    assert call(server, "GET", "/status")[0] == 200


def test_use_backend_keeps_the_shot_settings(server, root, capsys):
    """A pattern, --frame-rate and `da3 image`'s stills mode reach the backend (issue 25): the shot's
    frames by their numbers at the rate given, and one view for one picture of the sequence."""
    seq = root / "seq"
    seq.mkdir(exist_ok=True)
    for i, path in enumerate(images(root)):
        shutil.copy(path, seq / f"plate.{i + 1001:04d}.png")
    url = "http://%s:%d" % server.server_address[:2]
    common = ["--use-backend", "--backend-url", url, "--process-res", str(RES), "--export-format", "depth_vis"]
    assert main(["auto", str(seq / "plate.####.png"), "--frame-rate", "25", *common, "--export-dir", str(root / "b-shot")]) == 0
    out = capsys.readouterr().out
    assert "da3: 2 views" in out and "da3: plate.####.png: frames 1001-1002 at 25 fps" in out, out
    names = sorted(p.name for p in (root / "b-shot" / "depth_vis").iterdir())
    assert len(names) == 2 and "1001" in names[0] and "1002" in names[1], names
    assert main(["image", str(seq / "plate.1001.png"), *common, "--export-dir", str(root / "b-still")]) == 0
    out = capsys.readouterr().out
    assert "da3: 1 view " in out and "frames" not in out, out
    assert len(list((root / "b-still" / "depth_vis").iterdir())) == 1
