"""``python -m da3_blender.solve.bundle_child PROBLEM.npz RESULT.npz``: one bundle-adjustment round for
:func:`da3_blender.solve.isolate.adjust_in_child` (the parent kills this process to cancel it). It
runs :func:`da3_blender.solve.bundle.adjust` on the problem as given and writes the cameras and points."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m da3_blender.solve.bundle_child PROBLEM.npz RESULT.npz", file=sys.stderr)
        return 2
    import pycolmap

    from .bundle import adjust
    from .isolate import read_problem, write_result

    rig, points, tracks, options = read_problem(argv[0])
    out, points = adjust(pycolmap, rig, points, tracks, **options)
    write_result(argv[1], out, points)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
