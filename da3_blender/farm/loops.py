"""The render farm's Loops step (``da3 farm loops DIR``): loop closure of a long shot, as in process.

In process, a streamed shot of ``options.LOOP_MIN_FRAMES`` views or more with ``loop_closure`` on (the
default; the rule is :func:`da3_blender.options.loop_closure_on`) closes its loops after its last chunk
(:mod:`da3_blender.pipeline.streaming_loops`). On the farm that is a step between Align and Solve:
``align`` marks ``DIR/result.npz`` ``meta["farm"]["loops"] = "pending"`` (its exports wait), and this
step runs :func:`~da3_blender.pipeline.streaming_loops.close_loops` on the stitched shot: the same
retrieval on the stitched processed images, the loop chunks through the network (the processed images
of ``result.npz``, as in process; the model is loaded only when a candidate loop is found, so the task
wants a worker like Forward's), the chunks' pose graph, every view corrected. ``result.npz`` is replaced
(``"loops": "done"``, the figures in ``meta["streaming"]["loop_closure"]``) and the exports are written
unless Solve follows. A shot that never comes back keeps Align's cameras; a short shot or a plan with
loop closure off has nothing to do here. Running it again does nothing until ``align`` runs again.
"""

from __future__ import annotations

import inspect
import os

from . import tasks as farm
from ..errors import BadInputError


def close_shot_loops(plan_dir, device: str | None = None, model=None, progress=None) -> tuple[str, object, bool]:
    """Close the loops of the stitched shot in ``plan_dir`` -> ``(DIR/result.npz, prediction, closed)``;
    ``closed`` False: nothing to do (no loop closure in this plan, or done already). ``model``: a loaded
    model (else the plan's, on ``device`` or the plan's device, loaded at the first loop chunk)."""
    from ..pipeline import streaming
    from ..pipeline.streaming_loops import close_loops
    from ..prediction import load_result, save_result

    progress = progress or farm._nothing
    plan = farm.read_plan(plan_dir)
    path = os.path.join(os.fspath(plan_dir), farm.RESULT_FILE)
    if not os.path.isfile(path):
        raise BadInputError(f"no {farm.RESULT_FILE} in {plan_dir}: run `da3 farm align {plan_dir}` first")
    if device is not None:
        from ..job import check_device

        check_device(device)
    pred = load_result(path)
    state = dict(pred.meta.get("farm") or {})
    if state.get("plan_id") != plan["plan_id"]:
        raise BadInputError(f"{path} is not the result of this plan (planned again?): run `da3 farm align {plan_dir}`")
    if state.get("loops") != "pending":
        return path, pred, False
    stitcher = streaming.Stitcher(pred.num_views, with_scale=pred.meta["streaming"]["chunk_align"] == "sim3")
    stitcher.arrays = {"depth": pred.depth, "conf": pred.conf, "extrinsics": pred.extrinsics,
                       "intrinsics": pred.intrinsics}  # corrected in place
    chunks = [(c["start"], c["end"]) for c in plan["chunks"]]
    forward_views = _views_forward(plan["job"], pred.processed_images, device, model, progress)
    figures = close_loops(pred.processed_images, stitcher, chunks, progress, forward_views)
    pred.meta = {k: v for k, v in pred.meta.items() if k != "exported_files"}
    pred.meta["streaming"] = {**pred.meta["streaming"], "loop_closure": figures}
    pred.meta["farm"] = {**state, "loops": "done"}
    if state.get("solve") != "pending":  # else the Solve step writes them
        farm.export_shot(pred, plan["job"], progress)
    return save_result(path, pred), pred, True


def _views_forward(job: dict, images, device, model, progress):
    """``forward_views(views, progress)`` for :func:`close_loops`: the views' processed images through the
    model together, with the job's forward options (run_inference's defaults for those it leaves out)."""
    from ..inference import run_inference
    from ..job import inference_kwargs
    from ..pipeline import forward

    runner = []

    def forward_views(views, view_progress):
        if not runner:
            loaded = model if model is not None else farm._load_model(job, device or job["device"], progress)
            kw = {name: p.default for name, p in inspect.signature(run_inference).parameters.items()}
            kw.update(inference_kwargs(job))
            runner.append(forward.ViewRunner(
                loaded, forward.model_device(loaded), images, None, None, kw["use_ray_pose"], kw["ref_view_strategy"],
                kw["ray_pose_seed"], kw["metric_units"], str(getattr(loaded, "model_name", job["model"])),
                kw["align_to_input_ext_scale"]))
        return forward.views_forward(runner[0], views, view_progress)

    return forward_views
