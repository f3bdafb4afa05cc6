"""`make dev` as a user runs it: the gateway answers with the seed's master key, moto runs in a
process of its own, and SIGTERM (or Ctrl-C) stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from devstack.processes import children, is_running
from devstack.server import free_port
from tests.support.paths import REPO

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def dev() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port, moto_port = free_port(), free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "LLM_PROXY__"))
    }
    env |= {"PORT": str(port), "MOTO_PORT": str(moto_port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.dev"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_make_dev_serves_and_stops_on_sigterm(dev: tuple[subprocess.Popen[bytes], str]) -> None:
    process, url = dev
    deadline = time.monotonic() + 180
    models = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            models = httpx.get(
                f"{url}/v1/models", headers={"Authorization": "Bearer sk-1234"}, timeout=2
            )
            break
        except httpx.HTTPError:
            time.sleep(0.5)
    assert models is not None and models.status_code == 200, "make dev did not serve"
    assert "demo" in {model["id"] for model in models.json()["data"]}

    started = children(process.pid)
    assert started, "moto should run in a process of its own"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) in (0, 130)
    deadline = time.monotonic() + 10
    while any(is_running(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if is_running(pid)]
