"""``da3 gallery`` and ``da3 gradio``: the gallery's listing and file rules over HTTP, the Gradio app through
the official ``gradio_client`` (upload an image, get the glb), and both pages in a real browser
(Debian's chromium, headless, driven by playwright-core) with the 3D view loaded; the screenshots
are kept in ``out/web/``. Tools: ``bash scripts/setup_web.sh`` (CI runs it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_blender.commands.main import main
from da3_blender.web import gallery
from da3_blender.web.http import Server

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "out" / "web"
SCRIPT = REPO_ROOT / "scripts" / "web_screenshot.mjs"
PLAYWRIGHT = REPO_ROOT / "build" / "web-tools" / "node_modules" / "playwright-core"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FAST = ["--device", "cpu", "--process-res", "140", "--quiet"]


def need_browser():
    missing = [what for what, ok in (("chromium", os.path.isfile(CHROMIUM)), ("node", shutil.which("node")),
                                     ("playwright-core", PLAYWRIGHT.is_dir()), ("vendored three.js", gallery.vendor_ready()))
               if not ok]
    if missing:
        pytest.skip(f"web browser tools missing ({', '.join(missing)}): run bash scripts/setup_web.sh (chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def screenshot(mode: str, url: str, name: str, *files) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / name
    out.unlink(missing_ok=True)
    run = subprocess.run(["node", str(SCRIPT), mode, url, str(out), *map(str, files)], capture_output=True,
                         text=True, timeout=400, env={**os.environ, "CHROMIUM": CHROMIUM})
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.is_file()
    return json.loads(run.stdout.strip().splitlines()[-1])


def varied(png: Path, box) -> float:
    """Standard deviation of the pixels in ``box`` (0 for a blank area)."""
    with Image.open(png) as im:
        return float(np.asarray(im.convert("L").crop(box), dtype=np.float32).std())


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, fixture_dir, soh_images) -> Path:
    root = tmp_path_factory.mktemp("gallery")
    assert main(["images", str(soh_images[0].parent), "--image-extensions", "png", "--model", str(fixture_dir), *FAST,
                 "--export-dir", str(root / "group" / "soh"), "--export-format", "glb-depth_vis-mini_npz"]) == 0
    (root / "group" / "empty").mkdir()  # not a result: no scene.glb, no depth_vis
    (root / ".hidden").mkdir()
    (root / ".hidden" / "scene.glb").write_bytes(b"x")
    return root


@pytest.fixture(scope="module")
def gallery_url(gallery_dir):
    handler = type("Handler", (gallery.GalleryHandler,), {"gallery_dir": str(gallery_dir)})
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url + "/gallery/"
    server.shutdown()
    server.server_close()


def test_gallery_lists_result_folders_and_serves_only_their_files(gallery_url, gallery_dir):
    status, body = get(gallery_url + "index.json")
    index = json.loads(body)
    assert status == 200 and [item["id"] for item in index["items"]] == ["group/soh"]
    item = index["items"][0]
    n_views = len(list((gallery_dir / "group" / "soh" / "depth_vis").iterdir()))
    assert item["model"] == "files/group/soh/scene.glb" and len(item["depth_images"]) == n_views > 0
    status, glb = get(gallery_url + item["model"])
    assert status == 200 and glb[:4] == b"glTF" and glb == (gallery_dir / "group" / "soh" / "scene.glb").read_bytes()
    for bad in ("files/../../etc/passwd", "files/%2e%2e/%2e%2e/etc/passwd", "files/.hidden/scene.glb",
                "vendor/../../gallery.py", "static/..%2fgallery.py"):
        status, body = get(gallery_url + bad)
        assert status == 404 and json.loads(body)["success"] is False, bad
    status, page = get(gallery_url)
    assert status == 200 and b"importmap" in page and b"https://" not in page  # no CDN
    # the official gallery's manifests and file URLs
    assert json.loads(get(gallery_url + "manifest.json")[1]) == {"groups": [{"id": "group", "title": "group"}]}
    official = json.loads(get(gallery_url + "manifest/group.json")[1])
    assert [i["id"] for i in official["items"]] == ["soh"] and official["items"][0]["model"] == "/gallery/group/soh/scene.glb"
    assert get(gallery_url.replace("/gallery/", "") + official["items"][0]["model"])[1] == glb


def test_gallery_command_needs_an_existing_folder(tmp_path, capsys):
    code = main(["gallery", "--gallery-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "does not exist" in err


def test_gallery_in_a_browser_shows_the_glb(gallery_url):
    need_browser()
    report = screenshot("gallery", gallery_url, "gallery.png")
    assert report["points"] > 100 and report["loaded"].endswith("scene.glb") and not report["errors"], report
    assert varied(OUT / "gallery.png", (400, 100, 1200, 700)) > 5  # the point cloud, not an empty viewer


@pytest.fixture(scope="module")
def gradio_url(tmp_path_factory, fixture_dir):
    pytest.importorskip("gradio", reason="gradio is not installed (the app extra: pip install -e '.[app]')")
    root = tmp_path_factory.mktemp("gradio")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "da3_blender", "gradio", "--model", str(fixture_dir), "--device", "cpu",
                             "--port", str(port), "--process-res", "140", "--workspace-dir", str(root / "ws"),
                             "--gallery-dir", str(root / "gallery")], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"da3 gradio exited: {proc.stdout.read()[-2000:]}")
        try:
            if get(url)[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("da3 gradio did not answer within 180 s")
    yield url, root
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_gradio_client_uploads_an_image_and_gets_the_glb(gradio_url, fixture_dir, soh_images):
    from gradio_client import Client, handle_file

    url, root = gradio_url
    client = Client(url, verbose=False)
    assert "/reconstruct" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    glb, depth, downloads, text = client.predict(
        [handle_file(str(soh_images[0]))], None, 1, str(fixture_dir), 140, "upper_bound_resize", 40,
        api_name="/reconstruct")
    data = Path(glb).read_bytes()
    assert data[:4] == b"glTF" and len(data) > 1000
    assert len(depth) == 1 and Image.open(depth[0]["image"]).size[0] > 0
    names = sorted(Path(f).name for f in downloads)
    assert {"scene.glb", "points.ply", "results.npz", "cameras.txt"} <= set(names), names
    assert "1 views" in text or "**1 views**" in text
    runs = list((root / "gallery" / "gradio").iterdir())  # the run is in the gallery folder
    assert any((run / "scene.glb").read_bytes() == data for run in runs)


def test_gradio_page_in_a_browser_shows_the_3d_result(gradio_url, soh_images):
    need_browser()
    url, _ = gradio_url
    report = screenshot("gradio", url, "gradio.png", *soh_images)
    assert report["canvas"] and not report["errors"], report
    with Image.open(OUT / "gradio.png") as im:
        width = im.size[0]
    assert varied(OUT / "gradio.png", (width // 3, 200, width - 40, 600)) > 5


def test_gradio_refuses_a_remote_bind_without_the_flag(capsys, fixture_dir, tmp_path):
    code = main(["gradio", "--model", str(fixture_dir), "--host", "0.0.0.0", "--workspace-dir", str(tmp_path / "w"),
                 "--gallery-dir", str(tmp_path / "g")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--allow-remote" in err, err


def test_gradio_client_sends_a_video(gradio_url, fixture_dir, robot_video):
    from gradio_client import Client, handle_file

    url, _ = gradio_url
    glb, depth, downloads, text = Client(url, verbose=False).predict(
        None, handle_file(str(robot_video)), 1, str(fixture_dir), 140, "upper_bound_resize", 40, api_name="/reconstruct")
    assert Path(glb).read_bytes()[:4] == b"glTF"
    assert len(depth) == 4 and "4 views" in text  # 3.5 s sampled at 1 fps: 0, 1, 2, 3 s
