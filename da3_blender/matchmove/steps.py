"""The matchmove steps of a run (issue 27), after the network and the camera solve, before the exports:
the floor is found and recorded (``meta["floor"]`` or ``meta["floor_note"]``), the proxy mesh fused when
asked for (``mesh`` or the ``mesh`` export), and the result moved into the asked world (``up_axis``,
``camera_height``) so that every export carries it. Also the ``da3`` command line's arguments for them.
Standard library only at import (the command line and Blender's Python parse arguments with it)."""

from __future__ import annotations

import logging

from .. import options as opt
from ..errors import BadInputError, MissingDependencyError

log = logging.getLogger("da3_blender")
OPTION_KEYS = ("up_axis", "camera_height", "mesh", "mesh_max_faces")  # job options -> run_inference keywords


def check_options(up_axis=None, camera_height=None, mesh=None, mesh_max_faces=None) -> None:
    """One BadInputError line for a bad value (the job checks these before any work)."""
    if up_axis is not None and up_axis not in opt.choice_ids(opt.UP_AXES):
        raise BadInputError(f"unknown up axis {up_axis!r}; use one of: {', '.join(opt.choice_ids(opt.UP_AXES))}")
    if camera_height is not None and not (isinstance(camera_height, (int, float)) and not isinstance(camera_height, bool)
                                          and 0 < camera_height < float("inf")):
        raise BadInputError(f"camera height must be a positive number of metres, got {camera_height!r}")
    if mesh:
        import importlib.util

        if importlib.util.find_spec("skimage") is None:
            raise MissingDependencyError("the proxy mesh needs scikit-image in the worker's Python: pip install "
                                         "'da3-blender[mesh]' (scikit-image==0.26.0), or turn Mesh off")
    if mesh_max_faces is not None and (isinstance(mesh_max_faces, bool) or not isinstance(mesh_max_faces, int)
                                       or mesh_max_faces < 1):
        raise BadInputError(f"mesh max faces must be a whole number >= 1, got {mesh_max_faces!r}")


def after_inference(pred, report, *, formats=(), up_axis=None, camera_height=None, mesh=False,
                    mesh_max_faces=opt.DEFAULT_MESH_MAX_FACES, device="cpu"):
    """The floor (always, when the result has cameras), the mesh, the world; returns the (moved) prediction."""
    from . import world  # numpy: the command line's argument parsing stays standard library only

    world.result_floor(pred)
    if mesh or "mesh" in formats:
        from .fusion import mesh_of

        report("postprocess", 0.0, "fusing the proxy mesh")
        fused = mesh_of(pred, int(mesh_max_faces), device=device if str(device).startswith("cuda") else "cpu",
                        progress=lambda f: report("postprocess", f, "fusing the proxy mesh"))
        report("postprocess", 1.0, f"proxy mesh: {len(fused.faces):,} triangles")
    if up_axis is None and camera_height is None:
        return pred
    moved, note = world.move_prediction(pred, up_axis, camera_height)
    if note:
        log.warning(note)
    return moved


def add_arguments(g, default_up: str | None = None) -> None:
    """``--up-axis``, ``--camera-height``, ``--mesh-max-faces`` (the ``da3`` command and the headless script)."""
    ids = ", ".join(i.lower() for i in opt.choice_ids(opt.UP_AXES))
    g.add_argument("--up-axis", type=_up_axis, default=None,
                   help=f"the world of the exports: {ids} (floor: the floor at Z = 0, Z up, the origin under the first "
                        f"camera; default: {default_up or 'DA3s own world'})")
    g.add_argument("--camera-height", type=float, default=None, metavar="METRES",
                   help="scale so the first camera is this high above the floor (needs a floor)")
    g.add_argument("--mesh-max-faces", type=int, default=None, metavar="N",
                   help=f"the fused proxy mesh's triangle budget (default: {opt.DEFAULT_MESH_MAX_FACES:,})")


def _up_axis(text: str) -> str:
    for ident in opt.choice_ids(opt.UP_AXES):
        if text.lower() == ident.lower():
            return ident
    raise ValueError(text)


def options_from_args(args) -> dict:
    """The job options of those arguments (unset ones left out)."""
    values = {"up_axis": getattr(args, "up_axis", None), "camera_height": getattr(args, "camera_height", None),
              "mesh_max_faces": getattr(args, "mesh_max_faces", None)}
    return {k: v for k, v in values.items() if v is not None}


def add_build_arguments(g) -> None:
    """The headless script's matchmove options (scripts/reconstruct.py, farm builds): the panel's Build > Matchmove."""
    g.add_argument("--camera-height", type=float, default=None, metavar="METRES",
                   help="scale so the first camera is this high above the floor found")
    g.add_argument("--shadow-catcher", action="store_true", help="a shadow-catcher plane on the floor, over the plate")
    g.add_argument("--mesh", action="store_true", help="fuse the depth maps into one coloured proxy mesh (scikit-image)")
    g.add_argument("--mesh-max-faces", type=int, default=None, metavar="N",
                   help=f"the proxy mesh's triangle budget (default: {opt.DEFAULT_MESH_MAX_FACES:,})")
    g.add_argument("--mesh-holdout", action="store_true", help="the proxy mesh as a holdout (cuts CG out)")


def scene_settings(args) -> dict:
    """``scene.da3_settings`` values of those arguments (unset ones left out)."""
    get = lambda name: getattr(args, name, None)  # noqa: E731 (farm builds pass a subset)
    out = {"shadow_catcher": bool(get("shadow_catcher")), "build_mesh": bool(get("mesh")),
           "mesh_holdout": bool(get("mesh_holdout"))}
    if get("camera_height") is not None:
        check_options(camera_height=get("camera_height"))
        out["camera_height"] = get("camera_height")
    if get("mesh_max_faces") is not None:
        check_options(mesh_max_faces=get("mesh_max_faces"))
        out["mesh_max_faces"] = get("mesh_max_faces")
    return out
