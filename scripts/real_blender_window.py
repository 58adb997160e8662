"""Drive the DA3 panel in a real Blender window (started by scripts/check_real_blender.sh under Xvfb).

    blender --enable-event-simulate --python scripts/real_blender_window.py -- --video V --model M --python PY --out DIR

Opens the 3D viewport's sidebar on the DA3 tab, fills the panel (a video, the model, the worker Python),
presses Reconstruct as a user would (the modal operator, invoked in the window), takes screenshots of the
window before, during (the progress bar) and after the run into DIR, checks the scene, then starts a
second run and cancels it in the middle and checks that the scene is as it was. Writes DIR/result.json
({"ok": bool, "checks": {...}, "error": ...}) and quits Blender. Runs on Blender's timers: the window
keeps drawing while the worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import bpy

KINDS = ("objects", "meshes", "materials", "images", "cameras", "collections", "actions")
TIMEOUT = float(os.environ.get("DA3_WINDOW_TIMEOUT", "600"))


SCROLLS = 12  # x 6 wheel steps: from the top of the DA3 sidebar down to its Build section


def parse():
    ap = argparse.ArgumentParser(prog="real_blender_window")
    ap.add_argument("--video", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--out", required=True)
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    return ap.parse_args(argv)


ARGS = parse()
os.makedirs(ARGS.out, exist_ok=True)
STATE = {"t0": time.monotonic(), "checks": {}, "shots": [], "step": "setup"}


def counts():
    return {k: len(getattr(bpy.data, k)) for k in KINDS}


def view3d():
    window = bpy.context.window_manager.windows[0]
    areas = [a for a in window.screen.areas if a.type == "VIEW_3D"]
    area = max(areas, key=lambda a: a.width * a.height)
    region = next(r for r in area.regions if r.type == "WINDOW")
    return window, area, region


def package():
    return next(k for k in bpy.context.preferences.addons.keys() if k.endswith("da3_for_blender"))


def shot(name):
    """The X screen as the user sees it (xwd; Blender's own screenshot reads a black buffer under Xvfb)."""
    import subprocess

    window, area, region = view3d()
    path = os.path.join(ARGS.out, f"{name}.png")
    for a in window.screen.areas:
        a.tag_redraw()
    bpy.ops.wm.redraw_timer(type="DRAW_WIN_SWAP", iterations=1)
    with open(path, "wb") as fh:
        xwd = subprocess.Popen(["xwd", "-root", "-silent"], stdout=subprocess.PIPE)
        pnm = subprocess.Popen(["xwdtopnm"], stdin=xwd.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        png = subprocess.run(["pnmtopng"], stdin=pnm.stdout, stdout=fh, stderr=subprocess.DEVNULL, timeout=60)
        xwd.wait(timeout=60), pnm.wait(timeout=60)
    if png.returncode != 0 or os.path.getsize(path) == 0:
        raise RuntimeError(f"could not take the screenshot {path} (xwd | xwdtopnm | pnmtopng)")
    STATE["shots"].append(path)


def finish(ok, error=None):
    result = {"ok": ok, "error": error, "checks": STATE["checks"], "screenshots": STATE["shots"],
              "blender": bpy.app.version_string, "python": sys.version.split()[0]}
    with open(os.path.join(ARGS.out, "result.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(f"real_blender_window: {'ok' if ok else 'FAILED: ' + str(error)}", flush=True)
    bpy.ops.wm.quit_blender()


def setup():
    window, area, region = view3d()
    area.spaces.active.show_region_ui = True
    prefs = bpy.context.preferences.addons[package()].preferences
    prefs.python_mode, prefs.custom_python = "CUSTOM", ARGS.python
    s = bpy.context.scene.da3_settings
    s.input_mode, s.video, s.video_fps, s.max_frames = "VIDEO", ARGS.video, 0, 12
    s.model, s.custom_model = "CUSTOM", ARGS.model
    s.device, s.process_res = "cpu", 56
    s.chunking, s.chunk_size, s.chunk_overlap = "ALWAYS", 6, 2
    STATE["before"] = counts()


def press(op_name):
    window, area, region = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        return getattr(bpy.ops.da3, op_name)("INVOKE_DEFAULT")


def tick():
    """One step of the script; returns the delay to the next one (None: done)."""
    rt = bpy.context.window_manager.da3_runtime
    step = STATE["step"]
    if time.monotonic() - STATE["t0"] > TIMEOUT:
        finish(False, f"timed out in step {step} (stage {rt.stage!r}, {rt.message!r})")
        return None
    if step == "setup":
        setup()
        STATE["step"], STATE["tab_tries"] = "tab", 0
        return 1.0
    if step == "tab":  # click down the sidebar's tab strip as a user would, until the DA3 tab is open
        window, area, _ = view3d()
        ui = next(r for r in area.regions if r.type == "UI")
        STATE["checks"]["tab"] = ui.active_panel_category
        if ui.active_panel_category == "DA3":
            STATE["step"] = "before"
            return 0.5
        y = ui.y + ui.height - 20 - 12 * STATE["tab_tries"]
        if y < ui.y + 10:
            finish(False, f"could not open the DA3 tab of the sidebar (it shows {ui.active_panel_category!r})")
            return None
        x = ui.x + ui.width - 10  # the tab strip on the sidebar's right edge
        window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        window.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
        window.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)
        STATE["tab_tries"] += 1
        return 0.3
    if step == "before":
        shot("1-before")
        STATE["checks"]["started"] = sorted(press("reconstruct"))
        STATE["step"] = "running"
        return 0.2
    if step == "running":
        late = rt.stage not in ("", "upload", "load", "preprocess", "forward")  # missed chunk 2: take it now
        if rt.running and "during" not in STATE and (rt.message.startswith("chunk 2/") or late):
            shot("2-during")
            STATE["during"] = (rt.stage, rt.fraction, rt.message)
            STATE["checks"]["during"] = {"stage": rt.stage, "fraction": rt.fraction, "message": rt.message}
        if rt.running:
            return 0.2
        STATE["step"] = "after"
        return 1.5  # let the panel settle into its new layout before the screenshot
    if step == "after":
        shot("3-after")
        after = counts()
        STATE["checks"]["after"] = {"summary": rt.summary, "error": rt.error, "counts": after,
                                    "cameras": [o.name for o in bpy.data.objects if o.type == "CAMERA"]}
        if rt.error or not rt.summary or after["cameras"] == STATE["before"]["cameras"] or "during" not in STATE \
                or not 0 < STATE["checks"]["during"]["fraction"] < 1:
            finish(False, f"the run did not land in the scene as expected: {STATE['checks']}")
            return None
        STATE["mid"] = after
        s = bpy.context.scene.da3_settings  # a longer run, not the one just made (a re-run may reuse results)
        s.max_frames, s.process_res = 48, 112
        STATE["checks"]["restarted"] = sorted(press("reconstruct"))
        STATE["step"] = "cancel"
        return 0.2
    if step == "cancel":
        if rt.running and rt.stage == "forward":
            shot("4-cancelling")
            press("cancel")
            STATE["step"] = "cancelled"
        elif not rt.running:
            finish(False, f"the second run ended before it could be cancelled ({rt.summary or rt.error})")
            return None
        return 0.2
    if step == "cancelled":
        if rt.running:
            return 0.2
        STATE["step"] = "cancelled-settled"
        return 1.5
    if step == "cancelled-settled":
        shot("5-cancelled")
        STATE["checks"]["cancelled"] = {"error": rt.error, "counts": counts()}
        STATE.update(ok=counts() == STATE["mid"] and rt.error.startswith("Cancelled"), step="scroll", scrolls=0)
        return 0.2
    if step in ("scroll", "build"):
        return documentation_steps(step)
    return None


def documentation_steps(step):
    """After the checks: the sidebar scrolled with the wheel down to its Build section, for the README."""
    if step == "scroll":  # the wheel over the sidebar, as a user scrolls down to the Build section
        window, area, _ = view3d()
        ui = next(r for r in area.regions if r.type == "UI")
        x, y = ui.x + ui.width // 2, ui.y + ui.height // 2
        window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        for _ in range(6):
            window.event_simulate(type="WHEELDOWNMOUSE", value="PRESS", x=x, y=y)
        STATE["scrolls"] += 1
        if STATE["scrolls"] < SCROLLS:
            return 0.1
        STATE["step"] = "build"
        return 1.0
    if step == "build":
        shot("6-build")  # the Build section: up axis (Floor), proxy mesh, shadow catcher (docs/images/panel_build.png)
        ok = STATE["ok"]
        finish(ok, None if ok else f"cancel changed the scene or said otherwise: {STATE['checks']['cancelled']}")
        return None
    return None


def guarded():
    try:
        return tick()
    except Exception as ex:  # noqa: BLE001 - written to result.json, then Blender quits
        traceback.print_exc()
        finish(False, f"{type(ex).__name__}: {ex}")
        return None


bpy.app.timers.register(guarded, first_interval=2.0)
