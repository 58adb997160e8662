"""What the user gives, read and checked before any work: image files and folders, one video, numbered
image sequences (VFX plates), plate formats through OpenImageIO, frame rates, COLMAP models, and the
images and known cameras :func:`da3_blender.inference.run_inference` is given.

- ``paths.py``: which files are images or videos, frame numbers in names, natural order (standard library).
- ``checks.py``: the video-option and frame-start checks the job shares (standard library).
- ``plates.py``: EXR/DPX/Cineon/HDR/float TIFF through OpenImageIO, to display-referred 8-bit RGB.
- ``rates.py``: frame rates as exact rationals (standard library).
- ``images.py``: :class:`InputSet`, one image file read (:func:`load_image`), a folder's images.
- ``sequences.py``: numbered sequences found (standard library) and read as one shot.
- ``collect.py``: :func:`collect_inputs` (files, folders, a video or a sequence) and video decoding.
- ``colmap.py``: a COLMAP model's cameras as known poses (``da3 colmap``).
- ``views.py``: what ``run_inference`` is given (paths, arrays or an :class:`InputSet`, known cameras).

Imports: the core below (``errors``, ``options``, ``geometry``, ``devices``; ``colmap.py`` the COLMAP
text format of ``exports/colmap.py``) and each other in the order above. Nothing here imports ``job``,
``commands``, ``farm`` or ``runtime``: :mod:`da3_blender.job` imports from here, never the reverse.
This ``__init__`` imports nothing (``import da3_blender.inputs.paths`` stays standard library only).
"""
