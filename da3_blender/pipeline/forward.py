"""The network passes of one run: :class:`ViewRunner` (one ``model.forward`` over a range of views and
that range's post-processing), :func:`single_pass` over every view, and :func:`run_chunks`, the long-shot
orchestration that stitches chunks with :mod:`da3_blender.pipeline.streaming` (numpy only).

The model is driven only through ``model.forward(...)`` (tests swap in a ground-truth stand-in).
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch

from .. import devices
from . import postprocess, preprocess, streaming
from ..errors import CancelledError, DA3Error
from ..prediction import Prediction

log = logging.getLogger("da3_blender.inference")


class ViewRunner:
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
        with out_of_memory_as_da3_error(str(self.device)):
            x = tensor.to(device=self.device, dtype=torch.float32)[None]
            ex_t = in_t = None
            if self.extr is not None:
                from ..model.transforms import normalize_extrinsics

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
        if postprocess.is_standalone_metric(self.model_name):
            postprocess.metric_depth(pred, proc_k, self.metric_units, self.model_name)
        if self.extr is not None:
            return postprocess.align_to_inputs(pred, self.extr[start:end], proc_k, keep_input_scale)
        return None


def single_pass(run: ViewRunner, n: int, report):
    """Every view in one forward -> ``(pred, alignment to the user's poses or None)``."""
    report("forward", 0.0, "running the network")
    tensor = preprocess.normalize(run.images)
    raw = run.forward(tensor, 0, n, lambda f: report("forward", float(f), ""))
    report("forward", 1.0, "")
    report("postprocess", 0.0, "building the prediction")
    pred = to_prediction(raw, n)
    pred.processed_images = preprocess.denormalize_to_uint8(tensor)
    del tensor
    alignment = run.postprocess(pred, 0, n, run.keep_input_scale)
    if raw.get("gaussians") is not None:
        pred.gaussians = postprocess.gaussians_in_prediction_frame(
            raw["gaussians"], pred, alignment if run.keep_input_scale else None)
    return pred, alignment


def run_chunks(run: ViewRunner, n: int, chunks: list[tuple[int, int]], align: str, report, loop_closure=False):
    """Every chunk through the network, aligned and stitched (see :mod:`da3_blender.pipeline.streaming`).

    ``loop_closure``: close the loops of a shot that revisits a place (:mod:`.streaming_loops`; figures in
    ``pred.meta["loop_closure"]``). Returns ``(pred, alignment to the user's poses or None, per-chunk
    meta)``. The processed images are written over the input images in place once no later chunk needs
    them (the same values a single pass gives), so they cost no second copy.
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
            alignment = _one_chunk(run, stitcher, k, start, end, first_alignment, label,
                                   lambda f, k=k, m=message: report("forward", (k + float(f)) / count, m))
            first_alignment = alignment if k == 0 else first_alignment
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
    figures = None
    if loop_closure and run.extr is None:  # known poses: the chunks are in the user's frame already
        from .streaming_loops import close_loops

        figures = close_loops(images, stitcher, chunks, report, lambda views, progress: views_forward(run, views, progress))
    pred = stitcher.prediction(images)
    if figures is not None:
        pred.meta = {**(pred.meta or {}), "loop_closure": figures}
    log.info("streaming: %s", streaming.chunk_residual_summary(stitcher.chunks))
    return pred, first_alignment, stitcher.chunks


def views_forward(run: ViewRunner, views: list, progress) -> Prediction:
    """Any views (a loop chunk: two places of the shot) through the network together, unaligned; ``run.images``
    hold the processed images (farm jobs: the stitched result's, :mod:`da3_blender.farm.loops`)."""
    part = to_prediction(run.forward(preprocess.normalize(run.images[views]), 0, len(views), progress), len(views))
    if run.proc_k is not None:
        part.intrinsics = np.asarray(run.proc_k, dtype=np.float32)[views]
    return part


def _one_chunk(run: ViewRunner, stitcher, k: int, start: int, end: int, first_alignment, label: str, progress):
    """Chunk ``k`` (views ``start..end``) through the network and into ``stitcher``; -> its alignment."""
    tensor = preprocess.normalize(run.images[start:end])
    raw = run.forward(tensor, start, end, progress)
    del tensor
    part = to_prediction(raw, end - start)
    del raw
    # known poses: chunk 0 as a single pass would be; later chunks in the user's frame, then (with
    # align_to_input_ext_scale False) taken into chunk 0's prediction frame by chunk 0's fit
    alignment = run.postprocess(part, start, end, run.keep_input_scale or k > 0)
    if k > 0 and alignment is not None and not run.keep_input_scale:
        postprocess.user_frame_to_prediction_frame(part, first_alignment)
    entry = stitcher.add_part(start, end, part, aligned=run.extr is not None, label=label)
    if alignment is not None:
        entry["scale"] = float(alignment.scale)
    return alignment


def _error_in_chunk(exc: DA3Error, label: str) -> DA3Error:
    """The same kind of error, its one line prefixed with the chunk and its frames."""
    message = f"{label}: {exc}"
    try:
        err = type(exc)(message)
    except TypeError:
        err = DA3Error(message)
    err.kind = exc.kind
    return err


def model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def out_of_memory_as_da3_error(device: str | None = None):
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


def _numpy(raw: dict, key: str, n: int, tail: tuple[int, ...] | None = None) -> np.ndarray | None:
    value = raw.get(key)
    if value is None:
        return None
    arr = value.numpy() if torch.is_tensor(value) else np.asarray(value)
    arr = np.asarray(arr, dtype=np.float32)
    if tail is None:  # (B,N,H,W) or (B,N,1,H,W) -> (N,H,W)
        return arr.reshape(n, *arr.shape[-2:])
    return arr.reshape(n, *arr.shape[-len(tail) :])


def to_prediction(raw: dict, n: int) -> Prediction:
    """The network's output dict (tensors) -> a numpy :class:`Prediction` of ``n`` views."""
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
