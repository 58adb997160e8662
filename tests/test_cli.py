"""The ``da3`` command line end to end on the random-weight DA3-SMALL fixture: every export format is
read back and checked against the exported cameras; bad input gives one ``da3: error:`` line."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_blender import geometry
from da3_blender.commands.common import ProgressPrinter
from da3_blender.commands.main import main
from da3_blender.exports import read_colmap_text

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_FORMATS = "npz-mini_npz-glb-ply-colmap-depth_vis"
FAST = ["--device", "cpu", "--process-res", "140"]


def da3(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def da3_process(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "da3_blender", *map(str, args)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def soh_dir(tmp_path_factory, soh_images) -> Path:
    folder = tmp_path_factory.mktemp("soh")
    for path in soh_images:
        (folder / path.name).symlink_to(path)
    (folder / "notes.txt").write_text("not an image")  # ignored by `images`
    return folder


# ------------------------------------------------------------------------------------------------
# reading the exports back


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    gltf = json.loads(data[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942 and 28 + json_len + bin_len == len(data)
    return gltf, data[28 + json_len :]


def glb_accessor(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5121: np.uint8}[acc["componentType"]]
    width = {"VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    assert start + acc["count"] * width * np.dtype(dtype).itemsize <= view.get("byteOffset", 0) + view["byteLength"]
    return np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=start).reshape(-1, width)


def read_ply(path: Path) -> np.ndarray:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    types = {"float": "<f4", "uchar": "u1", "int": "<i4"}
    fields = [(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")]
    vertices = np.frombuffer(data, dtype=fields, offset=end)
    assert len(vertices) == count and end + count * vertices.dtype.itemsize == len(data)
    return vertices


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def assert_on_source_pixels(xyz, depth, k, w2c, views=None, sample=400, tol_px=0.05):
    """Each point, seen through the exported camera of its view, lands on the centre of a pixel
    (<= tol_px; the official half-pixel offset would give 0.71 px) whose depth is the point's depth:
    the pixel it was lifted from."""
    rng = np.random.default_rng(0)
    idx = rng.choice(len(xyz), size=min(sample, len(xyz)), replace=False)
    n, h, w = depth.shape
    for i in idx:
        candidates = range(n) if views is None else [int(views[i])]
        best = np.inf
        for v in candidates:
            uv, z = geometry.project_points(xyz[i].astype(np.float64), k[v], w2c[v])
            col, row = int(np.floor(uv[0])), int(np.floor(uv[1]))
            if z <= 0 or not (0 <= col < w and 0 <= row < h):
                continue
            if abs(z - depth[v, row, col]) <= 1e-3 * depth[v, row, col]:
                best = min(best, float(np.hypot(uv[0] - col - 0.5, uv[1] - row - 0.5)))
        assert best <= tol_px, f"point {i} does not reproject onto its source pixel ({best:.3f} px)"


def check_exports(out: Path, n: int, sources: list[Path] | None = None) -> dict:
    """Read every format back; returns the npz arrays."""
    with np.load(out / "exports" / "npz" / "results.npz", allow_pickle=False) as npz:
        full = {k: npz[k] for k in npz.files}
    assert set(full) == {"image", "depth", "conf", "extrinsics", "intrinsics"}
    depth, k, w2c = full["depth"], full["intrinsics"].astype(np.float64), full["extrinsics"].astype(np.float64)
    h, w = depth.shape[1:]
    assert depth.shape == (n, h, w) and full["image"].shape == (n, h, w, 3) and full["image"].dtype == np.uint8
    assert full["conf"].shape == (n, h, w) and w2c.shape == (n, 3, 4) and k.shape == (n, 3, 3)
    assert h % 14 == 0 and w % 14 == 0 and max(h, w) == 140
    with np.load(out / "exports" / "mini_npz" / "results.npz", allow_pickle=False) as mini:
        assert set(mini.files) == {"depth", "conf", "extrinsics", "intrinsics"}
        np.testing.assert_allclose(mini["depth"], depth, atol=1e-5)

    # glb: points (mode 0) + one line mesh (mode 1) per camera; back in the world frame via hf_alignment
    gltf, blob = read_glb(out / "scene.glb")
    meshes = [m["primitives"][0] for m in gltf["meshes"]]
    modes = [p.get("mode", 4) for p in meshes]
    assert modes.count(0) == 1 and modes.count(1) == n
    points = meshes[modes.index(0)]["attributes"]
    pos = glb_accessor(gltf, blob, points["POSITION"])
    col = glb_accessor(gltf, blob, points["COLOR_0"])
    assert len(pos) == len(col) > 100 and np.all(col[:, 3] == 255)
    acc = gltf["accessors"][points["POSITION"]]
    np.testing.assert_allclose(acc["min"], pos.min(axis=0), rtol=1e-6)
    align = np.array(gltf["scenes"][0]["extras"]["hf_alignment"])
    world = (np.c_[pos.astype(np.float64), np.ones(len(pos))] @ np.linalg.inv(align).T)[:, :3]
    assert_on_source_pixels(world, depth, k, w2c, sample=150)

    # ply: same cloud in the world frame, with the view each point came from
    verts = read_ply(out / "points.ply")
    assert len(verts) == len(pos)
    xyz = np.stack([verts["x"], verts["y"], verts["z"]], axis=1)
    assert set(np.unique(verts["view"])) <= set(range(n))
    assert_on_source_pixels(xyz, depth, k, w2c, views=verts["view"])

    # colmap: one PINHOLE camera per view in original pixels, the npz poses, tracks on pixel centres
    cameras, images, points3d = read_colmap_text(out / "colmap" / "sparse" / "0")
    assert len(cameras) == len(images) == n and len(points3d) > 100
    ordered = [images[i] for i in sorted(images)]
    if sources is not None:
        assert [im.name for im in ordered] == [p.name for p in sources]
    for v, im in enumerate(ordered):
        np.testing.assert_allclose(qvec_to_rotmat(im.qvec), w2c[v, :, :3], atol=1e-5)
        np.testing.assert_allclose(im.tvec, w2c[v, :, 3], atol=1e-5)
    rng = np.random.default_rng(1)
    for pid in rng.choice(sorted(points3d), size=200, replace=False):
        p = points3d[pid]
        im = images[int(p.image_ids[0])]
        cam = cameras[im.camera_id]
        assert cam.model == "PINHOLE"
        fx, fy, cx, cy = cam.params
        kk = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        rt = np.c_[qvec_to_rotmat(im.qvec), im.tvec]
        uv, z = geometry.project_points(p.xyz, kk, rt)
        assert z > 0
        assert np.hypot(*(uv - im.xys[int(p.point2D_idxs[0])])) <= 0.05  # px, original image
    if sources is not None:  # original image size, K scaled back from the processed image
        for v, im in enumerate(ordered):
            cam = cameras[im.camera_id]
            with Image.open(sources[v]) as src:
                assert (cam.width, cam.height) == src.size
            np.testing.assert_allclose(cam.params[[0, 2]], k[v, 0, [0, 2]] * cam.width / w, rtol=1e-5)
            np.testing.assert_allclose(cam.params[[1, 3]], k[v, 1, [1, 2]] * cam.height / h, rtol=1e-5)

    # depth_vis: [image | colour depth] per view
    vis = sorted((out / "depth_vis").iterdir())
    assert len(vis) == n
    for path in vis:
        with Image.open(path) as im:
            assert im.size == (2 * w, h)
    return full


def assert_success(code, out, export_dir: Path, n: int):
    assert code == 0
    assert str(export_dir.resolve()) in out
    assert f"{n} view" in out


# ------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_images_folder_as_a_process(fixture_dir, soh_dir, soh_images, tmp_path):
    out = tmp_path / "out"
    run = da3_process("images", soh_dir, "--model", fixture_dir, *FAST, "--export-dir", out,
                      "--export-format", ALL_FORMATS)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert_success(run.returncode, run.stdout, out, 2)
    check_exports(out, 2, sources=sorted(soh_images))


@pytest.mark.slow
def test_video(fixture_dir, robot_video, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = da3(capsys, "video", robot_video, "--fps", 2, "--model", fixture_dir, *FAST,
                            "--export-dir", out, "--export-format", ALL_FORMATS)
    assert code == 0, err
    n = len(np.load(out / "exports" / "mini_npz" / "results.npz")["depth"])
    assert 6 <= n <= 8  # a 3.5 s clip at 2 frames per second
    assert_success(code, stdout, out, n)
    check_exports(out, n)
    cameras, images, _ = read_colmap_text(out / "colmap" / "sparse" / "0")
    names = [images[i].name for i in sorted(images)]
    assert all(name.startswith("robot_unitree") for name in names) and len(set(names)) == n


@pytest.mark.slow
@pytest.mark.parametrize("what", ["file", "folder", "video"])
def test_auto_detects_the_input(fixture_dir, soh_dir, soh_images, robot_video, tmp_path, capsys, what):
    source = {"file": soh_images[0], "folder": soh_dir, "video": robot_video}[what]
    extra = ["--max-frames", 3] if what == "video" else []
    out = tmp_path / "out"
    code, stdout, err = da3(capsys, "auto", source, "--model", fixture_dir, *FAST, *extra, "--export-dir", out,
                            "--export-format", ALL_FORMATS)
    assert code == 0, err
    n = {"file": 1, "folder": 2, "video": 3}[what]
    assert_success(code, stdout, out, n)
    check_exports(out, n, sources={"file": soh_images[:1], "folder": sorted(soh_images)}.get(what))


@pytest.mark.slow
def test_existing_exports_are_overwritten(fixture_dir, soh_images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene.glb").write_bytes(b"old")
    code, _, err = da3(capsys, "image", soh_images[0], "--model", fixture_dir, *FAST, "--export-dir", out, "--quiet")
    assert code == 0 and err == ""
    read_glb(out / "scene.glb")


# ------------------------------------------------------------------------------------------------
# bad input: exit != 0, one line on stderr, no traceback


def assert_one_line_error(code, err, *words):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("da3: error:")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


@pytest.fixture
def tiny_png(tmp_path) -> Path:
    path = tmp_path / "tiny.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (42, 56, 3), dtype=np.uint8)).save(path)
    return path


def test_missing_path(capsys, fixture_dir, tmp_path):
    for command in ("auto", "image", "images", "video"):
        code, _, err = da3(capsys, command, tmp_path / "nope.png", "--model", fixture_dir)
        assert_one_line_error(code, err, "nope.png", "does not exist")
        assert code == 2


def test_empty_folder(capsys, fixture_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("auto", "images"):
        code, _, err = da3(capsys, command, empty, "--model", fixture_dir, "--export-dir", tmp_path / "o")
        assert_one_line_error(code, err, "empty", "no images")


def test_corrupt_and_zero_byte_images(capsys, fixture_dir, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    for path in (corrupt, zero):
        code, _, err = da3(capsys, "image", path, "--model", fixture_dir, *FAST, "--export-dir", tmp_path / "o")
        assert_one_line_error(code, err, path.name)
        assert code == 2
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(corrupt, folder / "a.png")
    code, _, err = da3(capsys, "images", folder, "--model", fixture_dir, *FAST, "--export-dir", tmp_path / "o")
    assert_one_line_error(code, err, "a.png")


def test_not_a_video(capsys, fixture_dir, tmp_path, tiny_png):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = da3(capsys, "video", text, "--model", fixture_dir)
    assert_one_line_error(code, err, "notes.txt")
    code, _, err = da3(capsys, "auto", text, "--model", fixture_dir)
    assert_one_line_error(code, err, "notes.txt")
    code, _, err = da3(capsys, "video", tiny_png, "--model", fixture_dir)  # an image given to `video`
    assert_one_line_error(code, err, "tiny.png", "da3 image")
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 64)
    code, _, err = da3(capsys, "video", fake, "--model", fixture_dir, *FAST, "--export-dir", tmp_path / "o")
    assert_one_line_error(code, err, "fake.mp4")


@pytest.mark.parametrize("fmt", ["obj", "glb-", "glb-pointcloud", ""])
def test_bad_export_format(capsys, fixture_dir, tiny_png, tmp_path, fmt):
    code, _, err = da3(capsys, "image", tiny_png, "--model", fixture_dir, "--export-format", fmt,
                       "--export-dir", tmp_path / "o")
    assert_one_line_error(code, err, "export format")
    assert code == 2 and not (tmp_path / "o").exists()


def test_bad_options(capsys, fixture_dir, tiny_png, tmp_path):
    for args, word in [
        (["--process-res", "abc"], "--process-res"),
        (["--process-res-method", "stretch"], "stretch"),
        (["--device", "tpu"], "tpu"),
        (["--conf-thresh-percentile", "120"], "120"),
        (["--bogus"], "--bogus"),
    ]:
        code, _, err = da3(capsys, "image", tiny_png, "--model", fixture_dir, "--export-dir", tmp_path / "o", *args)
        assert_one_line_error(code, err, word)
        assert code == 2
    code, _, err = da3(capsys)
    assert_one_line_error(code, err, "command")


def test_unknown_model(capsys, tiny_png, tmp_path):
    code, _, err = da3(capsys, "image", tiny_png, "--model", tmp_path / "no" / "such" / "model", *FAST,
                       "--export-dir", tmp_path / "o")
    assert_one_line_error(code, err, "model")
    assert code == 2
    run = da3_process("image", tiny_png, "--model", "depth-anything/NO-SUCH-MODEL", *FAST, "--export-dir",
                      tmp_path / "o", env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(run.returncode, run.stderr, "NO-SUCH-MODEL")


def test_model_default_and_env(monkeypatch):
    from da3_blender.commands.main import build_parser

    monkeypatch.delenv("DA3_MODEL", raising=False)
    assert build_parser().parse_args(["image", "x.png"]).model == "depth-anything/DA3-SMALL"
    monkeypatch.setenv("DA3_MODEL", "/models/da3-large")
    args = build_parser().parse_args(["image", "x.png"])
    assert args.model == "/models/da3-large" and args.export_format == "glb" and args.export_dir == "da3_output"


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "images" in capsys.readouterr().out
    assert main(["video", "--help"]) == 0
    assert "--fps" in capsys.readouterr().out


def test_progress_printer_tty_and_plain():
    class Stream:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    tty = Stream()
    bar = ProgressPrinter(tty, tty=True)
    for f in (0.0, 0.5, 1.0):
        bar("forward", f, "")
    bar.close()
    assert tty.text.count("\r") == 3 and "forward" in tty.text and "100%" in tty.text and tty.text.endswith("\n")
    tty.text = ""
    bar("load", 0.5, "frame 3")
    bar.close(failed=True)  # the error that follows stays the only visible line
    assert tty.text.endswith("\r") and tty.text.strip() == "load         50%  frame 3"

    plain = Stream()
    log = ProgressPrinter(plain, tty=False)
    for f in np.linspace(0, 1, 101):
        log("forward", f, "")
    log("export", 1.0, "3 files")
    lines = plain.text.splitlines()
    assert "\r" not in plain.text and 4 <= len(lines) <= 7
    assert lines[0] == "forward 0%" and lines[-1] == "export 100%  3 files"


def test_interrupt_and_internal_errors(monkeypatch, capsys, tiny_png):
    from da3_blender.commands import reconstruct

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(reconstruct, "run", interrupted)
    code, _, err = da3(capsys, "image", tiny_png)
    assert code == 130 and err.strip() == "da3: interrupted"

    def bug(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(reconstruct, "run", bug)
    code, _, err = da3(capsys, "image", tiny_png)
    assert_one_line_error(code, err, "internal error", "ZeroDivisionError", "please report")
    assert code == 1


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")])
def test_out_of_memory_outside_the_network_is_not_reported_as_a_bug(monkeypatch, capsys, tiny_png, error):
    from da3_blender.commands import reconstruct

    def run(args):
        raise error

    monkeypatch.setattr(reconstruct, "run", run)
    code, _, err = da3(capsys, "image", tiny_png)
    assert_one_line_error(code, err, "out of memory", "smaller model", "fewer frames")
    assert code == 2 and "report" not in err


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_dtype_reaches_the_model(fixture_dir, tiny_png, tmp_path, capsys, monkeypatch, dtype):
    """``--dtype fp32`` is the exact official-parity path (matchmove users choose it): the in-process
    CLI must load the model with it, not with ``auto`` (it did, silently, until 2026-12-07)."""
    from da3_blender.api import DepthAnything3

    loaded = []
    real = DepthAnything3.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = real(cls, *args, **kwargs)
        loaded.append(model)
        return model

    monkeypatch.setattr(DepthAnything3, "from_pretrained", classmethod(spy))
    code, _, err = da3(capsys, "image", tiny_png, "--model", fixture_dir, *FAST, "--dtype", dtype,
                       "--export-dir", tmp_path / "out", "--export-format", "npz")
    assert code == 0, err
    assert len(loaded) == 1 and loaded[0].compute_dtype == dtype
    import torch

    want = torch.float32 if dtype == "fp32" else torch.bfloat16  # bf16: the blocks' weights (CPU)
    assert loaded[0].model.backbone_weight_dtype == want
