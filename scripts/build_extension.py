"""Build the installable extension zip, as ``blender --command extension build`` would.

    python scripts/build_extension.py [--output-dir dist] [--quiet]
    python scripts/build_extension.py --repo DIR      # also a remote repository index in DIR

The files of the repository root go to the zip root (manifest included), minus the manifest's
``[build] paths_exclude_pattern`` (gitignore-style patterns). The zip is named
``<id>-<version>.zip``. Before writing, the manifest is checked (it parses, required fields,
formats) and every ``.py`` is compiled; after writing, the archive is re-read and checked again.
Install the result in Blender with Preferences > Get Extensions > Install from Disk.

``--repo DIR`` puts the zip into DIR and writes DIR/index.json (and index.html) with Blender's own
``server-generate`` (the ``blender_ext.py`` tool shipped with Blender and the bpy module): upload DIR
to any static web server and add ``https://<server>/<dir>/index.json`` in Blender as a remote
repository (Preferences > Get Extensions > Repositories > + > Add Remote Repository); artists then
get updates there. The tool is found in the installed bpy module, or give ``--blender-ext PATH``
(``<blender>/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py``). The index is re-read
and must list the zip with its size and hash.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "blender_manifest.toml"

# field -> type; the fields Blender refuses to install a manifest without.
REQUIRED_FIELDS = {
    "schema_version": str,
    "id": str,
    "version": str,
    "name": str,
    "tagline": str,
    "maintainer": str,
    "type": str,
    "blender_version_min": str,
    "license": list,
}
PERMISSION_KEYS = {"files", "network", "clipboard", "camera", "microphone"}
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


class BuildError(Exception):
    """A problem with the sources that makes the package unusable (one line)."""


def check_manifest(manifest: dict) -> None:
    """Raise BuildError for a field Blender would reject."""
    for key, kind in REQUIRED_FIELDS.items():
        if key not in manifest:
            raise BuildError(f"{MANIFEST}: missing required field {key!r}")
        if not isinstance(manifest[key], kind) or not manifest[key]:
            raise BuildError(f"{MANIFEST}: {key!r} must be a non-empty {kind.__name__}")
    if not manifest["id"].isidentifier():
        raise BuildError(f"{MANIFEST}: id {manifest['id']!r} must be a Python identifier")
    for key in ("version", "schema_version", "blender_version_min"):
        if not VERSION_RE.match(manifest[key]):
            raise BuildError(f"{MANIFEST}: {key} {manifest[key]!r} must look like X.Y.Z")
    tagline = manifest["tagline"]
    if len(tagline) > 64 or tagline.endswith((".", "!", "?")):
        raise BuildError(f"{MANIFEST}: tagline must be at most 64 characters with no trailing punctuation")
    if manifest["type"] != "add-on":
        raise BuildError(f"{MANIFEST}: type must be 'add-on'")
    if not all(isinstance(x, str) and x.startswith("SPDX:") for x in manifest["license"]):
        raise BuildError(f"{MANIFEST}: license entries must be 'SPDX:<identifier>' strings")
    permissions = manifest.get("permissions", {})
    unknown = set(permissions) - PERMISSION_KEYS
    if unknown:
        raise BuildError(f"{MANIFEST}: unknown permission(s) {sorted(unknown)}; allowed: {sorted(PERMISSION_KEYS)}")


def read_manifest(source: Path) -> dict:
    path = source / MANIFEST
    if not path.is_file():
        raise BuildError(f"{path} not found: run from the repository (the extension root)")
    try:
        with open(path, "rb") as fh:
            manifest = tomllib.load(fh)
    except tomllib.TOMLDecodeError as ex:
        raise BuildError(f"{MANIFEST} does not parse: {ex}") from None
    check_manifest(manifest)
    return manifest


def _glob_regex(pattern: str) -> str:
    """Glob to regex where ``*``/``?`` stay inside one path component and ``**`` spans several."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class ExcludePatterns:
    """The gitignore subset Blender's builder implements: anchors (``/x``), directories (``x/``),
    basename globs (``*.pyc``) and path globs (``a/*.py``), ``!`` negation."""

    def __init__(self, patterns: list[str]):
        self.rules = []
        for raw in patterns:
            negate = raw.startswith("!")
            pattern = raw[1:] if negate else raw
            dir_only = pattern.endswith("/")
            pattern = pattern.rstrip("/") if dir_only else pattern
            anchored = "/" in pattern  # a leading "/" (``/farm/``: the root's farm/, not da3_blender/farm/) or a path
            regex = re.compile(_glob_regex(pattern.lstrip("/")) + r"\Z")
            self.rules.append((negate, dir_only, anchored, regex))

    def excluded(self, rel: str, is_dir: bool) -> bool:
        result = False
        for negate, dir_only, anchored, regex in self.rules:
            if dir_only and not is_dir:
                continue
            subject = rel if anchored else rel.rsplit("/", 1)[-1]
            if regex.match(subject):
                result = not negate
        return result


def collect_files(source: Path, manifest: dict) -> list[str]:
    """Root-relative POSIX paths of the files that go into the package, sorted."""
    patterns = manifest.get("build", {}).get("paths_exclude_pattern")
    if patterns is None:  # Blender's defaults
        patterns = ["__pycache__/", ".*", "/*.zip", "*.blend[1-9]"]
    rules = ExcludePatterns(patterns)
    files = []
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not rules.excluded(prefix + d, True))
        for name in filenames:
            rel = prefix + name
            if rel == MANIFEST or not rules.excluded(rel, False):
                files.append(rel)
    if "__init__.py" not in files:
        raise BuildError("__init__.py missing at the extension root: not a Python package")
    return sorted(files)


def compile_sources(source: Path, files: list[str]) -> None:
    for rel in files:
        if rel.endswith(".py"):
            try:
                compile((source / rel).read_bytes(), rel, "exec", dont_inherit=True)
            except SyntaxError as ex:
                raise BuildError(f"{rel}:{ex.lineno}: {ex.msg}") from None


def verify_archive(path: Path, manifest: dict) -> list[str]:
    """Re-read the zip: manifest at the root and identical, init present, nothing excluded."""
    rules = ExcludePatterns(manifest.get("build", {}).get("paths_exclude_pattern") or [])
    with zipfile.ZipFile(path) as zf:
        if zf.testzip() is not None:
            raise BuildError(f"{path.name}: corrupt member {zf.testzip()}")
        names = zf.namelist()
        if tomllib.loads(zf.read(MANIFEST).decode()) != manifest:
            raise BuildError(f"{path.name}: the packed manifest differs from the source")
    if "__init__.py" not in names:
        raise BuildError(f"{path.name}: no __init__.py at the archive root")
    for name in names:
        parts = name.split("/")
        dirs = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        if any(rules.excluded(d, True) for d in dirs) or (name != MANIFEST and rules.excluded(name, False)):
            raise BuildError(f"{path.name}: excluded path {name} was packed")
    return names


def build(source: Path = REPO_ROOT, output_dir: Path | None = None) -> tuple[Path, list[str]]:
    """Check, pack and verify; return the zip path and the packed files."""
    source = Path(source).resolve()
    manifest = read_manifest(source)
    files = collect_files(source, manifest)
    compile_sources(source, files)
    output_dir = Path(output_dir) if output_dir else source / "dist"
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = out.with_name("." + out.name)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for rel in files:
            zf.write(source / rel, rel)
    os.replace(tmp, out)
    verify_archive(out, manifest)
    return out, files


BLENDER_EXT = "scripts/addons_core/bl_pkg/cli/blender_ext.py"  # below <blender>/<version>/


def find_blender_ext() -> Path:
    """Blender's extension tool in the installed bpy module (``bpy/<version>/scripts/...``)."""
    spec = importlib.util.find_spec("bpy")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        found = sorted(Path(folder).glob("*/" + BLENDER_EXT))
        if found:
            return found[-1]
    raise BuildError("Blender's blender_ext.py not found (no bpy module here): pass --blender-ext "
                     f"<blender>/<version>/{BLENDER_EXT}")


def write_repository_index(repo: Path, zip_path: Path, manifest: dict, blender_ext: Path | None = None) -> Path:
    """Run Blender's ``server-generate`` on ``repo`` and check that index.json lists ``zip_path``."""
    tool = Path(blender_ext) if blender_ext else find_blender_ext()
    if not tool.is_file():
        raise BuildError(f"{tool} not found: pass the path of Blender's blender_ext.py with --blender-ext")
    proc = subprocess.run([sys.executable, str(tool), "server-generate", "--repo-dir", str(repo), "--html"],
                          capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    if proc.returncode != 0:
        raise BuildError(f"server-generate failed: {out}")
    index = repo / "index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as ex:
        raise BuildError(f"server-generate wrote no readable {index} ({ex}): {out}") from None
    entries = [e for e in data.get("data", []) if e.get("archive_url") == "./" + zip_path.name]
    digest = "sha256:" + hashlib.sha256(zip_path.read_bytes()).hexdigest()
    if len(entries) != 1 or entries[0].get("id") != manifest["id"] or entries[0].get("version") != manifest["version"] \
            or entries[0].get("archive_hash") != digest or entries[0].get("archive_size") != zip_path.stat().st_size:
        raise BuildError(f"{index} does not list {zip_path.name} with its id, version, size and hash: {out}")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_extension", description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=REPO_ROOT, help="extension root (default: this repo)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where the zip goes (default: <source>/dist)")
    parser.add_argument("--quiet", action="store_true", help="print only the zip path")
    parser.add_argument("--repo", type=Path, default=None, metavar="DIR",
                        help="put the zip into DIR and write DIR/index.json with Blender's server-generate: a remote "
                             "repository to host on a static web server")
    parser.add_argument("--blender-ext", type=Path, default=None, metavar="PATH",
                        help="Blender's blender_ext.py (default: found in the installed bpy module)")
    args = parser.parse_args(argv)
    try:
        if args.repo is not None and args.output_dir is not None and args.output_dir.resolve() != args.repo.resolve():
            raise BuildError("give --repo or --output-dir, not both: with --repo the zip goes into the repository")
        out, files = build(args.source_dir, args.repo if args.repo is not None else args.output_dir)
        index = write_repository_index(args.repo, out, read_manifest(Path(args.source_dir).resolve()),
                                       args.blender_ext) if args.repo is not None else None
    except (BuildError, OSError, subprocess.SubprocessError) as ex:
        print(f"build_extension: error: {ex}", file=sys.stderr)
        return 1
    if not args.quiet:
        for rel in files:
            print(f"  {rel}")
        print(f"{len(files)} files, {out.stat().st_size / 1024:.0f} KiB")
        if index is not None:
            print(f"repository index: {index} (host {index.parent} and add <url>/index.json in Blender as a "
                  "remote repository)")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
