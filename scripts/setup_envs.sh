#!/usr/bin/env bash
# The two extra test environments beside .venv (README "Supported Blender"), pinned and incremental like setup.sh:
#   bash scripts/setup_envs.sh np2     .venv-np2:   the worker side with numpy 2 (the pins of the Python 3.13
#                                                   rows of da3_blender/runtime/requirements.py, torch 2.13.0 CPU),
#                                                   no bpy (the bpy 5.0.1 module is built against numpy 1.x)
#   bash scripts/setup_envs.sh bpy42   .venv-bpy42: the Blender side on the oldest supported Blender, the
#                                                   bpy==4.2 LTS module (numpy 1.26, torch 2.13.0 CPU)
#   bash scripts/setup_envs.sh all     both
# Python 3.11 (PYTHON=...), as setup.sh. Prints one line per environment, errors with the log's tail.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
BPY42=bpy==4.2.0
TEST_PINS=(pytest==9.2.0 moviepy==2.2.1)

make_env() {  # make_env DIR PIN...
  local dir=$1; shift
  local want
  want=$(printf '%s\n' "$@" | cat - pyproject.toml da3_blender/runtime/requirements.py scripts/setup_envs.sh \
         | "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
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
      ;;
    np2) ;;
    *) echo "setup_envs: error: unknown environment '$target' (np2, bpy42 or all)" >&2; exit 2 ;;
  esac
done
