"""The README and docs/ link to each other: every relative link must name a file that exists and, with
``#anchor``, a heading that exists in it (GitHub's anchor rule). Code spans and fenced blocks are not links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def documents() -> list[Path]:
    return [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str, keep_code: bool = False):
    """(line number, line) outside fenced code blocks, with inline code spans blanked (kept: keep_code)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line if keep_code else re.sub(r"`[^`]*`", lambda m: "`" + " " * (len(m.group(0)) - 2) + "`", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped (but - and _), spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    out = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not dest.exists():
                out.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                out.append(f"{where}: no heading for #{anchor} in {dest.relative_to(root)}")
    return out


def test_slug_follows_github():
    assert slug("Render farm (OpenJD / Deadline Cloud, Flamenco, any farm manager)") == \
        "render-farm-openjd--deadline-cloud-flamenco-any-farm-manager"
    assert slug("The `da3` command line") == "the-da3-command-line"
    assert slug("Plates, frame numbers and rates") == "plates-frame-numbers-and-rates"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](b.md) `[code](c.md)`\n")
    found = broken_links(tmp_path / "a.md", root=tmp_path)
    assert len(found) == 2 and "#nothing" in found[0] and "no such file" in found[1]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve(doc):
    assert broken_links(doc) == []


def test_readme_is_a_guide():
    """The README stays short; every page of docs/ is reachable from it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 350
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
