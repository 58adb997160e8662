"""Exports of a :class:`~da3_blender.prediction.Prediction` to files, without trimesh/open3d/cv2.

``export(pred, "glb-mini_npz", export_dir)`` writes each ``-``-separated format in order and
returns the paths written. Every file is written synchronously (the official ``npz`` writes are
asynchronous) and atomically (temp file + rename). Formats and where they go (under export_dir):

=============  =================================================  =======================================
format         file(s)                                            needs
=============  =================================================  =======================================
``mini_npz``   ``exports/mini_npz/results.npz``                   depth
``npz``        ``exports/npz/results.npz``                        depth, processed images
``glb``        ``scene.glb``                                      intrinsics; extrinsics if several views
``ply``        ``points.ply``                                     intrinsics; extrinsics if several views
``colmap``     ``colmap/sparse/0/{cameras,images,points3D}.txt``  intrinsics; extrinsics if several views
``depth_vis``  ``depth_vis/{i:04d}.png``                          depth
``gs_ply``     ``gs_ply/0000.ply``                                Gaussians (``infer_gs``, giant models)
=============  =================================================  =======================================

Point exports lift pixels at their centres (K in pixel-edge coordinates), deliberately fixing the
official half-pixel offset. A prediction without confidence (mono/metric models) keeps every
pixel with finite depth > 0 (sky pixels are always dropped); one without cameras can only give
point exports when it has intrinsics, and a single view is then placed at the origin.
"""

from __future__ import annotations

import os
from typing import Callable

from ..errors import BadInputError
from ..prediction import Prediction
from .colmap import export_colmap, read_colmap_text
from .depth_vis import export_depth_vis
from ..files import make_folder
from .glb import export_glb
from .gs_ply import check_gs_input, export_gs_ply
from .npz import check_npz_input, export_mini_npz, export_npz
from .ply import export_ply
from .points import cameras_for_points

FORMATS = ("mini_npz", "npz", "glb", "ply", "colmap", "depth_vis", "gs_ply")
POINT_FORMATS = ("glb", "ply", "colmap")


def parse_formats(export_format: str) -> list[str]:
    """``"glb-mini_npz"`` -> ``["glb", "mini_npz"]`` (duplicates dropped), or BadInputError."""
    names = [f.strip() for f in str(export_format or "").split("-")]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise BadInputError(
            f"unknown export format {', '.join(repr(f) for f in unknown)} in {export_format!r}; "
            f"valid formats are {', '.join(FORMATS)}, joined with '-' (e.g. 'glb-mini_npz')"
        )
    return list(dict.fromkeys(names))


def export(
    prediction: Prediction,
    export_format: str = "mini_npz",
    export_dir: str | os.PathLike | None = None,
    conf_thresh_percentile: float = 40.0,
    num_max_points: int = 1_000_000,
    show_cameras: bool = True,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    gs_views_interval: int = 1,
) -> list[str]:
    """Write ``prediction`` in every format of ``export_format``; returns the files written, in order.

    All inputs are checked before the first file is written. The prediction is never modified.
    ``progress(fraction)`` is called after each format (raise from it to stop between formats).
    ``gs_views_interval``: ``gs_ply`` keeps the Gaussians of every n-th view (official option).
    """
    formats = parse_formats(export_format)
    if export_dir is None or not os.fspath(export_dir):
        raise BadInputError("no export folder given; pass export_dir (a folder to write the exports into)")
    if not 0.0 <= float(conf_thresh_percentile) <= 100.0:
        raise BadInputError(f"conf_thresh_percentile must be within 0..100, got {conf_thresh_percentile}")
    if int(num_max_points) < 1:
        raise BadInputError(f"num_max_points must be at least 1, got {num_max_points}")
    if "npz" in formats:
        check_npz_input(prediction)
    if "gs_ply" in formats:
        check_gs_input(prediction)
        if int(gs_views_interval) < 1:
            raise BadInputError(f"gs_views_interval must be at least 1, got {gs_views_interval}")
    for fmt in formats:
        if fmt in POINT_FORMATS:
            cameras_for_points(prediction, fmt)  # raises with the model to use
    export_dir = make_folder(export_dir)
    pct, max_points = float(conf_thresh_percentile), int(num_max_points)
    written: list[str] = []
    for done, fmt in enumerate(formats):
        if fmt == "mini_npz":
            written += export_mini_npz(prediction, export_dir)
        elif fmt == "npz":
            written += export_npz(prediction, export_dir)
        elif fmt == "glb":
            written += export_glb(prediction, export_dir, pct, max_points, bool(show_cameras), seed)
        elif fmt == "ply":
            written += export_ply(prediction, export_dir, pct, max_points, seed)
        elif fmt == "colmap":
            written += export_colmap(prediction, export_dir, pct)
        elif fmt == "depth_vis":
            written += export_depth_vis(prediction, export_dir)
        elif fmt == "gs_ply":
            written += export_gs_ply(prediction, export_dir, views_interval=int(gs_views_interval))
        if progress is not None:
            progress((done + 1) / len(formats))
    return written


__all__ = ["FORMATS", "export", "parse_formats", "read_colmap_text"]
