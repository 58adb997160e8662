"""Render-farm jobs: a long shot as separate processes a farm manager schedules.

- ``tasks.py``: the plan folder and its steps (plan, one chunk's forward, align, the Blender build).
- ``loops.py``: the Loops step (loop closure of a long shot that comes back, as in-process streaming);
  ``solve.py``: the Solve step (the stitched shot's camera solve); ``sizes.py``: the views' processed size.
- ``flamenco.py``: a planned shot submitted to a Flamenco v3 manager (standard library only: the
  panel's *Submit to Flamenco* imports it inside Blender).

Imports: the core (``job``, ``inputs``, ``pipeline``, ``inference``, ``exports``, ``prediction``);
``flamenco`` imports ``tasks``, never the reverse. The command line for these is
:mod:`da3_blender.commands.farm`; nothing here imports ``commands``. This ``__init__`` imports nothing.
"""
