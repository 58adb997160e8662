"""The process boundary: everything between Blender (or a script) and the Python that runs DA3.

Imports run one way, never back: the DA3 core (``da3_blender``) <- the server side <- the client side
<- the environments. The worker never imports the client, and nothing here imports bpy.

Server side (runs in the worker's Python, local or on a GPU box over SSH):
- ``protocol.py``: the JSON-lines messages, their checks (line length, request envelopes, the events
  a client accepts) and the worker log's location.
- ``requirements.py``: the one table of packages the worker's Python needs.
- ``transfer.py``: a remote worker's job folders (uploads, downloads, listings; paths confined, a
  jobs folder others can write refused), the one path map, portable names for files fetched back.
- ``worker.py``: the worker process (``python -m da3_blender.worker``): jobs, progress, cancel (also
  inside model loading and file writes, through ``da3_blender.cancel``).

Client side (runs in Blender, the headless script or any caller):
- ``client.py``: :class:`WorkerClient`, which starts, drives and watches a worker, local or remote.
- ``client_remote.py``: its remote half: connecting, routed requests, remote jobs.
- ``ssh.py``: the SSH transport: host and ``-o`` allowlist checks, command lines (code runs only from
  a private cache folder), the package upload, the one "last stderr line".
- ``remote.py``: :class:`RemoteJob`, one job's files sent, run and fetched over that transport (a
  result that cannot be written here is kept on the remote, with the command that fetches it).

Environments (on top of the client):
- ``envs.py``: checking an interpreter, creating the managed (or a remote) virtual environment.

``scripts/check_layout.py`` (run by ``tests/test_layout.py``) checks this order and that no module here
grows past 500 lines.
"""
