"""``python -m da3_blender ...`` is the ``da3`` command line."""

from .commands.main import main

raise SystemExit(main())
