"""Lambda's code directories (/opt with the layers, /var/task with the function) are
read-only: the same, on a local tree, for running built layers as Lambda runs them."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_only(root: Path) -> None:
    """Nothing under root can be written, __pycache__ included."""
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    root.chmod(root.stat().st_mode & ~stat.S_IWUSR)


def writable(root: Path) -> None:
    """Undo read_only for the directories, so the tree can be removed."""
    for directory, dirnames, _ in os.walk(root):
        for name in dirnames:
            (Path(directory) / name).chmod(0o755)
    root.chmod(0o755)
