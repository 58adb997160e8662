"""``da3 colmap MODEL_DIR --image-dir DIR``: a COLMAP model's images with its cameras as known poses.

    da3 colmap MODEL_DIR --image-dir DIR [--undistorted] [the common options of `da3 images`]
"""

from __future__ import annotations

from .common import job_from_args, run_job


def add_parser(sub, common) -> None:
    p = sub.add_parser("colmap", parents=[common], help="a COLMAP model's images with its cameras as known poses")
    p.add_argument("input", metavar="MODEL_DIR", help="the sparse model folder (cameras/images .txt or .bin)")
    p.add_argument("--image-dir", required=True, help="folder of the model's images (names as in the model)")
    p.add_argument("--undistorted", action="store_true",
                   help="the images are already undistorted: take the cameras' pinhole part, ignore their distortion")
    p.add_argument("--no-align-to-input-ext-scale", dest="align_to_input_ext_scale", action="store_false",
                   help="keep the model's own scale instead of the COLMAP poses' scale")


def run_colmap(args) -> int:
    """``da3 colmap``: the model's images with its cameras as known poses (extrinsics + intrinsics)."""
    import logging

    from ..inputs.colmap import colmap_views
    from ..job import build_job

    views = colmap_views(args.input, args.image_dir, args.undistorted)
    if views.skipped:
        logging.getLogger("da3_blender").warning("%d image(s) of the model are not in %s, left out: %s",
                                                 len(views.skipped), args.image_dir, ", ".join(views.skipped[:5]))
    base = job_from_args(args)  # the common options, checked
    options = {**base["options"], "extrinsics": views.extrinsics.tolist(), "intrinsics": views.intrinsics.tolist(),
               "align_to_input_ext_scale": args.align_to_input_ext_scale}
    spec = build_job(views.paths, model=base["model"], device=base["device"], options=options,
                     export_dir=base["export_dir"], export_format=base["export_format"])

    def source(progress):
        from ..inputs.collect import collect_inputs

        return collect_inputs(views.paths, exif_transpose=spec["options"].get("exif_transpose", True), progress=progress)

    return run_job(args, spec, source, lambda: views.paths)
