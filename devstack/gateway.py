"""The api function served on loopback as `make dev` serves it: its module (functions/api/app.py)
under uvicorn, given the variables template.yaml gives the deployed function, pointed at a
local AWS. `make dev` serves it in its own process; the benches start the same thing as a
process of their own (`python -m devstack.gateway`), so their figures are `make dev`'s.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devstack.aws import REPO_ROOT, LocalAWS
from devstack.processes import exit_with_parent, server_process
from devstack.server import free_port

API_FUNCTION = REPO_ROOT / "functions" / "api"
CORE_LAYER = REPO_ROOT / "layers" / "core"
LOCAL_CONFIG = REPO_ROOT / "config" / "local.yaml"
DEFAULT_MASTER_KEY = "sk-1234"


def gateway_env(aws: LocalAWS, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with what the local gateway needs: the deployed function's variables naming
    `aws`'s tables, secret and queues, key management and the OpenAPI page on, and defaults
    for the config file, the master key and Ollama's address."""
    env = dict(environ)
    # AWS settings already in the environment win, but the endpoint is always the local one.
    for name, value in aws.env.items():
        env.setdefault(name, value)
    env["AWS_ENDPOINT_URL"] = aws.endpoint
    env["LLM_PROXY__ENV"] = "local"
    # The tables (rollups included), the secret, the queues: whatever the deployed function is
    # given, so a local request writes what a deployed one writes.
    env.update(aws.function_env("ApiFunction"))
    # One process serves the api and key management, with its OpenAPI schema at /docs.
    env["LLM_PROXY__KEY_MANAGEMENT"] = "true"
    env.setdefault("LLM_PROXY__OPENAPI", "true")
    env.setdefault("LLM_PROXY__CONFIG_PATH", str(LOCAL_CONFIG))
    env.setdefault("LLM_PROXY__MASTER_KEY", DEFAULT_MASTER_KEY)
    env.setdefault("OLLAMA_API_BASE", "http://localhost:11434")
    # No network fetch of litellm's model cost map.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


def serve(port: int, host: str = "127.0.0.1") -> None:
    """The api module under uvicorn in this process, configured by this process's
    environment (see gateway_env); returns when uvicorn stops."""
    import uvicorn

    # Lambda puts layer code on the path (/opt/python); do the same for the core layer.
    sys.path.insert(0, str(CORE_LAYER))
    # The app logs each request itself (http.middleware), as run.sh's deployed uvicorn does.
    uvicorn.run(
        "app:app",
        app_dir=str(API_FUNCTION),
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
    )
    # Before `make dev` stops its local AWS: the usage items the server still holds.
    from llm_proxy.store.usage_batch import flush_all

    flush_all()


@dataclass(frozen=True)
class GatewayProcess:
    pid: int
    url: str


@contextmanager
def gateway_process(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    profile: Path | None = None,
    startup_s: float = 120.0,
) -> Iterator[GatewayProcess]:
    """`serve` in a process of its own with `env` (see gateway_env), for the block's duration;
    yields once it answers /health. Its output is discarded: the cost of writing each request's
    log line stays, the lines do not. With `profile`, see `profile_on_signals`.
    Stopped with SIGINT, as Ctrl-C stops `make dev`."""
    port = port or free_port()
    command = [sys.executable, "-m", "devstack.gateway", "--port", str(port)]
    if profile is not None:
        command += ["--profile", str(profile)]
    url = f"http://127.0.0.1:{port}"
    with server_process(
        [*command, "--parent", str(os.getpid())],
        ready_url=f"{url}/health",
        name="the gateway",
        env=env,
        cwd=REPO_ROOT,
        startup_s=startup_s,
    ) as process:
        yield GatewayProcess(process.pid, url)


def profile_on_signals(path: Path) -> None:
    """Profile this process (cProfile) from each SIGUSR1 to the next SIGUSR2, then write that
    profile to `path`: the requests served in between, not the start-up."""
    running: list[cProfile.Profile] = []

    def start(signum: int, frame: FrameType | None) -> None:
        running.append(cProfile.Profile())
        running[-1].enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        if running:
            profiler = running.pop()
            profiler.disable()
            profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--parent", type=int, help="exit when this process id is gone")
    parser.add_argument("--profile", type=Path, help="see profile_on_signals")
    args = parser.parse_args(argv)
    if args.parent is not None:
        exit_with_parent(args.parent)
    if args.profile is not None:
        profile_on_signals(args.profile)
    with suppress(KeyboardInterrupt):
        serve(args.port, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
