"""The web side of the ``da3`` command: ``da3 backend`` (a warm model over local HTTP), ``da3 gallery``
(a page of result folders with a 3D viewer) and ``da3 gradio`` (the web app, ``app`` extra).

Standard library only (``http.server``); the model runs in our worker process
(:class:`da3_blender.runtime.client.WorkerClient`), never in the server's own process. Nothing here is
imported by the Blender extension or the core; ``gradio_app`` alone imports gradio.

* :mod:`.security`  who may call (loopback, token) and which paths a request may name (allowed roots)
* :mod:`.http`      the request handler base: limits, one-line JSON errors, static files
* :mod:`.payload`   an official ``POST /inference`` body -> our job description (``da3_blender.job``)
* :mod:`.tasks`     the task queue: one job at a time on the warm worker, progress, cancel
* :mod:`.backend`   ``da3 backend``: the routes
* :mod:`.gallery`   ``da3 gallery`` and the backend's ``/gallery``
* :mod:`.client`    ``--use-backend``: the other commands sending their work to a backend
* :mod:`.commands`  the argparse side of ``backend``, ``gallery``, ``gradio`` and ``colmap``
"""
