"""``da3 farm STEP ...`` straight from a DA3 for Blender folder, for farm managers and their workers.

    python scripts/da3_farm.py forward /shared/shots/sh010 --chunk 3
    python scripts/da3_farm.py align /shared/shots/sh010

Nothing to install but the requirements: this folder is put on ``sys.path`` (the Python needs torch
and the pinned packages, e.g. the extension's managed environment). Same exit codes and one-line
errors as ``da3`` (see ``da3_blender/commands/farm.py``).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from da3_blender.commands.main import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["farm", *sys.argv[1:]]))
