"""Render a textured shot with a known camera path, for the camera-solve tests and benchmark.

A closed room with walls and floor in varied high-frequency procedural textures (noise, Voronoi,
bricks, checkers) and textured boxes, all emission-only (no lighting noise), rendered with Cycles at
a few samples: cheap, and SIFT finds thousands of features. The camera walks an arc while panning.

    blender -b -P scripts/render_solve_shot.py -- OUT_DIR --frames 48 --size 960x540 [--path nodal|orbit]
    python scripts/render_solve_shot.py OUT_DIR ...            (with the bpy module)

Writes ``OUT_DIR/frame_NNNN.png`` rendered with ``OVERSCAN`` extra pixels on each side and cropped
to the requested size (so a distortion warp has real pixels at its corners: ``overscan/`` keeps the
uncropped frames), and ``OUT_DIR/cameras.json``: ``{"extrinsics": (N,3,4) world-to-camera OpenCV,
"intrinsics": (N,3,3) pixels of the cropped frames, "size": [W, H], "overscan": [dx, dy]}``.
:func:`warp_radial` makes the barrel-distorted version of a frame (polynomial k1, k2 as COLMAP's
RADIAL and Blender's POLYNOMIAL model: r_d = r_u (1 + k1 r_u^2 + k2 r_u^4), r normalised by focal).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

OVERSCAN = (24, 16)  # extra pixels each side (x, y) rendered beyond the frame


def _emission(name, build):
    import bpy

    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    emit = nodes.new("ShaderNodeEmission")
    links.new(emit.outputs[0], out.inputs["Surface"])
    colour = build(nodes, links)
    links.new(colour, emit.inputs["Color"])
    return mat


def _texture(kind, scale, seed):
    """A node builder: a procedural texture of ``kind`` mapped through a colour ramp."""
    rng = np.random.default_rng(seed)
    c1, c2 = tuple(rng.uniform(0.05, 0.5, 3)) + (1.0,), tuple(rng.uniform(0.5, 1.0, 3)) + (1.0,)

    def build(nodes, links):
        coord = nodes.new("ShaderNodeTexCoord")
        tex = nodes.new({"noise": "ShaderNodeTexNoise", "voronoi": "ShaderNodeTexVoronoi",
                         "brick": "ShaderNodeTexBrick", "checker": "ShaderNodeTexChecker"}[kind])
        links.new(coord.outputs["Object"], tex.inputs["Vector"])
        tex.inputs["Scale"].default_value = scale
        if kind == "noise":
            tex.inputs["Detail"].default_value = 8.0
            ramp = nodes.new("ShaderNodeValToRGB")
            ramp.color_ramp.elements[0].color, ramp.color_ramp.elements[1].color = c1, c2
            links.new(tex.outputs["Fac"], ramp.inputs[0])
            mix = nodes.new("ShaderNodeTexVoronoi")  # speckles over the noise
            mix.inputs["Scale"].default_value = scale * 3
            links.new(coord.outputs["Object"], mix.inputs["Vector"])
            blend = nodes.new("ShaderNodeMix")
            blend.data_type = "RGBA"
            blend.inputs["Factor"].default_value = 0.35
            links.new(ramp.outputs["Color"], blend.inputs[6])
            links.new(mix.outputs["Color"], blend.inputs[7])
            return blend.outputs[2]
        if kind == "checker":
            tex.inputs["Color1"].default_value, tex.inputs["Color2"].default_value = c1, c2
        if kind == "brick":
            tex.inputs["Color1"].default_value, tex.inputs["Color2"].default_value = c1, c2
        return tex.outputs["Color"]

    return build


def build_scene(width, height, lens=24.0, samples=4, repeat=False):
    """The room; ``repeat``: opposite walls and the boxes repeat each other (the room is the same turned
    half a turn about its vertical axis), so a view and the view half an orbit later look alike."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 0
    scene.cycles.use_adaptive_sampling = False
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x, scene.render.resolution_y = width + 2 * OVERSCAN[0], height + 2 * OVERSCAN[1]
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    kinds = ["noise", "voronoi", "brick", "checker"]
    # room 12 x 12 x 5 m: floor, ceiling, four walls, each its own texture
    planes = [((0, 0, 0), (0, 0, 0)), ((0, 0, 5), (math.pi, 0, 0)), ((0, 6, 2.5), (math.pi / 2, 0, 0)),
              ((0, -6, 2.5), (-math.pi / 2, 0, 0)), ((6, 0, 2.5), (0, -math.pi / 2, 0)), ((-6, 0, 2.5), (0, math.pi / 2, 0))]
    if repeat:  # the -y and -x walls: the +y and +x walls turned half a turn about z (same texture coordinates)
        planes[3], planes[5] = ((0, -6, 2.5), (math.pi / 2, 0, math.pi)), ((-6, 0, 2.5), (0, -math.pi / 2, math.pi))
    materials = {}
    for i, (loc, rot) in enumerate(planes):
        bpy.ops.mesh.primitive_plane_add(size=12, location=loc, rotation=rot)
        j = {3: 2, 5: 4}.get(i, i) if repeat else i
        materials.setdefault(j, _emission(f"wall{j}", _texture(kinds[j % 4], 3.0 + j, j)))
        bpy.context.object.data.materials.append(materials[j])
    rng = np.random.default_rng(7)
    for i in range(5 if repeat else 9):
        if repeat:  # around the orbit, each box with its twin half a turn away
            a, r = rng.uniform(0, math.pi), rng.uniform(3.0, 4.5)
            loc = (r * math.cos(a), r * math.sin(a), rng.uniform(0.3, 1.5))
        else:
            loc = (rng.uniform(-3.5, 3.5), rng.uniform(0.5, 4.5), rng.uniform(0.3, 1.5))
        size, turn = rng.uniform(0.6, 1.4), rng.uniform(0, 3)
        mat = _emission(f"box{i}", _texture(kinds[(i + 1) % 4], 4.0 + i, 10 + i))
        for twin in ((False, True) if repeat else (False,)):
            where = (-loc[0], -loc[1], loc[2]) if twin else loc
            bpy.ops.mesh.primitive_cube_add(size=size, location=where, rotation=(0, 0, turn + (math.pi if twin else 0)))
            bpy.context.object.data.materials.append(mat)
    bpy.ops.object.camera_add()
    cam = bpy.context.object
    cam.data.lens, cam.data.sensor_width, cam.data.sensor_fit = lens, 36.0, "HORIZONTAL"
    scene.camera = cam
    return scene, cam


PATHS = ("arc", "nodal", "orbit")


def camera_path(frames: int, path: str = "arc"):
    """Locations and look-at targets. ``arc``: a 3 m arc sideways and forwards while panning across the
    boxes. ``nodal``: a tripod pan (one location) of 50 degrees across the room with a tilt. ``orbit``: a
    full turn on a circle of 1.2 m about the room's centre looking outwards, ending a step before its start
    (in the ``repeat`` room)."""
    from mathutils import Vector

    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        if path == "orbit":
            a = 2 * math.pi * i / frames
            loc = Vector((1.2 * math.cos(a), 1.2 * math.sin(a), 1.6 + 0.15 * math.sin(3 * a)))
            look = a + 0.35  # outwards and a little along the way
            target = Vector((loc.x + 4 * math.cos(look), loc.y + 4 * math.sin(look), 1.1))
        elif path == "nodal":
            loc = Vector((0.3, -3.5, 1.6))
            target = Vector((3.5 - 6.5 * t, 3.0, 1.2 + 0.8 * math.sin(2 * math.pi * t)))
        else:
            loc = Vector((-1.5 + 3.0 * t, -3.5 + 0.8 * math.sin(math.pi * t), 1.6 + 0.3 * t))
            target = Vector((1.5 - 2.0 * t, 3.0, 0.9 + 0.4 * math.sin(2 * math.pi * t)))
        out.append((loc, target))
    return out


def opencv_camera(scene, cam, crop=(0, 0)):
    import bpy

    bpy.context.view_layer.update()
    w, h = scene.render.resolution_x, scene.render.resolution_y
    f = cam.data.lens / cam.data.sensor_width * w
    k = [[f, 0, w / 2 - crop[0]], [0, f, h / 2 - crop[1]], [0, 0, 1]]
    c2w = np.array(cam.matrix_world) @ np.diag([1.0, -1.0, -1.0, 1.0])
    return np.linalg.inv(c2w)[:3].tolist(), k


def render_shot(out_dir, frames=48, width=960, height=540, samples=4, lens=24.0, path="arc") -> dict:
    """Render the shot into ``out_dir`` (see module docstring); returns the cameras.json dict."""
    import bpy
    from PIL import Image

    os.makedirs(os.path.join(out_dir, "overscan"), exist_ok=True)
    scene, cam = build_scene(width, height, lens=lens * width / (width + 2 * OVERSCAN[0]), samples=samples,
                             repeat=path == "orbit")
    extr, intr = [], []
    for i, (loc, target) in enumerate(camera_path(frames, path)):
        cam.location = loc
        cam.rotation_euler = (target - loc).to_track_quat("-Z", "Y").to_euler()
        e, k = opencv_camera(scene, cam, OVERSCAN)
        extr.append(e)
        intr.append(k)
        full = os.path.join(out_dir, "overscan", f"frame_{i:04d}.png")
        scene.render.filepath = full
        bpy.ops.render.render(write_still=True)
        img = Image.open(full).convert("RGB")
        img.crop((OVERSCAN[0], OVERSCAN[1], OVERSCAN[0] + width, OVERSCAN[1] + height)).save(
            os.path.join(out_dir, f"frame_{i:04d}.png"))
    info = {"extrinsics": extr, "intrinsics": intr, "size": [width, height], "overscan": list(OVERSCAN)}
    with open(os.path.join(out_dir, "cameras.json"), "w") as fh:
        json.dump(info, fh)
    return info


def frame_paths(out_dir, frames) -> list[str]:
    return [os.path.join(out_dir, f"frame_{i:04d}.png") for i in range(frames)]


def warp_radial(overscan_image: np.ndarray, k: np.ndarray, k1: float, k2: float = 0.0, size=None) -> np.ndarray:
    """The frame as a lens with radial distortion (k1, k2) sees it, from an overscan render.

    ``k``: the pinhole intrinsics of the cropped frame; ``size``: (W, H) of the cropped frame. Each
    output pixel (distorted) samples the render at its undistorted position (bilinear).
    """
    h_o, w_o = overscan_image.shape[:2]
    w, h = size if size is not None else (w_o - 2 * OVERSCAN[0], h_o - 2 * OVERSCAN[1])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    xd, yd = (xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1]
    xu, yu = xd.copy(), yd.copy()
    for _ in range(20):  # fixed point: x_u = x_d / (1 + k1 r_u^2 + k2 r_u^4)
        r2 = xu * xu + yu * yu
        factor = 1 + k1 * r2 + k2 * r2 * r2
        xu, yu = xd / factor, yd / factor
    px = xu * k[0, 0] + k[0, 2] + OVERSCAN[0] - 0.5
    py = yu * k[1, 1] + k[1, 2] + OVERSCAN[1] - 0.5
    x0, y0 = np.clip(np.floor(px).astype(int), 0, w_o - 2), np.clip(np.floor(py).astype(int), 0, h_o - 2)
    fx, fy = np.clip(px - x0, 0, 1)[..., None], np.clip(py - y0, 0, 1)[..., None]
    img = overscan_image.astype(np.float64)
    out = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
           + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def main(argv=None):
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--path", choices=PATHS, default="arc",
                        help="the camera path (nodal: a tripod pan; orbit: a full turn that returns to its start)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    render_shot(args.out_dir, args.frames, width, height, args.samples, path=args.path)
    print(f"rendered {args.frames} frames of {width}x{height} into {args.out_dir}")


if __name__ == "__main__":
    main()
