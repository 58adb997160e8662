#!/usr/bin/env bash
# The web tests' tools (issue 21), idempotent: Debian's chromium (and node/npm if missing), three.js for
# the gallery's 3D viewer (scripts/vendor_three.py, npm registry) and playwright-core (npm) in
# build/web-tools to drive chromium headless. Used by .ci/run; developers run it once.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
      >/dev/null 2>&1 </dev/null || echo "setup_web: could not install ${need[*]}; the browser tests will say so" >&2
  else
    echo "setup_web: install ${need[*]} (no apt-get here)" >&2
  fi
fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
"$PY" scripts/vendor_three.py
PLAYWRIGHT=playwright-core@1.65.1
if [ ! -f build/web-tools/node_modules/playwright-core/package.json ]; then
  mkdir -p build/web-tools
  npm install --silent --no-audit --no-fund --prefix build/web-tools "$PLAYWRIGHT" >/dev/null
fi
echo "setup_web: ok (chromium $(chromium --version 2>/dev/null | awk '{print $2}'), $PLAYWRIGHT, three vendored)"
