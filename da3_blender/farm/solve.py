"""The render farm's Solve step (``da3 farm solve DIR``): the camera solve of the whole stitched shot.

In-process ``--refine`` on a long shot solves the stitched prediction once, from every source frame
(``inference.refine_or_keep``); the farm does the same after ``align`` and ``loops`` (:mod:`.loops`):
``DIR/result.npz`` (marked ``meta["farm"]["solve"] = "pending"`` by ``align`` when the job refines) is refined from the plan's
source frames (:func:`da3_blender.farm.tasks.chunk_inputs` over all views: the decodable frames of a video),
the job's exports are written, and ``result.npz`` is replaced (``"solve": "done"``). Chunks never
solve. A solve that fails keeps the stitched cameras with the reason and a warning, as in process.
Running it again does nothing until ``align`` runs again.
"""

from __future__ import annotations

import os

from . import tasks as farm
from ..errors import BadInputError


def solve_shot(plan_dir, progress=None) -> tuple[str, object, bool]:
    """Refine the stitched shot of the plan in ``plan_dir`` -> ``(DIR/result.npz, prediction, solved)``;
    ``solved`` False: nothing to do (the plan does not refine, or this result was solved already)."""
    from .. import options as opt
    from ..inference import refine_or_keep
    from ..prediction import load_result, save_result
    from ..solve.pipeline import lens_for_refine, require_pycolmap

    progress = progress or farm._nothing
    plan = farm.read_plan(plan_dir)
    path = os.path.join(os.fspath(plan_dir), farm.RESULT_FILE)
    if not os.path.isfile(path):
        raise BadInputError(f"no {farm.RESULT_FILE} in {plan_dir}: run `da3 farm align {plan_dir}` first")
    pred = load_result(path)
    state = dict(pred.meta.get("farm") or {})
    if state.get("plan_id") != plan["plan_id"]:
        raise BadInputError(f"{path} is not the result of this plan (planned again?): run `da3 farm align {plan_dir}`")
    if state.get("loops") == "pending":  # in process too the solve takes the shot with its loops closed
        raise BadInputError(f"the loops of {path} are not closed yet: run `da3 farm loops {plan_dir}` first")
    if state.get("solve") != "pending":
        return path, pred, False
    require_pycolmap()  # the plan asks for the solve: a worker without pycolmap is an error, not a warning
    options = plan["job"]["options"]
    lens = lens_for_refine(options.get("refine"))
    motion = options.get("refine_motion") or opt.DEFAULT_REFINE_MOTION
    source = farm.chunk_inputs(plan, 0, plan["views"]["count"])  # every view's decodable frame, in view order
    pred = refine_or_keep(pred, source, lens, motion, progress)
    pred.meta = {k: v for k, v in pred.meta.items() if k != "exported_files"}
    pred.meta["farm"] = {**state, "solve": "done"}
    farm.export_shot(pred, plan["job"], progress)
    return save_result(path, pred), pred, True
