"""Shots as VFX delivers them (issue 17), without Blender: image sequences (patterns, one file, folders,
gaps, one-line errors), plates read through OpenImageIO (scene-linear EXR, with and without the package),
exact rates (a 24000/1001 mp4 made here, robot_unitree.mp4's nominal 50 fps) and the frame-number
contract (scene frames in the result, the EXR and depth_vis names)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from da3_blender.inputs import plates, rates, sequences
from da3_blender.errors import BadInputError, MissingDependencyError
from da3_blender.inputs.collect import collect_inputs
from da3_blender.prediction import Prediction, scene_frame_numbers

W, H = 64, 36


def _frame(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.dstack([(xx * 4 + i * 9) % 256, (yy * 7 + i * 5) % 256, (xx + yy + i * 3) % 256]).astype(np.uint8)


def _write_pngs(folder, numbers, name="plate.{:04d}.png", size=None):
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        img = _frame(n) if size is None or n not in size else np.zeros((size[n][1], size[n][0], 3), np.uint8)
        Image.fromarray(img).save(folder / name.format(n))
    return folder


def _write_exr(path, linear: np.ndarray, fps=None):
    oiio = pytest.importorskip("OpenImageIO")
    spec = oiio.ImageSpec(linear.shape[1], linear.shape[0], 3, "half")
    if fps is not None:
        spec.attribute("FramesPerSecond", oiio.TypeDesc("int[2]"), fps)  # read back case-insensitively
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), oiio.geterror()
    out.write_image(np.ascontiguousarray(linear, dtype=np.float32))
    out.close()


# ----------------------------------------------------------------------------------------- rates


def test_rates_snap_to_exact_rationals_and_blenders_form():
    assert rates.snap_rate(23.98) == (24000, 1001)  # ffmpeg prints 24000/1001 as 23.98
    assert rates.snap_rate(29.97) == (30000, 1001) and rates.snap_rate(59.94) == (60000, 1001)
    assert rates.snap_rate(50.0) == (50, 1) and rates.snap_rate(24.01) == (24, 1) and rates.snap_rate(24) == (24, 1)
    assert rates.snap_rate(12.5) == (25, 2)  # not a standard rate: kept as it is
    assert rates.snap_rate(49.44) != (50, 1)  # 1.1 % off: not snapped (the average rate is not used anyway)
    assert rates.to_blender((24000, 1001)) == (24, 1.001) and rates.to_blender((25, 2)) == (25, 2.0)
    # a float rate (results before issue 17) goes through the same function, snapped first
    assert rates.to_blender(rates.snap_rate(23.976)) == (24, 1.001) == rates.to_blender(rates.snap_rate(23.98))
    assert rates.to_blender(rates.snap_rate(29.97)) == (30, 1.001) and rates.to_blender(rates.snap_rate(25.0)) == (25, 1.0)
    fps, base = rates.to_blender((30000, 1001))
    assert fps / base == pytest.approx(30000 / 1001, rel=1e-15)
    line = "  Stream #0:0[0x1](und): Video: h264 (High), yuv420p, 1024x576, 4432 kb/s, 49.44 fps, 50 tbr, 12800 tbn"
    assert rates.parse_stream_rates(line) == (50.0, 49.44)
    assert rates.parse_stream_rates("Stream #0:0: Video: h264, 25 fps, 1k tbr, 1k tbn") == (1000.0, 25.0)


def test_robot_video_rate_is_its_nominal_50_and_named_variable(robot_video):
    got = collect_inputs([robot_video], fps=0, max_frames=2, frame_start=1001)
    v = got.video
    assert v["rate"] == [50, 1] and v["fps"] == 50.0  # ffmpeg: 49.44 fps (average), 50 tbr (nominal)
    assert v["variable_rate"] and v["average_fps"] == pytest.approx(49.44, abs=0.01)
    assert got.frame_numbers.tolist() == [1001, 1002] and v["frame_range"] == [1001, 1001 + v["frame_count"] - 1]
    np.testing.assert_allclose(got.timestamps, [0.0, 0.02])
    assert "variable frame rate" in sequences.shot_summary(v)


@pytest.fixture(scope="module")
def ntsc_video(tmp_path_factory):
    """16 frames at exactly 24000/1001 (H.264)."""
    from moviepy import ImageSequenceClip

    path = tmp_path_factory.mktemp("ntsc") / "ntsc.mp4"
    ImageSequenceClip([_frame(i) for i in range(16)], fps=24000 / 1001).write_videofile(
        str(path), codec="libx264", audio=False, logger=None)
    return path


def test_ntsc_video_is_exactly_24000_over_1001_from_its_frame_start(ntsc_video):
    got = collect_inputs([ntsc_video], fps=0, frame_start=1001)
    assert got.video["rate"] == [24000, 1001] and not got.video["variable_rate"]
    assert got.frame_numbers.tolist() == list(range(1001, 1017))
    np.testing.assert_array_equal(got.timestamps, np.arange(16) * 1001 / 24000)  # exact, no 23.98 drift
    assert rates.to_blender(got.video["rate"]) == (24, 1.001)
    assert "every frame" in sequences.shot_summary(got.video)
    sampled = collect_inputs([ntsc_video], fps=6)  # the frame nearest each 1/6 s: every 4th (3.996 frames)
    assert sampled.frame_numbers.tolist() == [1, 5, 9, 13]
    assert "sampled every 4 frames" in sequences.shot_summary(sampled.video)
    half = collect_inputs([ntsc_video], fps=12)  # 1.998 frames a sample: every other frame, not every frame
    assert half.frame_numbers.tolist() == list(range(1, 17, 2))
    np.testing.assert_allclose(half.timestamps, np.arange(8) / 12, atol=0.5 * 1001 / 24000)


# ------------------------------------------------------------------------------------- sequences


def test_pattern_file_and_folder_are_one_shot_with_its_own_numbers_and_gaps(tmp_path):
    folder = _write_pngs(tmp_path / "shot", [1001, 1002, 1003, 1006, 1007, 1008])
    for given in ("plate.####.png", "plate.%04d.png", "plate.1003.png", ""):
        got = collect_inputs([str(folder / given) if given else str(folder)], frame_rate=23.976)
        assert got.kind == "sequence", given
        assert got.frame_numbers.tolist() == [1001, 1002, 1003, 1006, 1007, 1008]  # 1004-1005: gaps, no view
        assert got.video["rate"] == [24000, 1001] and got.video["frame_range"] == [1001, 1008]
        assert got.video["missing"] == [1004, 1005] and "missing 1004-1005" in sequences.shot_summary(got.video)
        np.testing.assert_allclose(got.timestamps, (got.frame_numbers - 1001) * 1001 / 24000)
        assert np.array_equal(got.images[3], _frame(1006))
    assert collect_inputs([str(folder)], shot="stills").kind == "images"  # `da3 images`, panel "Stills"
    default = collect_inputs([str(folder / "plate.####.png")])
    assert default.video["rate"] == [24, 1]  # no rate given, none in the files: 24


# 12 fps of a 30-frame shot: the frame nearest each 1/12 s (a tie goes to the earlier frame)
TWELVE_FPS = {23.976: list(range(0, 30, 2)), 25.0: [0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27, 29],
              29.97: [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]}


@pytest.mark.parametrize("rate", sorted(TWELVE_FPS))
def test_twelve_fps_picks_frames_by_time_on_a_sequence(tmp_path, rate):
    folder = _write_pngs(tmp_path / "shot", range(1001, 1031))
    got = collect_inputs([str(folder)], fps=12, frame_rate=rate)
    assert (got.frame_numbers - 1001).tolist() == TWELVE_FPS[rate]
    per_second = rates.rate_float(rates.snap_rate(rate))
    wanted = np.arange(len(got.frame_numbers)) / 12  # one kept frame per instant k / 12, within half a frame of it
    np.testing.assert_allclose(got.timestamps, wanted, atol=0.5 / per_second + 1e-9)
    assert len(got.frame_numbers) == int(29.5 / (per_second / 12) + 1e-9) + 1  # every instant nearest a frame of it
    assert got.video["sample_interval"] == pytest.approx(per_second / 12, rel=1e-6)
    for index in range(30):  # the video path runs the same rule
        assert rates.keeps_frame(index, rates.sample_step(per_second, 12.0)) == (index in TWELVE_FPS[rate])


@pytest.mark.parametrize("rate", sorted(TWELVE_FPS))
def test_where_max_frames_stops_reading_is_the_last_frame_kept(rate):
    """A video sampled with max_frames stops decoding after the last frame it keeps (its progress total)."""
    step = rates.sample_step(rates.rate_float(rates.snap_rate(rate)), 12.0)
    for first in (0, 1, 3):
        kept = [i for i in TWELVE_FPS[rate] if i >= first]
        assert [rates.nth_kept_index(first, n, step) for n in range(len(kept))] == kept
    assert [rates.nth_kept_index(5, n, 1.0) for n in range(3)] == [5, 6, 7]  # every frame


def test_sampled_sequence_and_sparse_folders_stay_stills(tmp_path):
    folder = _write_pngs(tmp_path / "shot", range(1, 13))
    got = collect_inputs([str(folder)], fps=8, frame_rate=24)  # every 3rd number from the first
    assert got.frame_numbers.tolist() == [1, 4, 7, 10] and got.video["sample_interval"] == 3
    sparse = _write_pngs(tmp_path / "sparse", [0, 10], name="{:03d}.png")  # like examples/SOH: two stills
    assert collect_inputs([str(sparse)]).kind == "images"
    assert collect_inputs([str(sparse / "000.png")]).kind == "images"
    mixed = _write_pngs(tmp_path / "mixed", [1, 2, 3])
    Image.fromarray(_frame(0)).save(mixed / "reference.png")
    assert collect_inputs([str(mixed)]).kind == "images"  # not one numbered pattern: stills


@pytest.mark.parametrize("case, words", [
    ("no_match", ["no files match", "plate.####.jpg"]),
    ("two_marks", ["exactly one frame placeholder"]),
    ("no_ext", ["image extension"]),
    ("duplicate", ["two files for frame 7"]),
    ("mixed_sizes", ["plate.0005.png is 32x18", "one size"]),
    ("unreadable", ["plate.0004.png", "truncated or corrupt"]),
    ("forced_stills", ["not a shot", "not one numbered sequence"]),
])
def test_bad_sequences_fail_in_one_line_naming_the_problem(tmp_path, case, words):
    folder = _write_pngs(tmp_path / "s", range(1, 9), size={5: (32, 18)} if case == "mixed_sizes" else None)
    arg, shot = str(folder / "plate.####.png"), "auto"
    if case == "no_match":
        arg = str(folder / "plate.####.jpg")
    elif case == "two_marks":
        arg = str(folder / "plate.##.##.png")
    elif case == "no_ext":
        arg = str(folder / "plate.####")
    elif case == "duplicate":
        Image.fromarray(_frame(7)).save(folder / "plate.00007.png")
        arg = str(folder)
    elif case == "unreadable":
        data = (folder / "plate.0004.png").read_bytes()
        (folder / "plate.0004.png").write_bytes(data[: len(data) // 2])
    elif case == "forced_stills":
        Image.fromarray(_frame(0)).save(folder / "notes.png")
        arg, shot = str(folder), "sequence"
    with pytest.raises(BadInputError) as err:
        collect_inputs([arg], shot=shot)
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words), text


# ---------------------------------------------------------------------------------------- plates


def test_exr_plate_is_clamped_and_srgb_encoded_and_names_its_rate(tmp_path):
    pytest.importorskip("OpenImageIO")
    rng = np.random.default_rng(0)
    linear = rng.uniform(-0.2, 1.6, (H, W, 3)).astype(np.float16).astype(np.float32)  # half, as stored
    linear[0, 0] = [0.0, 0.18, 1.0]
    folder = tmp_path / "exr"
    folder.mkdir()
    for n in (1001, 1002, 1003):
        _write_exr(folder / f"plate.{n}.exr", linear, fps=(24000, 1001))
    got = collect_inputs([str(folder / "plate.####.exr")])
    assert got.kind == "sequence" and got.video["rate"] == [24000, 1001]  # the EXR framesPerSecond
    img = got.images[0]
    c = np.clip(linear, 0, 1)
    expected = np.rint(255 * np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055))
    assert np.abs(img.astype(int) - expected).max() == 0
    assert img[0, 0].tolist() == [0, 118, 255]  # 18 % grey is sRGB 118
    assert "sRGB-encoded" in got.video["colorspace"] and "sRGB-encoded" in sequences.shot_summary(got.video)
    raw = collect_inputs([str(folder / "plate.####.exr")], colorspace="srgb").images[0]
    assert np.array_equal(raw, np.rint(255 * c).astype(np.uint8))  # srgb: taken as display-referred


def test_plate_colour_channels_are_found_by_name():
    assert plates.colour_channels(["R", "G", "B", "A"]) == [0, 1, 2]
    assert plates.colour_channels(["A", "B", "G", "R"]) == [3, 2, 1]  # EXR stores channels sorted by name
    multilayer = ["ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G", "ViewLayer.Combined.R",
                  "ViewLayer.Depth.Z"]
    assert plates.colour_channels(multilayer) == [3, 2, 1]
    assert plates.colour_channels(["Y"]) == [0] and plates.colour_channels(["X", "Y", "Z"]) == [0, 1, 2]


def test_16_bit_png_and_tiff_plates_read(tmp_path):
    oiio = pytest.importorskip("OpenImageIO")
    values = (np.arange(H * W * 3).reshape(H, W, 3) * 37 % 65536).astype(np.uint16)
    for ext in ("png", "tif"):
        path = tmp_path / f"p16.{ext}"
        out = oiio.ImageOutput.create(str(path))
        out.open(str(path), oiio.ImageSpec(W, H, 3, "uint16"))
        out.write_image(values)
        out.close()
        got = collect_inputs([str(path)]).images[0]
        assert got.shape == (H, W, 3) and np.abs(got.astype(int) - values / 257.0).max() <= 1, ext


def test_without_openimageio_an_exr_plate_fails_before_any_work(tmp_path, monkeypatch):
    pytest.importorskip("OpenImageIO")
    folder = tmp_path / "exr"
    folder.mkdir()
    for n in (1, 2):
        _write_exr(folder / f"plate.{n:04d}.exr", np.full((H, W, 3), 0.5, np.float32))
    png = _write_pngs(tmp_path / "png", [1, 2])
    monkeypatch.setitem(sys.modules, "OpenImageIO", None)  # as if it were not installed
    seen = []
    with pytest.raises(MissingDependencyError) as err:
        collect_inputs([str(folder / "plate.####.exr")], progress=lambda *a: seen.append(a))
    text = str(err.value)
    assert "OpenImageIO" in text and "pip install" in text and "\n" not in text and seen == []
    with pytest.raises(MissingDependencyError):
        collect_inputs([str(folder / "plate.0001.exr")], shot="stills")
    assert collect_inputs([str(png)]).kind == "sequence"  # what Pillow reads needs no OpenImageIO


# ------------------------------------------------------------------------------ frame-number contract


def test_results_carry_scene_frames_and_old_results_still_read(tmp_path):
    from da3_blender.exports import export

    depth = np.full((3, 6, 8), 2.0, np.float32)
    new = Prediction(depth=depth.copy(), frame_numbers=np.array([1001, 1002, 1005]),
                     meta={"frame_numbers": "scene", "video": {"rate": [24, 1]}})
    old = Prediction(depth=depth.copy(), frame_numbers=np.array([0, 1, 4]), meta={"video": {"fps": 24.0}})
    assert scene_frame_numbers(new).tolist() == [1001, 1002, 1005]
    assert scene_frame_numbers(old).tolist() == [1, 2, 5] and scene_frame_numbers(old, 1001).tolist() == [1001, 1002, 1005]
    files = export(new, "depth_vis", tmp_path / "new")
    assert [os.path.basename(f) for f in files] == ["1001.png", "1002.png", "1005.png"]
    files = export(old, "depth_vis", tmp_path / "old")
    assert [os.path.basename(f) for f in files] == ["0001.png", "0002.png", "0005.png"]  # as the scene numbers them
    from da3_blender.exports.colmap import image_names

    new.source_paths = old.source_paths = ["/footage/shot.mp4"] * 3  # video frames share one file
    assert image_names(new) == ["shot_001001.png", "shot_001002.png", "shot_001005.png"]
    assert image_names(old) == ["shot_000001.png", "shot_000002.png", "shot_000005.png"]


# ----------------------------------------------------------------------------------------- surfaces


@pytest.mark.slow  # runs the fixture model
def test_cli_auto_takes_a_sequence_as_a_shot_and_images_keeps_stills(tmp_path, fixture_dir, capsys):
    """``da3 auto`` on a pattern: one shot keyed on its own numbers (EXR and depth_vis named by them, gaps
    left out, every frame by default); ``da3 images`` on its folder: stills."""
    pytest.importorskip("OpenEXR")
    from da3_blender.commands.main import main

    folder = _write_pngs(tmp_path / "plate", [1001, 1002, 1004])
    out = tmp_path / "out"
    common = ["--model", str(fixture_dir), "--device", "cpu", "--process-res", "56", "-q"]
    code = main(["auto", str(folder / "plate.####.png"), *common, "--frame-rate", "23.976", "--export-dir", str(out),
                 "--export-format", "exr-depth_vis"])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(os.listdir(out / "exr")) == ["depth.1001.exr", "depth.1002.exr", "depth.1004.exr"]
    assert sorted(os.listdir(out / "depth_vis")) == ["1001.png", "1002.png", "1004.png"]
    assert "frames 1001-1004 at 23.976 (24000/1001) fps" in printed and "missing 1003" in printed
    code = main(["images", str(folder), *common, "--export-dir", str(tmp_path / "stills"), "--export-format", "depth_vis"])
    assert code == 0 and "frames 1001" not in capsys.readouterr().out  # stills: no shot line


@pytest.mark.slow  # runs the fixture model
def test_cli_frame_start_numbers_a_videos_exports(tmp_path, fixture_dir, ntsc_video):
    from da3_blender.commands.main import main

    out = tmp_path / "out"
    code = main(["video", str(ntsc_video), "--fps", "0", "--max-frames", "3", "--frame-start", "1001", "--model",
                 str(fixture_dir), "--device", "cpu", "--process-res", "56", "-q", "--export-dir", str(out),
                 "--export-format", "depth_vis"])
    assert code == 0 and sorted(os.listdir(out / "depth_vis")) == ["1001.png", "1002.png", "1003.png"]


def test_headless_defaults_to_every_frame_and_takes_shot_options(tmp_path):
    import importlib.util

    script = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "reconstruct.py")
    spec = importlib.util.spec_from_file_location("reconstruct_script_shots", script)
    headless = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(headless)
    folder = _write_pngs(tmp_path / "plate", [1, 2, 3])
    pattern = str(folder / "plate.####.png")
    args = headless.parse_args([pattern, "--output", str(tmp_path / "x.blend"), "--frame-rate", "25",
                                "--input-colorspace", "linear"])
    job = headless.job_from_args(args)
    assert job["video"]["fps"] == 0 and job["shot"] == {"mode": "auto", "frame_start": 1, "frame_rate": 25.0,
                                                        "colorspace": "linear"}
    assert headless._expand([pattern]) == ("SEQUENCE", [os.path.abspath(pattern)])
    assert headless._expand([str(folder)]) == ("FOLDER", [str(folder)])
    stills = headless.job_from_args(headless.parse_args([str(folder), "--output", str(tmp_path / "x.blend"), "--stills"]))
    assert stills["shot"]["mode"] == "stills"
    settings = headless.scene_settings(headless.parse_args([pattern, "--output", str(tmp_path / "x.blend"),
                                                            "--frame-start", "1001"]))
    assert settings["frame_start"] == 1001


def test_a_sequence_streams_by_default_like_a_video(tmp_path):
    from da3_blender import options as opt
    from da3_blender.job import build_job, inference_kwargs

    folder = _write_pngs(tmp_path / "plate", range(1, 5))
    for given in (folder / "plate.####.png", folder / "plate.0002.png", folder):
        assert inference_kwargs(build_job([str(given)]))["chunk_size"] == opt.DEFAULT_VIDEO_CHUNK_SIZE
    assert "chunk_size" not in inference_kwargs(build_job([str(folder)], shot={"mode": "stills"}))
    with pytest.raises(BadInputError, match="frame start"):
        build_job([str(folder)], shot={"frame_start": -1})
    with pytest.raises(BadInputError, match="colour space"):
        build_job([str(folder)], shot={"colorspace": "log"})
