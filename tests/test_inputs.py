"""Reading images, folders and videos, and the errors a user sees for bad ones."""

from __future__ import annotations

import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from da3_blender.errors import BadInputError
from da3_blender.inputs.collect import collect_inputs
from da3_blender.inputs.paths import frame_number_from_name
from da3_blender.inputs.images import load_image


def _rgb(width=32, height=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(path, arr=None, **kw):
    Image.fromarray(_rgb() if arr is None else arr).save(path, **kw)
    return path


def _raises(call, path, match):
    with pytest.raises(BadInputError, match=match) as info:
        call()
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def _png16_rgb(path, arr16: np.ndarray):
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("ext, kw", [(".png", {}), (".tif", {}), (".bmp", {}), (".webp", {"lossless": True})])
def test_lossless_formats_round_trip(tmp_path, ext, kw):
    arr = _rgb(40, 30, seed=1)
    got = load_image(_save(tmp_path / f"a{ext}", arr, **kw))
    assert got.dtype == np.uint8 and got.shape == (30, 40, 3)
    np.testing.assert_array_equal(got, arr)


def test_jpeg_reads_as_rgb(tmp_path):
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[..., 0] = 200
    got = load_image(_save(tmp_path / "a.JPG", arr, quality=95))
    assert got.shape == (16, 16, 3) and np.abs(got.astype(int) - arr).max() <= 3


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    vals = np.array([[0, 1000, 25700, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(vals).save(path)
    got = load_image(path)
    assert got.shape == (1, 5, 3)
    np.testing.assert_array_equal(got[0, :, 0], [0, 4, 100, 156, 255])  # round(v / 257)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_16bit_rgb_png_is_scaled(tmp_path):
    arr16 = np.zeros((2, 3, 3), np.uint16)
    arr16[0, 0] = (65535, 40000, 1000)
    arr16[1, 2] = (25700, 0, 65535)
    got = load_image(_png16_rgb(tmp_path / "rgb16.png", arr16)).astype(int)
    assert np.abs(got - arr16 / 257.0).max() < 1.0  # PIL keeps the high byte: within 1 of v / 257
    np.testing.assert_array_equal(got[0, 0, :2], [255, 156])  # 40000 is not clipped to 255


def test_grey_alpha_rgba_and_palette_become_rgb(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3] = 255  # alpha is dropped, not composited (as the official loader)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), np.broadcast_to([10, 20, 30], (4, 4, 3)))

    la = Image.fromarray(np.full((3, 5), 77, np.uint8))
    la.putalpha(0)
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.full((3, 5, 3), 77))

    pal = Image.new("P", (6, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([1] * 6 + [2] * 6)
    pal.save(tmp_path / "pal.png", transparency=0)
    got = load_image(tmp_path / "pal.png")
    np.testing.assert_array_equal(got[0], np.broadcast_to([255, 0, 0], (6, 3)))
    np.testing.assert_array_equal(got[1], np.broadcast_to([0, 0, 255], (6, 3)))


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    got = load_image(tmp_path / "cmyk.jpg").astype(int)
    assert got.shape == (16, 16, 3)
    assert np.abs(got - [255, 0, 0]).max() <= 8


def test_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)

    shown = load_image(path).astype(int)
    assert shown.shape == (40, 20, 3)
    assert np.abs(shown[:15] - [255, 0, 0]).max() < 30  # the left edge is now the top
    assert np.abs(shown[25:] - [0, 0, 255]).max() < 30
    stored = load_image(path, exif_transpose=False)
    assert stored.shape == (20, 40, 3)


# ---------------------------------------------------------------- bad files


def test_missing_path(tmp_path):
    _raises(lambda: collect_inputs([tmp_path / "nope.png"]), tmp_path / "nope.png", "not found")
    _raises(lambda: load_image(tmp_path / "nope.png"), tmp_path / "nope.png", "not found")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _raises(lambda: load_image(path), path, "empty")


def test_not_an_image(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    _raises(lambda: collect_inputs([path]), path, "damaged or not really")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    _raises(lambda: collect_inputs([other]), other, "not an image")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_image(tmp_path, ext):
    full = _save(tmp_path / f"full{ext}", _rgb(64, 64, seed=3))
    path = tmp_path / f"cut{ext}"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _raises(lambda: load_image(path), path, "truncated or corrupt")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_corrupt_image_data(tmp_path, ext):
    data = bytearray(_save(tmp_path / f"full{ext}", _rgb(64, 64, seed=4)).read_bytes())
    start = len(data) // 3  # inside the compressed pixel data
    data[start : start + 200] = np.random.default_rng(5).integers(0, 256, 200, dtype=np.uint8).tobytes()
    path = tmp_path / f"bad{ext}"
    path.write_bytes(bytes(data))
    _raises(lambda: load_image(path), path, "truncated or corrupt")


def test_damaged_header(tmp_path):
    data = bytearray(_save(tmp_path / "full.png").read_bytes())
    data[1:4] = b"XYZ"
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    _raises(lambda: load_image(path), path, "damaged")


# ---------------------------------------------------------------- folders


def test_empty_folder(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    _raises(lambda: collect_inputs([folder]), folder, "no images")


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "clip.mp4").write_bytes(b"x")
    msg = _raises(lambda: collect_inputs([tmp_path]), tmp_path, "no images")
    assert "clip.mp4" in msg  # points at the video


def test_folder_skips_non_images_with_a_note(tmp_path, caplog):
    _save(tmp_path / "b.png")
    _save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.INFO, logger="da3_blender"):
        got = collect_inputs([tmp_path])
    assert [p.rsplit("/", 1)[-1] for p in got.source_paths] == ["a.jpg", "b.png"]
    assert got.kind == "images" and got.video is None and len(got.images) == 2
    assert any("notes.txt" in r.getMessage() for r in caplog.records)


def test_natural_sort_and_frame_numbers(tmp_path):
    for name in ["frame10.png", "frame2.png", "Frame1.PNG", "frame100.jpeg"]:
        _save(tmp_path / name)
    got = collect_inputs([tmp_path])
    assert [p.rsplit("/", 1)[-1] for p in got.source_paths] == ["Frame1.PNG", "frame2.png", "frame10.png", "frame100.jpeg"]
    np.testing.assert_array_equal(got.frame_numbers, [1, 2, 10, 100])
    assert got.frame_numbers.dtype == np.int64 and got.timestamps.dtype == np.float64
    assert np.isnan(got.timestamps).all()
    assert frame_number_from_name("shot_1001.png") == 1001 and frame_number_from_name("img.png") == -1


def test_explicit_files_keep_their_order(tmp_path):
    b, a = _save(tmp_path / "b.png"), _save(tmp_path / "a.png")
    got = collect_inputs([b, a])
    assert got.source_paths == [str(b), str(a)]


def test_progress_is_called_per_image(tmp_path):
    files = [_save(tmp_path / f"{i}.png") for i in range(3)]
    calls = []
    collect_inputs(files, progress=lambda stage, frac, msg="": calls.append((stage, frac)))
    assert calls == [("load", 1 / 3), ("load", 2 / 3), ("load", 1.0)]


# ---------------------------------------------------------------- videos


def test_video_without_decodable_frames(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _raises(lambda: collect_inputs([path]), path, "no decodable video frames")


def test_video_mixed_with_images(tmp_path, robot_video):
    img = _save(tmp_path / "a.png")
    _raises(lambda: collect_inputs([img, robot_video]), robot_video, "either one video or only images")


def test_bad_video_options(robot_video):
    with pytest.raises(BadInputError, match="fps"):
        collect_inputs([robot_video], fps=-1)
    with pytest.raises(BadInputError, match="after start"):
        collect_inputs([robot_video], start=2, end=1)
    with pytest.raises(BadInputError, match="max_frames"):
        collect_inputs([robot_video], max_frames=0)


def test_fps_0_takes_every_frame(robot_video):
    """fps 0 means every frame, on every surface (it used to be refused here and by the CLI)."""
    got = collect_inputs([robot_video], fps=0, start=1.0, max_frames=5)
    first = int(np.ceil(1.0 * got.video["fps"] - 1e-9))  # the first frame index at or after 1 s
    assert got.frame_numbers.tolist() == list(range(first + 1, first + 6))  # scene frames: index + frame start 1


def test_video_sampling_at_2_fps(robot_video):
    got = collect_inputs([robot_video], fps=2)
    info = got.video
    assert got.kind == "video" and info["path"] == str(robot_video)
    assert (info["width"], info["height"]) == (1024, 576) and info["fps"] > 2
    interval = max(1, int(info["fps"] / 2))
    index = got.frame_numbers - info["frame_start"]  # frame numbers are scene frames: index + frame start
    assert index[0] == 0 and (index % interval == 0).all()
    np.testing.assert_array_equal(np.diff(index), interval)
    np.testing.assert_allclose(got.timestamps, index / info["fps"])
    assert index[-1] + interval >= info["frame_count"] - 1  # sampled to the end
    assert abs(info["duration"] - info["frame_count"] / info["fps"]) < 0.2
    assert all(im.shape == (576, 1024, 3) and im.dtype == np.uint8 for im in got.images)
    assert got.source_paths == [str(robot_video)] * len(got.images)


def test_video_frame_numbers_match_extracted_frames(robot_video, robot_frames):
    # pick a rate of one frame in 30 so frames 30, 90 and 150 are sampled
    fps = collect_inputs([robot_video], max_frames=1).video["fps"]
    got = collect_inputs([robot_video], fps=fps / 30, frame_start=0)  # frame start 0: scene frame = index
    assert got.frame_numbers[:6].tolist() == [0, 30, 60, 90, 120, 150]
    for number, png in zip((30, 90, 150), robot_frames):
        frame = got.images[got.frame_numbers.tolist().index(number)].astype(int)
        ref = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert np.abs(frame - ref).mean() < 2, number
        neighbour = got.images[got.frame_numbers.tolist().index(number) - 1].astype(int)  # 30 frames earlier
        assert np.abs(neighbour - ref).mean() > np.abs(frame - ref).mean()


def test_video_range_and_max_frames(robot_video):
    got = collect_inputs([robot_video], fps=2, start=1.0, end=3.0, max_frames=2, frame_start=0)
    vfps = got.video["fps"]
    interval = int(vfps / 2)
    assert len(got.images) == 2
    assert (got.timestamps >= 1.0).all() and (got.timestamps < 3.0).all()
    assert (got.frame_numbers % interval == 0).all()
    assert got.frame_numbers[0] == interval * int(np.ceil(vfps / interval))  # first multiple at or after 1 s


def test_fps_above_the_videos_takes_every_frame(robot_video, caplog):
    with caplog.at_level(logging.INFO, logger="da3_blender"):
        got = collect_inputs([robot_video], fps=1000, end=0.5)
    np.testing.assert_array_equal(got.frame_numbers, 1 + np.arange(len(got.images)))  # scene frames from 1
    assert len(got.images) == int(np.ceil(0.5 * got.video["fps"]))
    assert any("every frame" in r.getMessage() for r in caplog.records)


def test_video_progress_can_cancel(robot_video):
    from da3_blender.errors import CancelledError

    seen = []

    def progress(stage, fraction, message=""):
        seen.append((stage, fraction))
        if len(seen) == 5:
            raise CancelledError()

    with pytest.raises(CancelledError):
        collect_inputs([robot_video], fps=2, progress=progress)
    assert all(stage == "load" and 0 < f <= 1 for stage, f in seen) and len(seen) == 5


def test_every_frame_of_the_robot_video_once(robot_video):
    """fps 0 gives each coded frame once, numbered as decoded: the robot clip's uneven timestamps made a
    constant-rate reader (moviepy) repeat frame 172 twice and number the last frame 175."""
    import hashlib

    import imageio_ffmpeg

    coded = imageio_ffmpeg.count_frames_and_secs(str(robot_video))[0]
    got = collect_inputs([robot_video], fps=0)
    assert got.frame_numbers.tolist() == list(range(1, coded + 1)) and got.video["frame_count"] == coded == 174
    digests = [hashlib.sha1(frame.tobytes()).hexdigest() for frame in got.images]
    assert len(digests) == coded and len(set(digests)) == coded  # no frame repeated
    np.testing.assert_allclose(got.timestamps, np.arange(coded) / got.video["fps"])
    stopped = collect_inputs([robot_video], fps=0, max_frames=3)  # not read to the end: counted, not estimated
    assert stopped.frame_numbers.tolist() == [1, 2, 3] and stopped.video["frame_count"] == coded


def test_video_frame_numbers_are_blenders(robot_video):
    """Every frame number we give is a frame of the clip Blender loads (the old reader's last, 175, was past
    it); Blender counts the container's samples, which may hold one more than decodes (an edit list)."""
    bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for Blender tests")
    clip = bpy.data.movieclips.load(str(robot_video), check_existing=False)
    try:
        blender_frames = clip.frame_duration
    finally:
        bpy.data.movieclips.remove(clip)
    got = collect_inputs([robot_video], fps=0)  # scene frames 1..174: the clip's frames starting at frame 1
    assert got.frame_numbers[-1] <= blender_frames and got.video["frame_count"] <= blender_frames
    assert blender_frames - got.video["frame_count"] <= 1


def test_video_decoder_falls_back_to_the_older_option_spelling(robot_video, monkeypatch):
    """ffmpeg before 5.1 has no -fps_mode: the next spelling is tried, remembered, and gives the same frames."""
    from da3_blender.inputs import collect as inputs

    expected = collect_inputs([robot_video], fps=2, end=2.0)
    monkeypatch.setattr(inputs, "_PASSTHROUGH_OPTIONS", (["-no_such_option", "passthrough"], list(inputs._passthrough[0])))
    monkeypatch.setattr(inputs, "_passthrough", [])
    got = collect_inputs([robot_video], fps=2, end=2.0)
    assert inputs._passthrough == [inputs._PASSTHROUGH_OPTIONS[1]]
    np.testing.assert_array_equal(got.frame_numbers, expected.frame_numbers)
    assert all(np.array_equal(a, b) for a, b in zip(got.images, expected.images))
    monkeypatch.setattr(inputs, "_PASSTHROUGH_OPTIONS", (["-no_such_option", "passthrough"],))
    monkeypatch.setattr(inputs, "_passthrough", [])
    _raises(lambda: collect_inputs([robot_video]), robot_video, "cannot pass frames through")


def test_video_decoding_stopped_early_ends_ffmpeg(robot_video, monkeypatch):
    """Stopping at max_frames, or a consumer leaving the frames half-read, leaves no ffmpeg running."""
    import subprocess

    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kw):
        started.append(real_popen(*args, **kw))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    got = collect_inputs([robot_video], fps=0, max_frames=2)
    frames = iter(got.images)
    next(frames)
    frames.close()
    assert len(started) >= 2 and all(p.poll() is not None for p in started)


def test_video_frames_are_decoded_on_demand_and_holding_them_all_is_refused(robot_video, monkeypatch):
    """collect_inputs keeps no frame: iterating decodes them one at a time (no memory limit applies);
    indexing holds them all, which is refused before decoding when over half the RAM."""
    from da3_blender import devices
    from da3_blender.inputs import collect as inputs

    info = collect_inputs([robot_video], max_frames=1).video
    frame_bytes = info["width"] * info["height"] * 3
    every = len(range(0, info["frame_count"]))  # fps above the video's: every frame
    monkeypatch.setattr(devices, "system_memory", lambda: (None, every * frame_bytes))  # fits only half of them
    got = collect_inputs([robot_video], fps=1000)  # counted, not held: no refusal
    assert len(got) == got.video["frame_count"] >= every and got.images._frames is None
    opened = []
    real_reader = inputs._VideoReader
    monkeypatch.setattr(inputs, "_VideoReader", lambda path: opened.append(path) or real_reader(path))
    with pytest.raises(BadInputError) as err:
        got.images[0]
    text = str(err.value)
    assert "\n" not in text and str(robot_video) in text and f"{len(got)} frames of 1024x576" in text
    assert "lower the fps" in text and "max_frames" in text
    assert not opened, "nothing may be decoded first"
    streamed = iter(got.images)  # one frame at a time: allowed
    first, second = next(streamed), next(streamed)
    assert first.shape == (576, 1024, 3) and not np.array_equal(first, second)
    half = collect_inputs([robot_video], fps=1000, max_frames=every // 2)  # half of the RAM: allowed
    assert len(half.images) == every // 2 and np.array_equal(half.images[1], second)