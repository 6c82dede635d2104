#!/usr/bin/env python3
"""Checks the relative links in README.md and docs/**/*.md.

Every markdown link `[text](target)` whose target is not a URL must name a file
or directory that exists (relative to the file the link is in), and a
`#anchor` (alone, or after a path to a .md file) must match a heading there,
slugged the way GitHub does it. Links inside code blocks and inline code are
ignored.

    python3 docs/check-links.py        # from anywhere in the repository

Prints one line per broken link and exits 1 if there are any; otherwise prints
how many links it checked and exits 0.
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) or [text](target "title"); text may hold one level of brackets
# or inline code (removed before matching).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text):
    """Yields (line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links -> their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen = {}
        result = set()
        for _, line in prose_lines(path.read_text(encoding="utf-8")):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
        cache[path] = result
    return cache[path]


def links(path):
    """Yields (line number, target); a link's text may wrap onto the next line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    prose = dict(prose_lines("\n".join(lines)))
    text = "\n".join(prose.get(n, "") for n in range(1, len(lines) + 1))
    # Inline code may wrap too; keep its newlines so line numbers stay right.
    text = re.sub(r"`[^`]*`", lambda m: "\n" * m.group(0).count("\n"), text)
    for m in LINK.finditer(text):
        yield text.count("\n", 0, m.start(1)) + 1, m.group(1)


def check(path):
    problems = []
    count = 0
    for n, target in links(path):
        if URL.match(target):
            continue
        count += 1
        where = f"{path.relative_to(ROOT)}:{n}: {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file or directory")
            continue
        try:
            dest.relative_to(ROOT)
        except ValueError:
            problems.append(f"{where}: outside the repository")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif unquote(anchor) not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return count, problems


def main():
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    total = 0
    problems = []
    for f in files:
        count, found = check(f)
        total += count
        problems += found
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} broken of {total} links in {len(files)} files")
        return 1
    print(f"ok: {total} relative links in {len(files)} files resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
