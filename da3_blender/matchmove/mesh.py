"""A triangle mesh with vertex colours (the fused proxy mesh, issue 27): stored in a result, moved into
another world, written as PLY and glb. numpy only."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from ..files import open_atomic

KEYS = ("mesh_vertices", "mesh_faces", "mesh_colors")


@dataclass
class Mesh:
    vertices: np.ndarray  # (V,3) float32, the prediction's world
    faces: np.ndarray  # (F,3) int32, counter-clockwise seen from the free side (normals point at the cameras)
    colors: np.ndarray  # (V,3) uint8 sRGB

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(KEYS, (np.asarray(self.vertices, np.float32), np.asarray(self.faces, np.int32),
                               np.asarray(self.colors, np.uint8))))

    @classmethod
    def from_arrays(cls, data) -> "Mesh | None":
        if KEYS[0] not in data:
            return None
        mesh = cls(*(np.asarray(data[k]) for k in KEYS))
        v = len(mesh.vertices)
        if mesh.vertices.shape != (v, 3) or mesh.faces.ndim != 2 or mesh.faces.shape[1:] != (3,) \
                or mesh.colors.shape != (v, 3) or (mesh.faces.size and (mesh.faces.min() < 0 or mesh.faces.max() >= v)):
            raise ValueError("the proxy mesh arrays are inconsistent")
        return cls(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32), mesh.colors.astype(np.uint8))

    def moved(self, transform: np.ndarray, scale: float) -> "Mesh":
        """The mesh in the world ``x' = scale (R x + t)``."""
        t = np.asarray(transform, np.float64)
        verts = scale * (np.asarray(self.vertices, np.float64) @ t[:3, :3].T + t[:3, 3])
        return Mesh(verts.astype(np.float32), self.faces, self.colors)


def write_ply(mesh: Mesh, path: str) -> str:
    """Binary little-endian PLY: float xyz, uchar rgb per vertex; int vertex_indices per face."""
    v, f = len(mesh.vertices), len(mesh.faces)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment DA3 for Blender fused proxy mesh\nelement vertex {v}\n"
              "property float x\nproperty float y\nproperty float z\nproperty uchar red\nproperty uchar green\n"
              f"property uchar blue\nelement face {f}\nproperty list uchar int vertex_indices\nend_header\n")
    vert = np.zeros(v, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    vert["xyz"], vert["rgb"] = mesh.vertices, mesh.colors
    face = np.zeros(f, dtype=[("n", "u1"), ("idx", "<i4", 3)])
    face["n"], face["idx"] = 3, mesh.faces
    with open_atomic(path) as fh:
        fh.write(header.encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())
    return path


def write_glb(mesh: Mesh, path: str) -> str:
    """glTF binary: one indexed triangle primitive with COLOR_0 (linear, as glTF wants), Y up as glTF wants
    (our Z-up worlds are turned: (x, y, z) -> (x, z, -y))."""
    pos = np.ascontiguousarray(np.asarray(mesh.vertices, np.float32)[:, [0, 2, 1]] * np.array([1, 1, -1], np.float32))
    srgb = np.asarray(mesh.colors, np.float32) / 255.0
    col = np.ascontiguousarray(np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4), np.float32)
    idx = np.ascontiguousarray(np.asarray(mesh.faces, np.uint32).reshape(-1))
    blobs = [pos.tobytes(), col.tobytes(), idx.tobytes()]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    views = [{"buffer": 0, "byteOffset": int(o), "byteLength": len(b)} for o, b in zip(offsets, blobs)]
    lo, hi = (pos.min(axis=0), pos.max(axis=0)) if len(pos) else (np.zeros(3), np.zeros(3))
    gltf = {
        "asset": {"version": "2.0", "generator": "DA3 for Blender"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "DA3 proxy mesh"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2, "mode": 4}]}],
        "buffers": [{"byteLength": int(offsets[-1])}], "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(pos), "type": "VEC3",
             "min": [float(x) for x in lo], "max": [float(x) for x in hi]},
            {"bufferView": 1, "componentType": 5126, "count": len(col), "type": "VEC3"},
            {"bufferView": 2, "componentType": 5125, "count": int(idx.size), "type": "SCALAR"},
        ],
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary = b"".join(blobs)
    binary += b"\0" * (-len(binary) % 4)
    with open_atomic(path) as fh:
        fh.write(struct.pack("<III", 0x46546C67, 2, 12 + 8 + len(text) + 8 + len(binary)))
        fh.write(struct.pack("<II", len(text), 0x4E4F534A) + text)
        fh.write(struct.pack("<II", len(binary), 0x004E4942) + binary)
    return path
