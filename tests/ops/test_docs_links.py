"""The README and docs/ link to what exists: every relative link names a file of the repository, and every
#anchor a heading of the page it points at (GitHub's heading slugs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#").strip()) for line in page.read_text().splitlines() if line.startswith("#")}


def test_every_relative_link_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 5
    broken = []
    for page in pages:
        for url in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if url.startswith(("http://", "https://")):
                continue
            path, _, anchor = url.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {url} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{page.name}: {url} (no such heading)")
    assert not broken, broken
