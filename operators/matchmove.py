"""Set Floor / Set Scale (issue 27): the tracker's overrides for the matchmove scene. Each re-orients (or
scales) a whole DA3 import in one undo step: cameras (their keys too), points, planes, mesh, splats and the
shadow catcher, which is laid back on the new floor. Cameras are moved, never scaled."""

from __future__ import annotations

import json

import bpy
import numpy as np
from bpy.props import FloatProperty
from bpy.types import Operator
from mathutils import Matrix

from ..da3_blender.matchmove.floor import fit_plane
from ..da3_blender.matchmove.world import floor_transform


def _root_of(obj):
    for col in bpy.data.collections:
        if col.get("da3_role") == "root" and (obj.name in col.all_objects):
            return col
    return None


def selected_points(context):
    """(world points (M,3), the DA3 import's root collection) of the selected vertices of DA3 objects."""
    pts, root = [], None
    objs = context.objects_in_mode if context.mode == "EDIT_MESH" else context.selected_objects
    for obj in objs:
        if obj.type != "MESH" or _root_of(obj) is None:
            continue
        if obj.mode == "EDIT":
            obj.update_from_editmode()
        n = len(obj.data.vertices)
        sel = np.zeros(n, bool)
        obj.data.vertices.foreach_get("select", sel)
        co = np.zeros(n * 3, np.float32)
        obj.data.vertices.foreach_get("co", co)
        mw = np.array(obj.matrix_world)
        pts.append(co.reshape(-1, 3)[sel] @ mw[:3, :3].T + mw[:3, 3])
        root = root or _root_of(obj)
    return (np.concatenate(pts) if pts else np.zeros((0, 3))), root


def _cameras(root):
    return sorted((o for o in root.all_objects if o.type == "CAMERA"), key=lambda o: o.name)


def _keyed_frames(obj) -> list[int]:
    action = obj.animation_data.action if obj.animation_data else None
    if action is None:
        return []
    frames = set()
    for fc in getattr(action, "fcurves", []) or []:
        if fc.data_path in ("location", "rotation_euler", "rotation_quaternion"):
            frames.update(int(round(k.co[0])) for k in fc.keyframe_points)
    return sorted(frames)


def _move_camera(obj, m: np.ndarray, scale: float, scene) -> None:
    """The camera's pose (every key) under the similarity ``m`` (4x4, uniform ``scale``): moved, not scaled."""
    rot = m[:3, :3] / scale

    def moved(mw):
        mw = np.array(mw)
        out = np.eye(4)
        out[:3, :3] = rot @ mw[:3, :3]
        out[:3, 3] = m[:3, :3] @ mw[:3, 3] + m[:3, 3]
        return Matrix(out.tolist())

    frames = _keyed_frames(obj)
    if not frames:
        obj.matrix_world = moved(obj.matrix_world)
        return
    current = scene.frame_current
    poses = {}
    for f in frames:
        scene.frame_set(f)
        poses[f] = moved(obj.matrix_world)
    mode = "rotation_quaternion" if obj.rotation_mode == "QUATERNION" else "rotation_euler"
    for f, mw in poses.items():
        obj.matrix_world = mw
        obj.keyframe_insert("location", frame=f)
        obj.keyframe_insert(mode, frame=f)
    scene.frame_set(current)


def transform_import(root, m: np.ndarray, scale: float, scene) -> None:
    """Apply the similarity ``m`` (Blender world -> new world) to every object of the import."""
    for obj in list(root.all_objects):
        if obj.parent is not None:
            continue  # moves with its parent
        if obj.type == "CAMERA":
            _move_camera(obj, m, scale, scene)
        else:
            obj.matrix_world = Matrix((m @ np.array(obj.matrix_world)).tolist())
    old = np.array(root.get("da3_world", np.eye(4).ravel().tolist()), np.float64).reshape(4, 4)
    world = m.copy()
    world[:3, :3] /= scale
    root["da3_world"] = [float(v) for v in (world @ old).ravel()]
    root["da3_scale"] = float(root.get("da3_scale", 1.0)) * scale


def _lay_catcher_flat(root) -> None:
    """The shadow catcher back on Z = 0 over its own extent (it followed the old floor)."""
    for col in root.children:
        if col.get("da3_role") != "floor":
            continue
        for obj in col.objects:
            mw = np.array(obj.matrix_world)
            verts = np.array([mw[:3, :3] @ np.array(v.co) + mw[:3, 3] for v in obj.data.vertices])
            lo, hi = verts[:, :2].min(axis=0), verts[:, :2].max(axis=0)
            for v, (x, y) in zip(obj.data.vertices, ((lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1]))):
                v.co = (x, y, 0.0)
            obj.matrix_world = Matrix.Identity(4)


class DA3_OT_set_floor(Operator):
    """Make the plane through the selected points (three or more, of a DA3 cloud, mesh or plane) the floor: Z = 0,
    Z up, the origin under the first camera, which looks along +Y"""

    bl_idname = "da3.set_floor"
    bl_label = "Set Floor from Selection"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        pts, root = selected_points(context)
        if root is None or len(pts) < 3:
            self.report({"ERROR"}, f"{len(pts)} point(s) selected: select three or more points of a DA3 import's "
                                   "cloud, mesh or planes (Edit Mode) on the floor")
            return {"CANCELLED"}
        try:
            normal, offset = fit_plane(pts)
        except ValueError as ex:
            self.report({"ERROR"}, f"{ex}; select points spread over the floor")
            return {"CANCELLED"}
        cams = _cameras(root)
        if cams and np.mean([normal @ np.array(c.matrix_world)[:3, 3] + offset for c in cams]) < 0:
            normal, offset = -normal, -offset  # the cameras are above the floor
        elif not cams and normal[2] < 0:
            normal, offset = -normal, -offset
        first = np.array(cams[0].matrix_world) @ np.diag([1.0, -1.0, -1.0, 1.0]) if cams else np.eye(4)
        m = floor_transform(normal, offset, first)  # Blender world -> floor frame (first: OpenCV axes)
        if context.mode == "EDIT_MESH":
            bpy.ops.object.mode_set(mode="OBJECT")
        transform_import(root, m, 1.0, context.scene)
        _lay_catcher_flat(root)
        root["da3_up_axis"] = "FLOOR"
        root["da3_floor"] = json.dumps({"normal": [0.0, 0.0, 1.0], "offset": 0.0, "points": len(pts), "manual": True})
        self.report({"INFO"}, f"floor set from {len(pts)} points")
        return {"FINISHED"}


class DA3_OT_set_scale(Operator):
    """Scale the whole DA3 import so the two selected points are this far apart (cameras are moved, not scaled)"""

    bl_idname = "da3.set_scale"
    bl_label = "Set Scale from Two Points"
    bl_options = {"REGISTER", "UNDO"}

    distance: FloatProperty(name="Distance", default=1.0, min=1e-6, unit="LENGTH",
                            description="The real distance between the two selected points (metres)")

    def execute(self, context):
        pts, root = selected_points(context)
        if root is None or len(pts) != 2:
            self.report({"ERROR"}, f"{len(pts)} point(s) selected: select exactly two points of a DA3 import")
            return {"CANCELLED"}
        length = float(np.linalg.norm(pts[1] - pts[0]))
        if length <= 1e-9:
            self.report({"ERROR"}, "the two selected points coincide: select two points apart")
            return {"CANCELLED"}
        scale = self.distance / length
        if context.mode == "EDIT_MESH":
            bpy.ops.object.mode_set(mode="OBJECT")
        transform_import(root, np.diag([scale, scale, scale, 1.0]), scale, context.scene)
        self.report({"INFO"}, f"scaled by {scale:.4g}: the points are {self.distance:g} apart")
        return {"FINISHED"}


CLASSES = (DA3_OT_set_floor, DA3_OT_set_scale)
