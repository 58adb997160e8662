"""The process boundary: everything between Blender (or a script) and the Python that runs DA3.

Imports run one way, never back: the DA3 core (``da3_blender``) <- the server side <- the client side
<- the environments. The worker never imports the client, and nothing here imports bpy.

Server side (runs in the worker's Python, local or on a GPU box over SSH):
- ``protocol.py``: the JSON-lines messages, their checks and the worker log's location.
- ``requirements.py``: the one table of packages the worker's Python needs.
- ``transfer.py``: a remote worker's job folders (uploads, downloads, listings; paths confined).
- ``worker.py``: the worker process (``python -m da3_blender.worker``): jobs, progress, cancel.

Client side (runs in Blender, the headless script or any caller):
- ``client.py``: :class:`WorkerClient`, which starts, drives and watches a worker, local or remote.
- ``ssh.py``: the SSH transport: host and option checks, command lines, the package upload.
- ``remote.py``: :class:`RemoteJob`, one job's files sent, run and fetched over that transport.

Environments (on top of the client):
- ``envs.py``: checking an interpreter, creating the managed (or a remote) virtual environment.
"""
