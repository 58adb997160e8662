"""The ``da3`` command line (``python -m da3_blender``, the ``da3`` script: :func:`.main.main`).

- ``main.py``: the dispatcher: the parser made of every command's, ``main`` (one error line, exit codes).
- ``common.py``: what every command shares: option groups, :func:`~.common.job_from_args`,
  :func:`~.common.input_kind`, :class:`~.common.ProgressPrinter`, :func:`~.common.run_job`.
- one module per command family: ``reconstruct.py`` (auto, image, images, video), ``export.py``,
  ``farm.py`` (``da3 farm ...``), ``colmap.py``, ``web.py`` (backend, gallery, gradio).

Imports: every command module imports ``common`` and the core (``job``, ``inputs``, ``farm``, ``web``,
``inference``...); only ``main`` imports the command modules, and nothing imports ``main`` back
(scripts and tests call :func:`.main.main`). This ``__init__`` imports nothing.
"""
