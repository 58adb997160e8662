"""Textured depth planes: per view, a grid mesh of (stride-subsampled) pixel centres lifted by depth.

Vertex (row r, col c) is pixel (r, c) of the processed image lifted at its centre
(``conventions.lift``), in the Blender world of :mod:`.conventions`. Its UV is that
pixel's centre in the texture: the processed image (packed) or the original file (mapped through
``proc_to_orig``). Quads are dropped where a corner has no valid depth or where the depths of the
quad's corners differ by more than ``edge_threshold`` relative (``max/min - 1``), so no face
bridges a depth discontinuity.
"""

from __future__ import annotations

import bpy
import numpy as np

from .compat import assign_action, fcurve, set_corner_vertices, set_edges, set_positions, set_uvs, set_keyframes
from .conventions import lift, pixel_to_world


def grid_indices(size: int, stride: int) -> np.ndarray:
    """0, stride, 2 stride ... and always the last pixel, so the plane covers the whole image."""
    idx = np.arange(0, size, stride)
    return idx if idx[-1] == size - 1 else np.append(idx, size - 1)


def grid_edges(keep: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the kept quads of a grid, without a hash: ``edges`` (E,2) int32 vertex pairs and
    ``corner_edges`` (F,4) int32, the edge from each face corner to the next (Blender's layout)."""
    horizontal = np.zeros((keep.shape[0] + 1, keep.shape[1]), dtype=bool)  # (r, c)-(r, c+1)
    horizontal[:-1] |= keep
    horizontal[1:] |= keep
    vertical = np.zeros((keep.shape[0], keep.shape[1] + 1), dtype=bool)  # (r, c)-(r+1, c)
    vertical[:, :-1] |= keep
    vertical[:, 1:] |= keep
    h_id = np.cumsum(horizontal, dtype=np.int32).reshape(horizontal.shape) - 1
    v_id = np.cumsum(vertical, dtype=np.int32).reshape(vertical.shape) - 1 + int(horizontal.sum())
    edges = np.concatenate([
        np.stack([index[:, :-1][horizontal], index[:, 1:][horizontal]], axis=1),
        np.stack([index[:-1, :][vertical], index[1:, :][vertical]], axis=1),
    ]).astype(np.int32)
    # corners (r, c) -> (r+1, c) -> (r+1, c+1) -> (r, c+1) -> (r, c)
    corner_edges = np.stack([v_id[:, :-1][keep], h_id[1:][keep], v_id[:, 1:][keep], h_id[:-1][keep]], axis=1)
    return edges, corner_edges


def plane_data(depth, k_proc, w2c_rel, up, scale, *, stride=4, edge_threshold=0.1, proc_to_orig=None,
               orig_size=None) -> dict[str, np.ndarray]:
    """Grid geometry for one view. Returns ``positions`` (V,3) float32, ``faces`` (F,4) int32
    (counter-clockwise as seen from the camera), ``edges``/``corner_edges`` (:func:`grid_edges`),
    ``uv`` (V,2) float32."""
    h, w = depth.shape
    rows, cols = grid_indices(h, stride), grid_indices(w, stride)
    d = np.asarray(depth, dtype=np.float32)[np.ix_(rows, cols)]
    gh, gw = d.shape
    valid = np.isfinite(d) & (d > 0)
    # quad (r, c) has the corners (r, c), (r+1, c), (r+1, c+1), (r, c+1) of the grid
    corners = (np.s_[:-1, :-1], np.s_[1:, :-1], np.s_[1:, 1:], np.s_[:-1, 1:])
    keep = valid[corners[0]] & valid[corners[1]] & valid[corners[2]] & valid[corners[3]]
    if edge_threshold is not None and edge_threshold > 0:
        near = np.minimum(np.minimum(d[corners[0]], d[corners[1]]), np.minimum(d[corners[2]], d[corners[3]]))
        far = np.maximum(np.maximum(d[corners[0]], d[corners[1]]), np.maximum(d[corners[2]], d[corners[3]]))
        with np.errstate(invalid="ignore"):
            keep &= far <= (1.0 + edge_threshold) * near
    used = np.zeros((gh, gw), dtype=bool)
    for corner in corners:
        used[corner] |= keep
    index = np.cumsum(used, dtype=np.int32).reshape(gh, gw) - 1  # vertex number of each used grid point
    faces = np.stack([index[corner][keep] for corner in corners], axis=1)
    u, v = cols + 0.5, rows[:, None] + 0.5  # pixel centres, as a row and a column
    m, b = pixel_to_world(k_proc, w2c_rel, up, scale)
    positions = lift(u, v, d, m, b)[used]
    if proc_to_orig is None:
        su, sv = np.broadcast_arrays(u / w, 1.0 - v / h)
    else:  # the same pixel centres in the original image
        p = np.asarray(proc_to_orig, dtype=np.float64)
        x, y, z = (p[i, 0] * u + p[i, 1] * v + p[i, 2] for i in range(3))
        su, sv = x / z / float(orig_size[0]), 1.0 - y / z / float(orig_size[1])
    edges, corner_edges = grid_edges(keep, index)
    return {
        "positions": positions,
        "faces": faces,
        "edges": edges,
        "corner_edges": corner_edges,
        "uv": np.stack([su[used], sv[used]], axis=1).astype(np.float32),
    }


def plane_mesh(name: str, positions, faces, uv, edges=None, corner_edges=None):
    """Quad mesh with a ``UVMap`` layer, built with bulk writes (edges computed by Blender when
    ``edges``/``corner_edges`` are not given)."""
    mesh = bpy.data.meshes.new(name)
    nf = len(faces)
    mesh.vertices.add(len(positions))
    set_positions(mesh, np.ascontiguousarray(positions, np.float32).ravel())
    mesh.loops.add(4 * nf)
    loop_vertices = np.ascontiguousarray(faces, np.int32).ravel()
    set_corner_vertices(mesh, loop_vertices)
    mesh.polygons.add(nf)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 4 * nf, 4, dtype=np.int32))
    given = edges is not None and set_edges(mesh, np.ascontiguousarray(edges, np.int32).ravel(),
                                            np.ascontiguousarray(corner_edges, np.int32).ravel())
    mesh.update(calc_edges=not given)
    set_uvs(mesh, "UVMap", np.take(np.asarray(uv, np.float32), loop_vertices, axis=0).ravel())
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


def show_only_on_frame(obj, frame: int, track) -> None:
    """Key ``hide_viewport`` and ``hide_render`` (constant) so ``obj`` shows on scene ``frame`` only:
    rendering a video frame through its camera then shows that frame's plane alone."""
    action = track(bpy.data.actions.new(f"{obj.name} visibility"))
    assign_action(obj, action)
    frames = np.array([frame - 1, frame, frame + 1], dtype=np.float64)
    hidden = np.array([1.0, 0.0, 1.0])
    for path in ("hide_viewport", "hide_render"):
        set_keyframes(fcurve(action, obj, path, 0), frames, hidden, "CONSTANT")
    obj["da3_frame"] = int(frame)
