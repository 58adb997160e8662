"""Known poses with ground truth (issue 17): the stand-in room network of tests/test_streaming.py,
conditioned on the room's own cameras (a "track" whose first camera is not at the origin), then imported:
the cameras sit on the track and every point on the room's walls, in the track's world, in one pass or
in chunks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy module (pip install bpy==5.0.1) is needed for scene tests")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_streaming import K, ROOM_HI, ROOM_LO, RoomModel, run  # noqa: E402

from test_scene import empty_file, mod  # noqa: E402,F401  (the scene tests' empty file and module lookup)


@pytest.mark.parametrize("chunk_size, up_axis, scale", [(None, "Z_UP", 1.0), (5, "KEEP", 3.0)])
def test_points_land_on_the_tracked_rooms_walls(chunk_size, up_axis, scale):
    n = 12
    model = RoomModel(n)
    track_w2c = np.linalg.inv(model.c2w)  # the room's own cameras: camera 0 at (2.5, 0, 0), turned
    assert np.linalg.norm(model.c2w[0, :3, 3]) > 2
    chunks = {"chunk_size": chunk_size, "chunk_overlap": 2} if chunk_size else {}
    pred = run(model, n, extrinsics=track_w2c, intrinsics=np.tile(K, (n, 1, 1)), **chunks)
    importer, conv = mod("scene.importer"), mod("scene.conventions")
    opts = importer.ImportOptions(conf_percentile=0.0, max_points=0, planes=False, up_axis=up_axis, scale=scale)
    root = importer.import_prediction(pred, options=opts)
    up = conv.up_matrix(up_axis)

    want = conv.camera_matrices(track_w2c, up, scale)  # where the track's cameras are in Blender
    cams = [ob for ob in root.all_objects if ob.type == "CAMERA"]
    assert len(cams) == n
    for ob in cams:
        assert np.abs(want - np.array(ob.matrix_world)[None]).max(axis=(1, 2)).min() < 1e-4, ob.name

    (points,) = [ob for ob in root.all_objects if ob.type == "MESH"]
    co = np.empty(len(points.data.vertices) * 3, np.float32)
    points.data.vertices.foreach_get("co", co)
    room = (co.reshape(-1, 3).astype(np.float64) / scale) @ up  # Blender world -> the room's (track's) world
    assert len(room) == n * model.depth[0].size
    tol = 1e-3 * (ROOM_HI - ROOM_LO).max()
    assert np.all(room >= ROOM_LO - tol) and np.all(room <= ROOM_HI + tol)  # inside the room
    wall = np.minimum(np.abs(room - ROOM_LO), np.abs(room - ROOM_HI)).min(axis=1)
    assert wall.max() < tol  # and on a wall
