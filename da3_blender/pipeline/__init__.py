"""The steps of one run of the network (:func:`da3_blender.inference.run_inference` calls them in order).

- ``preprocess.py``: model input preparation (resize to the patch grid, normalise, camera maths).
- ``forward.py``: the network passes (one pass, or chunks of a long shot).
- ``streaming.py``: long shots: chunk plans, each chunk aligned and stitched (numpy only).
- ``postprocess.py``: metric units, the fit onto known poses, the Gaussians' frame.

Imports: the core (``errors``, ``options``, ``geometry``, ``devices``, ``prediction``, ``job``,
``model``); ``forward`` imports the other three. Nothing here imports ``inference``, ``inputs``,
``commands`` or ``farm``. This ``__init__`` imports nothing.
"""
