"""The agent CLIs `make clients` installs under .tools/clients, for the tests that run them."""

from __future__ import annotations

import shutil

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
