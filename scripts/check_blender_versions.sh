#!/usr/bin/env bash
# Every supported Blender and worker Python (README "Supported Blender"), after the main suite (.ci/run):
#   1. scripts/check_pins.py: every pin has a wheel for CPython 3.11/3.13 on the four platforms (asks PyPI);
#   2. .venv-np2: the worker/core tests under numpy 2 (the Python 3.13 rows' pins);
#   3. .venv-bpy42: the Blender-side tests on the bpy 4.2 LTS module (the manifest's blender_version_min);
#   4. .venv-bpy53: the same on the newest release, the bpy 5.3 module on Python 3.13 (without torch: the
#      tests that start a worker run in 2., 3. and 5.);
#   5. scripts/check_real_blender.sh: Debian 13's real Blender 4.3 binary, headless and in an Xvfb window.
# Runs every step, prints each one's time, exits 1 if any failed. Extra pytest arguments are passed on.
# CI time (issue 26): the tests of 2.-5. are separate processes that share nothing (own venvs, own temp folders;
# 5. its own Debian root): they run as three concurrent streams on the two cores (numpy 2 | bpy 4.2 then bpy 5.3 |
# the real Blender), each stream's output printed whole, in this order, when all have ended.
# DA3_CI_BACKGROUND=DIR (.ci/run): steps 1. and the set-up of 2.-4. were started in the background at the
# start of CI (network- and disk-bound: PyPI, venv installs); DIR holds each one's log and exit status
# (scripts/ci_background.sh), printed and honoured here instead of running them again.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# the worker side: no bpy here (the bpy 5.0.1 module is built against numpy 1.x)
NP2_TESTS=(tests/test_geometry.py tests/test_preprocess.py tests/test_job.py tests/test_inference.py
           tests/test_worker.py tests/test_streaming.py tests/test_exr.py tests/test_gs_ply.py tests/test_inputs.py
           tests/test_exports.py --deselect tests/test_inputs.py::test_video_frame_numbers_are_blenders
           --deselect tests/test_exports.py::test_blender_imports_the_glb_and_ply
           --deselect tests/test_worker.py::test_killed_worker_reports_and_restarts)  # process handling, not numpy
# the Blender side: register/unregister, panels, import of results, scene builders, camera export, operators
# (test_under_blender_b_P needs a blender binary on PATH: the real-binary step below covers `blender -b -P`)
BPY42_TESTS=(tests/test_extension.py tests/test_scene.py tests/test_exporters.py tests/test_camera_export.py
             tests/test_headless.py --deselect tests/test_headless.py::test_under_blender_b_P)
# the newest Blender (Python 3.13, no torch wheel for it on this disk): everything above but starting a worker
BPY53_TESTS=("${BPY42_TESTS[@]}" tests/test_splats.py
             --deselect tests/test_extension.py::test_check_interpreter_shows_torch_and_devices
             --deselect tests/test_camera_export.py::test_headless_export_camera_round_trips
             --deselect tests/test_headless.py::test_images_to_a_blend_with_exports
             --deselect tests/test_headless.py::test_video_to_a_blend
             --deselect tests/test_headless.py::test_a_failing_run_fails_in_one_line)
failed=()
BG=${DA3_CI_BACKGROUND:-}

step() {  # step NAME COMMAND...
  local t0=$SECONDS
  echo "== $1"
  if "${@:2}"; then echo "== $1: ok ($((SECONDS - t0)) s)"; else echo "== $1: FAILED ($((SECONDS - t0)) s)"; failed+=("$1"); fi
}

step_or_background() {  # step_or_background NAME JOB COMMAND...: JOB's result from $BG if it ran there, else run it
  if [ -n "$BG" ]; then
    echo "== $1 (in the background since the start of CI)"
    if bash scripts/ci_background.sh wait "$BG" "$2"; then echo "== $1: ok"; else echo "== $1: FAILED"; failed+=("$1"); fi
  else
    step "$1" "${@:3}"
  fi
}

stream() {  # stream LOG STEP...: steps (NAME|COMMAND...) one after the other into LOG; LOG.failed names the failed
  local log=$1; shift  # (pytest steps get this script's extra arguments)
  : > "$log.failed"
  for spec in "$@"; do
    local name=${spec%%|*} t0=$SECONDS
    read -r -a cmd <<< "${spec#*|}"
    echo "== $name" >> "$log"
    [ "${cmd[1]:-}" != -m ] || cmd+=("${EXTRA[@]}")
    if "${cmd[@]}" >> "$log" 2>&1; then echo "== $name: ok ($((SECONDS - t0)) s)" >> "$log"
    else echo "== $name: FAILED ($((SECONDS - t0)) s)" >> "$log"; echo "$name" >> "$log.failed"; fi
  done
}

EXTRA=("$@")
step_or_background "check_pins" check_pins .venv/bin/python scripts/check_pins.py
step_or_background "set up .venv-np2, .venv-bpy42 and .venv-bpy53" setup_envs bash scripts/setup_envs.sh all
TMP=$(mktemp -d)
P="-m pytest -q -p no:cacheprovider"
t0=$SECONDS
echo "== steps 2.-5. in three concurrent streams (numpy 2 | bpy 4.2, bpy 5.3 | real Blender); each stream's log follows when all end"
stream "$TMP/np2" "worker tests under numpy 2|.venv-np2/bin/python $P ${NP2_TESTS[*]}" &
pids=($!)
stream "$TMP/bpy" "Blender-side tests on bpy 4.2 LTS|.venv-bpy42/bin/python $P ${BPY42_TESTS[*]}" \
                  "Blender-side tests on bpy 5.3 (Python 3.13)|.venv-bpy53/bin/python $P ${BPY53_TESTS[*]}" &
pids+=($!)
stream "$TMP/real" "real Blender binary and window|bash scripts/check_real_blender.sh" &
pids+=($!)
wait "${pids[@]}"
for log in "$TMP/np2" "$TMP/bpy" "$TMP/real"; do
  cat "$log"
  mapfile -t names < "$log.failed"
  [ ${#names[@]} -eq 0 ] || failed+=("${names[@]}")
done
rm -rf "$TMP"
echo "== the three streams took $((SECONDS - t0)) s together"
if [ ${#failed[@]} -gt 0 ]; then
  echo "check_blender_versions: failed: ${failed[*]}" >&2
  exit 1
fi
echo "check_blender_versions: ok"
