"""Vendor the few three.js files the DA3 gallery's 3D viewer needs (no CDN at run time).

    python scripts/vendor_three.py          # -> da3_blender/web/static/vendor/three/ (git-ignored)

``npm pack three@VERSION`` fetches the pinned release from the npm registry (npm checks it against
the registry's integrity hash; we check the sha512 below again), and only the files the viewer
imports are extracted, with three.js's MIT licence. Idempotent: does nothing when they are there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

VERSION = "0.187.0"
INTEGRITY = "sha512-Qiu7R+Cmh8CstZsY1uJOSWnVlfo7ZtNLV7mF8Jltk3LB3AtDu9cRZlcnRKkAk8Y4z6KKw35z7Y7Urd7jWY8etA=="
FILES = (
    "LICENSE",
    "build/three.module.js",
    "build/three.core.js",
    "examples/jsm/loaders/GLTFLoader.js",
    "examples/jsm/controls/OrbitControls.js",
    "examples/jsm/utils/BufferGeometryUtils.js",
    "examples/jsm/utils/SkeletonUtils.js",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, "da3_blender", "web", "static", "vendor", "three")
STAMP = os.path.join(DEST, ".version")


def main() -> int:
    if os.path.isfile(STAMP) and open(STAMP).read().strip() == VERSION and all(
            os.path.isfile(os.path.join(DEST, f)) for f in FILES):
        print(f"vendor_three: three {VERSION} already in {DEST}")
        return 0
    npm = shutil.which("npm")
    if npm is None:
        print("vendor_three: error: npm not found (apt-get install npm)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([npm, "pack", f"three@{VERSION}", "--json", "--pack-destination", tmp],
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            print(f"vendor_three: error: npm pack failed: {run.stderr.strip()[-500:]}", file=sys.stderr)
            return 1
        tgz = os.path.join(tmp, json.loads(run.stdout)[0]["filename"])
        digest = "sha512-" + base64.b64encode(hashlib.sha512(open(tgz, "rb").read()).digest()).decode()
        if digest != INTEGRITY:
            print(f"vendor_three: error: three-{VERSION}.tgz has {digest}, expected {INTEGRITY}", file=sys.stderr)
            return 1
        shutil.rmtree(DEST, ignore_errors=True)
        with tarfile.open(tgz) as tar:
            for name in FILES:
                member = tar.getmember("package/" + name)
                target = os.path.join(DEST, *name.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    with open(STAMP, "w") as fh:
        fh.write(VERSION + "\n")
    print(f"vendor_three: three {VERSION} -> {DEST} ({len(FILES)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
