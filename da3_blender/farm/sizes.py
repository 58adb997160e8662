"""The processed size of a farm shot's views, read at plan time (every chunk must crop its views alike)."""

from __future__ import annotations

from .. import options as opt
from ..errors import BadInputError


def processed_size(source, options: dict) -> tuple[int, int]:
    """(H, W) every view is processed at; one line if they differ (chunks would crop them differently)."""
    from ..pipeline import preprocess

    res = options.get("process_res", opt.DEFAULT_PROCESS_RES)
    method = options.get("process_res_method", opt.DEFAULT_PROCESS_RES_METHOD)
    if source.video:
        sizes = {(source.video["width"], source.video["height"])}
    else:
        sizes = {image_size(p, options.get("exif_transpose", True)) for p in source.source_paths}
    processed = {preprocess.processed_size(w, h, res, method) for w, h in sizes}
    if len(processed) > 1:
        raise BadInputError(f"the views have {len(processed)} different sizes ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))}): "
                            "farm chunks need one size; resize them alike, or run the set in one process")
    w, h = processed.pop()
    return int(h), int(w)


def image_size(path: str, exif_transpose: bool) -> tuple[int, int]:
    """(W, H) of an image file from its header, after its EXIF orientation."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if exif_transpose and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
            w, h = h, w
    return w, h
