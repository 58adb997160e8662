#!/usr/bin/env bash
# Every supported Blender and worker Python (README "Supported Blender"), after the main suite (.ci/run):
#   1. scripts/check_pins.py: every pin has a wheel for CPython 3.11/3.13 on the four platforms (asks PyPI);
#   2. .venv-np2: the worker/core tests under numpy 2 (the Python 3.13 rows' pins);
#   3. .venv-bpy42: the Blender-side tests on the bpy 4.2 LTS module (the manifest's blender_version_min);
#   4. .venv-bpy53: the same on the newest release, the bpy 5.3 module on Python 3.13 (without torch: the
#      tests that start a worker run in 2., 3. and 5.);
#   5. scripts/check_real_blender.sh: Debian 13's real Blender 4.3 binary, headless and in an Xvfb window.
# Runs every step, prints each one's time, exits 1 if any failed. Extra pytest arguments are passed on.
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

step() {  # step NAME COMMAND...
  local t0=$SECONDS
  echo "== $1"
  if "${@:2}"; then echo "== $1: ok ($((SECONDS - t0)) s)"; else echo "== $1: FAILED ($((SECONDS - t0)) s)"; failed+=("$1"); fi
}

step "check_pins" .venv/bin/python scripts/check_pins.py
step "set up .venv-np2, .venv-bpy42 and .venv-bpy53" bash scripts/setup_envs.sh all
step "worker tests under numpy 2" .venv-np2/bin/python -m pytest -q -p no:cacheprovider "${NP2_TESTS[@]}" "$@"
step "Blender-side tests on bpy 4.2 LTS" .venv-bpy42/bin/python -m pytest -q -p no:cacheprovider "${BPY42_TESTS[@]}" "$@"
step "Blender-side tests on bpy 5.3 (Python 3.13)" .venv-bpy53/bin/python -m pytest -q -p no:cacheprovider "${BPY53_TESTS[@]}" "$@"
step "real Blender binary and window" bash scripts/check_real_blender.sh
if [ ${#failed[@]} -gt 0 ]; then
  echo "check_blender_versions: failed: ${failed[*]}" >&2
  exit 1
fi
echo "check_blender_versions: ok"
