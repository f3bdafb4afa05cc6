"""Refuses a tree of installed packages in which a `.pth` file runs code.

    python scripts/pth_check.py DIR [DIR ...]    exit 1, naming each file, if any runs code

Python's `site` module executes every line of a `.pth` file that starts with `import` at
interpreter start, before any of the program's code: a compromised release (litellm 1.82.7
and 1.82.8 shipped one) runs on every cold start without being imported. The layer build
calls this on what it installed, before anything else touches it; it runs as a script of its
own, with the standard library only, so the tree it checks is never on its own path.

The known harmless hooks are allowed by name and exact content, not by name alone: a file
that merely borrows a harmless name is refused like any other.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# What `site` executes (it checks `import ` and `import\t`); leading blanks are taken as
# executing too, to be safe.
EXECUTES = re.compile(r"^\s*import[ \t]")
# (file name, the exact executing lines it may hold, who writes it).
ALLOWED: tuple[tuple[str, frozenset[str], str], ...] = (
    (
        "distutils-precedence.pth",
        frozenset(
            "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; "
            f"enabled = os.environ.get(var, '{default}') == 'local'; "
            "enabled and __import__('_distutils_hack').add_shim(); "
            for default in ("local", "stdlib")
        ),
        "setuptools: puts its own distutils first where SETUPTOOLS_USE_DISTUTILS asks",
    ),
    ("_virtualenv.pth", frozenset({"import _virtualenv"}), "virtualenv's environment hooks"),
)


def executing_lines(pth: Path) -> list[str]:
    text = pth.read_text(encoding="utf-8", errors="replace")
    return [line.rstrip("\r\n") for line in text.splitlines() if EXECUTES.match(line)]


def allowed(pth: Path, lines: list[str]) -> bool:
    known = {name: contents for name, contents, _ in ALLOWED}.get(pth.name, frozenset())
    return all(line.strip() in {text.strip() for text in known} for line in lines)


def startup_code(root: Path) -> list[str]:
    """Each `.pth` file under `root` that runs code and is not a known harmless one, with
    its first executing line."""
    found = []
    for pth in sorted(root.rglob("*.pth")):
        if not pth.is_file():
            continue
        lines = executing_lines(pth)
        if lines and not allowed(pth, lines):
            found.append(f"{pth.relative_to(root)}: {lines[0][:200]}")
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    found = [f"{root}/{entry}" for root in map(Path, argv) for entry in startup_code(root)]
    for entry in found:
        print(f"refused: a .pth file runs code at interpreter start: {entry}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
