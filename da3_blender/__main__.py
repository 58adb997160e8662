"""``python -m da3_blender ...`` is the ``da3`` command line."""

from .cli import main

raise SystemExit(main())
