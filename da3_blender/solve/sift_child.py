"""A second SIFT process beside the solve's own, so that both cores extract features.

pycolmap's CPU SIFT runs on one core and holds Python's GIL (~170 ms a 960x540 frame), so a thread cannot
run a second one. :class:`SiftHelper` starts ``python -m da3_blender.solve.sift_child`` (numpy and
pycolmap, never torch; the same extractor options) and hands it every other frame, already reduced to
grey (:func:`features.to_gray`), while the solve extracts the frame between: a 50-frame 1080p shot's SIFT
takes about half the time (issue 30, BENCHMARKS.md). The frames and the answers cross the child's
stdin/stdout as plain arrays in a fixed binary framing (never pickles): a header of int64 (dtype code,
then the shape) and the raw C-order bytes. The child gives the same keypoints and descriptors as the
solve would (the same function on the same grey frame).

A cancel kills the child (the solve's checkpoints run between frames), so does any error, and a child
that cannot start leaves the solve extracting every frame itself.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np

from ..errors import DA3Error
from .isolate import NO_WINDOW, child_python

MIN_FRAMES = 12  # shorter shots extract in one process (the child's start, ~0.4 s, would not pay off)
_DTYPES = (np.uint8, np.float64, np.float32)
_MAX_DIMS = 3


def write_array(stream, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    code = next(i for i, d in enumerate(_DTYPES) if array.dtype == d)
    shape = list(array.shape) + [0] * (_MAX_DIMS - array.ndim)
    stream.write(struct.pack("<5q", code, array.ndim, *shape))
    stream.write(array.tobytes())
    stream.flush()


def _read_exact(stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the stream ended")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_array(stream) -> np.ndarray:
    code, ndim, *shape = struct.unpack("<5q", _read_exact(stream, 40))
    if not (0 <= code < len(_DTYPES) and 0 <= ndim <= _MAX_DIMS and all(0 <= s < 1 << 31 for s in shape)):
        raise DA3Error("the SIFT child sent a malformed array: please report it")
    shape = tuple(shape[:ndim])
    dtype = np.dtype(_DTYPES[code])
    return np.frombuffer(_read_exact(stream, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize), dtype).reshape(shape)


class SiftHelper:
    """The child process: :meth:`submit` a grey frame, :meth:`result` its (keypoints, descriptors), in order."""

    def __init__(self):
        argv, env = child_python("sift_child")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, **NO_WINDOW)
        self.pending = 0

    def submit(self, gray: np.ndarray) -> None:
        try:
            write_array(self.proc.stdin, gray)
        except OSError as exc:
            raise DA3Error(f"the SIFT child process stopped ({exc}): please report it") from None
        self.pending += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            kp, desc = read_array(self.proc.stdout), read_array(self.proc.stdout)
        except (OSError, EOFError):
            raise DA3Error(f"the SIFT child process stopped (exit status {self.proc.poll()}): please report it") from None
        self.pending -= 1
        return kp, desc

    def close(self) -> None:
        """Stop the child: at once if it still has work (a cancel or an error), else after it read the end."""
        if self.proc.poll() is None:
            if self.pending:
                self.proc.kill()
            else:
                try:
                    self.proc.stdin.close()
                    self.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def main() -> int:
    import pycolmap

    from .features import extract_gray, make_extractor

    extractor = make_extractor(pycolmap, threads=1)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            gray = read_array(source)
        except EOFError:
            return 0
        kp, desc = extract_gray(pycolmap, extractor, gray)
        write_array(sink, kp)
        write_array(sink, desc)


if __name__ == "__main__":
    sys.exit(main())
