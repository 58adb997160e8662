"""Render the matchmove demo of docs/matchmove.md (issue 27): the analytic set of tests/matchmove_scene.py as a
DA3 result, imported with up_axis FLOOR and a shadow catcher; a CG cube dropped on the floor casts its shadow,
rendered with Cycles (few samples, transparent film) and laid over the plate.

    python scripts/render_matchmove_demo.py [--out docs/images/matchmove_shadow_catcher.png] [--samples 16]

Needs the bpy module (pip install bpy==5.0.1) and Pillow. Writes plate | render over plate side by side.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def plate_colours(pred, w2c_true, ids):
    """A checkered floor and shaded objects: something that reads as footage."""
    from da3_blender.geometry import unproject_depth

    pts = unproject_depth(pred.depth / 0.4, pred.intrinsics, w2c_true)
    img = np.asarray(pred.processed_images, np.float32)
    checker = ((np.floor(pts[..., 0] * 2) + np.floor(pts[..., 1] * 2)) % 2)[..., None]
    floor = np.where(checker > 0, 150.0, 105.0) * np.array([1.0, 0.97, 0.9])
    img = np.where((ids == 0)[..., None], floor, img)
    shade = 0.75 + 0.25 * np.clip(pts[..., 2:3] / 0.9, 0, 1)
    img = np.where((ids > 0)[..., None], img * shade, img)
    img[ids < 0] = (170, 195, 225)
    pred.processed_images = np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "matchmove_shadow_catcher.png"))
    p.add_argument("--samples", type=int, default=16)
    args = p.parse_args()
    import bpy
    from PIL import Image

    from conftest import import_extension
    from da3_blender.geometry import affine_inverse
    from da3_blender.prediction import save_result
    from matchmove_scene import make_result

    ext = import_extension()
    importer = importlib.import_module(f"{ext.__name__}.scene.importer")
    pred, w2c_true, ids = make_result(count=6, width=480, height=270)
    plate_colours(pred, w2c_true, ids)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_result(os.path.join(tmp, "set.npz"), pred)
        h0 = float(affine_inverse(w2c_true[0])[2, 3])
        root = importer.import_result_file(path, importer.ImportOptions(
            up_axis="FLOOR", shadow_catcher=True, camera_height=h0, points=False, planes=False))
        scene = bpy.context.scene
        cam = sorted((o for o in root.all_objects if o.type == "CAMERA"), key=lambda o: o.name)[0]
        scene.camera = cam
        m = np.array(cam.matrix_world) @ np.diag([1.0, -1.0, -1.0, 1.0]) @ w2c_true[0]  # true world -> Blender
        centre = m[:3, :3] @ np.array([-0.55, -1.4, 0.2]) + m[:3, 3]
        bpy.ops.mesh.primitive_cube_add(size=0.4, location=tuple(centre), rotation=(0, 0, 0.5))
        cube = bpy.context.active_object
        mat = bpy.data.materials.new("CG cube")
        mat.diffuse_color = (0.8, 0.35, 0.1, 1.0)
        mat.use_nodes = True
        mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.35, 0.1, 1.0)
        cube.data.materials.append(mat)
        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sun.data.energy, sun.data.angle = 4.0, 0.05
        sun.rotation_euler = (0.9, 0.0, 1.1)
        scene.collection.objects.link(sun)
        scene.world = scene.world or bpy.data.worlds.new("World")
        scene.render.engine = "CYCLES"
        scene.cycles.samples, scene.cycles.device = args.samples, "CPU"
        scene.cycles.use_denoising = False
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        render = os.path.join(tmp, "render.png")
        scene.render.filepath = render
        bpy.ops.render.render(write_still=True)
        fg = np.asarray(Image.open(render).convert("RGBA"), np.float32) / 255.0
    plate = pred.processed_images[0].astype(np.float32) / 255.0
    if fg.shape[:2] != plate.shape[:2]:
        plate = np.asarray(Image.fromarray(pred.processed_images[0]).resize(fg.shape[1::-1]), np.float32) / 255.0
    comp = fg[..., :3] + plate * (1.0 - fg[..., 3:4])  # premultiplied over: the catcher's shadow darkens the plate
    both = np.concatenate([plate, np.ones((plate.shape[0], 8, 3)), comp], axis=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(both, 0, 1) * 255).astype(np.uint8)).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
