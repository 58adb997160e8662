"""Check that every pin of the worker's requirement table has a wheel for every supported (Python, platform).

    python scripts/check_pins.py                 # all pairs of da3_blender/runtime/requirements.py
    python scripts/check_pins.py --python 3.13 --platform macos-arm64

Asks the package index through pip's own resolver without installing anything (``pip install --dry-run
--only-binary=:all: --python-version V --platform TAG... --target TMP --report R``), dependencies
included, for the managed environment's requirements of each pair (torch as PyPI has it: the macOS
wheel, and the stand-in for the CPU build elsewhere; torch without its dependencies, whose platform
markers pip would evaluate for the machine running this check instead of the target). On Linux and Windows it then asks the PyTorch
index for each CPU/CUDA build of torch the preferences offer; when that index does not answer, those
cells say "not reachable" (not a pass; ``--require-torch-index`` makes that a failure).
Prints the table; exit status 1 naming each missing (Python, platform, requirement), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from da3_blender.runtime import requirements as req  # noqa: E402


def pip_resolve(python: str, platform: str, requirements: list[str], index: str | None = None,
                no_deps: bool = False) -> tuple[bool, dict[str, str] | str]:
    """(True, {name: version resolved}) or (False, pip's last error line)."""
    with tempfile.TemporaryDirectory(prefix="da3-pins-") as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--no-input", "--only-binary=:all:", "--python-version", python,
               "--implementation", "cp", "--target", os.path.join(tmp, "t"), "--report", report]
        for tag in req.PLATFORMS[platform].wheel_tags:
            cmd += ["--platform", tag]
        if index:
            cmd += ["--index-url", index]
        if no_deps:
            cmd.append("--no-deps")
        proc = subprocess.run(cmd + requirements, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PIP_NO_COLOR": "1"})
        if proc.returncode != 0:
            lines = [l.strip() for l in proc.stderr.splitlines() if l.strip().startswith("ERROR")]
            return False, (lines[0] if lines else (proc.stderr.strip().splitlines() or ["pip failed"])[-1])
        with open(report, encoding="utf-8") as fh:
            found = json.load(fh)["install"]
    return True, {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in found}


def reachable(url: str, timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_pair(python: str, platform: str, torch_index_up: bool) -> dict:
    """{"pins": {requirement: "ok"|"MISSING"}, "torch": {variant: "ok"|"MISSING"|"not reachable"}, "missing": [...]}"""
    pins = req.requirements_for(python, platform)
    torch = [p for p in pins if req.requirement_name(p) == "torch"]
    rest = [p for p in pins if p not in torch]
    ok, found = pip_resolve(python, platform, rest)
    cells: dict[str, str] = {}
    if ok:
        cells = {p: "ok" for p in rest}
    else:  # name each requirement that has no wheel (with its dependencies)
        for p in rest:
            one_ok, why = pip_resolve(python, platform, [p])
            cells[p] = "ok" if one_ok else f"MISSING ({why})"
    # torch's own dependencies carry platform markers that pip evaluates for *this* machine even with
    # --platform (CUDA packages on a macOS target), so torch's wheel is checked without them
    for p in torch:
        t_ok, why = pip_resolve(python, platform, [p], no_deps=True)
        cells[p] = "ok" if t_ok else f"MISSING ({why})"
    variants: dict[str, str] = {}
    if req.PLATFORMS[platform].torch_from_pytorch_index:
        for variant in req.TORCH_VARIANTS:
            if not torch_index_up:
                variants[variant] = "not reachable"
                continue
            v_ok, why = pip_resolve(python, platform, torch, index=req.torch_index(platform, variant), no_deps=True)
            variants[variant] = "ok" if v_ok else f"MISSING ({why})"
    missing = [f"{p}" for p, c in cells.items() if c != "ok"]
    missing += [f"torch ({v} build)" for v, c in variants.items() if c.startswith("MISSING")]
    return {"pins": cells, "torch": variants, "missing": missing}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", choices=req.PYTHONS, help="only this Python (repeatable)")
    ap.add_argument("--platform", action="append", choices=list(req.PLATFORMS), help="only this platform (repeatable)")
    ap.add_argument("--require-torch-index", action="store_true",
                    help="fail when the PyTorch index cannot be reached (default: report it as not reachable)")
    ap.add_argument("--jobs", type=int, default=4, help="pairs checked at once (network bound)")
    args = ap.parse_args(argv)
    pairs = [(py, pf) for py in (args.python or req.PYTHONS) for pf in (args.platform or req.PLATFORMS)]
    torch_up = reachable(req.TORCH_INDEX.format(variant="cpu") + "/torch/")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = dict(zip(pairs, pool.map(lambda pair: check_pair(*pair, torch_up), pairs)))
    failures = []
    for (py, pf), res in results.items():
        print(f"Python {py} / {pf}:")
        for pin, cell in res["pins"].items():
            print(f"  {pin:<28} {cell}")
        for variant, cell in res["torch"].items():
            print(f"  {'torch [' + variant + ' index]':<28} {cell}")
        failures += [f"Python {py} / {pf}: {m}" for m in res["missing"]]
    if not torch_up:
        print(f"note: {req.TORCH_INDEX.format(variant='...')} is not reachable from here: its CPU/CUDA torch "
              "builds were NOT checked (PyPI's torch was)")
        if args.require_torch_index:
            failures.append("the PyTorch index is not reachable (--require-torch-index)")
    if failures:
        for line in failures:
            print(f"check_pins: missing: {line}", file=sys.stderr)
        return 1
    print(f"check_pins: ok: {len(pairs)} (Python, platform) pairs have a wheel for every pin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
