"""The comp exports' checks before any file is written (issue 28, docs/comp.md): ``stmap``, ``nuke``,
``usd`` and ``undistorted`` refuse a result they cannot serve in one line, and ``nuke`` brings the
``stmap`` maps its lens nodes read."""

from __future__ import annotations

from ..errors import BadInputError
from ..options import USD_FILE_FORMATS, choice_ids
from ..prediction import Prediction
from .exr import check_exr_options
from .lens import plate_lenses
from .shot_camera import shot_camera
from .stmap import stmap_plan
from .undistort import check_plates
from .usd import pxr


def check_comp_formats(prediction: Prediction, formats: list[str], usd_format: str) -> list[str]:
    """``formats`` with ``stmap`` added before ``nuke`` when the lens has distortion; one-line errors."""
    formats = list(formats)
    if "usd" in formats:
        if usd_format not in choice_ids(USD_FILE_FORMATS):
            raise BadInputError(f"usd format {usd_format!r} is unknown; use one of {', '.join(choice_ids(USD_FILE_FORMATS))}")
        pxr()  # usd-core installed
        shot_camera(prediction, "usd")
    if "nuke" in formats:
        shot_camera(prediction, "nuke")  # cameras, one plate size
        if "stmap" not in formats and stmap_plan(prediction)[0][0].has_distortion:
            formats.insert(formats.index("nuke"), "stmap")  # the script's lens nodes read the maps
    if "undistorted" in formats:
        plate_lenses(prediction, "undistorted")  # intrinsics; a lens that has an undistorted frame
        check_plates(prediction)
    if "stmap" in formats:
        check_exr_options()  # OpenEXR installed
        stmap_plan(prediction)  # intrinsics; a lens that has an undistorted frame
    return formats
