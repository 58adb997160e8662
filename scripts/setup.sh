#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned dependencies.
#   bash scripts/setup.sh            core + test tools (pytest, the bpy module)
# Needs Python 3.11 (the bpy==5.0.1 wheel is built for it). Set PYTHON to choose the interpreter.
# Quiet and incremental: prints only errors and one final line; the install is skipped when
# pyproject.toml has not changed since the last successful one (a stamp in .venv holds its hash).
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
STAMP=.venv/.da3-setup-stamp
WANT=$(cat pyproject.toml scripts/setup.sh | "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  LOG=.venv/setup.log
  rm -f "$STAMP"
  if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "setup: error: installing the pinned dependencies failed (full log: $LOG)" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
.venv/bin/python -c 'import torch, bpy; print(f"setup: ok (torch {torch.__version__}, Blender {bpy.app.version_string})")'
