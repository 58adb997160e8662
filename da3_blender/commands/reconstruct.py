"""``da3 auto|image|images|video``: photos, a folder, an image sequence or a video in, a 3D scene out."""

from __future__ import annotations

from .common import _extensions, backend_paths, input_kind, job_from_args, run_job


def add_parsers(sub, common, video, video_only, exts) -> None:
    """The reconstruct commands under the ``da3`` parser's sub-parsers ``sub`` (the shared parents given)."""
    p = sub.add_parser("auto", parents=[common, video, exts],
                       help="detect an image, a folder of images, an image sequence (plate.####.exr) or a video")
    p.add_argument("input", metavar="INPUT")
    p = sub.add_parser("image", parents=[common], help="one image file")
    p.add_argument("input", metavar="PATH")
    p = sub.add_parser("images", parents=[common, exts], help="every image in a folder (sorted by name)")
    p.add_argument("input", metavar="DIR")
    p = sub.add_parser("video", parents=[common, video_only], help="frames sampled from a video file")
    p.add_argument("input", metavar="PATH")


def run(args) -> int:
    """Execute a parsed command line; raises DA3Error on failure."""
    spec = job_from_args(args)
    input_kind(args.input, args.command)
    return run_job(args, spec, lambda progress: collect(args, spec, progress=progress), lambda: backend_paths(args))


def collect(args, spec: dict, progress=None):
    """The InputSet for the parsed command line and its job."""
    from ..inputs.collect import collect_inputs
    from ..inputs.paths import list_folder_images
    from ..job import video_kwargs

    kind = input_kind(args.input, args.command)
    exif = spec["options"].get("exif_transpose", True)
    shot = video_kwargs(spec)
    plates = {"shot": "stills", "colorspace": shot["colorspace"]}
    if kind == "images" and getattr(args, "image_extensions", None):
        files = list_folder_images(args.input, _extensions(args.image_extensions))
        return collect_inputs(files, exif_transpose=exif, progress=progress, **plates)
    if kind in ("image", "images"):  # a folder is listed by inputs (all image types, natural order)
        return collect_inputs([args.input], exif_transpose=exif, progress=progress, **plates)
    return collect_inputs([args.input], exif_transpose=exif, progress=progress, **video_kwargs(spec))
