"""``gs_ply/0000.ply``: the 3D Gaussians in the standard 3DGS PLY layout (splat viewers, Blender splat add-ons).

As the official ``export_to_gs_ply`` / ``save_gaussian_ply``: one binary little-endian ``vertex``
element of float32 properties ``x y z``, ``nx ny nz`` (zeros), ``f_dc_0..2`` (the DC SH coefficient
of R, G, B), ``opacity`` (a logit), ``scale_0..2`` (natural logs), ``rot_0..3`` (quaternion w x y z);
with ``sh_dc_only=False`` also ``f_rest_0..23`` (bands 1-2, colour-major as 3DGS stores them) before
``opacity``. Coordinates are the prediction's world frame (OpenCV axes, as ``points.ply``).

Pruning (official defaults): Gaussians of border pixels (``int(8/256*H)`` rows, ``int(8/256*W)``
columns), of pixels deeper than their view's 90 % depth quantile, and of views not on the
``views_interval`` grid are dropped (:func:`da3_blender.results.gaussians.per_pixel_mask`).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BadInputError
from ..files import make_folder
from ..results.gaussians import per_pixel_mask
from ..prediction import Prediction
from .ply import write_ply

DEFAULT_VIEWS_INTERVAL = 1
DEFAULT_DEPTH_PERCENTILE = 0.9


def check_gs_input(pred: Prediction) -> None:
    if pred.gaussians is None:
        raise BadInputError("the gs_ply export needs 3D Gaussians: run DA3-GIANT or DA3NESTED-GIANT-LARGE with infer_gs")
    problem = pred.gaussians.check(int(np.prod(pred.depth.shape)))
    if problem:
        raise BadInputError(f"cannot export gs_ply: {problem}")


def ply_fields(num_rest: int = 0) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(num_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def gaussian_vertices(gs, sh_dc_only: bool = True) -> np.ndarray:
    """Structured float32 array with the 3DGS PLY properties of ``gs`` (a :class:`Gaussians`)."""
    rest = gs.harmonics[:, :, 1:].reshape(len(gs), -1)
    names = ply_fields(0 if sh_dc_only else rest.shape[1])
    out = np.zeros(len(gs), dtype=[(name, "<f4") for name in names])
    with np.errstate(divide="ignore"):  # opacity exactly 0 or 1 -> -inf / inf, as the official writer
        columns = {"opacity": np.log(gs.opacities / (1 - gs.opacities)), **{
            f"scale_{i}": np.log(gs.scales[:, i]) for i in range(3)}}
    for i, axis in enumerate("xyz"):
        columns[axis] = gs.means[:, i]
    for i in range(3):
        columns[f"f_dc_{i}"] = gs.harmonics[:, i, 0]
    for i in range(4):
        columns[f"rot_{i}"] = gs.rotations[:, i]
    if not sh_dc_only:
        for i in range(rest.shape[1]):
            columns[f"f_rest_{i}"] = rest[:, i]
    for name, values in columns.items():
        out[name] = values
    return out


def export_gs_ply(pred: Prediction, export_dir: str, views_interval: int = DEFAULT_VIEWS_INTERVAL,
                  depth_percentile: float | None = DEFAULT_DEPTH_PERCENTILE, prune_border: bool = True,
                  sh_dc_only: bool = True) -> list[str]:
    check_gs_input(pred)
    if int(views_interval) < 1:
        raise BadInputError(f"gs_views_interval must be at least 1, got {views_interval}")
    keep = per_pixel_mask(pred.depth, views_interval, depth_percentile, prune_border).reshape(-1)
    vertices = gaussian_vertices(pred.gaussians.subset(keep), sh_dc_only)
    path = os.path.join(make_folder(os.path.join(export_dir, "gs_ply")), "0000.ply")
    write_ply(path, vertices)
    return [path]
