#!/usr/bin/env bash
# The two extra test environments beside .venv (README "Supported Blender"), pinned and incremental like setup.sh:
#   bash scripts/setup_envs.sh np2     .venv-np2:   the worker side with numpy 2 (the pins of the Python 3.13
#                                                   rows of da3_blender/runtime/requirements.py, torch 2.13.0 CPU),
#                                                   no bpy (the bpy 5.0.1 module is built against numpy 1.x)
#   bash scripts/setup_envs.sh bpy42   .venv-bpy42: the Blender side on the oldest supported Blender, the
#                                                   bpy==4.2 LTS module (numpy 1.26, torch 2.13.0 CPU)
#   bash scripts/setup_envs.sh bpy53   .venv-bpy53: the Blender side on the newest Blender, the bpy==5.3 module on
#                                                   Python 3.13 (PYTHON313=...; numpy 2.4.6, no torch: no CPU wheel
#                                                   for 3.13 on this disk, the worker paths run in the other envs)
#   bash scripts/setup_envs.sh all     all three
# Python 3.11 (PYTHON=...), as setup.sh. Prints one line per environment, errors with the log's tail.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
BPY42=bpy==4.2.0
BPY53=bpy==5.3.0
TEST_PINS=(pytest==9.2.0 moviepy==2.2.1)

python313() {  # Python 3.13 for .venv-bpy53: PYTHON313, python3.13 on PATH, or pyenv's
  local py=${PYTHON313:-}
  [ -n "$py" ] || py=$(command -v python3.13 2>/dev/null || true)
  [ -n "$py" ] && "$py" --version >/dev/null 2>&1 || py=$(ls -d "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1)
  if [ -z "$py" ] || ! "$py" --version >/dev/null 2>&1; then
    echo "setup_envs: error: .venv-bpy53 needs Python 3.13 (Blender 5.1+ is Python 3.13): install it (e.g. pyenv install 3.13) or set PYTHON313" >&2
    exit 1
  fi
  echo "$py"
}

make_env() {  # make_env DIR PIN...   (VENV_PYTHON=...: the interpreter, default $PYTHON)
  local dir=$1; shift
  local want
  want=$(printf '%s\n' "$@" | cat - pyproject.toml da3_blender/runtime/requirements.py scripts/setup_envs.sh \
         | "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  [ -x "$dir/bin/python" ] || "${VENV_PYTHON:-$PYTHON}" -m venv "$dir"
  if [ "$(cat "$dir/.da3-setup-stamp" 2>/dev/null || true)" != "$want" ]; then
    rm -f "$dir/.da3-setup-stamp"
    if ! { "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
           && "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .; } >"$dir/setup.log" 2>&1; then
      tail -n 30 "$dir/setup.log" >&2
      echo "setup_envs: error: installing $dir failed (full log: $dir/setup.log)" >&2
      exit 1
    fi
    echo "$want" > "$dir/.da3-setup-stamp"
  fi
}

for target in "${@:-all}"; do
  case $target in
    np2|all)
      mapfile -t PINS < <("$PYTHON" -c 'from da3_blender.runtime.requirements import requirements_for as r
print("\n".join(r("3.13", "linux-x86_64", managed=False)))')
      make_env .venv-np2 "${PINS[@]}" OpenEXR==3.5.3 "${TEST_PINS[@]}"
      .venv-np2/bin/python -c 'import numpy, torch; assert numpy.__version__.startswith("2."); print(f"setup_envs: .venv-np2 ok (numpy {numpy.__version__}, torch {torch.__version__})")'
      ;;&
    bpy42|all)
      mapfile -t PINS < <("$PYTHON" -c 'from da3_blender.runtime.requirements import requirements_for as r
print("\n".join(r("3.11", "linux-x86_64")))')
      make_env .venv-bpy42 "${PINS[@]}" "$BPY42" "${TEST_PINS[@]}"
      .venv-bpy42/bin/python -c 'import bpy, numpy, torch; print(f"setup_envs: .venv-bpy42 ok (Blender {bpy.app.version_string}, numpy {numpy.__version__}, torch {torch.__version__})")'
      ;;&
    bpy53|all)
      PY313=$(python313)
      mapfile -t PINS < <("$PYTHON" -c 'from da3_blender.runtime.requirements import requirements_for as r
print("\n".join(p for p in r("3.13", "linux-x86_64", managed=False) if not p.startswith("torch")))')
      VENV_PYTHON=$PY313 make_env .venv-bpy53 "${PINS[@]}" "$BPY53" "${TEST_PINS[@]}"
      .venv-bpy53/bin/python -c 'import sys, bpy, numpy; print(f"setup_envs: .venv-bpy53 ok (Blender {bpy.app.version_string}, Python {sys.version.split()[0]}, numpy {numpy.__version__})")'
      ;;
    np2|bpy42) ;;
    *) echo "setup_envs: error: unknown environment '$target' (np2, bpy42, bpy53 or all)" >&2; exit 2 ;;
  esac
done
