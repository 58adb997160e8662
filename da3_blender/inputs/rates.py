"""Frame rates as exact rationals: a video's nominal rate, snapped to the standard rates, and Blender's form.

A video's scene rate is its stream's *nominal* rate (ffmpeg's ``r_frame_rate``, printed as ``tbr``),
the rate Blender's movie clip shows, not the average rate (``fps``: frames / duration, which an uneven
or variable-rate stream pulls off the grid: ``robot_unitree.mp4`` averages 49.44 fps on a 50 fps
grid). A rate within :data:`SNAP_TOLERANCE` (0.1 %) of a standard one (:data:`STANDARD_RATES`) is
taken as exactly that rational (23.98 -> 24000/1001), so the timeline, ``timestamps`` and the
Alembic/FBX samples do not drift. Blender holds a rate as ``fps / fps_base``: 24000/1001 is 24 / 1.001.

Standard library only (Blender's Python imports it through ``scene/footage.py``).
"""

from __future__ import annotations

import math
import re
import subprocess
from fractions import Fraction

STANDARD_RATES = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(48000, 1001), Fraction(60000, 1001),
                  Fraction(24), Fraction(25), Fraction(30), Fraction(48), Fraction(50), Fraction(60))
SNAP_TOLERANCE = 1e-3  # relative: within 0.1 % of a standard rate is that rate
VARIABLE_RATE_TOLERANCE = 1e-3  # the average rate differs from the nominal one by more: a variable-rate stream
MAX_BLENDER_FPS = 32767  # scene.render.fps is a short


def snap_rate(value) -> tuple[int, int]:
    """A rate (float, Fraction or (num, den)) -> exact ``(num, den)``: a standard rate when within 0.1 %
    of one, else the nearest fraction with a denominator up to 1001. ValueError for a rate <= 0."""
    rate = Fraction(*value) if isinstance(value, (tuple, list)) else Fraction(value) if isinstance(value, Fraction) \
        else None
    number = float(rate) if rate is not None else float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"invalid frame rate {value!r}")
    nearest = min(STANDARD_RATES, key=lambda standard: abs(number - float(standard)))
    if abs(number - float(nearest)) <= SNAP_TOLERANCE * float(nearest):
        return nearest.numerator, nearest.denominator
    exact = rate if rate is not None else Fraction(number).limit_denominator(1001)
    return exact.numerator, exact.denominator


def rate_float(rate) -> float:
    """``(num, den)`` -> frames per second as a float."""
    num, den = rate
    return num / den


def rate_text(rate) -> str:
    """``(24000, 1001)`` -> ``"23.976 (24000/1001)"``; ``(50, 1)`` -> ``"50"``."""
    num, den = (int(v) for v in rate)
    return f"{num}" if den == 1 else f"{num / den:.6g} ({num}/{den})"


def to_blender(rate) -> tuple[int, float]:
    """``(num, den)`` -> ``(scene.render.fps, fps_base)`` with ``fps / fps_base`` exactly the rate:
    24000/1001 -> (24, 1.001), 25/1 -> (25, 1.0), 25/2 -> (25, 2.0)."""
    num, den = (int(v) for v in rate)
    if num <= 0 or den <= 0:
        raise ValueError(f"invalid frame rate {num}/{den}")
    g = math.gcd(num, den)
    num, den = num // g, den // g
    if den == 1001 and num % 1000 == 0:
        return num // 1000, 1.001
    if num <= MAX_BLENDER_FPS:
        return num, float(den)
    fps = max(1, min(MAX_BLENDER_FPS, round(num / den)))
    return fps, fps * den / num


def sample_step(rate_fps: float, want_fps: float | None) -> float:
    """Frames per kept frame when sampling a shot of ``rate_fps`` at ``want_fps`` (1.0: every frame; ``want_fps``
    None or 0, or at least the shot's rate, keeps every frame). 24000/1001 at 12 fps: 1.998, not 1."""
    if not want_fps or want_fps >= rate_fps:
        return 1.0
    return float(rate_fps) / float(want_fps)


def keeps_frame(index: int, step: float) -> bool:
    """True when frame ``index`` (0-based from the shot's first frame) is the one nearest a sample instant
    ``k * step`` (a tie goes to the earlier frame): frames are picked by time, the same rule for a video
    and a numbered sequence (``inputs.read_video``, ``sequences.read_sequence``)."""
    if step <= 1.0:
        return True
    return math.floor((index + 0.5) / step + 1e-9) > math.floor((index - 0.5) / step + 1e-9)


def nth_kept_index(first: int, n: int, step: float) -> int:
    """The index of the ``n``-th (0-based) frame :func:`keeps_frame` keeps at or after frame ``first``: the
    frame nearest the sample instant ``k * step`` is ``ceil(k * step - 0.5)``."""
    if step <= 1.0:
        return first + n
    k = max(0, math.floor((first - 0.5) / step))
    while math.ceil(k * step - 0.5 - 1e-9) < first:
        k += 1
    return math.ceil((k + n) * step - 0.5 - 1e-9)


def step_text(step: float) -> str:
    """``3.0`` -> ``"3"``, ``2.4975`` -> ``"2.5"``: a sampling step for the summaries."""
    return f"{step:.3g}" if abs(step - round(step)) > 1e-6 else str(int(round(step)))


# ---------------------------------------------------------------------------------------------------
# the rates of a video stream, from ffmpeg's own description of it

_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<rest>.*)")
_RATE_RE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<k>k?) (?P<unit>fps|tbr)\b")


def parse_stream_rates(ffmpeg_text: str) -> tuple[float | None, float | None]:
    """``(nominal, average)`` frames per second of the first video stream in ffmpeg's ``-i`` output
    (``tbr`` and ``fps``), None where it prints none."""
    for line in ffmpeg_text.splitlines():
        match = _STREAM_RE.search(line)
        if not match:
            continue
        found = {}
        for m in _RATE_RE.finditer(match.group("rest")):
            found[m.group("unit")] = float(m.group("value")) * (1000.0 if m.group("k") else 1.0)
        return found.get("tbr"), found.get("fps")
    return None, None


def probe_stream_rates(ffmpeg_exe: str, path: str) -> tuple[float | None, float | None]:
    """``(nominal, average)`` rates of ``path``'s first video stream, read by ``ffmpeg -i`` (no decoding)."""
    try:
        done = subprocess.run([ffmpeg_exe, "-hide_banner", "-nostdin", "-i", path], capture_output=True,
                              text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return parse_stream_rates(done.stderr)


def video_rate(nominal: float | None, average: float | None) -> dict:
    """The rate facts of a stream: ``rate`` [num, den] (the nominal rate, else the average, snapped),
    ``fps`` (float of it), ``average_fps`` and ``variable_rate`` (the average is off the nominal grid)."""
    base = nominal if nominal and nominal > 0 else average
    if not base or base <= 0:
        raise ValueError("the stream reports no frame rate")
    rate = snap_rate(base)
    fps = rate_float(rate)
    variable = bool(average and abs(average - fps) > VARIABLE_RATE_TOLERANCE * fps)
    return {"rate": [rate[0], rate[1]], "fps": fps, "average_fps": float(average or fps), "variable_rate": variable}
