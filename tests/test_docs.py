"""The README and docs/*.md: every relative link leads to a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, spaces
    as '-', punctuation but '-' and '_' dropped; a repeated heading gets '-1', '-2'."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose(path.read_text(encoding="utf-8")):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1).strip())
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of ``doc`` whose file or heading does not exist, as
    'file:line: target', the file named relative to ``root``."""
    broken = []
    for number, line in _prose(doc.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path) if path else doc
            where = f"{doc.relative_to(root)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc: Path) -> None:
    assert doc.exists()
    assert not broken_links(doc)


def test_a_link_to_a_missing_file_or_heading_is_found(tmp_path: Path) -> None:
    """The check itself: a heading's anchor is found as GitHub makes it, and a
    link to a heading or a file that is not there is reported with its line."""
    (tmp_path / "other.md").write_text("# Other\n\n## Promote and roll back\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Doc\n\n## Keys and roles\n\n"
        "[ok](#keys-and-roles), [ok](other.md#promote-and-roll-back), [ok](https://x.org/#y)\n"
        "```\n[in a code block](nowhere.md)\n```\n"
        "[gone](other.md#promote-and-rollback) and [gone](missing.md)\n",
        encoding="utf-8",
    )
    assert broken_links(doc, root=tmp_path) == [
        "doc.md:9: other.md#promote-and-rollback (no such heading)",
        "doc.md:9: missing.md (no such file)",
    ]
