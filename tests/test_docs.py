"""README.md is the front door to docs/, its links and ARCHITECTURE.md's file names hold.

The command-line flags in docs/flags.md are checked by tests/test_flags_reference.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "kvmount"
README = REPO / "README.md"
ARCHITECTURE = REPO / "ARCHITECTURE.md"
PAGES = [README, ARCHITECTURE, *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A name in ARCHITECTURE.md's tree: two spaces per level, then the file or folder.
_ENTRY = re.compile(r"^( *)(\S+)")
# A path in ARCHITECTURE.md's prose: a folder, then a file with one of these endings.
_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)+\.(?:py|sh|md|mod|go|json|yaml)\b")


def _prose(page: Path) -> str:
    return _FENCE.sub("", page.read_text(encoding="utf-8"))


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(f"{slug}-{count}" if count else slug)
    return anchors


def _links(page: Path) -> Iterator[str]:
    for target in _LINK.findall(_prose(page)):
        if not re.match(r"[a-z]+:", target):
            yield target


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the details to docs/"
    commands = [
        line.split("#")[0].strip()
        for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
        for line in block.splitlines()
    ]
    assert commands[:2] == ["scripts/demo", "scripts/test"], "the Quick start's two commands come first"


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.split("#")[0]).resolve() for target in _links(README)}
    unlinked = [p.name for p in PAGES[2:] if p.resolve() not in linked]
    assert not unlinked, f"README.md links no page {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(page: Path) -> None:
    for target in _links(page):
        path, _, anchor = target.partition("#")
        there = (page.parent / path).resolve() if path else page
        assert there.exists(), f"{page.name} links {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(there), f"{page.name} links {target}, a heading {there.name} lacks"


def _tree() -> list[Path]:
    """Every file and folder ARCHITECTURE.md's tree names, as paths in the repository."""
    block = re.search(r"^```\n(.*?)^```", ARCHITECTURE.read_text(encoding="utf-8"), re.S | re.M)
    assert block, "ARCHITECTURE.md has its tree in the first plain code block"
    parents: list[str] = []
    found = []
    for line in block.group(1).splitlines():
        entry = _ENTRY.match(line)
        if entry is None:
            continue
        indent, name = entry.groups()
        depth = len(indent) // 2
        if len(indent) % 2 or depth > len(parents):
            continue  # a description's second line, indented past the names
        parents[depth:] = [name.rstrip("/")]
        found.append(REPO.joinpath(*parents))
    return found


def test_every_file_architecture_names_exists() -> None:
    named = _tree()
    assert REPO / "src" / "kvmount" / "cli.py" in named, "the tree was read"
    in_prose = [
        path
        for path in _PATH.findall(_prose(ARCHITECTURE))
        if not (REPO / path).exists() and not (SRC / path).exists()
    ]
    missing = [str(p.relative_to(REPO)) for p in named if not p.exists()] + in_prose
    assert not missing, f"ARCHITECTURE.md names what is not in the repository: {missing}"


def test_every_module_is_in_architecture() -> None:
    named = set(_tree())
    modules = [p for p in sorted(SRC.rglob("*.py")) if p.name != "__init__.py" and "_pb2" not in p.name]
    unlisted = [str(p.relative_to(SRC)) for p in modules if p not in named]
    assert not unlisted, f"ARCHITECTURE.md's tree does not list {unlisted}"
