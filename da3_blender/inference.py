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

import contextlib
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from . import devices, geometry, options, preprocess, streaming
from .errors import BadInputError, CancelledError, DA3Error
from .prediction import FRAME_NUMBERS_KEY, SCENE_FRAMES, Prediction

log = logging.getLogger(__name__)

ProgressFn = Callable[..., None]

METRIC_FOCAL_BASE = 300.0  # DA3METRIC-LARGE: metres = focal_px * output / 300 (README FAQ)


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
    exr_resolution: str = options.DEFAULT_EXR_RESOLUTION,
    exr_half: bool = options.DEFAULT_EXR_HALF,
    exr_plate_filter: str = options.DEFAULT_EXR_PLATE_FILTER,
) -> Prediction:
    """Run ``model`` (a :class:`da3_blender.api.DepthAnything3`) on images and return a Prediction.

    ``image``: a path, a list of paths / PIL images / HxWx3 uint8 arrays, or an
    :class:`inputs.InputSet` (its source paths, frame numbers, timestamps and video info are kept).
    Images are read and reduced to the processed size one at a time (a video's frames are decoded
    one by one), so only processed-size images are ever held for the whole set.
    ``extrinsics`` (N,4,4) or (N,3,4) world-to-camera OpenCV and ``intrinsics`` (N,3,3) in pixels of
    the original images condition the network on known cameras (any-view models only).
    ``progress(stage, fraction, message)`` is called for the stages load, preprocess, forward,
    postprocess, export; raising :class:`CancelledError` from it cancels the run.
    ``ray_pose_seed`` seeds the RANSAC of ``use_ray_pose`` (the official code leaves it unseeded).
    ``infer_gs`` (implied by the ``gs_ply`` export) also predicts 3D Gaussians (DA3-GIANT / NESTED):
    ``pred.gaussians``, in the prediction's world frame (see ``_gaussians_in_prediction_frame``).

    Long shots (:mod:`da3_blender.streaming`): ``chunk_size`` views per forward pass (None, or >= the
    number of views: one pass; ``"auto"``: picked from the device by ``streaming.auto_chunk_size``),
    consecutive chunks sharing ``chunk_overlap`` views (None: ``options.default_chunk_overlap``), each
    chunk aligned to the views before it by ``chunk_align`` ("sim3", "se3", or "auto": se3 for metric
    models, sim3 otherwise). With known poses every chunk is aligned to them instead. Per-chunk
    ``start``, ``end``, ``scale``, ``residual`` and ``fallback`` go to ``pred.meta["chunks"]``.
    ``exr_*``: the ``exr`` export's resolution (processed or plate), half floats and plate filter.
    """
    report = _Reporter(progress)
    preprocess.check_options(process_res, process_res_method)  # fail before any work
    chunking = streaming.check_options(chunk_size, chunk_overlap, chunk_align)
    formats = parse_export_format(export_format) if export_dir is not None else []
    infer_gs = bool(infer_gs) or "gs_ply" in formats
    if "exr" in formats:  # unknown choices or a missing OpenEXR: one line before any work
        from .exports.exr import check_exr_options

        check_exr_options(exr_resolution, exr_plate_filter)
    if infer_gs:
        _check_gaussians(model)
        if chunking.size not in (None, options.AUTO_CHUNK):
            raise BadInputError("3D Gaussians (infer_gs, gs_ply) are predicted in one pass, not in chunks: leave "
                                "chunk_size unset, or turn the Gaussians off for a long shot")
        chunking = dataclasses.replace(chunking, size=None)

    # -- load -------------------------------------------------------------------------------
    report("load", 0.0, "reading images")
    items, n, source = _image_source(image, exif_transpose)
    extr = _check_extrinsics(extrinsics, n)
    intr = _check_intrinsics(intrinsics, n, extr)
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

    # -- preprocess (image by image, as they are read) --------------------------------------
    pre = preprocess.prepare_images(
        items, process_res=process_res, method=process_res_method, intrinsics=intr,
        on_image=lambda i: report("load", (i + 1) / n, f"image {i + 1}/{n}"),
    )
    if len(pre.images) != n:
        raise BadInputError(f"expected {n} images but {len(pre.images)} were read; pass a list of images")
    report("load", 1.0, f"{n} view{'s' * (n != 1)}")
    report("preprocess", 0.0, f"resizing to {process_res} ({process_res_method})")
    proc_k = None if pre.intrinsics is None else np.asarray(pre.intrinsics, dtype=np.float64)
    report("preprocess", 1.0, f"{pre.images.shape[2]}x{pre.images.shape[1]} px")

    device = _model_device(model)
    plan = streaming.chunk_plan(n, chunking.size, chunking.overlap, device, pre.images.shape[1:3], model_name)
    run = _ViewRunner(model, device, pre.images, extr, proc_k, use_ray_pose, ref_view_strategy, ray_pose_seed,
                      metric_units, model_name, align_to_input_ext_scale, infer_gs)

    if plan is None:
        # -- forward: one pass ------------------------------------------------------------------
        report("forward", 0.0, "running the network")
        tensor = preprocess.normalize(pre.images)
        raw = run.forward(tensor, 0, n, lambda f: report("forward", float(f), ""))
        report("forward", 1.0, "")
        report("postprocess", 0.0, "building the prediction")
        pred = _to_prediction(raw, n)
        pred.processed_images = preprocess.denormalize_to_uint8(tensor)
        del tensor
        alignment = run.postprocess(pred, 0, n, align_to_input_ext_scale)
        if raw.get("gaussians") is not None:
            pred.gaussians = _gaussians_in_prediction_frame(raw["gaussians"], pred,
                                                            alignment if align_to_input_ext_scale else None)
        del raw
        chunks_meta = None
    else:
        size, overlap, chunks = plan
        pred, alignment, chunks_meta = _run_chunks(run, n, chunks, align, report)
        report("postprocess", 0.0, "building the prediction")
        chunks_meta = {"chunk_size": int(size), "chunk_overlap": int(overlap), "chunk_align": align,
                       "chunks": chunks_meta}
    del run
    pred.orig_size = np.asarray(pre.orig_size, dtype=np.int64).reshape(n, 2)
    pred.proc_to_orig = np.asarray(pre.proc_to_orig, dtype=np.float64).reshape(n, 3, 3)
    if source is not None:
        pred.source_paths = [str(p) for p in source.source_paths]
        pred.frame_numbers = np.asarray(source.frame_numbers, dtype=np.int64)
        pred.timestamps = np.asarray(source.timestamps, dtype=np.float64)

    pred.meta = _meta(
        model_name,
        source,
        process_res=process_res,
        process_res_method=process_res_method,
        ref_view_strategy=ref_view_strategy,
        use_ray_pose=use_ray_pose,
        pose_conditioned=extr is not None,
        user_intrinsics=intr is not None,
        align_to_input_ext_scale=align_to_input_ext_scale if extr is not None else None,
    )
    if alignment is not None:
        pred.meta["alignment_scale"] = float(alignment.scale)
    if chunks_meta is not None:
        pred.meta["streaming"] = {k: v for k, v in chunks_meta.items() if k != "chunks"}
        pred.meta["chunks"] = chunks_meta["chunks"]
    report("postprocess", 1.0, "")

    # -- export -----------------------------------------------------------------------------
    if export_dir is not None:
        report("export", 0.0, f"writing {'-'.join(formats)} to {export_dir}")
        from . import exports
        from .files import make_folder

        make_folder(export_dir)
        files = exports.export(
            pred,
            export_format="-".join(formats),
            export_dir=os.fspath(export_dir),
            conf_thresh_percentile=conf_thresh_percentile,
            num_max_points=num_max_points,
            show_cameras=show_cameras,
            exr_half=bool(exr_half),
            exr_resolution=exr_resolution,
            exr_plate_filter=exr_plate_filter,
            progress=lambda f: report("export", float(f), ""),
        )
        pred.meta["exported_files"] = [os.fspath(f) for f in (files or [])]
        count = len(pred.meta["exported_files"])
        report("export", 1.0, f"{count} file{'s' * (count != 1)}")
    return pred


class _ViewRunner:
    """One forward over views ``start..end`` of the processed images, and the per-view postprocessing
    (user intrinsics, metric units, alignment to the user's poses) that a chunk needs on its own."""

    def __init__(self, model, device, images, extr, proc_k, use_ray_pose, ref_view_strategy, ray_pose_seed,
                 metric_units, model_name, keep_input_scale, infer_gs=False):
        self.model, self.device, self.images = model, device, images
        self.extr, self.proc_k = extr, proc_k
        self.use_ray_pose, self.ref_view_strategy = use_ray_pose, ref_view_strategy
        self.seed = {"ray_pose_seed": int(ray_pose_seed)} if use_ray_pose and ray_pose_seed is not None else {}
        if infer_gs:  # passed only when asked: stand-in models need not know the keyword
            self.seed["infer_gs"] = True
        self.metric_units, self.model_name = metric_units, model_name
        self.keep_input_scale = keep_input_scale

    def forward(self, tensor, start: int, end: int, progress) -> dict:
        with _out_of_memory_as_da3_error(str(self.device)):
            x = tensor.to(device=self.device, dtype=torch.float32)[None]
            ex_t = in_t = None
            if self.extr is not None:
                from .model.transforms import normalize_extrinsics

                ex_t = normalize_extrinsics(torch.as_tensor(self.extr[start:end], dtype=torch.float32, device=self.device)[None])
                in_t = torch.as_tensor(self.proc_k[start:end], dtype=torch.float32, device=self.device)[None]
            with torch.inference_mode():
                raw = self.model.forward(
                    x,
                    extrinsics=ex_t,
                    intrinsics=in_t,
                    use_ray_pose=self.use_ray_pose,
                    ref_view_strategy=self.ref_view_strategy,
                    progress=progress,
                    **self.seed,
                )
            del x
            return {k: (v.detach().float().cpu() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in raw.items()}

    def postprocess(self, pred: Prediction, start: int, end: int, keep_input_scale: bool):
        """User intrinsics, metric units, alignment to the user's poses; returns the alignment or None."""
        proc_k = None if self.proc_k is None else self.proc_k[start:end]
        if proc_k is not None and self.extr is None:
            # Official DA3 ignores intrinsics given without poses; we keep the user's cameras.
            pred.intrinsics = proc_k.astype(np.float32)
        if _is_standalone_metric(self.model_name):
            _metric_depth(pred, proc_k, self.metric_units, self.model_name)
        if self.extr is not None:
            return _align_to_inputs(pred, self.extr[start:end], proc_k, keep_input_scale)
        return None


def _run_chunks(run: _ViewRunner, n: int, chunks: list[tuple[int, int]], align: str, report: _Reporter):
    """Every chunk through the network, aligned and stitched (see :mod:`da3_blender.streaming`).

    Returns ``(pred, alignment to the user's poses or None, per-chunk meta)``. The processed images are
    written over the input images in place once no later chunk needs them (the same values a single
    pass gives), so they cost no second copy.
    """
    stitcher = streaming.Stitcher(n, with_scale=align == "sim3")
    images = run.images
    count = len(chunks)
    started = time.monotonic()
    first_alignment = None
    converted = 0  # images[:converted] hold processed (denormalised) images
    log.info("streaming %d views in %d chunks of %d (%s alignment)", n, count, chunks[0][1] - chunks[0][0], align)
    for k, (start, end) in enumerate(chunks):
        label = f"chunk {k + 1}/{count} (frames {start + 1}-{end})"
        eta = "" if k == 0 else streaming.eta_text((time.monotonic() - started) / k * (count - k))
        message = f"{label}, {eta}" if eta else label
        report("forward", k / count, message)
        try:
            tensor = preprocess.normalize(images[start:end])
            raw = run.forward(tensor, start, end, lambda f, k=k, m=message: report("forward", (k + float(f)) / count, m))
            del tensor
            part = _to_prediction(raw, end - start)
            del raw
            # known poses: chunk 0 as a single pass would be; later chunks in the user's frame, then (with
            # align_to_input_ext_scale False) taken into chunk 0's prediction frame by chunk 0's fit
            alignment = run.postprocess(part, start, end, run.keep_input_scale or k > 0)
            if k == 0:
                first_alignment = alignment
            elif alignment is not None and not run.keep_input_scale:
                _user_frame_to_prediction_frame(part, first_alignment)
            entry = stitcher.add_part(start, end, part, aligned=run.extr is not None, label=label)
            if alignment is not None:
                entry["scale"] = float(alignment.scale)
        except (CancelledError, KeyboardInterrupt):
            raise
        except DA3Error as exc:
            raise _error_in_chunk(exc, label) from None
        except Exception as exc:
            raise DA3Error(f"{label} failed: {type(exc).__name__}: {exc}") from exc
        next_start = chunks[k + 1][0] if k + 1 < count else n
        if next_start > converted:
            images[converted:next_start] = preprocess.denormalize_to_uint8(preprocess.normalize(images[converted:next_start]))
            converted = next_start
    report("forward", 1.0, f"{count} chunks")
    pred = stitcher.prediction(images)
    log.info("streaming: %s", streaming.chunk_residual_summary(stitcher.chunks))
    return pred, first_alignment, stitcher.chunks


def _user_frame_to_prediction_frame(part: Prediction, fit) -> None:
    """Cameras and depth in the user's frame and units -> the prediction frame of ``fit`` (user -> model)."""
    part.extrinsics = geometry.apply_sim3_to_extrinsics(part.extrinsics, fit).astype(np.float32)
    part.depth = (part.depth * np.float32(fit.scale)).astype(np.float32)


def _error_in_chunk(exc: DA3Error, label: str) -> DA3Error:
    """The same kind of error, its one line prefixed with the chunk and its frames."""
    message = f"{label}: {exc}"
    try:
        err = type(exc)(message)
    except TypeError:
        err = DA3Error(message)
    err.kind = exc.kind
    return err


# --------------------------------------------------------------------------------------------
# inputs


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


def _is_input_set(obj) -> bool:
    return all(hasattr(obj, a) for a in ("images", "source_paths", "frame_numbers", "timestamps"))


def _image_source(image, exif_transpose: bool):
    """-> (iterator of HxWx3 uint8 arrays, view count, InputSet/_PathSource or None).

    Nothing is decoded here: paths are read, and an InputSet's images (a video: decoded frame by frame)
    taken, one at a time as the iterator is consumed.
    """
    if _is_input_set(image):
        items = image.images
        if len(items) == 0:
            raise BadInputError("the input set has no images")
        return (_as_rgb_array(im, exif_transpose) for im in items), len(items), image
    if isinstance(image, (str, os.PathLike)):
        items: list = [image]
    elif isinstance(image, np.ndarray) and image.ndim == 4:
        items = list(image)
    elif isinstance(image, np.ndarray) or _is_pil(image):
        items = [image]
    elif isinstance(image, Sequence) or hasattr(image, "__iter__"):
        items = list(image)
    else:
        raise BadInputError(
            f"cannot read images from a {type(image).__name__}: pass a path, or a list of paths, PIL images or "
            "HxWx3 uint8 arrays"
        )
    if not items:
        raise BadInputError("no images given: pass at least one image path, PIL image or HxWx3 uint8 array")

    def read():
        from .inputs import load_image

        for item in items:
            if isinstance(item, (str, os.PathLike)):
                yield load_image(item, exif_transpose=exif_transpose)
            else:
                yield _as_rgb_array(item, exif_transpose)

    source = _PathSource([os.fspath(p) for p in items]) if all(isinstance(it, (str, os.PathLike)) for it in items) else None
    return read(), len(items), source


class _PathSource:
    """Provenance for a plain list of paths (same attributes as an InputSet)."""

    kind = "images"
    video = None

    def __init__(self, paths: list[str]):
        from .inputs import frame_number_from_name

        self.source_paths = paths
        # the same rule as inputs.collect_inputs, so both paths give the same provenance
        self.frame_numbers = np.array([frame_number_from_name(p) for p in paths], dtype=np.int64)
        self.timestamps = np.full(len(paths), np.nan)


def _is_pil(obj) -> bool:
    return isinstance(obj, Image.Image)


def _as_rgb_array(item, exif_transpose: bool) -> np.ndarray:
    """PIL image -> HxWx3 uint8 RGB (alpha dropped, as the official ``convert("RGB")``); arrays pass
    through (``preprocess`` validates them)."""
    if _is_pil(item):
        if exif_transpose:
            item = ImageOps.exif_transpose(item)
        return np.asarray(item.convert("RGB"), dtype=np.uint8)
    return np.asarray(item)


def _float_array(value, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"{name} must be an array of numbers") from None


def _check_extrinsics(extrinsics, n: int) -> np.ndarray | None:
    """-> (N,4,4) float64 world-to-camera, or None."""
    if extrinsics is None:
        return None
    ext = _float_array(extrinsics, "extrinsics")
    if ext.ndim == 2 and n == 1:
        ext = ext[None]
    if ext.ndim != 3 or ext.shape[1:] not in ((4, 4), (3, 4)):
        raise BadInputError(f"extrinsics have shape {ext.shape}: pass (N,4,4) or (N,3,4) world-to-camera matrices")
    if ext.shape[0] != n:
        raise BadInputError(f"got {ext.shape[0]} extrinsics for {n} images: pass one world-to-camera matrix per image")
    if not np.all(np.isfinite(ext)):
        raise BadInputError("extrinsics contain NaN or infinite values")
    ext = geometry.to_4x4(ext)
    rot = ext[:, :3, :3]
    error = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max()
    if error > 1e-3 or np.any(np.linalg.det(rot) < 0):
        raise BadInputError(
            f"extrinsics are not rigid (rotation block off by {error:.2g}, or a reflection): pass world-to-camera "
            "[R|t] matrices with R a rotation"
        )
    return ext


def _check_intrinsics(intrinsics, n: int, extrinsics) -> np.ndarray | None:
    """-> (N,3,3) float64 in original-image pixels, or None."""
    if intrinsics is None:
        if extrinsics is not None:
            raise BadInputError(
                "camera poses need intrinsics too: pass intrinsics (N,3,3) in pixels of the original images"
            )
        return None
    k = _float_array(intrinsics, "intrinsics")
    if k.ndim == 2 and n == 1:
        k = k[None]
    if k.ndim != 3 or k.shape[1:] != (3, 3):
        raise BadInputError(f"intrinsics have shape {k.shape}: pass (N,3,3) pixel intrinsics")
    if k.shape[0] != n:
        extra = "" if extrinsics is None else f" and {len(extrinsics)} extrinsics"
        raise BadInputError(f"got {k.shape[0]} intrinsics for {n} images{extra}: pass one 3x3 matrix per image")
    if not np.all(np.isfinite(k)) or np.any(k[:, 0, 0] <= 0) or np.any(k[:, 1, 1] <= 0):
        raise BadInputError("intrinsics must be finite with positive focal lengths fx, fy")
    return k


# --------------------------------------------------------------------------------------------
# model call


def _model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def _out_of_memory_as_da3_error(device: str | None = None):
    try:
        yield
    except (DA3Error, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not devices.is_out_of_memory(exc):
            raise
        err = devices.out_of_memory_error(exc, device)
        del exc
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise err from None


# --------------------------------------------------------------------------------------------
# outputs


def _numpy(raw: dict, key: str, n: int, tail: tuple[int, ...] | None = None) -> np.ndarray | None:
    value = raw.get(key)
    if value is None:
        return None
    arr = value.numpy() if torch.is_tensor(value) else np.asarray(value)
    arr = np.asarray(arr, dtype=np.float32)
    if tail is None:  # (B,N,H,W) or (B,N,1,H,W) -> (N,H,W)
        return arr.reshape(n, *arr.shape[-2:])
    return arr.reshape(n, *arr.shape[-len(tail) :])


def _to_prediction(raw: dict, n: int) -> Prediction:
    depth = _numpy(raw, "depth", n)
    extr = _numpy(raw, "extrinsics", n, (4, 4) if _last2(raw.get("extrinsics")) == (4, 4) else (3, 4))
    if extr is not None:
        extr = extr[:, :3, :]
    intr = _numpy(raw, "intrinsics", n, (3, 3))
    sky_prob = _numpy(raw, "sky", n)
    is_metric = raw.get("is_metric", False)
    is_metric = bool(is_metric.item() if torch.is_tensor(is_metric) else is_metric)
    scale = raw.get("scale_factor")
    scale = None if scale is None else float(scale.item() if torch.is_tensor(scale) else scale)
    return Prediction(
        depth=np.ascontiguousarray(depth),
        conf=_numpy(raw, "depth_conf", n),
        extrinsics=None if extr is None else np.ascontiguousarray(extr),
        intrinsics=intr,
        sky=None if sky_prob is None else sky_prob >= 0.5,
        is_metric=is_metric,
        scale_factor=scale,
    )


def _last2(value) -> tuple[int, ...] | None:
    return None if value is None else tuple(value.shape[-2:])


def _is_standalone_metric(model_name: str) -> bool:
    return model_name.lower().startswith("da3metric")


def _metric_depth(pred: Prediction, proc_k: np.ndarray | None, metric_units: bool, model_name: str) -> None:
    """DA3METRIC-LARGE outputs depth * 300 / focal; with the user's focal we can give metres."""
    if not metric_units:
        return
    if proc_k is None:
        log.warning(
            "%s depth is not in metres without the camera focal length: pass intrinsics (N,3,3) in pixels of "
            "the original images (depth_m = focal_px * depth / 300), or use DA3NESTED-GIANT-LARGE for metres",
            model_name,
        )
        return
    focal = 0.5 * (proc_k[:, 0, 0] + proc_k[:, 1, 1])
    pred.depth = (pred.depth * (focal / METRIC_FOCAL_BASE)[:, None, None]).astype(np.float32)
    pred.is_metric = True


def _align_to_inputs(pred: Prediction, extr: np.ndarray, proc_k: np.ndarray, keep_input_scale: bool):
    """Fit the predicted poses to the user's (Sim3) and express the result in the user's frame and scale
    (``keep_input_scale``) or the user's cameras in the prediction frame (spec §7.2)."""
    if pred.extrinsics is None:
        raise BadInputError("the model returned no camera poses to align to the input poses")
    out = geometry.align_prediction_to_input_poses(
        {"depth": pred.depth, "extrinsics": pred.extrinsics}, extr, proc_k, align_to_input_ext_scale=keep_input_scale
    )
    pred.depth = np.asarray(out["depth"], dtype=np.float32)
    pred.extrinsics = np.asarray(out["extrinsics"], dtype=np.float32)
    pred.intrinsics = np.asarray(out["intrinsics"], dtype=np.float32)
    pred.meta["alignment_scale"] = float(out["sim3"].scale)
    return out["sim3"]


def _check_gaussians(model) -> None:
    """One-line error before any work unless ``model`` can predict 3D Gaussians."""
    check = getattr(model, "check_gaussians", None)
    if callable(check):
        check()
    elif not dict(getattr(model, "capabilities", {}) or {}).get("gaussians", False):
        raise BadInputError(f"model {getattr(model, 'model_name', 'unknown')} has no 3D-Gaussian head: Gaussians "
                            "(infer_gs, gs_ply) need DA3-GIANT or DA3NESTED-GIANT-LARGE")


def _gaussians_in_prediction_frame(raw: dict, pred: Prediction, sim3=None):
    """The network's Gaussians (official frame) in the frame of ``pred``'s depth and cameras.

    Officially they stay in the frame the Gaussian adapter built them in: the un-scaled any-view
    prediction, times the adapter's input-pose scale. We undo that scale, apply the nested metric
    scale (as for depth and cameras) and, when the prediction was moved onto the user's poses, the
    same Sim(3) (``sim3``: pred ~ s R input + t, inverted here).
    """
    from .gaussians import Gaussians
    from .model.gs_adapter import similarity_transform

    pose_scale = float(torch.as_tensor(raw.get("pose_scale", 1.0)).reshape(-1)[0])
    gs = similarity_transform(raw, (pred.scale_factor or 1.0) / pose_scale)
    if sim3 is not None:
        rot_t = np.asarray(sim3.rotation, dtype=np.float64).T
        gs = similarity_transform(gs, 1.0 / sim3.scale, rot_t, -rot_t @ np.asarray(sim3.translation) / sim3.scale)
    return Gaussians(**{k: gs[k][0].detach().float().cpu().numpy() for k in ("means", "scales", "rotations", "harmonics",
                                                                              "opacities")})


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
