"""One DA3 run: images in, :class:`~da3_blender.prediction.Prediction` out (and optional exports).

:func:`run_inference` is what ``DepthAnything3.inference`` delegates to. It follows the official
pipeline (load, preprocess, normalise poses, forward, numpy Prediction, align to the user's poses,
export) and fixes its rough edges:

- posed runs with 1 or 2 views work (the official Umeyama step throws);
- ``extrinsics`` may be (N,4,4) or (N,3,4); counts are checked against the images and intrinsics;
- camera poses given to a mono/metric model raise a clear error instead of crashing in the network;
- user intrinsics given *without* extrinsics are used as the output intrinsics (the official code
  silently drops them);
- DA3METRIC-LARGE depth is turned into metres (``focal * out / 300``) when intrinsics are given;
- ``is_metric`` is always a bool; exports are written before the call returns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

import numpy as np

from . import options
from .errors import BadInputError
from .matchmove import steps as matchmove_steps
from .inputs import views as view_inputs
from .pipeline import forward, postprocess, preprocess, streaming
from .pipeline.postprocess import METRIC_FOCAL_BASE  # noqa: F401  (kept importable from here)
from .prediction import FRAME_NUMBERS_KEY, SCENE_FRAMES, Prediction

log = logging.getLogger(__name__)

ProgressFn = Callable[..., None]


def run_inference(
    model,
    image,
    extrinsics: np.ndarray | None = None,
    intrinsics: np.ndarray | None = None,
    align_to_input_ext_scale: bool = True,
    use_ray_pose: bool = False,
    ref_view_strategy: str = "saddle_balanced",
    process_res: int = 504,
    process_res_method: str = "upper_bound_resize",
    export_dir: str | os.PathLike | None = None,
    export_format: str = "mini_npz",
    conf_thresh_percentile: float = 40.0,
    num_max_points: int = 1_000_000,
    show_cameras: bool = True,
    progress: ProgressFn | None = None,
    metric_units: bool = True,
    exif_transpose: bool = True,
    ray_pose_seed: int | None = None,
    infer_gs: bool = False,
    chunk_size: int | str | None = None,
    chunk_overlap: int | None = None,
    chunk_align: str = "auto",
    refine: bool | str = False,
    refine_motion: str = options.DEFAULT_REFINE_MOTION,
    loop_closure: bool = options.DEFAULT_LOOP_CLOSURE,
    exr_resolution: str = options.DEFAULT_EXR_RESOLUTION,
    exr_half: bool = options.DEFAULT_EXR_HALF,
    exr_plate_filter: str = options.DEFAULT_EXR_PLATE_FILTER,
    **matchmove,
) -> Prediction:
    """Run ``model`` (a :class:`da3_blender.api.DepthAnything3`) on images and return a Prediction.

    ``image``: a path, a list of paths / PIL images / HxWx3 uint8 arrays, or an
    :class:`inputs.InputSet` (its source paths, frame numbers, timestamps and video info are kept).
    Images are read and reduced to the processed size one at a time (a video's frames are decoded
    one by one), so only processed-size images are ever held for the whole set.
    ``extrinsics`` (N,4,4) or (N,3,4) world-to-camera OpenCV and ``intrinsics`` (N,3,3) in pixels of
    the original images condition the network on known cameras (any-view models only).
    ``progress(stage, fraction, message)`` is called for the stages load, preprocess, forward, postprocess,
    export; raising :class:`CancelledError` from it cancels the run. ``ray_pose_seed`` seeds ``use_ray_pose``'s RANSAC.
    ``infer_gs`` (implied by the ``gs_ply`` export) also predicts 3D Gaussians (DA3-GIANT / NESTED):
    ``pred.gaussians``, in the prediction's world frame (see ``postprocess.gaussians_in_prediction_frame``).

    Long shots (:mod:`da3_blender.pipeline.streaming`): ``chunk_size`` views per pass (None: one pass; "auto": from the
    device), ``chunk_overlap`` shared views, chunks aligned by ``chunk_align`` (sim3, se3, auto) or to known
    poses; per-chunk figures in ``pred.meta["chunks"]``; ``loop_closure``: :mod:`.pipeline.streaming_loops`.
    ``refine`` (False, True or a lens of options.REFINE_LENSES; ``refine_motion``) bundle-adjusts the cameras on the
    source frames (the whole shot); figures in ``pred.meta["solve"]``; a failed solve keeps the unrefined result
    (:func:`refine_or_keep`). ``exr_*``: the exr export's options; ``matchmove``: :mod:`.matchmove.steps`.
    """
    report, _ = _Reporter(progress), matchmove_steps.check_options(**matchmove)
    plan = _check_options(model, export_dir, export_format, process_res, process_res_method, infer_gs, chunk_size,
                          chunk_overlap, chunk_align, exr_resolution, exr_plate_filter, refine, refine_motion)
    report("load", 0.0, "reading images")
    items, n, source = view_inputs.image_source(image, exif_transpose)
    extr, intr, model_name, align = _check_cameras(model, extrinsics, intrinsics, n, plan.chunking, plan.refine_lens)
    pre = _preprocess(items, n, intr, process_res, process_res_method, report)
    proc_k = None if pre.intrinsics is None else np.asarray(pre.intrinsics, dtype=np.float64)
    device = forward.model_device(model)
    run = forward.ViewRunner(model, device, pre.images, extr, proc_k, use_ray_pose, ref_view_strategy, ray_pose_seed,
                             metric_units, model_name, align_to_input_ext_scale, plan.infer_gs)
    pred, alignment, streaming_meta = _forward(run, n, plan.chunking, align, report, loop_closure)
    del run
    _add_provenance(pred, pre, source, n)
    pred.meta = _meta(model_name, source, process_res=process_res, process_res_method=process_res_method,
                      ref_view_strategy=ref_view_strategy, use_ray_pose=use_ray_pose, pose_conditioned=extr is not None,
                      user_intrinsics=intr is not None, align_to_input_ext_scale=align_to_input_ext_scale if extr is not None else None)
    _add_run_meta(pred, alignment, streaming_meta)
    report("postprocess", 1.0, "")
    if plan.refine_lens is not None:  # the whole (stitched) shot, from its source frames
        pred = refine_or_keep(pred, [image] if isinstance(image, (str, os.PathLike)) else image, plan.refine_lens,
                              refine_motion, report)
    pred = matchmove_steps.after_inference(pred, report, formats=plan.formats, device=device, **matchmove)
    if export_dir is not None:
        _export(pred, export_dir, plan.formats, report, conf_thresh_percentile=conf_thresh_percentile,
                num_max_points=num_max_points, show_cameras=show_cameras, exr_half=bool(exr_half),
                exr_resolution=exr_resolution, exr_plate_filter=exr_plate_filter)
    return pred


# --------------------------------------------------------------------------------------------
# the steps of one run


@dataclasses.dataclass
class _Plan:
    """The run's options, checked before any work."""

    formats: list[str]
    infer_gs: bool
    chunking: streaming.ChunkOptions
    refine_lens: str | None  # the camera solve's lens model, None: no solve


def _check_options(model, export_dir, export_format, process_res, process_res_method, infer_gs,
                   chunk_size, chunk_overlap, chunk_align, exr_resolution, exr_plate_filter, refine,
                   refine_motion=options.DEFAULT_REFINE_MOTION) -> _Plan:
    preprocess.check_options(process_res, process_res_method)  # fail before any work
    refine_lens = _refine_lens(refine, refine_motion)
    chunking = streaming.check_options(chunk_size, chunk_overlap, chunk_align)
    formats = parse_export_format(export_format) if export_dir is not None else []
    infer_gs = bool(infer_gs) or "gs_ply" in formats
    if "exr" in formats:  # unknown choices or a missing OpenEXR: one line before any work
        from .exports.exr import check_exr_options

        check_exr_options(exr_resolution, exr_plate_filter)
    if infer_gs:
        postprocess.check_gaussians(model)
        if chunking.size not in (None, options.AUTO_CHUNK):
            raise BadInputError("3D Gaussians (infer_gs, gs_ply) are predicted in one pass, not in chunks: leave "
                                "chunk_size unset, or turn the Gaussians off for a long shot")
        chunking = dataclasses.replace(chunking, size=None)
    return _Plan(formats, infer_gs, chunking, refine_lens)


def _refine_lens(refine, motion=options.DEFAULT_REFINE_MOTION) -> str | None:
    """The camera-solve lens for ``refine`` (checked with the motion, pycolmap present), or None; before any work."""
    if refine is None or refine is False:
        return None
    from .solve.pipeline import check_motion, lens_for_refine, require_pycolmap

    lens = lens_for_refine(refine)
    check_motion(motion)
    require_pycolmap()
    return lens


def _check_refine(model, lens: str | None, n: int) -> None:
    """What the camera solve needs that the inputs and the model tell before the network (the lens, the motion
    and pycolmap are checked with the options): two views or more, a model that predicts cameras."""
    if lens is None:
        return
    if n < 2:
        raise BadInputError(f"refining cameras needs at least 2 views (got {n}): tracks are features seen from several "
                            "cameras; give more frames of the shot, or run without --refine")
    caps = dict(getattr(model, "capabilities", {}) or {})
    if not caps.get("pose", True):
        raise BadInputError(f"model {getattr(model, 'model_name', 'unknown')} predicts no cameras to refine: use "
                            "DA3-SMALL/BASE/LARGE/GIANT or NESTED, or run without --refine")


def refine_or_keep(pred: Prediction, images, lens: str, motion: str, progress=None) -> Prediction:
    """The camera solve of ``pred`` (:func:`da3_blender.solve.refine`); when it fails (too few tracks, a static
    camera for a free solve, ...) the unrefined prediction is kept, ``meta["solve"]`` holds the reason
    (``failed``: True) and one warning line is logged (:func:`solve_warning`). A cancel still cancels."""
    from .errors import CancelledError
    from .solve import refine

    try:
        return refine(pred, images, lens=lens, motion=motion, progress=progress)
    except CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 (any solve failure keeps the network's result)
        from .errors import DA3Error

        reason = " ".join(str(exc).split()) if isinstance(exc, DA3Error) else \
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        log.debug("camera solve failed", exc_info=True)
    pred.meta = dict(pred.meta or {})
    pred.meta["solve"] = {"lens": lens, "motion": motion, "failed": True, "reason": reason, "rms_px": None,
                          "rms_px_before": None, "per_view_rms_px": None, "tracks": 0, "observations": 0,
                          "distortion": None, "kept_input_pose": list(range(pred.num_views))}
    log.warning("%s", solve_warning(pred.meta))
    return pred


def solve_warning(meta: dict | None) -> str | None:
    """The one-line warning of a failed camera solve in a result's metadata (None: no solve, or it ran)."""
    s = (meta or {}).get("solve") or {}
    if not s.get("failed"):
        return None
    return f"the camera solve failed, the DA3 cameras are kept: {s.get('reason')}"


def _check_cameras(model, extrinsics, intrinsics, n: int, chunking, refine_lens: str | None = None):
    """The user's cameras checked against the view count and the model -> (extr, intr, model name, align);
    the camera solve's needs too (``refine_lens``: :func:`_check_refine`)."""
    _check_refine(model, refine_lens, n)
    extr = view_inputs.check_extrinsics(extrinsics, n)
    intr = view_inputs.check_intrinsics(intrinsics, n, extr)
    caps = dict(getattr(model, "capabilities", {}) or {})
    model_name = str(getattr(model, "model_name", "unknown"))
    if extr is not None and not caps.get("pose_conditioning", True):
        raise BadInputError(
            f"model {model_name} does not take camera poses; use DA3-SMALL/BASE/LARGE/GIANT or NESTED, "
            "or run without extrinsics"
        )
    align = streaming.resolve_align(chunking.align, caps)
    if chunking.size is not None and chunking.overlap == 0 and extr is None and caps.get("pose", True):
        raise BadInputError(
            f"chunk_overlap 0 leaves consecutive chunks no shared view to align them by ({align}): use "
            "chunk_overlap 1 or more (None picks a default), or give known camera poses"
        )
    return extr, intr, model_name, align


def _preprocess(items, n: int, intr, process_res: int, process_res_method: str, report):
    """Images read and reduced to the processed size one at a time (see ``preprocess.prepare_images``)."""
    pre = preprocess.prepare_images(
        items, process_res=process_res, method=process_res_method, intrinsics=intr,
        on_image=lambda i: report("load", (i + 1) / n, f"image {i + 1}/{n}"),
    )
    if len(pre.images) != n:
        raise BadInputError(f"expected {n} images but {len(pre.images)} were read; pass a list of images")
    report("load", 1.0, f"{n} view{'s' * (n != 1)}")
    report("preprocess", 0.0, f"resizing to {process_res} ({process_res_method})")
    report("preprocess", 1.0, f"{pre.images.shape[2]}x{pre.images.shape[1]} px")
    return pre


def _forward(run: forward.ViewRunner, n: int, chunking, align: str, report, loop_closure: bool = False):
    """One pass, or chunks for a long shot -> (pred, alignment or None, streaming meta or None)."""
    plan = streaming.chunk_plan(n, chunking.size, chunking.overlap, run.device, run.images.shape[1:3], run.model_name)
    if plan is None:
        pred, alignment = forward.single_pass(run, n, report)
        return pred, alignment, None
    size, overlap, ranges = plan
    loop_closure = options.loop_closure_on(loop_closure, n)  # streaming_loops: on for long shots
    pred, alignment, chunks = forward.run_chunks(run, n, ranges, align, report, loop_closure)
    report("postprocess", 0.0, "building the prediction")
    meta = {"chunk_size": int(size), "chunk_overlap": int(overlap), "chunk_align": align, "chunks": chunks}
    if pred.meta and "loop_closure" in pred.meta:
        meta["loop_closure"] = pred.meta["loop_closure"]
    return pred, alignment, meta


def _add_provenance(pred: Prediction, pre, source, n: int) -> None:
    """Original sizes, the processed-to-original pixel map and where each view came from."""
    pred.orig_size = np.asarray(pre.orig_size, dtype=np.int64).reshape(n, 2)
    pred.proc_to_orig = np.asarray(pre.proc_to_orig, dtype=np.float64).reshape(n, 3, 3)
    if source is not None:
        pred.source_paths = [str(p) for p in source.source_paths]
        pred.frame_numbers = np.asarray(source.frame_numbers, dtype=np.int64)
        pred.timestamps = np.asarray(source.timestamps, dtype=np.float64)


def _add_run_meta(pred: Prediction, alignment, streaming_meta) -> None:
    """The fit onto known poses and the chunks of a long shot, in ``pred.meta``."""
    if alignment is not None:
        pred.meta["alignment_scale"] = float(alignment.scale)
    if streaming_meta is not None:
        pred.meta["streaming"] = {k: v for k, v in streaming_meta.items() if k != "chunks"}
        pred.meta["chunks"] = streaming_meta["chunks"]


def _export(pred: Prediction, export_dir, formats: list[str], report, **kwargs) -> None:
    """The export files, written before the run returns; their paths go to ``pred.meta["exported_files"]``."""
    from . import exports
    from .files import make_folder

    report("export", 0.0, f"writing {'-'.join(formats)} to {export_dir}")
    make_folder(export_dir)
    files = exports.export(pred, export_format="-".join(formats), export_dir=os.fspath(export_dir),
                           progress=lambda f: report("export", float(f), ""), **kwargs)
    pred.meta["exported_files"] = [os.fspath(f) for f in (files or [])]
    count = len(pred.meta["exported_files"])
    report("export", 1.0, f"{count} file{'s' * (count != 1)}")


def parse_export_format(export_format: str) -> list[str]:
    """Split "glb-ply" into formats, rejecting unknown ones before any work is done."""
    from . import exports

    return exports.parse_formats(export_format)


class _Reporter:
    """Calls the user's ``progress(stage, fraction, message)``; CancelledError passes through."""

    def __init__(self, progress: ProgressFn | None):
        self.progress = progress

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(stage, min(max(float(fraction), 0.0), 1.0), message)


def _meta(model_name: str, source, **options: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"model": model_name, "options": options, FRAME_NUMBERS_KEY: SCENE_FRAMES}
    if source is not None:
        meta["input_kind"] = getattr(source, "kind", "images")
        video = getattr(source, "video", None)
        if video:
            meta["video"] = {k: (v if isinstance(v, (int, float, str, type(None))) or _is_number_list(v) else str(v))
                             for k, v in dict(video).items()}
    return meta


def _is_number_list(value) -> bool:
    """A list of plain numbers (a rate [num, den], a frame range, missing frame numbers) stays a list."""
    return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
