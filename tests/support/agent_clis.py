"""The agent CLIs `make clients` installs under .tools/clients, for the tests that run them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO

CLIENTS = REPO / ".tools" / "clients" / "node_modules" / ".bin"
# What the file a CLI's tool reads says, quoted back by the doubles' answers.
NOTE = "The gateway passed the tool result back."


def client(name: str) -> str:
    """The CLI's executable; the test is skipped where it is not installed."""
    found = shutil.which(name, path=str(CLIENTS)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (make clients)")
    return found


def run_client(
    command: list[str], env: dict[str, str], cwd: Path, *, inherit: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI run to its end (at most 3 minutes), its output kept; with this process's
    environment under `env` unless `inherit` is False."""
    return subprocess.run(
        command,
        env={**os.environ, **env} if inherit else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
