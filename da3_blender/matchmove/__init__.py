"""The matchmove scene (issue 27): the floor found in a result, the FLOOR world (floor at Z = 0, +Z up,
scaled), and a fused proxy mesh. numpy only, except :mod:`.fusion` (torch when present, scikit-image's
marching cubes); never bpy.

- :mod:`.floor`: :func:`~.floor.find_floor` (RANSAC + least squares over confident points of all views).
- :mod:`.world`: the FLOOR frame, the scale from a camera height, a prediction moved into a world.
- :mod:`.fusion`: :func:`~.fusion.fuse_mesh` (truncated signed distances, marching cubes, decimation).
"""
