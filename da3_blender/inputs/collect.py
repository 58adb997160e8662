"""Reading what the user gives: image files, folders of images, or one video.

Everything comes out as HxWx3 uint8 RGB arrays. Bad input raises :class:`BadInputError` with one
line naming the file and what to do. :func:`collect_inputs` decodes every image fully once, so
truncated files fail here and not half-way through a reconstruction, but keeps none: the set's
``images`` read each file again when it is used (:class:`ImageFiles`). Videos are read frame by
frame through imageio-ffmpeg's ffmpeg, every coded frame passed through once (no frame rate
conversion, which would repeat or drop frames where timestamps are uneven), so frame ``i`` is the
clip's frame ``i`` in Blender: :func:`read_video` checks and counts the sampled frames without
keeping them, and the set's ``images`` decode them again one at a time (:class:`VideoFrames`).
Memory therefore does not grow with the number of inputs; the price is a second decode.

``progress``, where taken, is called as ``progress("load", fraction, message)`` (the inference
callback's signature); raising from it (CancelledError) stops the reading.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import BadInputError
from ..options import DEFAULT_VIDEO_FPS, EVERY_FRAME_FPS  # fps None: the official 1 fps; 0: every frame
from . import rates
from .checks import check_frame_start
from .images import ImageFiles, InputSet, _check_video_options, load_image
from .paths import frame_number_from_name, is_video_path, list_folder_images

log = logging.getLogger("da3_blender")

VIDEO_MEMORY_FRACTION = 0.5  # indexing VideoFrames holds every full-size frame: at most this share of the RAM


def collect_inputs(paths, fps=None, start=None, end=None, max_frames=None, exif_transpose: bool = True, progress=None,
                   shot: str = "auto", frame_start: int = 1, frame_rate=None, colorspace: str = "auto") -> InputSet:
    """Image files, folders of images (natural order), one video or one image sequence -> :class:`InputSet`.

    Video sampling picks frames by time: the frame nearest each instant ``k / fps`` (``rates.keeps_frame``;
    ``fps`` None: ``options.DEFAULT_VIDEO_FPS``; 0: every frame), counted from frame 0, within ``[start, end)`` seconds,
    at most ``max_frames``; frame ``i`` is scene frame ``frame_start + i``. (The official CLI keeps every
    ``int(video_fps / fps)``-th frame: every frame for 12 fps of 23.976; on integer ratios both agree.) One input that is a numbered
    sequence (a pattern, one of its files or its folder; ``shot`` "auto" detects, "sequence" insists,
    "stills" never) is a shot: :func:`.sequences.read_sequence` (every frame by default, its own frame
    numbers, ``frame_rate``). The sampling options are ignored for stills. ``colorspace``: how plates
    become the model's input (:mod:`.plates`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise BadInputError("no inputs given; pass image files, a folder of images or a video")
    _check_video_options(fps, start, end, max_frames)
    if shot != "stills" and len(paths) == 1:
        from .sequences import find_sequence, read_sequence

        seq = find_sequence(paths[0], forced=shot == "sequence")
        if seq is not None:
            log.info("%s: a shot of %s", paths[0], seq.describe())
            return read_sequence(seq, fps=fps, start=start, end=end, max_frames=max_frames, frame_rate=frame_rate,
                                 colorspace=colorspace, exif_transpose=exif_transpose, progress=progress)
    elif shot == "sequence":
        raise BadInputError(f"a shot is one image sequence, got {len(paths)} inputs: give its pattern "
                            "(plate.####.exr), one of its files or its folder")

    files: list[str] = []
    for p in paths:
        if not os.path.exists(p):
            raise BadInputError(f"{p}: file or folder not found; check the path")
        files.extend(list_folder_images(p) if os.path.isdir(p) else [p])

    videos = [f for f in files if is_video_path(f)]
    if videos:
        if len(files) > 1:
            what = "two videos" if len(videos) > 1 else "a video together with images"
            raise BadInputError(f"got {what} ({videos[0]}); give either one video or only images")
        return read_video(videos[0], fps=fps, start=start, end=end, max_frames=max_frames, progress=progress,
                          frame_start=frame_start)

    if any(v is not None for v in (fps, start, end, max_frames)):
        log.info("fps/start/end/max_frames apply to videos only; ignored for %d image(s)", len(files))
    from .plates import check_readable

    check_readable(files)  # OpenImageIO for EXR/DPX stills, before any decoding
    for i, f in enumerate(files):
        load_image(f, exif_transpose=exif_transpose, colorspace=colorspace)  # decoded in full to check it, then let go
        if progress is not None:
            progress("load", (i + 1) / len(files), f"image {i + 1}/{len(files)}")
    return InputSet(
        images=ImageFiles(files, exif_transpose, colorspace),
        source_paths=files,
        frame_numbers=np.array([frame_number_from_name(f) for f in files], dtype=np.int64),
        timestamps=np.full(len(files), np.nan, dtype=np.float64),
        kind="images",
        video=None,
    )


# ----------------------------------------------------------------------------------------------
# video

# ffmpeg passes every decoded frame through as it is (no frame rate conversion): frame i is the i-th
# coded frame, as Blender numbers the clip. ffmpeg >= 5.1 spells it -fps_mode, older ones -vsync.
_PASSTHROUGH_OPTIONS = (["-fps_mode", "passthrough"], ["-vsync", "passthrough"])
_passthrough: list[list[str]] = []  # the spelling this ffmpeg accepted, once known


def _imageio_ffmpeg():
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        from ..errors import MissingDependencyError

        raise MissingDependencyError(
            f"reading videos needs imageio-ffmpeg ({exc}); install the pinned dependencies"
        ) from None
    return imageio_ffmpeg


def _undecodable(path, detail: str = "") -> BadInputError:
    why = f" ({detail})" if detail else ""
    return BadInputError(f"{path} has no decodable video frames{why}; check the file plays, or re-encode it as MP4 (H.264)")


class _VideoReader:
    """One pass over a video's frames through imageio-ffmpeg's ffmpeg: ``meta`` (fps, size, duration)
    on opening, then :meth:`frames` yields ``(index, HxWx3 uint8)`` one at a time. :meth:`close`
    (also on leaving a ``with``) stops ffmpeg."""

    def __init__(self, path: str):
        self.path = path
        ffmpeg = _imageio_ffmpeg()
        for options in _passthrough or _PASSTHROUGH_OPTIONS:
            self._gen = ffmpeg.read_frames(  # the first video stream, as Blender and the frame count take
                path, pix_fmt="rgb24", input_params=["-nostdin"], output_params=["-map", "0:v:0", *options]
            )
            try:
                self.meta = next(self._gen)
            except Exception as exc:
                self._gen.close()
                text = str(exc)
                unknown = options[0].lstrip("-") in text and ("Unrecognized option" in text or "not found" in text)
                if unknown and not _passthrough:  # this ffmpeg does not know the option: try the next spelling
                    continue
                first = next((line for line in text.splitlines()[::-1] if line.strip()), type(exc).__name__)
                raise _undecodable(path, first.strip()[:200]) from None
            if not _passthrough:
                _passthrough.append(list(options))
            break
        else:
            raise _undecodable(path, "this ffmpeg cannot pass frames through unchanged")
        size = self.meta.get("size") or (0, 0)
        self.width, self.height = (int(v) for v in size)
        self.fps = float(self.meta.get("fps") or 0.0)  # ffmpeg's average rate, rounded: see rates.py
        self.duration = float(self.meta.get("duration") or 0.0)
        self.ffmpeg_exe = ffmpeg.get_ffmpeg_exe()

    def frames(self):
        shape = (self.height, self.width, 3)
        try:
            for index, data in enumerate(self._gen):
                yield index, np.frombuffer(data, dtype=np.uint8).reshape(shape)
        except RuntimeError as exc:  # a frame cut short (truncated file)
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInputError(f"{self.path}: decoding stopped ({detail}); check the file plays, or re-encode it") from None

    def close(self) -> None:
        self._gen.close()  # ffmpeg is asked to quit (and killed if it does not)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _count_frames(path: str) -> int:
    """The number of frames ffmpeg decodes from ``path``'s first video stream (a decode without conversion;
    its null output takes every frame as it comes, like the passthrough above)."""
    try:
        return int(_imageio_ffmpeg().count_frames_and_secs(path)[0])
    except Exception:  # counted what could be; the caller keeps its own count
        return 0


def _check_frames_fit(path, count, width, height) -> None:
    """Refuse to hold ``count`` full-resolution frames at once when they cannot fit in memory."""
    from ..devices import system_memory

    total = system_memory()[1]
    need = count * width * height * 3
    if total and need > VIDEO_MEMORY_FRACTION * total:
        raise BadInputError(
            f"{path}: {count} frames of {width}x{height} would need {need / 2**30:.1f} GB of memory "
            f"({total / 2**30:.1f} GB installed); sample fewer frames: lower the fps, set max_frames or a shorter start/end range"
        )


class VideoFrames:
    """The sampled frames of a video as a read-only sequence that decodes on demand.

    Iterating decodes the video again from its start and yields the sampled frames (full-resolution
    HxWx3 uint8) one at a time, so a consumer that reduces each frame at once (``run_inference``) holds
    only one full frame. Indexing holds every sampled frame in memory (the first index decodes them
    all, once), which is refused, before decoding, when they would take over half the RAM.
    """

    def __init__(self, path: str, numbers: list[int], width: int, height: int):
        self.path = path
        self.numbers = list(numbers)
        self.width, self.height = width, height
        self._frames: list | None = None

    def __len__(self) -> int:
        return len(self.numbers)

    def __iter__(self):
        if self._frames is not None:
            yield from self._frames
            return
        wanted = iter(self.numbers)
        target = next(wanted, None)
        with _VideoReader(self.path) as reader:
            for index, frame in reader.frames():
                if target is None:
                    break
                if index == target:
                    yield frame.copy()  # the decoded buffer is read-only
                    target = next(wanted, None)
        if target is not None:
            raise BadInputError(f"{self.path}: frame {target} could not be decoded again (the file changed?); run again")

    def __getitem__(self, item):
        if self._frames is None:
            _check_frames_fit(self.path, len(self), self.width, self.height)
            self._frames = list(iter(self))
        return self._frames[item]


def read_video(path, fps=None, start=None, end=None, max_frames=None, progress=None, frame_start: int = 1) -> InputSet:
    """Sample frames of one video (see :func:`collect_inputs` for the rule).

    The video is decoded once here, to check it and count the sampled frames, keeping none of them;
    the returned set's ``images`` is a :class:`VideoFrames` that decodes them again on demand. The
    rate is the stream's nominal rate, snapped to a standard rational (:mod:`.rates`); frame ``i``
    (0-based, as decoded) is scene frame ``frame_start + i`` (the set's ``frame_numbers``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: video not found; check the path")
    if os.path.getsize(path) == 0:
        raise BadInputError(f"{path} is empty (0 bytes); copy or export the video again")
    _check_video_options(fps, start, end, max_frames)
    check_frame_start(frame_start)
    want = DEFAULT_VIDEO_FPS if fps is None else float(fps)

    with _VideoReader(path) as reader:
        nominal, average = rates.probe_stream_rates(reader.ffmpeg_exe, path)
        try:  # the nominal rate (tbr); the average (imageio's fps) only when ffmpeg names none
            timing = rates.video_rate(nominal, average or reader.fps)
        except ValueError:
            raise BadInputError(f"{path}: the video reports no frame rate; re-encode it as MP4 (H.264)") from None
        video_fps = timing["fps"]
        step = rates.sample_step(video_fps, None if want == EVERY_FRAME_FPS else want)  # frames picked by time
        if want > video_fps:
            log.info("%s: requested %.3g fps exceeds the video's %.3g fps; using every frame", path, want, video_fps)
        first = 0 if not start else math.ceil(start * video_fps - 1e-9)
        stop = math.inf if end is None else end * video_fps  # frame index must be < stop
        expected = int(round(reader.duration * timing["average_fps"]))  # an estimate for progress
        last_wanted = min(expected, stop) if expected else stop
        if max_frames is not None:  # reading stops at the last frame kept
            last_wanted = min(last_wanted, rates.nth_kept_index(first, int(max_frames) - 1, step) + 1)
        numbers, decoded, at_end = _sample_frames(reader, first, stop, step, max_frames, last_wanted, progress)
        width, height, duration = reader.width, reader.height, reader.duration
    if not numbers:
        if decoded == 0:
            raise _undecodable(path)
        raise BadInputError(
            f"{path}: no frames in the chosen range (start {start or 0} s, end {end} s; the video lasts "
            f"{decoded / video_fps:.3g} s); widen the range"
        )
    # stopped early: the rest is counted by a decode without conversion, so the scene ends on the last real frame
    frame_count = decoded if at_end else max(_count_frames(path), decoded)
    info = {
        "path": path,
        "kind": "video",
        **timing,  # rate [num, den] (exact), fps, average_fps, variable_rate
        "frame_count": frame_count,  # frames as decoded (and as Blender numbers them), not a container estimate
        "frame_start": int(frame_start),  # the scene frame of the video's frame 0
        "frame_range": [int(frame_start), int(frame_start) + frame_count - 1],  # scene frames of the whole clip
        "sample_interval": round(step, 6),  # frames per kept frame (rates.sample_step)
        "duration": duration or (frame_count / video_fps),
        "width": width,
        "height": height,
    }
    log.info("%s: %d frame(s) sampled every %s of %s fps", path, len(numbers), rates.step_text(step),
             rates.rate_text(timing["rate"]))
    indices = np.array(numbers, dtype=np.int64)
    num, den = timing["rate"]
    return InputSet(
        images=VideoFrames(path, numbers, width, height),
        source_paths=[path] * len(numbers),
        frame_numbers=indices + int(frame_start),
        timestamps=indices * den / num,
        kind="video",
        video=info,
    )


def _sample_frames(reader, first, stop, step, max_frames, last_wanted, progress):
    """One decode: the indices of the sampled frames, the frames decoded, and whether it ran to the end."""
    numbers = []
    index = -1
    at_end = True
    for index, _frame in reader.frames():
        if index >= stop:
            at_end = False
            break
        if index >= first and rates.keeps_frame(index, step):
            numbers.append(index)
        if progress is not None and math.isfinite(last_wanted) and last_wanted > 0:
            total = max(int(math.ceil(last_wanted)), index + 1)  # the estimate may be short
            progress("load", min(1.0, (index + 1) / last_wanted), f"video frame {index + 1}/{total}, {len(numbers)} kept")
        if max_frames is not None and len(numbers) >= max_frames:  # the last frame kept is reported first
            at_end = False
            break
    return numbers, index + 1, at_end
