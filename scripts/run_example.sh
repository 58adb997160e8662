#!/usr/bin/env bash
# Set up the environment if needed, then reconstruct the bundled example (examples/orbit, rendered
# with Blender by scripts/make_example_media.py) headless with the default model into out/orbit.blend.
# The default model (da3_blender/options.py: depth-anything/DA3-SMALL, or $DA3_MODEL) is downloaded from the Hugging Face hub on first use;
# set DA3_MODEL to a local folder (config.json + model.safetensors) or HF_ENDPOINT to a mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
exec .venv/bin/python scripts/reconstruct.py examples/orbit \
  --output out/orbit.blend --export-dir out/orbit --export-format glb "$@"
