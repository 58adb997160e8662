"""``python -m da3_blender.worker``: the worker command (README, the SSH transport and the client run it).

The worker itself is :mod:`da3_blender.runtime.worker`; this name stays the documented command.
"""

import sys

from .runtime.worker import main

if __name__ == "__main__":
    sys.exit(main())
