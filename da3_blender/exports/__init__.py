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
``depth_vis``  ``depth_vis/NNNN.png`` (NNNN as for ``exr``)       depth
``exr``        ``exr/depth.NNNN.exr`` (``exr_plate/`` at plate     depth; the OpenEXR package (optional)
               resolution), NNNN = scene frame number or index
``gs_ply``     ``gs_ply/0000.ply``                                Gaussians (``infer_gs``, giant models)
``stmap``      ``stmap/{undistort,redistort}[.NNNN].exr``,        intrinsics; OpenEXR (see docs/comp.md)
               ``stmap/lens.json``
``nuke``       ``nuke/shot.nk``, ``nuke/camera.chan``             cameras (and ``stmap`` with a lens)
``usd``        ``usd/shot.usda`` (``.usdc``)                      cameras; usd-core (optional)
``undistorted`` ``undistorted/plate.NNNN.{exr,png}``,             intrinsics; the plate files
               ``undistorted/camera.json``
``mesh``       ``mesh/mesh.glb``, ``mesh/mesh.ply``               cameras, depth; scikit-image (optional)
=============  =================================================  =======================================

Point exports lift pixels at their centres (K in pixel-edge coordinates), deliberately fixing the
official half-pixel offset. A prediction without confidence (mono/metric models) keeps every
pixel with finite depth > 0 (sky pixels are always dropped); one without cameras can only give
point exports when it has intrinsics, and a single view is then placed at the origin.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

from ..errors import BadInputError
from ..job import parse_export_format
from ..options import (DEFAULT_CONF_THRESH_PERCENTILE, DEFAULT_EXR_HALF, DEFAULT_EXR_PLATE_FILTER, DEFAULT_EXR_RESOLUTION,
                       DEFAULT_NUM_MAX_POINTS, DEFAULT_USD_FILE_FORMAT, EXPORT_FORMAT_NAMES)
from ..prediction import Prediction
from .colmap import export_colmap, read_colmap_text
from .depth_vis import export_depth_vis
from .exr import check_exr_options, export_exr
from ..files import make_folder, record_placed
from .glb import export_glb
from .gs_ply import check_gs_input, export_gs_ply
from .mesh import export_mesh
from .npz import check_npz_input, export_mini_npz, export_npz
from .ply import export_ply
from .points import cameras_for_points
from .comp import check_comp_formats
from .nuke import export_nuke
from .stmap import export_stmap
from .undistort import export_undistorted
from .usd import export_usd

FORMATS = EXPORT_FORMAT_NAMES  # names and descriptions live in options.EXPORT_FORMATS; the writers below
POINT_FORMATS = ("glb", "ply", "colmap")


def parse_formats(export_format: str) -> list[str]:
    """``"glb-mini_npz"`` -> ``["glb", "mini_npz"]`` (duplicates dropped), or BadInputError."""
    return parse_export_format(export_format)


def export(
    prediction: Prediction,
    export_format: str = "mini_npz",
    export_dir: str | os.PathLike | None = None,
    conf_thresh_percentile: float = DEFAULT_CONF_THRESH_PERCENTILE,
    num_max_points: int = DEFAULT_NUM_MAX_POINTS,
    show_cameras: bool = True,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    exr_half: bool = DEFAULT_EXR_HALF,
    exr_resolution: str = DEFAULT_EXR_RESOLUTION,
    exr_plate_filter: str = DEFAULT_EXR_PLATE_FILTER,
    gs_views_interval: int = 1,
    usd_format: str = DEFAULT_USD_FILE_FORMAT,
) -> list[str]:
    """Write ``prediction`` in every format of ``export_format``; returns the files written, in order.

    All inputs are checked before the first file is written. The prediction is never modified.
    ``progress(fraction)`` is called after each format (raise from it to stop between formats).
    ``exr_*``: the ``exr`` format's options (:func:`.exr.export_exr`: half floats, ``processed`` or
    ``plate`` resolution, ``nearest`` or ``bilinear`` plate resampling).
    ``gs_views_interval``: ``gs_ply`` keeps the Gaussians of every n-th view (official option).
    ``usd_format``: ``usda`` (text) or ``usdc`` (binary) for the ``usd`` export.
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
    if "exr" in formats:
        check_exr_options(exr_resolution, exr_plate_filter)  # also: OpenEXR installed
    if "gs_ply" in formats:
        check_gs_input(prediction)
        if int(gs_views_interval) < 1:
            raise BadInputError(f"gs_views_interval must be at least 1, got {gs_views_interval}")
    formats = check_comp_formats(prediction, formats, usd_format)  # i28: stmap, nuke, usd, undistorted
    for fmt in formats:
        if fmt in POINT_FORMATS:
            cameras_for_points(prediction, fmt)  # raises with the model to use
    export_dir = make_folder(export_dir)
    settings = {"pct": float(conf_thresh_percentile), "max_points": int(num_max_points), "seed": seed,
                "show_cameras": bool(show_cameras), "exr_half": bool(exr_half), "exr_resolution": exr_resolution,
                "exr_plate_filter": exr_plate_filter, "gs_views_interval": int(gs_views_interval),
                "usd_format": usd_format}
    written: list[str] = []
    with record_placed() as placed:  # every file put in place, also by a writer that then fails
        try:
            for done, fmt in enumerate(formats):
                if fmt not in _WRITERS:
                    raise BadInputError(f"export format {fmt!r} has no writer in this version; choose one of "
                                        f"{', '.join(_WRITERS)}")
                written += _WRITERS[fmt](prediction, export_dir, settings)
                if progress is not None:
                    progress((done + 1) / len(formats))
        except BaseException:  # failed or cancelled: still no mix of this export's frames and an older one's
            with contextlib.suppress(OSError):
                remove_stale_sequence_files(placed)
            raise
    remove_stale_sequence_files(written)
    return written


def remove_stale_sequence_files(written: list[str]) -> list[str]:
    """After an export: remove, beside each numbered file just written (``exr/depth.0007.exr``,
    ``depth_vis/0007.png``), the files of the same numbered pattern that this export did not write (an
    earlier, longer run's frames), so a folder never holds a mixed sequence. Other files stay. Returns
    the files removed."""
    import re

    keep = {os.path.abspath(p) for p in written}
    patterns: dict[str, set] = {}
    for path in keep:
        m = re.match(r"^(.*?)(\d+)(\D*)$", os.path.basename(path))
        if m:
            patterns.setdefault(os.path.dirname(path), set()).add(
                re.compile(re.escape(m.group(1)) + r"\d+" + re.escape(m.group(3)) + "$"))
    removed = []
    for folder, pats in patterns.items():
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if path not in keep and any(p.match(name) for p in pats) and os.path.isfile(path):
                os.unlink(path)
                removed.append(path)
    return removed


# one writer per name in options.EXPORT_FORMATS (tested): (prediction, folder, settings) -> paths written
_WRITERS: dict[str, Callable[[Prediction, str, dict], list[str]]] = {
    "mini_npz": lambda p, d, s: export_mini_npz(p, d),
    "npz": lambda p, d, s: export_npz(p, d),
    "glb": lambda p, d, s: export_glb(p, d, s["pct"], s["max_points"], s["show_cameras"], s["seed"]),
    "ply": lambda p, d, s: export_ply(p, d, s["pct"], s["max_points"], s["seed"]),
    "colmap": lambda p, d, s: export_colmap(p, d, s["pct"]),
    "depth_vis": lambda p, d, s: export_depth_vis(p, d),
    "exr": lambda p, d, s: export_exr(p, d, half=s["exr_half"], resolution=s["exr_resolution"],
                                      plate_filter=s["exr_plate_filter"]),
    "gs_ply": lambda p, d, s: export_gs_ply(p, d, views_interval=s["gs_views_interval"]),
    "stmap": lambda p, d, s: export_stmap(p, d),
    "nuke": lambda p, d, s: export_nuke(p, d),
    "undistorted": lambda p, d, s: export_undistorted(p, d),
    "usd": lambda p, d, s: export_usd(p, d, s["usd_format"], s["pct"], s["max_points"], s["seed"]),
    "mesh": lambda p, d, s: export_mesh(p, d),
}

__all__ = ["FORMATS", "export", "parse_formats", "read_colmap_text"]
