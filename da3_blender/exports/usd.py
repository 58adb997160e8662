"""``usd``: the shot as a USD stage, ``usd/shot.usda`` (or ``usd/shot.usdc``), written with ``pxr`` (usd-core).

Stage: ``upAxis`` Y, ``metersPerUnit`` 1 (metres for a metric model; the result's own unit otherwise),
``timeCodesPerSecond`` = ``framesPerSecond`` = the shot's exact rate (24000/1001 for 23.976),
``startTimeCode``/``endTimeCode`` = the first and last keyed scene frame; default prim ``/World``.

* ``/World/DA3_camera`` (``UsdGeom.Camera``): one ``xformOp:transform`` time-sampled on every scene frame
  (camera-to-world in the scene's world, Y up, :mod:`.shot_camera`; the camera looks down -Z);
  ``focalLength`` (``fx 36 / W`` mm), ``horizontalAperture`` 36 mm, ``verticalAperture`` ``36 H fx / (W fy)``
  mm, ``horizontalApertureOffset``/``verticalApertureOffset`` that put the optical axis on the principal
  point (Blender's ``shift_x``/``shift_y`` times 36 mm), ``clippingRange``; lens values time-sampled too.
  USD's lens unit is a tenth of a stage unit (UsdGeomCamera), 100 mm at ``metersPerUnit`` 1, so the
  millimetres are written divided by :data:`MM_PER_LENS_UNIT` (31.5 mm is 0.315), as Blender's own USD
  exporter does and its importer reads back.
* ``/World/DA3_points`` (``UsdGeom.Points``): the coloured point cloud of the ``ply`` export (same
  confidence threshold and point budget) in the same world, ``displayColor`` per point (linear),
  ``widths`` constant.

usd-core is optional (the project's ``usd`` extra): a one-line error names it when it is missing.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import MissingDependencyError, write_error
from ..files import TEMP_PREFIX, make_folder
from ..options import DEFAULT_CONF_THRESH_PERCENTILE, DEFAULT_NUM_MAX_POINTS, DEFAULT_USD_FILE_FORMAT
from ..prediction import Prediction
from .points import build_points, cameras_for_points, glb_conf_threshold, subsample
from .shot_camera import ShotCamera, scene_world, shot_camera

INSTALL_HINT = "pip install 'usd-core==26.11' (or the project's [usd] extra)"
METERS_PER_UNIT = 1.0
MM_PER_LENS_UNIT = 100.0 * METERS_PER_UNIT  # a tenth of a stage unit, in mm


def pxr():
    """``(Gf, Sdf, Usd, UsdGeom, Vt)`` or a one-line MissingDependencyError."""
    try:
        from pxr import Gf, Sdf, Usd, UsdGeom, Vt
    except ImportError:
        raise MissingDependencyError(f"the usd export needs the usd-core package; install it with: {INSTALL_HINT}") from None
    return Gf, Sdf, Usd, UsdGeom, Vt


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _camera(stage, cam: ShotCamera, mods) -> None:
    Gf, Sdf, Usd, UsdGeom, Vt = mods
    prim = UsdGeom.Camera.Define(stage, "/World/DA3_camera")
    xform = prim.AddTransformOp(UsdGeom.XformOp.PrecisionDouble)
    h_ap, v_ap = (np.asarray(a) / MM_PER_LENS_UNIT for a in cam.apertures_mm())
    h_off, v_off = (a / MM_PER_LENS_UNIT for a in cam.aperture_offsets_mm())
    focal = cam.focal_mm() / MM_PER_LENS_UNIT
    prim.CreateHorizontalApertureAttr(float(h_ap))
    prim.CreateClippingRangeAttr(Gf.Vec2f(float(cam.near), float(cam.far)))
    attrs = [(prim.CreateFocalLengthAttr(), focal), (prim.CreateVerticalApertureAttr(), v_ap),
             (prim.CreateHorizontalApertureOffsetAttr(), h_off), (prim.CreateVerticalApertureOffsetAttr(), v_off)]
    for i, frame in enumerate(cam.frames):
        time = Usd.TimeCode(float(frame))
        xform.Set(Gf.Matrix4d(cam.c2w[i].T.tolist()), time)  # USD matrices are row-vector (transposed)
        for attr, values in attrs:
            attr.Set(float(values[i]), time)


def _points(stage, pred: Prediction, world: np.ndarray, pct: float, max_points: int, seed: int, mods) -> int:
    Gf, Sdf, Usd, UsdGeom, Vt = mods
    k, w2c = cameras_for_points(pred, "usd")
    cloud = subsample(build_points(pred, glb_conf_threshold(pred.conf, pct), k, w2c), max_points, seed)
    xyz = (cloud.xyz.astype(np.float64) @ world[:3, :3].T + world[:3, 3]).astype(np.float32)
    prim = UsdGeom.Points.Define(stage, "/World/DA3_points")
    prim.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(xyz)))
    spread = float(np.median(np.linalg.norm(xyz - np.median(xyz, axis=0), axis=1))) if len(xyz) else 1.0
    prim.CreateWidthsAttr(Vt.FloatArray([max(spread, 1e-6) * 0.005]))
    prim.SetWidthsInterpolation(UsdGeom.Tokens.constant)
    colours = prim.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex)
    colours.Set(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(_srgb_to_linear(cloud.rgb))))
    return len(xyz)


def export_usd(pred: Prediction, export_dir: str, file_format: str = DEFAULT_USD_FILE_FORMAT,
               conf_thresh_percentile: float = DEFAULT_CONF_THRESH_PERCENTILE,
               num_max_points: int = DEFAULT_NUM_MAX_POINTS, seed: int = 0) -> list[str]:
    """Write ``usd/shot.<file_format>`` (see the module doc); returns its path."""
    mods = pxr()
    Gf, Sdf, Usd, UsdGeom, Vt = mods
    cam = shot_camera(pred, "usd")
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, METERS_PER_UNIT)
    stage.SetTimeCodesPerSecond(cam.fps)
    stage.SetFramesPerSecond(cam.fps)
    stage.SetStartTimeCode(float(cam.frames[0]))
    stage.SetEndTimeCode(float(cam.frames[-1]))
    world = UsdGeom.Xform.Define(stage, "/World")
    stage.SetDefaultPrim(world.GetPrim())
    stage.GetRootLayer().documentation = "DA3 for Blender: the shot's camera and point cloud (docs/comp.md)"
    _camera(stage, cam, mods)
    _points(stage, pred, scene_world(pred), conf_thresh_percentile, num_max_points, seed, mods)
    folder = make_folder(os.path.join(export_dir, "usd"))
    path = os.path.join(folder, f"shot.{file_format}")
    tmp = os.path.join(folder, f"{TEMP_PREFIX}shot.{file_format}")
    try:
        if not stage.GetRootLayer().Export(tmp):
            raise OSError(13, "USD could not write the file")
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # pxr raises Tf.ErrorException (a RuntimeError)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise write_error(path, exc if isinstance(exc, OSError) else OSError(13, "permission denied or disk full")) from None
    return [path]
