"""Numbered image sequences (VFX plates): ``plate.1001.exr``, ``plate.1002.exr``, ... as one shot.

A shot is given as a pattern (``plate.####.exr``, ``plate.%04d.exr``; ``#`` and ``@`` are one digit
each, ``%d`` any number of digits), as one file of the sequence (``plate.1001.exr``: its siblings with
the same name around the number and the same extension), or as a folder whose images are all one
numbered sequence filling at least half of its number range (:data:`options.SEQUENCE_MIN_DENSITY`;
a folder of ``000.png``, ``010.png`` stays stills). Frames keep their own numbers; numbers missing
inside the range are gaps (no view, no key), named by :meth:`Sequence.missing_text`. Problems are one
:class:`BadInputError` line: a bad pattern, a pattern matching nothing, two files with one number.

Standard library only: the job checks (``job.is_sequence_job``) and Blender's Python use it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import BadInputError
from ..options import SEQUENCE_MIN_DENSITY

_PLACEHOLDER_RE = re.compile(r"#+|@+|%0?\d*d")
_NUMBERED_RE = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")


@dataclass
class Sequence:
    """A numbered sequence in ``folder``: files ``prefix + number + suffix``, sorted by number."""

    folder: str
    prefix: str
    suffix: str
    padding: int  # digits of the zero-padded numbers (0: not padded)
    numbers: list[int]
    paths: list[str]

    @property
    def pattern(self) -> str:
        digits = "#" * self.padding if self.padding else "%d"
        return os.path.join(self.folder, f"{self.prefix}{digits}{self.suffix}")

    @property
    def first(self) -> int:
        return self.numbers[0]

    @property
    def last(self) -> int:
        return self.numbers[-1]

    @property
    def missing(self) -> list[int]:
        present = set(self.numbers)
        return [n for n in range(self.first, self.last + 1) if n not in present]

    def missing_text(self, limit: int = 8) -> str:
        """``"1005, 1010-1012"`` (the first ``limit`` runs, then how many more)."""
        return number_ranges(self.missing, limit)

    def describe(self) -> str:
        gaps = self.missing
        text = f"{os.path.basename(self.pattern)}: {len(self.numbers)} frames {self.first}-{self.last}"
        return text + (f" (missing {self.missing_text()})" if gaps else "")


def number_ranges(numbers, limit: int = 8) -> str:
    """Sorted whole numbers as runs: ``[5, 10, 11, 12]`` -> ``"5, 10-12"``."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (f" and {len(runs) - limit} more" if len(runs) > limit else "")


def is_pattern(path) -> bool:
    """True when the file name holds a frame placeholder (``####``, ``@@@@``, ``%04d``)."""
    return bool(_PLACEHOLDER_RE.search(os.path.basename(os.fspath(path))))


def _image_extensions() -> tuple[str, ...]:
    from .paths import IMAGE_EXTENSIONS  # numpy: imported when needed

    return IMAGE_EXTENSIONS


def _collect(folder: str, prefix: str, suffix: str, width: int | None, what: str) -> Sequence | None:
    """The files ``prefix<digits>suffix`` of ``folder`` (``width``: exactly that many digits, or more
    without a leading zero; None: any); None when there are none. Two files for one number: an error."""
    found: dict[int, str] = {}
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise BadInputError(f"{what}: cannot list the folder {folder} ({exc.strerror or exc})") from None
    widths = set()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
            continue
        digits = name[len(prefix):len(name) - len(suffix)]
        if not (digits.isascii() and digits.isdigit()) or not os.path.isfile(os.path.join(folder, name)):
            continue
        if width and not (len(digits) == width or (len(digits) > width and digits[0] != "0")):
            continue
        number = int(digits)
        if number in found:
            raise BadInputError(f"{what}: two files for frame {number} ({os.path.basename(found[number])} and "
                                f"{name}); keep one of them")
        found[number] = os.path.join(folder, name)
        widths.add(len(digits))
    if not found:
        return None
    numbers = sorted(found)
    padding = width if width is not None else (widths.pop() if len(widths) == 1 else 0)
    return Sequence(folder, prefix, suffix, padding, numbers, [found[n] for n in numbers])


def from_pattern(pattern: str) -> Sequence:
    """The files a pattern (``plate.####.exr``, ``plate.%04d.exr``) names; one-line errors."""
    pattern = os.fspath(pattern)
    folder, name = os.path.split(os.path.abspath(pattern))
    marks = _PLACEHOLDER_RE.findall(name)
    if len(marks) != 1 or _PLACEHOLDER_RE.search(folder):
        raise BadInputError(f"{pattern}: a sequence pattern needs exactly one frame placeholder in the file name "
                            "(e.g. plate.####.exr or plate.%04d.exr)")
    mark = marks[0]
    prefix, suffix = name.split(mark, 1)
    if not re.fullmatch(r"\.[A-Za-z0-9]+", suffix) or suffix.lower() not in _image_extensions():
        raise BadInputError(f"{pattern}: the frame number must sit just before an image extension "
                            f"({', '.join(_image_extensions())}), e.g. plate.####.exr")
    if not os.path.isdir(folder):
        raise BadInputError(f"{pattern}: the folder {folder} does not exist; check the path")
    if mark.startswith("%"):
        width = int(mark[1:-1] or 0) or None
    else:
        width = len(mark)
    seq = _collect(folder, prefix, suffix, width, pattern)
    if seq is None:
        example = f"{prefix}{'1'.zfill(width or 1)}{suffix}"
        raise BadInputError(f"no files match {pattern} (e.g. {example}); check the name, the number of digits "
                            "and the folder")
    return seq


def from_file(path: str, forced: bool = False) -> Sequence | None:
    """The sequence one numbered file belongs to (at least two frames; ``forced``: one is enough)."""
    folder, name = os.path.split(os.path.abspath(path))
    m = _NUMBERED_RE.match(name)
    if not m or m.group("suffix").lower() not in _image_extensions():
        if forced:
            raise BadInputError(f"{path} has no frame number before its extension (e.g. plate.1001.exr), so it "
                                "is not part of a numbered sequence")
        return None
    digits = m.group("digits")
    width = len(digits) if digits[0] == "0" else None
    seq = _collect(folder, m.group("prefix"), m.group("suffix"), width, path)
    if seq is None or not (forced or _is_dense(seq)):
        return None
    return seq


def _is_dense(seq: Sequence) -> bool:
    """At least two frames filling at least :data:`options.SEQUENCE_MIN_DENSITY` of their number range
    (``000.png``, ``010.png`` are two stills, not a shot with nine missing frames)."""
    return len(seq.numbers) >= 2 and len(seq.numbers) / (seq.last - seq.first + 1) >= SEQUENCE_MIN_DENSITY


def from_folder(folder: str, forced: bool = False) -> Sequence | None:
    """The folder's images as one sequence, when they all are one (see the module doc), else None
    (``forced``: a one-line error saying why not)."""
    exts = _image_extensions()
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.splitext(n)[1].lower() in exts
                   and os.path.isfile(os.path.join(folder, n)))
    keys = {}
    for name in names:
        m = _NUMBERED_RE.match(name)
        keys.setdefault(None if m is None else (m.group("prefix"), m.group("suffix")), []).append(name)
    why = None
    if len(keys) != 1 or None in keys:
        why = f"its {len(names)} images are not one numbered sequence (name.####.ext)"
    else:
        (prefix, suffix), = keys
        seq = _collect(folder, prefix, suffix, None, folder)
        if seq is not None and (forced or _is_dense(seq)):
            return seq
        if seq is not None and len(seq.numbers) >= 2:
            why = f"its {len(seq.numbers)} numbered images are spread over {seq.last - seq.first + 1} numbers"
        why = why or "it has fewer than two numbered images"
    if forced:
        raise BadInputError(f"{folder} is not a shot: {why}; give the sequence's pattern (e.g. plate.####.exr) "
                            "or take the images as stills")
    return None


def find_sequence(path, forced: bool = False) -> Sequence | None:
    """The sequence ``path`` (a pattern, a file of the sequence or a folder) stands for, or None for
    stills. ``forced`` (the user asked for a shot): a one-line error instead of None."""
    path = os.fspath(path)
    if is_pattern(path) and not os.path.exists(path):
        return from_pattern(path)
    if os.path.isdir(path):
        return from_folder(path, forced)
    if os.path.isfile(path):
        return from_file(path, forced)
    if forced:
        raise BadInputError(f"{path}: file or folder not found; check the path")
    return None


# ---------------------------------------------------------------------------------------------------
# reading a sequence (numpy, PIL and OpenImageIO are imported here only)


def read_sequence(seq: Sequence, fps=None, start=None, end=None, max_frames=None, frame_rate=None,
                  colorspace: str = "auto", exif_transpose: bool = True, progress=None):
    """The frames of ``seq`` as an :class:`~.inputs.InputSet` of kind ``"sequence"``.

    Sampling is a video's (``inputs.collect_inputs``) on the frame numbers: every frame by default
    (``fps`` None or 0), else the number nearest each sample instant ``k / fps`` from the first
    (``rates.keeps_frame``: 12 fps of 24000/1001 keeps every other number), within ``[start,
    end)`` seconds of the first frame, at most ``max_frames``. The rate is ``frame_rate``, else the
    first plate's EXR ``framesPerSecond``, else ``options.DEFAULT_SEQUENCE_RATE``, snapped to an exact
    rational (:mod:`.rates`). Every kept frame is decoded once here (an unreadable one fails here,
    naming it; one of another size too), none is kept.
    """
    import numpy as np

    from . import plates, rates
    from .images import ImageFiles, InputSet, _check_video_options, load_image
    from ..options import DEFAULT_SEQUENCE_RATE, EVERY_FRAME_FPS

    _check_video_options(fps, start, end, max_frames)
    plates.check_readable(seq.paths[:1])  # before any work: OpenImageIO for EXR/DPX
    rate = rates.snap_rate(frame_rate or plates.plate_rate(seq.paths[0]) or DEFAULT_SEQUENCE_RATE)
    per_second = rates.rate_float(rate)
    want = EVERY_FRAME_FPS if fps is None else float(fps)
    step = rates.sample_step(per_second, None if want == EVERY_FRAME_FPS else want)  # picked by time, as a video
    lo, hi = (start or 0.0) * per_second - 1e-9, (np.inf if end is None else end * per_second)
    keep = [i for i, n in enumerate(seq.numbers) if rates.keeps_frame(n - seq.first, step) and lo <= n - seq.first < hi]
    keep = keep[:max_frames] if max_frames else keep
    if not keep:
        raise BadInputError(f"{seq.describe()}: no frames in the chosen range (start {start or 0} s, end {end} s at "
                            f"{rates.rate_text(rate)} fps); widen the range")
    paths = [seq.paths[i] for i in keep]
    size = None
    for j, path in enumerate(paths):
        height, width = load_image(path, exif_transpose=exif_transpose, colorspace=colorspace).shape[:2]
        if size is None:
            size = (width, height)
        elif (width, height) != size:
            raise BadInputError(f"{path} is {width}x{height} but {os.path.basename(paths[0])} is {size[0]}x{size[1]}: "
                                "the frames of a shot must share one size; re-render or remove it")
        if progress is not None:
            progress("load", (j + 1) / len(paths), f"frame {seq.numbers[keep[j]]} ({j + 1}/{len(paths)})")
    numbers = np.array([seq.numbers[i] for i in keep], dtype=np.int64)
    missing = seq.missing
    info = {
        "path": seq.paths[0], "kind": "sequence", "pattern": seq.pattern,
        "rate": [rate[0], rate[1]], "fps": per_second, "average_fps": per_second, "variable_rate": False,
        "frame_count": seq.last - seq.first + 1, "frame_start": seq.first, "frame_range": [seq.first, seq.last],
        "missing": missing[:10000], "missing_text": seq.missing_text() if missing else "",
        "sample_interval": round(step, 6), "duration": (seq.last - seq.first + 1) / per_second,
        "width": size[0], "height": size[1], "colorspace": plates.plate_transfer(paths[0], colorspace),
    }
    return InputSet(images=ImageFiles(paths, exif_transpose, colorspace), source_paths=paths, frame_numbers=numbers,
                    timestamps=(numbers - seq.first) / per_second, kind="sequence", video=info)


def shot_summary(video: dict | None) -> str:
    """One line on a shot's frames and rate for the summaries (CLI, panel, headless); "" for stills.

    Names a sequence's gaps, a variable-rate video, a sampled shot (the camera is interpolated
    between its keys) and how float plates were converted."""
    if not isinstance(video, dict) or not video.get("rate"):
        return ""
    from .rates import rate_text, step_text

    first, last = video.get("frame_range") or (None, None)
    what = os.path.basename(str(video.get("pattern") or video.get("path") or "shot"))
    parts = [f"{what}: frames {first}-{last} at {rate_text(video['rate'])} fps"]
    if video.get("missing_text"):
        parts.append(f"missing {video['missing_text']} (gaps: no key there)")
    if video.get("variable_rate"):
        parts.append(f"variable frame rate (average {video.get('average_fps', 0):.4g} fps): keyed on the frame "
                     f"numbers at the nominal rate")
    step = float(video.get("sample_interval") or 1)
    parts.append("camera keyed on every frame" if step <= 1 else
                 f"sampled every {step_text(step)} frames: the camera is interpolated between keys (fps 0 keys "
                 "every frame)")
    colorspace = video.get("colorspace")
    if colorspace and not str(colorspace).startswith("display-referred (as read)"):
        parts.append(f"plates {colorspace}")
    return "; ".join(parts)
