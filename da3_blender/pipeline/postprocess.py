"""After the network: metric units, the fit onto the user's camera poses and the Gaussians' frame.

Each step works on a :class:`~da3_blender.prediction.Prediction` (a whole run's or one chunk's) in place.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import geometry
from ..errors import BadInputError
from ..prediction import Prediction

log = logging.getLogger("da3_blender.inference")

METRIC_FOCAL_BASE = 300.0  # DA3METRIC-LARGE: metres = focal_px * output / 300 (README FAQ)


def is_standalone_metric(model_name: str) -> bool:
    return model_name.lower().startswith("da3metric")


def metric_depth(pred: Prediction, proc_k: np.ndarray | None, metric_units: bool, model_name: str) -> None:
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


def align_to_inputs(pred: Prediction, extr: np.ndarray, proc_k: np.ndarray, keep_input_scale: bool):
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


def user_frame_to_prediction_frame(part: Prediction, fit) -> None:
    """Cameras and depth in the user's frame and units -> the prediction frame of ``fit`` (user -> model)."""
    part.extrinsics = geometry.apply_sim3_to_extrinsics(part.extrinsics, fit).astype(np.float32)
    part.depth = (part.depth * np.float32(fit.scale)).astype(np.float32)


def check_gaussians(model) -> None:
    """One-line error before any work unless ``model`` can predict 3D Gaussians."""
    check = getattr(model, "check_gaussians", None)
    if callable(check):
        check()
    elif not dict(getattr(model, "capabilities", {}) or {}).get("gaussians", False):
        raise BadInputError(f"model {getattr(model, 'model_name', 'unknown')} has no 3D-Gaussian head: Gaussians "
                            "(infer_gs, gs_ply) need DA3-GIANT or DA3NESTED-GIANT-LARGE")


def gaussians_in_prediction_frame(raw: dict, pred: Prediction, sim3=None):
    """The network's Gaussians (official frame) in the frame of ``pred``'s depth and cameras.

    Officially they stay in the frame the Gaussian adapter built them in: the un-scaled any-view
    prediction, times the adapter's input-pose scale. We undo that scale, apply the nested metric
    scale (as for depth and cameras) and, when the prediction was moved onto the user's poses, the
    same Sim(3) (``sim3``: pred ~ s R input + t, inverted here).
    """
    from ..results.gaussians import Gaussians
    from ..model.gs_adapter import similarity_transform

    pose_scale = float(torch.as_tensor(raw.get("pose_scale", 1.0)).reshape(-1)[0])
    gs = similarity_transform(raw, (pred.scale_factor or 1.0) / pose_scale)
    if sim3 is not None:
        rot_t = np.asarray(sim3.rotation, dtype=np.float64).T
        gs = similarity_transform(gs, 1.0 / sim3.scale, rot_t, -rot_t @ np.asarray(sim3.translation) / sim3.scale)
    return Gaussians(**{k: gs[k][0].detach().float().cpu().numpy() for k in ("means", "scales", "rotations", "harmonics",
                                                                              "opacities")})
