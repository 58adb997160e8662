#!/usr/bin/env bash
# Set up the environment if needed, then reconstruct the bundled example (examples/orbit, rendered
# with Blender by scripts/make_example_media.py) headless with the default model into out/orbit.blend.
# The default model (depth-anything/DA3-SMALL) is downloaded from the Hugging Face hub on first use;
# set DA3_MODEL to a local folder (config.json + model.safetensors) or HF_ENDPOINT to a mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
exec .venv/bin/python scripts/reconstruct.py examples/orbit --model "${DA3_MODEL:-depth-anything/DA3-SMALL}" \
  --output out/orbit.blend --export-dir out/orbit --export-format glb "$@"
