"""One job description and one set of choices: the CLI, the worker protocol and the headless script
build the same job (da3_blender/job.py) from the same defaults (da3_blender/options.py)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from da3_blender import options as opt
from da3_blender.commands.main import build_parser
from da3_blender.commands.common import job_from_args
from da3_blender.errors import BadInputError
from da3_blender.job import (
    OPTION_TYPES,
    build_job,
    inference_kwargs,
    parse_export_format,
    video_kwargs,
)
from da3_blender.runtime.protocol import normalize_job

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reconstruct.py"


@pytest.fixture(scope="module")
def headless():
    spec = importlib.util.spec_from_file_location("reconstruct_script_job", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def files(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    video = tmp_path / "shot.mp4"
    video.write_bytes(b"")
    return img, video


def cli_job(*argv):
    return job_from_args(build_parser().parse_args([str(a) for a in argv]))


def headless_job(headless, *argv):
    return headless.job_from_args(headless.parse_args([str(a) for a in argv]))


# -- one default model ------------------------------------------------------------------------------


def test_a_job_without_a_model_uses_the_default_everywhere(monkeypatch, headless, files, tmp_path):
    img, _ = files
    monkeypatch.delenv("DA3_MODEL", raising=False)
    out = str(tmp_path / "x.blend")
    assert normalize_job({"inputs": [str(img)], "output": "o.npz"})["model"] == "depth-anything/DA3-SMALL"
    assert cli_job("image", img)["model"] == "depth-anything/DA3-SMALL"
    assert headless_job(headless, img, "--output", out)["model"] == "depth-anything/DA3-SMALL"
    monkeypatch.setenv("DA3_MODEL", "/models/mine")  # reconstruct.py used to ignore it
    assert normalize_job({"inputs": [str(img)], "output": "o.npz"})["model"] == "/models/mine"
    assert cli_job("image", img)["model"] == "/models/mine"
    assert headless_job(headless, img, "--output", out)["model"] == "/models/mine"


def test_the_protocol_default_model_is_a_loadable_repo_id(monkeypatch):
    """The protocol's default used to be 'da3-large', which no loader accepts."""
    monkeypatch.delenv("DA3_MODEL", raising=False)
    model = normalize_job({"inputs": ["a.png"], "output": "o.npz"})["model"]
    assert model in opt.choice_ids(opt.MODEL_ZOO) and model.count("/") == 1


# -- choices from options ---------------------------------------------------------------------------


def _choices(parser, dest):
    for action in parser._actions:
        if getattr(action, "choices", None) and not isinstance(action.choices, dict) and action.dest == dest:
            return tuple(action.choices)
    sub = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict))
    return _choices(sub.choices["auto"], dest)


def test_cli_and_headless_choices_and_defaults_come_from_options(headless, files, tmp_path):
    parser = build_parser()
    assert _choices(parser, "process_res_method") == opt.choice_ids(opt.PROCESS_RES_METHODS)
    assert _choices(parser, "ref_view_strategy") == opt.choice_ids(opt.REF_VIEW_STRATEGIES)
    assert _choices(parser, "chunk_align") == opt.CHUNK_ALIGN_NAMES
    args = parser.parse_args(["video", "x.mp4"])
    assert (args.process_res, args.fps, args.conf_thresh_percentile, args.num_max_points, args.device) == (
        opt.DEFAULT_PROCESS_RES, opt.DEFAULT_VIDEO_FPS, opt.DEFAULT_CONF_THRESH_PERCENTILE,
        opt.DEFAULT_NUM_MAX_POINTS, opt.DEFAULT_DEVICE)
    img, _ = files
    hargs = headless.parse_args([str(img), "--output", str(tmp_path / "x.blend")])
    assert hargs.fps == opt.DEFAULT_SHOT_FPS == 0  # headless keys every frame of a shot (it used to sample 2, then 1 fps)
    assert parser.parse_args(["auto", "x.mp4"]).fps is None  # auto: 1 fps for a video, every frame of a sequence


def test_export_formats_are_the_options_names_and_each_has_a_writer():
    from da3_blender import exports

    assert tuple(exports.FORMATS) == opt.EXPORT_FORMAT_NAMES
    assert parse_export_format("-".join(opt.EXPORT_FORMAT_NAMES)) == list(opt.EXPORT_FORMAT_NAMES)
    assert set(exports._WRITERS) == set(opt.EXPORT_FORMAT_NAMES)


def test_core_checks_use_the_options_tables():
    from da3_blender.pipeline import preprocess
    from da3_blender.model import dinov2, precision

    assert tuple(preprocess.METHODS) == opt.choice_ids(opt.PROCESS_RES_METHODS)
    assert tuple(dinov2.REF_VIEW_STRATEGIES) == opt.choice_ids(opt.REF_VIEW_STRATEGIES)
    assert tuple(precision.COMPUTE_DTYPES) == opt.COMPUTE_DTYPES


# -- surfaces agree: fps 0, cuda:N ------------------------------------------------------------------


def test_fps_0_means_every_frame_on_every_surface(headless, files, tmp_path):
    _, video = files
    cli = cli_job("video", video, "--fps", 0)
    worker = normalize_job({"inputs": [str(video)], "output": "o.npz", "video": {"fps": 0}})
    blend = headless_job(headless, video, "--fps", 0, "--output", tmp_path / "x.blend")
    for job in (cli, worker, blend):
        assert video_kwargs(job)["fps"] == opt.EVERY_FRAME_FPS
    with pytest.raises(BadInputError, match="fps"):
        cli_job("video", video, "--fps", -1)
    with pytest.raises(BadInputError, match="fps"):
        normalize_job({"inputs": [str(video)], "output": "o.npz", "video": {"fps": -2}})


@pytest.mark.parametrize("device", ["cuda:1", "cuda", "cpu", "auto", "mps"])
def test_every_device_name_is_accepted_everywhere(headless, files, tmp_path, device):
    img, _ = files
    assert cli_job("image", img, "--device", device)["device"] == device
    assert normalize_job({"inputs": ["a.png"], "output": "o.npz", "device": device})["device"] == device
    assert headless_job(headless, img, "--device", device, "--output", tmp_path / "x.blend")["device"] == device


def test_an_unknown_device_is_refused_in_one_line(files):
    img, _ = files
    for bad in ("tpu", "cuda:x", "cpu:0"):
        with pytest.raises(BadInputError, match=f"unknown device '{bad}'.*cuda:N"):
            cli_job("image", img, "--device", bad)
        with pytest.raises(BadInputError, match="cuda:N"):
            normalize_job({"inputs": ["a.png"], "output": "o.npz", "device": bad})


# -- streaming options: parse -> job -> the keywords run_inference gets ------------------------------


def test_streaming_options_reach_the_inference_keywords(headless, files, tmp_path):
    img, video = files
    args = ("--chunk-size", 12, "--chunk-overlap", 4, "--chunk-align", "se3")
    want = {"chunk_size": 12, "chunk_overlap": 4, "chunk_align": "se3"}
    for job in (cli_job("video", video, *args), cli_job("image", img, *args),
                headless_job(headless, video, *args, "--output", tmp_path / "x.blend"),
                build_job([str(video)], "o.npz", options=want)):
        kwargs = inference_kwargs(job)
        assert {k: kwargs[k] for k in want} == want
    # defaults: a video streams with the automatic chunk, images run in one pass
    assert inference_kwargs(cli_job("video", video))["chunk_size"] == opt.DEFAULT_VIDEO_CHUNK_SIZE == "auto"
    assert "chunk_size" not in inference_kwargs(cli_job("image", img))
    assert inference_kwargs(cli_job("video", video, "--chunk-size", "auto"))["chunk_size"] == "auto"


@pytest.mark.parametrize("argv, match", [
    (["--chunk-size", "1"], "chunk size must be a whole number >= 2"),
    (["--chunk-size", "big"], "--chunk-size"),
    (["--chunk-size", "8", "--chunk-overlap", "8"], "overlap 8 must be smaller than the chunk size 8"),
    (["--chunk-overlap", "-1"], "chunk overlap must be a whole number >= 0"),
    (["--chunk-size", "8", "--chunk-overlap", "0", "--chunk-align", "sim3"], "nothing to align"),
    (["--chunk-align", "affine"], "affine"),
])
def test_bad_streaming_options_fail_in_one_line_before_any_work(capsys, files, tmp_path, argv, match):
    from da3_blender.commands.main import main

    _, video = files
    code = main(["video", str(video), "--export-dir", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("da3: error:"), err
    assert match in err and not (tmp_path / "o").exists()


def test_protocol_options_are_the_job_options():
    assert set(OPTION_TYPES) >= {"chunk_size", "chunk_overlap", "chunk_align", "process_res", "num_max_points"}
    job = normalize_job({"inputs": ["shot.mp4"], "output": "o.npz",
                         "options": {"chunk_size": "auto", "chunk_overlap": 3, "chunk_align": "sim3"}})
    assert inference_kwargs(job) == {"chunk_size": "auto", "chunk_overlap": 3, "chunk_align": "sim3"}
    with pytest.raises(BadInputError, match="option chunk_overlap must be int"):
        normalize_job({"inputs": ["a.png"], "output": "o.npz", "options": {"chunk_overlap": "2"}})


def test_build_job_api_fills_defaults_and_drops_unset_values():
    job = build_job(["a.png", "b.png"], "/tmp/r.npz", video={"fps": None}, options={"process_res": None})
    assert job == {"inputs": ["a.png", "b.png"], "output": "/tmp/r.npz", "model": opt.default_model(),
                   "device": "auto", "dtype": "auto", "video": {"fps": None, "start": None, "end": None,
                                                                 "max_frames": None},
                   "options": {}, "export_dir": None, "export_format": None,
                   "shot": {"mode": "auto", "frame_start": 1, "frame_rate": None, "colorspace": "auto"}}
    assert list(inspect.signature(build_job).parameters)[:2] == ["inputs", "output"]
    with pytest.raises(BadInputError, match="export folder"):
        build_job(["a.png"], "r.npz", export_format="glb")
    with pytest.raises(BadInputError, match="process_res 7 is too small"):
        build_job(["a.png"], "r.npz", options={"process_res": 7})


def test_gaussians_are_a_job_option_every_surface_passes_on(headless, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    job = build_job([str(image)], str(tmp_path / "r.npz"), options={"infer_gs": True})
    assert job["options"]["infer_gs"] is True
    assert inference_kwargs(job)["infer_gs"] is True  # reaches DepthAnything3.inference
    with pytest.raises(BadInputError, match="infer_gs"):
        build_job([str(image)], str(tmp_path / "r.npz"), options={"infer_gs": "yes"})
    args = headless.parse_args([str(image), "--output", str(tmp_path / "s.blend"), "--gaussians"])
    assert headless.job_from_args(args)["options"]["infer_gs"] is True
    assert headless.scene_settings(args)["infer_gs"] is True
