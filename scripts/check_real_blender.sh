#!/usr/bin/env bash
# The extension in a real Blender binary and window: Debian 13's `blender` (4.3, Python 3.13, built without
# Alembic) in a debootstrap root, with Xvfb. Run by .ci/run; needs root (debootstrap, chroot, mounts) and
# Debian's package archive.
#
#   bash scripts/check_real_blender.sh
#
# The root is built once into $DA3_REAL_BLENDER_CACHE (default /var/cache/da3-real-blender, outside the
# repository) and reused while its recipe stamp matches and its blender starts. The project's worker Python
# (.venv, and the interpreter it was made from) and ../shared are bind-mounted at the same paths inside
# (Debian 13's libc runs them), in a private mount namespace that ends with the script. Then:
#   1. the built extension zip is installed with `blender --command extension install-file`;
#   2. `blender -b -P scripts/reconstruct.py` on a video and on an image folder; each .blend is checked;
#      `--export-camera x.abc` must be refused in one line before the run (this Blender has no Alembic);
#   3. Blender in a window under Xvfb runs scripts/real_blender_window.py: fills the DA3 panel, presses
#      Reconstruct, screenshots before/during/after into out/real-blender/*.png, cancels a second run in
#      the middle and checks the scene is as it was.
# A missing prerequisite (not root, no archive) is a skip with the reason, or a failure with DA3_REQUIRE_ALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${DA3_REAL_BLENDER_CACHE:-/var/cache/da3-real-blender}
ROOT=$CACHE/root
MIRROR=${DA3_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="blender python3-numpy xvfb xauth libgl1-mesa-dri x11-apps netpbm"  # numpy: the scene builders (Debian only
# recommends it); x11-apps, netpbm: screenshots (xwd | xwdtopnm | pnmtopng)
RECIPE="trixie minbase + $PACKAGES (v1)"
SHARED=${DA3_SHARED:-$(cd .. && pwd)/shared}
OUT=$REPO/out/real-blender
PY=$REPO/.venv/bin/python
T0=$(date +%s)

say() { echo "real-blender: $*"; }
skip_or_fail() {
  if [ "${DA3_REQUIRE_ALL:-0}" = 1 ]; then echo "real-blender: error: $*" >&2; exit 1; fi
  say "skipped: $*"; exit 0
}
fail() { echo "real-blender: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip_or_fail "needs root (debootstrap, chroot, bind mounts)"
[ -x "$PY" ] || skip_or_fail "no .venv (run bash scripts/setup.sh first)"
[ -d "$SHARED/da3/fixtures/da3-small-random" ] || skip_or_fail "no reference data in $SHARED"
command -v unshare >/dev/null || skip_or_fail "unshare (util-linux) is missing"

root_ok() {
  [ "$(cat "$ROOT/.da3-recipe" 2>/dev/null || true)" = "$RECIPE" ] \
    && chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp blender --version >/dev/null 2>&1
}

apt_in() {  # apt_in ROOT: install $PACKAGES in a root
  # shellcheck disable=SC2086
  chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $PACKAGES && apt-get clean"
}

build_root() {
  local log=$CACHE/build.log tmp=$CACHE/root.tmp
  mkdir -p "$CACHE"
  if [ -x "$ROOT/usr/bin/blender" ] && apt_in "$ROOT" >"$log" 2>&1; then  # an older recipe: add what it lacks
    echo "$RECIPE" > "$ROOT/.da3-recipe"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    { apt-get install -y -qq --no-install-recommends debootstrap \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap; }; } >"$log" 2>&1 \
      || skip_or_fail "cannot install debootstrap (log: $log)"
  fi
  rm -rf "$tmp"
  say "building the Debian 13 root in $ROOT (once; log: $log)"
  debootstrap --variant=minbase trixie "$tmp" "$MIRROR" >>"$log" 2>&1 \
    || skip_or_fail "debootstrap trixie failed (log: $log)"
  apt_in "$tmp" >>"$log" 2>&1 \
    || skip_or_fail "installing $PACKAGES in the root failed (log: $log)"
  echo "$RECIPE" > "$tmp/.da3-recipe"
  rm -rf "$ROOT"
  mv "$tmp" "$ROOT"
}

root_ok || build_root
root_ok || fail "the root in $ROOT does not start blender"
T1=$(date +%s)
say "root ready in $((T1 - T0)) s ($(chroot "$ROOT" blender --version 2>/dev/null | head -n 1))"

rm -rf "$OUT"
mkdir -p "$OUT"
ZIP=$("$PY" scripts/build_extension.py --output-dir "$OUT/dist" --quiet | tail -n 1)
BASE=$("$PY" -c 'import sys; print(sys.base_prefix)')

# Everything below runs in a private mount namespace: the mounts vanish with it.
unshare --mount --propagation private bash -s "$ROOT" "$REPO" "$SHARED" "$BASE" "$OUT" "$ZIP" "$PY" <<'INNER'
set -euo pipefail
ROOT=$1 REPO=$2 SHARED=$3 BASE=$4 OUT=$5 ZIP=$6 PY=$7
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
mount --rbind /sys "$ROOT/sys"
mount -t tmpfs tmpfs "$ROOT/tmp"
for dir in "$REPO" "$SHARED" "$BASE"; do
  mkdir -p "$ROOT$dir"
  mount --bind "$dir" "$ROOT$dir"
done
HOME_DIR=/tmp/home
mkdir -p "$ROOT$HOME_DIR"
run() { timeout 900 chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=$HOME_DIR LANG=C.UTF-8 HF_HUB_OFFLINE=1 \
        PYTHONUNBUFFERED=1 "$@"; }  # every Blender run ends within 15 minutes
say() { echo "real-blender: $*"; }
FIXTURE=$SHARED/da3/fixtures/da3-small-random
VIDEO=$SHARED/da3/examples/robot_unitree.mp4
FOLDER=$SHARED/da3/examples/SOH

say "1. install the extension zip ($(basename "$ZIP"))"
run blender --command extension install-file -r user_default -e "$ZIP" >"$OUT/install.log" 2>&1 \
  || { tail -n 20 "$OUT/install.log"; exit 1; }
run blender -b --python-expr "import bpy; bpy.context.preferences.view.show_splash = False; bpy.ops.wm.save_userpref()" \
  >>"$OUT/install.log" 2>&1  # no splash screen over the window's screenshots

check_blend() {  # check_blend FILE MIN_CAMERAS
  run blender -b "$1" --python-expr "import bpy, json; print('DA3-CHECK', json.dumps({t: sum(o.type == t for o in bpy.data.objects) for t in ('CAMERA', 'MESH', 'POINTCLOUD')}))" \
    2>/dev/null | grep '^DA3-CHECK' | cut -d' ' -f2- > "$1.json"
  "$PY" - "$1.json" "$2" <<'PY'
import json, sys
found = json.load(open(sys.argv[1]))
assert found["CAMERA"] >= int(sys.argv[2]) and found["MESH"] + found["POINTCLOUD"] >= 1, found
print("real-blender:    ", found)
PY
}

COMMON=(--model "$FIXTURE" --python "$PY" --device cpu --process-res 56)
if [ "${DA3_REAL_BLENDER_WINDOW_ONLY:-0}" != 1 ]; then  # 1: only the window part (while working on it)
say "2. headless: a video (12 frames in chunks) and an image folder"
run blender -b -P "$REPO/scripts/reconstruct.py" -- "$VIDEO" --output "$OUT/video.blend" "${COMMON[@]}" \
  --fps 0 --max-frames 12 --chunk-size 6 --chunk-overlap 2 >"$OUT/headless-video.log" 2>&1 \
  || { tail -n 20 "$OUT/headless-video.log"; exit 1; }
grep -q "reconstruct: saved" "$OUT/headless-video.log"
check_blend "$OUT/video.blend" 1
run blender -b -P "$REPO/scripts/reconstruct.py" -- "$FOLDER" --output "$OUT/folder.blend" "${COMMON[@]}" \
  >"$OUT/headless-folder.log" 2>&1 || { tail -n 20 "$OUT/headless-folder.log"; exit 1; }
check_blend "$OUT/folder.blend" 2

say "   --export-camera .abc in a Blender without Alembic: refused before the run"
set +e
run blender -b -P "$REPO/scripts/reconstruct.py" -- "$FOLDER" --output "$OUT/abc.blend" "${COMMON[@]}" \
  --export-camera "$OUT/cams.abc" >"$OUT/headless-abc.log" 2>"$OUT/headless-abc.err"
code=$?
set -e
ALEMBIC=$(run blender -b --python-expr "import bpy; print('DA3-ALEMBIC', bpy.app.build_options.alembic)" 2>/dev/null | grep '^DA3-ALEMBIC' | cut -d' ' -f2)
if [ "$ALEMBIC" = False ]; then
  grep -q "reconstruct: error: camera export: cannot write cams.abc: this Blender is built without Alembic" "$OUT/headless-abc.err" \
    && [ "$code" = 2 ] && [ ! -e "$OUT/abc.blend" ] || { cat "$OUT/headless-abc.err"; exit 1; }
  say "    $(grep 'reconstruct: error' "$OUT/headless-abc.err")"
else
  [ "$code" = 0 ] || { cat "$OUT/headless-abc.err"; exit 1; }
fi

fi

say "3. a window under Xvfb: the DA3 tab, Reconstruct with progress, Cancel"
run sh -c "Xvfb :77 -screen 0 1280x800x24 -nolisten tcp >/tmp/xvfb.log 2>&1 & echo \$! > /tmp/xvfb.pid; sleep 2; \
  DISPLAY=:77 blender --enable-event-simulate --python '$REPO/scripts/real_blender_window.py' -- --video '$VIDEO' --model '$FIXTURE' \
  --python '$PY' --out '$OUT'; code=\$?; kill \$(cat /tmp/xvfb.pid); exit \$code" >"$OUT/window.log" 2>&1 \
  || { tail -n 30 "$OUT/window.log"; exit 1; }
INNER

"$PY" - "$OUT/result.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
for name in ("during", "after", "cancelled"):
    print(f"real-blender:    {name}: {result['checks'].get(name)}")
print(f"real-blender:    screenshots: {', '.join(p.rsplit('/', 1)[1] for p in result['screenshots'])}")
sys.exit(0 if result["ok"] else f"real-blender: error: the window check failed: {result['error']}")
PY
say "ok in $(($(date +%s) - T0)) s (root $((T1 - T0)) s), screenshots in $OUT"
