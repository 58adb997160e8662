"""``nuke``: the shot's camera as a Nuke script (``nuke/shot.nk``) and a ``.chan`` file (``nuke/camera.chan``).

The script (text, readable by every Nuke since 7; node graph in docs/comp.md):

* ``Root``: ``first_frame``/``last_frame`` = the keyed scene frames, ``fps`` = the shot's rate, ``format``
  = the plate's size and pixel aspect (``fy / fx``);
* ``Read`` "Plate": the footage (a sequence's ``####`` pattern from its first frame, or the movie);
* with a lens (the solve's k1, k2): ``Read`` "UndistortMap" + ``STMap`` "Undistort" (src = the plate,
  stmap = ``stmap/undistort.exr``: the undistorted plate in the overscan frame), a ``NoOp`` "CG_here",
  ``Read`` "RedistortMap" + ``STMap`` "Redistort" (back to the plate's lens); the maps are the ``stmap``
  export's (written with this one when not asked for);
* ``Camera2`` "DA3_camera": ``translate``/``rotate`` keyed on every scene frame (``{curve x1001 v ...}``),
  ``rot_order ZXY`` (``R = Ry(ry) Rx(rx) Rz(rz)``, degrees, column vectors; Nuke's default), ``xform_order
  SRT``; world Y up (:mod:`.shot_camera`); ``focal`` (mm, keyed when it changes), ``haperture`` 36 mm,
  ``vaperture`` ``36 H fx / (W fy)`` mm, ``win_translate`` the principal point: ``u = 2 (cx - W/2) / W``,
  ``v = 2 (H/2 - cy) / W * fx / fy`` (both in units of half the aperture width), ``near``/``far``.

``camera.chan``: one line per frame, ``frame tx ty tz rx ry rz vfov`` (the same translate/rotate, the
vertical field of view in degrees, ``2 atan(H / (2 fy))``): Nuke's Camera > Import chan file, with the
camera's rotation order left at ZXY.
"""

from __future__ import annotations

import os

import numpy as np

from ..files import open_atomic
from .shot_camera import ShotCamera, euler_track

NUKE_VERSION = "version 7.0 v1"


def num(value: float) -> str:
    """The shortest text that reads back as exactly this float."""
    value = float(value)
    return repr(0.0 if value == 0 else value)


def _path(path: str) -> str:
    """An absolute path for a quoted knob: forward slashes, TCL's special characters escaped."""
    text = os.path.abspath(path).replace("\\", "/")
    for ch in '"[]$':
        text = text.replace(ch, "\\" + ch)
    return text


def _curve(frames: np.ndarray, values: np.ndarray) -> str:
    if np.all(values == values[0]):
        return num(values[0])
    return "{curve " + " ".join(f"x{int(f)} {num(v)}" for f, v in zip(frames, values)) + "}"


def _vector(frames: np.ndarray, values: np.ndarray) -> str:
    return "{" + " ".join(_curve(frames, values[:, j]) for j in range(values.shape[1])) + "}"


def camera_values(cam: ShotCamera) -> dict[str, np.ndarray]:
    """Each keyed knob per frame: translate (N,3), rotate (N,3) degrees, focal (N,), vaperture (N,),
    win_translate (N,2), vfov (N,) degrees."""
    fx, fy, cx, cy = cam.k[:, 0, 0], cam.k[:, 1, 1], cam.k[:, 0, 2], cam.k[:, 1, 2]
    _, v_ap = cam.apertures_mm()
    return {
        "translate": cam.c2w[:, :3, 3],
        "rotate": euler_track(cam.c2w[:, :3, :3]),
        "focal": cam.focal_mm(),
        "vaperture": v_ap,
        "win_translate": np.stack([2 * (cx - cam.width / 2) / cam.width,
                                   2 * (cam.height / 2 - cy) / cam.width * fx / fy], axis=1),
        "vfov": np.degrees(2 * np.arctan(cam.height / (2 * fy))),
    }


def _format(width: int, height: int, aspect: float, name: str) -> str:
    return f'"{width} {height} 0 0 {width} {height} {num(aspect)} {name}"'


def _read(name: str, path: str, fmt: str, first: int, last: int, xpos: int, ypos: int, movie=False) -> list[str]:
    lines = ["Read {", " inputs 0", f' file "{_path(path)}"', f" format {fmt}"]
    if movie:  # frame 1 of the movie is shown on the scene frame `first`
        lines += [f" last {last - first + 1}", " frame_mode \"start at\"", f" frame {first}"]
    else:
        lines += [f" first {first}", f" last {last}", f" origfirst {first}", f" origlast {last}", " origset true"]
    return lines + [f" name {name}", f" xpos {xpos}", f" ypos {ypos}", "}"]


def nuke_script(cam: ShotCamera, lens: dict | None, script_path: str) -> str:
    """The text of ``shot.nk``; ``lens``: ``{"undistort": path, "redistort": path, "overscan": (W', H'),
    "per_frame": bool}`` or None."""
    vals = camera_values(cam)
    first, last = int(cam.frames[0]), int(cam.frames[-1])
    aspect = float(np.median(cam.k[:, 1, 1] / cam.k[:, 0, 0]))
    plate_fmt = _format(cam.width, cam.height, aspect, "DA3_plate")
    out = ["#! nuke", "# written by DA3 for Blender (docs/comp.md)", NUKE_VERSION,
           "Root {", " inputs 0", f' name "{_path(script_path)}"', f" frame {first}", f" first_frame {first}",
           f" last_frame {last}", f" fps {num(cam.fps)}", f" format {plate_fmt}", "}"]
    plate = cam.plate or {}
    if plate.get("path"):
        out += _read("Plate", plate["path"], plate_fmt, int(plate["first"]), int(plate["last"]), 0, -300,
                     movie=bool(plate.get("movie")))
        if lens is not None:
            ow, oh = lens["overscan"]
            over_fmt = _format(ow, oh, aspect, "DA3_overscan")
            map_first, map_last = (first, last) if lens["per_frame"] else (1, 1)
            out += ["set N_plate [stack 0]"]
            out += _read("UndistortMap", lens["undistort"], over_fmt, map_first, map_last, 150, -200)
            out += ["push $N_plate", "STMap {", " inputs 2", " channels rgba", " uv rgb", " name Undistort",
                    " xpos 0", " ypos -150", "}", "NoOp {", " name CG_here",
                    ' label "comp CG (rendered with K_undistorted at the overscan size) here"', " xpos 0",
                    " ypos -100", "}", "set N_cg [stack 0]"]
            out += _read("RedistortMap", lens["redistort"], plate_fmt, map_first, map_last, 150, -50)
            out += ["push $N_cg", "STMap {", " inputs 2", " channels rgba", " uv rgb", " name Redistort",
                    " xpos 0", " ypos 0", "}"]
    h_ap, _ = cam.apertures_mm()
    out += ["Camera2 {", " inputs 0", " rot_order ZXY", " xform_order SRT",
            f" translate {_vector(cam.frames, vals['translate'])}",
            f" rotate {_vector(cam.frames, vals['rotate'])}",
            f" focal {_curve(cam.frames, vals['focal'])}",
            f" haperture {num(h_ap)}",
            f" vaperture {_curve(cam.frames, vals['vaperture'])}",
            f" win_translate {_vector(cam.frames, vals['win_translate'])}",
            f" near {num(cam.near)}", f" far {num(cam.far)}",
            " name DA3_camera", " xpos 300", " ypos -150", "}"]
    return "\n".join(out) + "\n"


def chan_text(cam: ShotCamera) -> str:
    vals = camera_values(cam)
    rows = np.column_stack([vals["translate"], vals["rotate"], vals["vfov"]])
    return "".join(f"{int(f)} " + " ".join(num(v) for v in row) + "\n" for f, row in zip(cam.frames, rows))


def write_nuke(cam: ShotCamera, folder: str, lens: dict | None = None, nk_name: str = "shot.nk",
               chan_name: str | None = "camera.chan") -> list[str]:
    """Write ``folder/shot.nk`` (and ``folder/camera.chan``); returns the paths."""
    paths = []
    if nk_name:
        path = os.path.join(folder, nk_name)
        with open_atomic(path, "w") as fh:
            fh.write(nuke_script(cam, lens, path))
        paths.append(path)
    if chan_name:
        path = os.path.join(folder, chan_name)
        with open_atomic(path, "w") as fh:
            fh.write(chan_text(cam))
        paths.append(path)
    return paths


def export_nuke(pred, export_dir: str) -> list[str]:
    """``nuke/shot.nk`` and ``nuke/camera.chan`` of a result; the script's lens nodes read the ``stmap``
    export's maps (``export`` writes them first when the lens has distortion)."""
    from .shot_camera import shot_camera
    from .stmap import stmap_plan

    cam = shot_camera(pred, "nuke")
    lens = None
    lenses, shared = stmap_plan(pred)
    if lenses[0].has_distortion:
        folder = os.path.join(export_dir, "stmap")
        name = "{}.exr" if shared is not None else "{}.####.exr"
        lens = {"undistort": os.path.join(folder, name.format("undistort")),
                "redistort": os.path.join(folder, name.format("redistort")),
                "overscan": lenses[0].overscan_size, "per_frame": shared is None}
    return write_nuke(cam, os.path.join(export_dir, "nuke"), lens)
