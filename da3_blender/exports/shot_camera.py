"""The shot's camera for compositing programs (Nuke, USD), numpy only.

World: the Blender scene's (:mod:`scene.conventions` with the default import: the first view's camera
at the origin, or the known cameras' world for a pose-conditioned result; scale as predicted),
expressed Y up as Nuke, USD and Maya expect it: Blender's ``(X, Y, Z)`` (Z up) is ``(X, Z, -Y)`` here,
so from the result's OpenCV world it is ``(x, -y, -z)`` of the reference camera's frame. Cameras look
down their local -Z with +Y up (Nuke, USD, Blender). Frames: the scene frame numbers (a sequence's own
numbers, a video's index + its start); an image set without frame numbers is keyed on 1..N.
Intrinsics: the plate's K (pixel edges), sensor (horizontal aperture) 36 mm as in the Blender scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..errors import BadInputError
from ..geometry import affine_inverse, to_4x4
from ..options import DEFAULT_SEQUENCE_RATE
from ..prediction import Prediction, scene_frame_numbers

SENSOR_WIDTH = 36.0  # mm: the Blender scene's sensor width (scene/conventions.py)
Y_UP = np.diag([1.0, -1.0, -1.0])  # OpenCV world/camera axes -> Y-up world / -Z-looking camera


@dataclass
class ShotCamera:
    frames: np.ndarray  # (N,) int scene frames, increasing
    c2w: np.ndarray  # (N,4,4) camera-to-world, Y up, camera looks down -Z
    k: np.ndarray  # (N,3,3) plate K, pixel edges
    width: int
    height: int
    rate: tuple[int, int] = (24, 1)
    near: float = 0.1
    far: float = 10000.0
    plate: dict = field(default_factory=dict)  # {"path": pattern or movie, "first": int, "last": int, "movie": bool}
    metric: bool = False

    def focal_mm(self) -> np.ndarray:
        return self.k[:, 0, 0] * SENSOR_WIDTH / self.width

    def apertures_mm(self) -> tuple[float, np.ndarray]:
        """Horizontal aperture (36 mm) and the vertical one per frame (``36 H fx / (W fy)``)."""
        return SENSOR_WIDTH, SENSOR_WIDTH * self.height * self.k[:, 0, 0] / (self.width * self.k[:, 1, 1])

    def aperture_offsets_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Film-back offsets (mm) that put the optical axis at the principal point (USD's convention;
        Blender's ``shift_x``/``shift_y`` times 36 mm)."""
        h_ap, v_ap = self.apertures_mm()
        return h_ap * (self.width / 2 - self.k[:, 0, 2]) / self.width, v_ap * (self.k[:, 1, 2] - self.height / 2) / self.height

    @property
    def fps(self) -> float:
        return self.rate[0] / self.rate[1]


def _rate(meta: dict) -> tuple[int, int]:
    video = meta.get("video") if isinstance(meta.get("video"), dict) else {}
    if video.get("rate"):
        num, den = (int(v) for v in video["rate"])
        return num, den
    if video.get("fps"):
        frac = Fraction(float(video["fps"])).limit_denominator(1001)
        return frac.numerator, frac.denominator
    frac = Fraction(DEFAULT_SEQUENCE_RATE).limit_denominator(1001)
    return frac.numerator, frac.denominator


def _plate(pred: Prediction, frames: np.ndarray) -> dict:
    video = (pred.meta or {}).get("video")
    if isinstance(video, dict) and (video.get("pattern") or video.get("path")):
        first, last = video.get("frame_range") or (int(frames[0]), int(frames[-1]))
        sequence = bool(video.get("pattern"))
        return {"path": str(video.get("pattern") or video["path"]), "first": int(first), "last": int(last),
                "movie": not sequence}
    paths = [p for p in (pred.source_paths or []) if p]
    if paths:
        return {"path": paths[0], "first": int(frames[0]), "last": int(frames[0]), "movie": False}
    return {}


def scene_world(pred: Prediction) -> np.ndarray:
    """4x4: the result's (OpenCV) world -> the scene's world, Y up (see the module doc)."""
    options = (pred.meta or {}).get("options") or {}
    in_input_world = bool(options.get("pose_conditioned")) and options.get("align_to_input_ext_scale") is True
    out = np.eye(4)
    if pred.extrinsics is not None and not in_input_world:
        out = to_4x4(np.asarray(pred.extrinsics[0], np.float64))
    flip = np.eye(4)
    flip[:3, :3] = Y_UP
    return flip @ out


def shot_camera(pred: Prediction, fmt: str) -> ShotCamera:
    """The result's camera in the scene's (Y-up) world; one-line errors for a result without cameras."""
    if pred.intrinsics is None or (pred.extrinsics is None and pred.num_views > 1):
        raise BadInputError(f"the {fmt} export needs the result's cameras and this result has none (mono/metric "
                            "models predict no cameras); run a model that predicts cameras")
    n = pred.num_views
    sizes = np.asarray(pred.orig_size, dtype=np.int64)
    if len({tuple(s) for s in sizes.tolist()}) != 1:
        raise BadInputError(f"the {fmt} export is one camera for one plate size, and these views have "
                            f"{len({tuple(s) for s in sizes.tolist()})} sizes; export views of one size")
    frames = scene_frame_numbers(pred)
    if np.any(frames < 0) or len(np.unique(frames)) != n:
        frames = np.arange(1, n + 1)
    w2c = np.tile(np.eye(4), (n, 1, 1)) if pred.extrinsics is None else to_4x4(np.asarray(pred.extrinsics, np.float64))
    c2w = scene_world(pred)[None] @ affine_inverse(w2c)  # OpenCV camera -> scene world
    c2w[:, :3, :3] = c2w[:, :3, :3] @ Y_UP  # the camera looks down -Z, +Y up
    order = np.argsort(frames, kind="stable")
    depth = np.asarray(pred.depth, dtype=np.float32)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    typical = float(np.median(valid)) if valid.size else 1.0
    far = float(valid.max()) if valid.size else 1000.0
    return ShotCamera(frames=np.asarray(frames)[order].astype(np.int64), c2w=c2w[order],
                      k=pred.original_intrinsics()[order], width=int(sizes[0][0]), height=int(sizes[0][1]),
                      rate=_rate(pred.meta or {}), near=0.01 * typical, far=max(100.0 * far, 10.0 * typical),
                      plate=_plate(pred, np.asarray(frames)[order]), metric=bool(pred.is_metric))


# -- rotations ---------------------------------------------------------------------------------------

def euler_zxy(r: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Degrees (rx, ry, rz) with ``R = Ry(ry) Rx(rx) Rz(rz)`` (Nuke's default rotation order ZXY: Z
    applied first, column vectors), closest (multiples of 360) to ``previous``."""
    rx = math.asin(max(-1.0, min(1.0, -r[1, 2])))
    if abs(r[1, 2]) < 1.0 - 1e-12:
        ry = math.atan2(r[0, 2], r[2, 2])
        rz = math.atan2(r[1, 0], r[1, 1])
    else:  # gimbal lock: roll folded into pan
        ry = math.atan2(-r[2, 0], r[0, 0])
        rz = 0.0
    angles = np.degrees([rx, ry, rz])
    if previous is not None:
        angles = angles + 360.0 * np.round((previous - angles) / 360.0)
    return angles


def euler_track(rotations: np.ndarray) -> np.ndarray:
    """(N,3,3) -> (N,3) continuous ZXY angles in degrees (see :func:`euler_zxy`)."""
    out = np.zeros((len(rotations), 3))
    for i, r in enumerate(rotations):
        out[i] = euler_zxy(r, out[i - 1] if i else None)
    return out
