"""The parts of a result besides depth and cameras, as plain numpy arrays a :class:`~da3_blender.prediction.Prediction`
holds and Blender's Python reads: ``gaussians.py`` (3D Gaussians of DA3-GIANT / NESTED) and ``tracks.py``
(the camera solve's feature tracks).

Imports: numpy and the standard library only (nothing from da3_blender). This ``__init__`` imports nothing.
"""
