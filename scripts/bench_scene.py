"""Benchmark the scene builders against the naive bpy way, in one run.

    .venv/bin/python scripts/bench_scene.py
    .venv/bin/python scripts/bench_scene.py --long    # only: the import of a 1,000-frame result

Builds 1,000,000 points, a 300-frame animated camera and 10 textured depth planes (504x280 views)
with our code (numpy + foreach_set + bulk keyframes), then the same data naively
(``mesh.from_pydata(points.tolist(), ...)``, ``keyframe_insert`` per frame, pixels from a list), and
prints the times per component and the ratios. ``--long`` imports a synthetic 1,000-frame video
result (126x224 views) with ``import_prediction``: the defaults (one animated camera keyed on every
frame, 1,000,000 points sampled across all frames, no depth planes above 100 views) beside the same
import with a plane for every frame (``planes_max_views=0``).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_scene_package():
    """Import ``scene`` as a subpackage (its relative imports need a parent), without the add-on's
    registration code: a temporary parent package holding links to da3_blender/ and scene/."""
    parent = Path(tempfile.mkdtemp(prefix="da3-bench-")) / "da3_bench_pkg"
    parent.mkdir()
    (parent / "__init__.py").write_text("")
    for name in ("da3_blender", "scene"):
        (parent / name).symlink_to(ROOT / name, target_is_directory=True)
    sys.path.insert(0, str(parent.parent))
    return {m: importlib.import_module(f"da3_bench_pkg.{m}") for m in
            ("da3_blender.prediction", "scene.importer", "scene.points", "scene.planes", "scene.cameras",
             "scene.conventions", "scene.materials", "scene.tracking")}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    import bpy

    mods = load_scene_package()
    conv, pts_mod, planes_mod, cams_mod = mods["scene.conventions"], mods["scene.points"], mods["scene.planes"], mods["scene.cameras"]
    materials, tracking = mods["scene.materials"], mods["scene.tracking"]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    rng = np.random.default_rng(0)
    n, h, w = 8, 280, 504
    k = np.tile(np.array([[400.0, 0, w / 2], [0, 400.0, h / 2], [0, 0, 1]]), (n, 1, 1))
    ext = np.tile(np.eye(4), (n, 1, 1))
    ext[:, 0, 3] = np.arange(n) * 0.1
    pred = mods["da3_blender.prediction"].Prediction(
        depth=rng.uniform(1, 5, (n, h, w)).astype(np.float32),
        processed_images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        conf=rng.uniform(0, 1, (n, h, w)).astype(np.float32), extrinsics=ext[:, :3].astype(np.float32), intrinsics=k)
    up = conv.up_matrix("Z_UP")
    track = tracking.Tracker("bench")
    rows = []

    # --- points
    t_lift, data = timed(lambda: pts_mod.point_data(pred, k, ext, up, 1.0, conf_percentile=0, max_points=1_000_000))
    count = len(data["positions"])

    def ours_points():
        mat = materials.attribute_material("bench points", "Col")
        group = pts_mod.points_node_group("bench points", mat)
        mesh = pts_mod.points_mesh("ours", data["positions"], data["colors"], data["conf"], data["view"])
        return pts_mod.points_object("ours", mesh, group, mat, 0.01)

    t_ours_pts, _ = timed(ours_points)

    def naive_points():
        mesh = bpy.data.meshes.new("naive")
        mesh.from_pydata(data["positions"].tolist(), [], [])
        return mesh

    t_naive_pts, _ = timed(naive_points)
    rows.append((f"points ({count:,}) mesh+attributes+GN", t_ours_pts, t_naive_pts))

    # --- 300-frame animated camera
    frames = 1 + np.arange(300)
    poses = np.tile(np.eye(4), (300, 1, 1))
    poses[:, 0, 3] = np.linspace(0, 3, 300)
    angles = np.linspace(0, 1.5, 300)
    poses[:, 0, 0], poses[:, 0, 2], poses[:, 2, 0], poses[:, 2, 2] = np.cos(angles), np.sin(angles), -np.sin(angles), np.cos(angles)
    k_video = np.tile(np.array([[1600.0, 0, 960], [0, 1600, 540], [0, 0, 1]]), (300, 1, 1))
    k_video[:, :2, :2] *= np.linspace(1, 1.2, 300)[:, None, None]  # a zoom: lens keyed too
    params = conv.intrinsics_to_blender(k_video, 1920, 1080)

    def ours_camera():
        mats = conv.camera_matrices(poses, up, 1.0)
        return cams_mod.animated_camera("ours cam", mats, params, frames, (1920, 1080), track)

    t_ours_cam, _ = timed(ours_camera)

    def naive_camera():
        from mathutils import Matrix

        mats = conv.camera_matrices(poses, up, 1.0)
        cam = bpy.data.objects.new("naive cam", bpy.data.cameras.new("naive cam"))
        bpy.context.scene.collection.objects.link(cam)
        cam.rotation_mode = "QUATERNION"
        for i, frame in enumerate(frames):
            cam.matrix_world = Matrix(mats[i].tolist())
            cam.data.lens = float(params["lens"][i])
            cam.keyframe_insert("location", frame=int(frame))
            cam.keyframe_insert("rotation_quaternion", frame=int(frame))
            cam.data.keyframe_insert("lens", frame=int(frame))
        return cam

    t_naive_cam, _ = timed(naive_camera)
    rows.append(("camera (300 frames, loc+rot+lens)", t_ours_cam, t_naive_cam))

    # --- 10 textured depth planes (stride 1: 141k vertices each)
    views = [(pred.depth[i % n], pred.processed_images[i % n]) for i in range(10)]

    def ours_planes():
        for i, (depth, rgb) in enumerate(views):
            d = planes_mod.plane_data(depth, k[0], ext[0], up, 1.0, stride=1, edge_threshold=0)
            image = planes_mod.image_from_array(f"ours {i}", rgb)
            mesh = planes_mod.plane_mesh(f"ours {i}", d["positions"], d["faces"], d["uv"], d["edges"], d["corner_edges"])
            mesh.materials.append(materials.image_material(f"ours {i}", image))

    t_ours_planes, _ = timed(ours_planes)
    plane_geo = [planes_mod.plane_data(d, k[0], ext[0], up, 1.0, stride=1, edge_threshold=0) for d, _ in views]

    def naive_planes():
        for i, (_, rgb) in enumerate(views):
            d = plane_geo[i]
            mesh = bpy.data.meshes.new(f"naive {i}")
            mesh.from_pydata(d["positions"].tolist(), [], d["faces"].tolist())
            layer = mesh.uv_layers.new(name="UVMap")
            for loop in mesh.loops:
                layer.data[loop.index].uv = d["uv"][loop.vertex_index]
            image = bpy.data.images.new(f"naive {i}", rgb.shape[1], rgb.shape[0])
            px = np.ones(rgb.shape[:2] + (4,), np.float32)
            px[..., :3] = rgb[::-1] / 255.0
            image.pixels = px.ravel().tolist()
            image.pack()
            mesh.materials.append(materials.image_material(f"naive {i}", image))

    t_naive_planes, _ = timed(naive_planes)
    rows.append(("10 planes 504x280 stride 1 (ours incl. lift)", t_ours_planes, t_naive_planes))

    print(f"bpy {bpy.app.version_string}, numpy {np.__version__}")
    print(f"lift {count:,} pixels to points (numpy, shared by both): {t_lift:.3f} s")
    print(f"{'component':46s} {'ours s':>8s} {'naive s':>9s} {'speed-up':>9s}")
    for name, ours, naive in rows:
        print(f"{name:46s} {ours:8.3f} {naive:9.3f} {naive / ours:8.1f}x")
    ours_pc = t_lift + t_ours_pts + t_ours_cam
    print(f"ours points (incl. lifting) + camera: {ours_pc:.3f} s (target <= 0.5 s)")
    total_ours, total_naive = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"all components: ours {total_ours:.3f} s, naive {total_naive:.3f} s, {total_naive / total_ours:.1f}x")


def long_result(frames: int = 1000, h: int = 126, w: int = 224) -> None:
    import bpy

    mods = load_scene_package()
    importer = mods["scene.importer"]
    rng = np.random.default_rng(0)
    k = np.tile(np.array([[200.0, 0, w / 2], [0, 200.0, h / 2], [0, 0, 1]]), (frames, 1, 1))
    ext = np.tile(np.eye(4)[:3], (frames, 1, 1))
    ext[:, 0, 3] = -np.linspace(0, 5, frames)
    pred = mods["da3_blender.prediction"].Prediction(
        depth=rng.uniform(1, 5, (frames, h, w)).astype(np.float32),
        processed_images=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8),
        conf=rng.uniform(0, 1, (frames, h, w)).astype(np.float32), extrinsics=ext.astype(np.float32),
        intrinsics=k.astype(np.float32), frame_numbers=np.arange(frames),
        meta={"video": {"path": "", "fps": 25.0, "frame_count": frames, "width": w, "height": h}})
    rows = []
    for label, kw in (("defaults (planes off above 100 views)", {}),
                      (f"every frame's plane ({frames} planes)", {"planes_max_views": 0})):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        t, root = timed(lambda: importer.import_prediction(pred, options=importer.ImportOptions(**kw)))
        planes = next(c for c in root.children if c.get("da3_role") == "planes")
        rows.append((label, t, len(planes.objects)))
    print(f"bpy {bpy.app.version_string}: import of a {frames}-frame result ({w}x{h} views, {frames * h * w:,} pixels)")
    print(f"{'import':46s} {'s':>8s} {'planes':>7s}")
    for label, t, count in rows:
        print(f"{label:46s} {t:8.2f} {count:7d}")
    print(f"planes off by default: {rows[1][1] / rows[0][1]:.1f}x faster")


if __name__ == "__main__":
    if "--long" in sys.argv[1:]:
        long_result()
    else:
        main()
