"""One set of inputs (:class:`InputSet`), image files read as HxWx3 uint8 RGB (:func:`load_image`,
:class:`ImageFiles`, read when used).

Bad input raises :class:`BadInputError` with one line naming the file and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checks import check_video


@dataclass
class InputSet:
    """The views to reconstruct, with where each came from."""

    images: list  # HxWx3 uint8 RGB arrays, or a sequence reading them on demand (ImageFiles, VideoFrames)
    source_paths: list  # str per view (the video's path for every frame of a video)
    frame_numbers: np.ndarray  # int64 per view: its scene frame (video: index + frame_start; sequence: its own
    #                            number), or the trailing digits of a still's name, else -1
    timestamps: np.ndarray  # float64 seconds per view from the shot's first frame (video, sequence), NaN for stills
    kind: str = "images"  # "images", "video" or "sequence"
    video: dict | None = field(default=None)  # path, fps, rate [num, den], frame_count, frame_range, width, height...

    def __len__(self) -> int:
        return len(self.images)


def load_image(path, exif_transpose: bool = True, colorspace: str = "auto") -> np.ndarray:
    """Read one image file as HxWx3 uint8 RGB.

    ``exif_transpose`` applies the EXIF orientation (phone photos); the official DA3 applies none,
    so pass False for exact parity with it. EXR, DPX, Cineon and HDR plates, and images Pillow cannot
    decode, are read through OpenImageIO (:mod:`.plates`, ``colorspace`` as there).
    """
    from . import plates

    if plates.needs_oiio(path):
        return plates.read_plate(path, colorspace)
    image = plates.read_with_pillow(path, exif_transpose)
    return plates.to_display_uint8(image / 255.0, True) if colorspace == "linear" else image


class ImageFiles:
    """Image files as a read-only sequence of HxWx3 uint8 arrays, each read when it is used.

    :func:`collect_inputs` has already decoded every file once (so a damaged one fails there);
    holding them all is left to the consumer, and ``run_inference`` holds one at a time.
    """

    def __init__(self, paths: list[str], exif_transpose: bool = True, colorspace: str = "auto"):
        self.paths = list(paths)
        self.exif_transpose = exif_transpose
        self.colorspace = colorspace

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, path) -> np.ndarray:
        return load_image(path, exif_transpose=self.exif_transpose, colorspace=self.colorspace)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self._load(p) for p in self.paths[item]]
        return self._load(self.paths[item])

    def __iter__(self):
        for path in self.paths:
            yield self._load(path)


def _check_video_options(fps, start, end, max_frames) -> None:
    """The one video-option check (:func:`.checks.check_video`, the job's too), before any frame is read."""
    check_video({"fps": fps, "start": start, "end": end, "max_frames": max_frames})
