"""Render the project's own example media with Blender (no third-party images are committed).

A small known scene (a checkered floor, coloured boxes and a sphere under a sun) is rendered with
Cycles on the CPU from a camera that orbits it:

* ``examples/orbit/view_01.png`` ... ``view_04.png``: four stills (480x270);
* ``examples/orbit.mp4``: a 2 s, 12 fps clip of the same orbit (320x180);
* ``examples/orbit_cameras.json``: the ground-truth cameras (OpenCV world-to-camera, K in pixels).

Run with the bpy module: ``python scripts/make_example_media.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples"


def build_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.render.film_transparent = False
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs[0].default_value = (0.55, 0.65, 0.8, 1.0)
    scene.world = world

    def material(name, colour, checker=False):
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"]
        if checker:
            tex = mat.node_tree.nodes.new("ShaderNodeTexChecker")
            tex.inputs["Scale"].default_value = 12.0
            tex.inputs["Color1"].default_value = colour
            tex.inputs["Color2"].default_value = (0.9, 0.9, 0.85, 1.0)
            mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        else:
            bsdf.inputs["Base Color"].default_value = colour
        return mat

    bpy.ops.mesh.primitive_plane_add(size=8)
    bpy.context.object.data.materials.append(material("Floor", (0.2, 0.25, 0.3, 1.0), checker=True))
    boxes = [((-1.2, 0.4, 0.5), 1.0, (0.8, 0.15, 0.1, 1)), ((0.9, -0.6, 0.35), 0.7, (0.1, 0.5, 0.8, 1)),
             ((0.4, 1.4, 0.8), 1.6, (0.95, 0.75, 0.1, 1))]
    for loc, size, col in boxes:
        bpy.ops.mesh.primitive_cube_add(size=size, location=loc, rotation=(0, 0, 0.4 * loc[0]))
        bpy.context.object.data.materials.append(material("Box", col))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(-0.2, -1.3, 0.5))
    bpy.ops.object.shade_smooth()
    bpy.context.object.data.materials.append(material("Sphere", (0.2, 0.7, 0.3, 1)))
    bpy.ops.object.light_add(type="SUN", rotation=(0.7, 0.2, 0.6))
    bpy.context.object.data.energy = 3.0
    bpy.ops.object.camera_add()
    cam = bpy.context.object
    cam.data.lens = 30.0
    scene.camera = cam
    return scene, cam


def place_camera(cam, angle):
    radius, height = 6.0, 2.6
    cam.location = Vector((radius * math.cos(angle), radius * math.sin(angle), height))
    direction = Vector((0.0, 0.0, 0.4)) - cam.location
    cam.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def opencv_camera(scene, cam):
    """Ground truth in OpenCV conventions (x right, y down, z forward; K in pixel-edge coordinates)."""
    bpy.context.view_layer.update()
    w, h = scene.render.resolution_x, scene.render.resolution_y
    f = cam.data.lens / cam.data.sensor_width * w  # sensor_fit AUTO with landscape = horizontal
    k = [[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]
    c2w = np.array(cam.matrix_world) @ np.diag([1.0, -1.0, -1.0, 1.0])
    return np.linalg.inv(c2w)[:3].tolist(), k


def main():
    scene, cam = build_scene()
    (OUT / "orbit").mkdir(parents=True, exist_ok=True)
    cameras = {"stills": [], "video": []}
    scene.render.resolution_x, scene.render.resolution_y = 480, 270
    for i, angle in enumerate(np.radians([-20, -5, 10, 25])):
        place_camera(cam, angle)
        scene.render.filepath = str(OUT / "orbit" / f"view_{i + 1:02d}.png")
        bpy.ops.render.render(write_still=True)
        w2c, k = opencv_camera(scene, cam)
        cameras["stills"].append({"image": f"orbit/view_{i + 1:02d}.png", "w2c": w2c, "K": k})

    scene.render.resolution_x, scene.render.resolution_y = 320, 180
    scene.cycles.samples = 8
    frames = 24
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for f in range(frames):
            place_camera(cam, math.radians(-20 + 45 * f / (frames - 1)))
            scene.render.filepath = os.path.join(tmp, f"{f:04d}.png")
            bpy.ops.render.render(write_still=True)
            paths.append(scene.render.filepath)
            w2c, k = opencv_camera(scene, cam)
            cameras["video"].append({"frame": f, "w2c": w2c, "K": k})
        from moviepy import ImageSequenceClip

        clip = ImageSequenceClip(paths, fps=12)
        clip.write_videofile(str(OUT / "orbit.mp4"), codec="libx264", bitrate="400k", logger=None,
                             ffmpeg_params=["-pix_fmt", "yuv420p"])
    (OUT / "orbit_cameras.json").write_text(json.dumps(cameras, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    sys.exit(main())
