"""Import and init of the api module, as Lambda does it at cold start: nothing but loopback is
contacted and nothing is written outside /tmp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.support.paths import REPO

PROBE = textwrap.dedent(
    """
    import json, socket, sys, importlib.util

    connections, writes = [], []

    def audit(event, args):
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else str(address)
            connections.append(host)
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise ConnectionRefusedError(f"init tried to reach {host}")
        elif event == "socket.getaddrinfo":
            if args[0] not in ("127.0.0.1", "::1", "localhost"):
                connections.append(str(args[0]))
                raise socket.gaierror(f"init tried to resolve {args[0]}")
        elif event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & 0o3)
            if writing and not str(path).startswith(("/tmp", "/dev/")):
                writes.append(str(path))

    sys.addaudithook(audit)
    spec = importlib.util.spec_from_file_location("api_cold", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(json.dumps({"connections": connections, "writes": writes,
                      "router_built": module.gateway.router_built}))
    """
)


def test_init_touches_only_loopback_and_tmp(api: object, aws: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # Lambda cannot write __pycache__ either
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "functions" / "api" / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(host in ("127.0.0.1", "::1", "localhost") for host in report["connections"])
    assert report["writes"] == []
    # The secret was reachable, so the router was built during init, not on the first request.
    assert report["router_built"] is True
