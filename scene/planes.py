"""Textured depth planes: per view, a grid mesh of (stride-subsampled) pixel centres lifted by depth.

Vertex (row r, col c) is pixel (r, c) of the processed image unprojected at its centre
(``geometry.unproject_depth``), in the Blender world of :mod:`.conventions`. Its UV is that
pixel's centre in the texture: the processed image (packed) or the original file (mapped through
``proc_to_orig``). Quads are dropped where a corner has no valid depth or where the depths of the
quad's corners differ by more than ``edge_threshold`` relative (``max/min - 1``), so no face
bridges a depth discontinuity.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..da3_blender.geometry import unproject_depth
from .compat import set_corner_vertices, set_positions, set_uvs
from .conventions import points_to_blender


def grid_indices(size: int, stride: int) -> np.ndarray:
    """0, stride, 2 stride ... and always the last pixel, so the plane covers the whole image."""
    idx = np.arange(0, size, stride)
    return idx if idx[-1] == size - 1 else np.append(idx, size - 1)


def plane_data(depth, k_proc, w2c_rel, up, scale, *, stride=4, edge_threshold=0.1, proc_to_orig=None,
               orig_size=None) -> dict[str, np.ndarray]:
    """Grid geometry for one view. Returns ``positions`` (V,3) float32, ``faces`` (F,4) int32
    (counter-clockwise as seen from the camera), ``uv`` (V,2) float32, ``pixels`` (V,2) int (row, col)."""
    h, w = depth.shape
    rows, cols = grid_indices(h, stride), grid_indices(w, stride)
    d = depth[np.ix_(rows, cols)].astype(np.float64)
    pts = unproject_depth(depth, k_proc, w2c_rel)[0][np.ix_(rows, cols)]
    valid = np.isfinite(d) & (d > 0)
    idx = np.arange(d.size).reshape(d.shape)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
    flat_d = np.where(valid, d, np.nan).ravel()
    corner = flat_d[quads]
    keep = np.all(np.isfinite(corner), axis=1)
    if edge_threshold is not None and edge_threshold > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            keep &= np.max(corner, axis=1) <= (1.0 + edge_threshold) * np.min(corner, axis=1)
    quads = quads[keep]
    used = np.unique(quads)
    remap = np.full(d.size, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    pix = np.stack([rr.ravel()[used], cc.ravel()[used]], axis=1)
    centre = np.stack([pix[:, 1] + 0.5, pix[:, 0] + 0.5, np.ones(len(pix))], axis=1)
    if proc_to_orig is None:
        uv = np.stack([centre[:, 0] / w, 1.0 - centre[:, 1] / h], axis=1)
    else:
        orig = centre @ np.asarray(proc_to_orig, dtype=np.float64).T
        ow, oh = float(orig_size[0]), float(orig_size[1])
        uv = np.stack([orig[:, 0] / ow, 1.0 - orig[:, 1] / oh], axis=1)
    return {
        "positions": points_to_blender(pts.reshape(-1, 3)[used], up, scale).astype(np.float32),
        "faces": remap[quads].astype(np.int32),
        "uv": uv.astype(np.float32),
        "pixels": pix,
    }


def plane_mesh(name: str, positions, faces, uv):
    """Quad mesh with a ``UVMap`` layer, built with bulk writes."""
    mesh = bpy.data.meshes.new(name)
    nf = len(faces)
    mesh.vertices.add(len(positions))
    set_positions(mesh, np.ascontiguousarray(positions, np.float32).ravel())
    mesh.loops.add(4 * nf)
    loop_vertices = np.ascontiguousarray(faces, np.int32).ravel()
    set_corner_vertices(mesh, loop_vertices)
    mesh.polygons.add(nf)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 4 * nf, 4, dtype=np.int32))
    mesh.update(calc_edges=True)
    set_uvs(mesh, "UVMap", np.ascontiguousarray(uv, np.float32)[loop_vertices].ravel())
    return mesh


def image_from_array(name: str, rgb: np.ndarray):
    """A packed image data-block holding ``rgb`` (H,W,3 uint8, top row first)."""
    h, w = rgb.shape[:2]
    image = bpy.data.images.new(name, width=w, height=h, alpha=False)
    px = np.ones((h, w, 4), dtype=np.float32)
    px[..., :3] = rgb[::-1] / np.float32(255.0)
    image.pixels.foreach_set(px.ravel())
    image.pack()
    return image


def image_from_file(path: str, pack: bool):
    image = bpy.data.images.load(path, check_existing=False)
    if pack:
        image.pack()
    return image
