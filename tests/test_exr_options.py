"""The exr export's options on the job and the ``da3`` command line (issue 17): ``--exr-resolution
processed|plate``, ``--exr-half``, ``--exr-filter nearest|bilinear`` reach the files (read back with
OpenEXR). The panel and the headless script: tests/test_reconstruct_e2e.py and tests/test_headless.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from da3_blender import options as opt
from da3_blender.commands.main import build_parser, main
from da3_blender.errors import BadInputError
from da3_blender.job import build_job

OpenEXR = pytest.importorskip("OpenEXR", reason="the OpenEXR package (pip install '.[exr]') is needed for EXR tests")
FAST = ["--device", "cpu", "--process-res", "140"]


def read_exrs(folder) -> dict[str, dict[str, np.ndarray]]:
    """{file name: {channel: pixels}} of every EXR in ``folder``."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with OpenEXR.File(os.path.join(folder, name), separate_channels=True) as f:
            out[name] = {ch: np.array(c.pixels) for ch, c in f.channels().items()}
    return out


def test_the_job_takes_the_exr_options_and_checks_them(tmp_path):
    job = build_job(["a.png"], export_dir=str(tmp_path), export_format="glb-exr",
                    options={"exr_resolution": "plate", "exr_half": True, "exr_plate_filter": "bilinear"})
    assert {k: job["options"][k] for k in opt.EXR_OPTION_KEYS} == {
        "exr_resolution": "plate", "exr_half": True, "exr_plate_filter": "bilinear"}
    with pytest.raises(BadInputError, match="unknown exr resolution 'full'; use one of: processed, plate"):
        build_job(["a.png"], export_dir=str(tmp_path), export_format="exr", options={"exr_resolution": "full"})
    with pytest.raises(BadInputError, match="unknown exr filter 'cubic'; use one of: nearest, bilinear"):
        build_job(["a.png"], export_dir=str(tmp_path), export_format="exr", options={"exr_plate_filter": "cubic"})
    with pytest.raises(BadInputError, match="exr_half given without the exr export: add exr to the export formats"):
        build_job(["a.png"], export_dir=str(tmp_path), export_format="glb", options={"exr_half": True})


def test_cli_defaults_are_the_options_defaults():
    args = build_parser().parse_args(["images", "somewhere"])
    assert [getattr(args, k) for k in opt.EXR_OPTION_KEYS] == [None, None, None]  # unset: options.py's defaults
    args = build_parser().parse_args(["images", "x", "--exr-resolution", "plate", "--exr-half", "--exr-filter", "bilinear"])
    assert [getattr(args, k) for k in opt.EXR_OPTION_KEYS] == ["plate", True, "bilinear"]


def test_cli_writes_plate_resolution_half_and_the_filter_asked_for(soh_images, fixture_dir, tmp_path, capsys):
    folder = tmp_path / "soh"
    folder.mkdir()
    for p in soh_images:  # small plates (301 px wide: not a multiple of the processed size)
        im = Image.open(p).convert("RGB")
        im.resize((301, round(301 * im.height / im.width)), Image.LANCZOS).save(folder / p.name)
    plate_w, plate_h = Image.open(folder / soh_images[0].name).size
    common = ["images", folder, "--model", fixture_dir, *FAST, "--export-format", "exr"]
    assert main([str(a) for a in [*common, "--export-dir", tmp_path / "p"]]) == 0
    assert main([str(a) for a in [*common, "--export-dir", tmp_path / "b", "--exr-resolution", "plate", "--exr-half",
                                  "--exr-filter", "bilinear"]]) == 0
    assert main([str(a) for a in [*common, "--export-dir", tmp_path / "n", "--exr-resolution", "plate"]]) == 0
    capsys.readouterr()
    processed = read_exrs(tmp_path / "p" / "exr")
    bilinear = read_exrs(tmp_path / "b" / "exr_plate")
    nearest = read_exrs(tmp_path / "n" / "exr_plate")
    assert not (tmp_path / "b" / "exr").exists() and sorted(bilinear) == sorted(processed) == sorted(nearest)
    for name, ch in processed.items():
        z = ch["Z"]
        assert z.dtype == np.float32 and max(z.shape) == 140  # the processed size
        assert bilinear[name]["Z"].shape == nearest[name]["Z"].shape == (plate_h, plate_w)
        assert bilinear[name]["Z"].dtype == np.float16 and nearest[name]["Z"].dtype == np.float32
        # nearest: every plate pixel is one of the processed pixels; bilinear mixes neighbours
        assert np.isin(nearest[name]["Z"], z).all()
        assert (bilinear[name]["Z"] != nearest[name]["Z"].astype(np.float16)).mean() > 0.5
        assert np.allclose(bilinear[name]["Z"], nearest[name]["Z"], rtol=0.2)  # the same depth, resampled
