"""The farm's Solve step (issue 25 #8): the stitched shot of the farm's chunks gets the camera solve that
in-process ``--refine`` gives the same chunks (cameras within 1e-4), chunks never solve, the exports wait
for the solve, and Build refuses an unsolved result. On the rendered ground-truth shot of tests/test_solve.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from da3_blender.farm import tasks as farm  # noqa: E402
from da3_blender.commands.main import main  # noqa: E402
from da3_blender.errors import BadInputError  # noqa: E402
from da3_blender.farm.solve import solve_shot  # noqa: E402
from da3_blender.inference import run_inference  # noqa: E402
from da3_blender.inputs.collect import collect_inputs
from da3_blender.inputs.images import load_image  # noqa: E402
from da3_blender.job import build_job  # noqa: E402
from da3_blender.prediction import load_result  # noqa: E402

_spec = importlib.util.spec_from_file_location("solve_tests", Path(__file__).with_name("test_solve.py"))
solve_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(solve_tests)

N = 12
OPTIONS = {"process_res": 112, "chunk_size": 6, "chunk_overlap": 3, "refine": True}


def _model(shot):
    from da3_blender.pipeline.preprocess import normalize, prepare_images

    model = solve_tests.ShotModel(shot, N)
    pre = prepare_images([load_image(p) for p in shot["paths"][:N]], process_res=112, method="upper_bound_resize")
    model.means = normalize(pre.images).float().mean(dim=(1, 2, 3)).numpy()  # what forward() sees, per view
    return model


@pytest.mark.slow
def test_farm_solve_step_equals_in_process_refine(shot, tmp_path, capsys):
    paths = shot["paths"][:N]
    job = build_job(paths, model="depth-anything/DA3-SMALL", device="cpu", options=OPTIONS,
                    export_dir=str(tmp_path / "farm_exports"), export_format="colmap")
    plan_dir = tmp_path / "plan"
    plan = farm.plan_shot(job, plan_dir)
    assert [(c["start"], c["end"]) for c in plan["chunks"]] == [(0, 6), (3, 9), (6, 12)]
    model = _model(shot)
    for k in range(3):
        path, _ = farm.forward_chunk(plan_dir, k, model=model)
        assert "solve" not in load_result(path).meta  # a chunk is never solved on its own
    _, aligned = farm.align_shot(plan_dir)
    assert aligned.meta["farm"]["solve"] == "pending" and not (tmp_path / "farm_exports").exists()  # exports wait
    with pytest.raises(BadInputError, match=r"not solved yet .*da3 farm solve"):
        farm.build_command(plan_dir)

    assert main(["farm", "solve", str(plan_dir), "-q"]) == 0
    out = capsys.readouterr().out
    assert "da3 farm: 12 views, solve error" in out and str(plan_dir / "result.npz") in out, out
    got = load_result(plan_dir / "result.npz")

    ref_model = _model(shot)
    ref = run_inference(ref_model, collect_inputs(paths), export_dir=str(tmp_path / "ref"), export_format="colmap",
                        **OPTIONS)
    assert ref_model.calls == model.calls == 3
    s, r = got.meta["solve"], ref.meta["solve"]
    assert r["reason"] is None and s["reason"] is None and r["rms_px_before"] > 3.0 and r["rms_px"] < 0.6
    np.testing.assert_allclose(got.extrinsics, ref.extrinsics, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got.intrinsics, ref.intrinsics, rtol=1e-4)
    assert s["tracks"] == r["tracks"] and s["rms_px"] == pytest.approx(r["rms_px"], abs=1e-3)
    assert got.tracks is not None and len(got.tracks) == s["tracks"]
    rows = [(folder / "colmap" / "sparse" / "0" / "points3D.txt").read_text().splitlines()
            for folder in (tmp_path / "farm_exports", tmp_path / "ref")]
    assert len(rows[0]) == len(rows[1]) > s["tracks"]  # the solve's tracks, exported after it
    assert got.meta["farm"]["solve"] == "done" and solve_shot(plan_dir)[2] is False  # again: nothing to redo
    farm.build_command(plan_dir)  # a solved result builds
