#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned dependencies.
#   bash scripts/setup.sh            core + test tools (pytest, the bpy module)
# Needs Python 3.11 (the bpy==5.0.1 wheel is built for it). Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: error: Python 3.11 is needed (bpy 5.0.1 is built for it); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/python -c 'import torch, bpy; print(f"setup: ok (torch {torch.__version__}, Blender {bpy.app.version_string})")'
