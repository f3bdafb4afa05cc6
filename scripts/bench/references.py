"""The other gateways the bench runs beside ours, on the same upstream double, as same-run
references:

- the LiteLLM proxy (the project's litellm version, hash-locked in
  litellm-proxy-requirements.txt), in a venv of its own under .tools/litellm-proxy: what the
  system this gateway replaces adds to a request;
- the Portkey gateway (npm @portkey-ai/gateway, locked in portkey/package-lock.json) under
  .tools/portkey: a lean path that meters nothing.

Each is installed on first use. One that cannot be installed or started (offline, no Node.js)
is reported as skipped with the reason; the bench goes on without it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.aws import REPO_ROOT
from devstack.processes import server_process
from devstack.server import free_port
from scripts.bench.load import MODEL, Target

TOOLS = REPO_ROOT / ".tools"
BENCH = Path(__file__).resolve().parent
LITELLM_LOCK = BENCH / "litellm-proxy-requirements.txt"
PORTKEY_PACKAGE = BENCH / "portkey"
LITELLM_PROXY = "litellm proxy"
PORTKEY = "portkey"
NAMES = (LITELLM_PROXY, PORTKEY)


class Unavailable(Exception):
    """A reference that could not be installed or started; the message says why."""


@dataclass(frozen=True)
class Upstream:
    url: str  # the double's base URL, without /v1
    key: str


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _run(command: Sequence[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what}: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' '.join(last)}")


# --- installs ---------------------------------------------------------------------------


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        raise Unavailable("uv not found (it comes with the dev environment, .venv)")
    return found


def install_litellm_proxy() -> Path:
    """The venv with the locked LiteLLM proxy, made or remade when the lock changed; its
    `litellm` command."""
    venv = TOOLS / "litellm-proxy"
    command = venv / "bin" / "litellm"
    stamp = venv / ".installed"
    digest = _digest(LITELLM_LOCK)
    if command.exists() and stamp.exists() and stamp.read_text() == digest:
        return command
    shutil.rmtree(venv, ignore_errors=True)
    uv = _uv()
    python = str(getattr(sys, "_base_executable", sys.executable))
    _run([uv, "venv", "--quiet", "--python", python, str(venv)], "creating .tools/litellm-proxy")
    _run(
        [
            *(uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")),
            *("--require-hashes", "--no-deps", "-r", str(LITELLM_LOCK)),
        ],
        "installing the LiteLLM proxy",
    )
    stamp.write_text(digest)
    return command


def install_portkey() -> tuple[str, Path]:
    """Node.js and the locked Portkey gateway under .tools/portkey, installed when the lock
    changed; the node command and the gateway's start script."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("Node.js (node and npm) not found on PATH")
    home = TOOLS / "portkey"
    script = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    stamp = home / ".installed"
    package, lock = PORTKEY_PACKAGE / "package.json", PORTKEY_PACKAGE / "package-lock.json"
    digest = _digest(package, lock)
    if script.exists() and stamp.exists() and stamp.read_text() == digest:
        return node, script
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy2(package, home)
    shutil.copy2(lock, home)
    # Exactly the lock's packages, integrity checked; no install scripts run.
    _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], "npm ci (Portkey)", cwd=home)
    stamp.write_text(digest)
    return node, script


# --- running ----------------------------------------------------------------------------


@contextmanager
def _process(
    command: Sequence[str], env: Mapping[str, str], ready_url: str, name: str
) -> Iterator[int]:
    """A reference server for the block's duration (see `server_process`); yields its
    process id once `ready_url` answers 200."""
    with ExitStack() as running:
        try:
            server = server_process(
                command, ready_url=ready_url, name=name, env=env, startup_s=180, stop_s=15
            )
            process = running.enter_context(server)
        except (OSError, RuntimeError) as exc:
            raise Unavailable(f"{name}: {exc}") from exc
        yield process.pid


def _clean_env() -> dict[str, str]:
    """This environment without the project's venv, settings or AWS variables."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {
        name: value
        for name, value in os.environ.items()
        if name not in drop and not name.startswith(("LLM_PROXY__", "AWS_"))
    }


@contextmanager
def litellm_proxy(upstream: Upstream, master_key: str, tmp: Path) -> Iterator[Target]:
    """The LiteLLM proxy with one deployment on the double, as the bench's gateway has it: no
    retries, its master key; no database, so it keeps no spend logs."""
    command = install_litellm_proxy()
    config = tmp / "litellm-proxy.yaml"
    config.write_text(
        f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream.url}/v1
      api_key: {upstream.key}
router_settings:
  num_retries: 0
general_settings:
  master_key: {master_key}
""",
        encoding="utf-8",
    )
    port = free_port()
    env = _clean_env() | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "127.0.0.1,localhost",
        # The bench's master key is a fixed, public string.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with _process(argv, env, f"{url}/health/liveliness", LITELLM_PROXY) as pid:
        yield Target(
            LITELLM_PROXY,
            f"{url}/v1/chat/completions",
            {"Authorization": f"Bearer {master_key}"},
            pid,
        )


@contextmanager
def portkey(upstream: Upstream) -> Iterator[Target]:
    """The Portkey gateway, told the upstream per request (its headers), as Portkey's
    OpenAI-compatible custom hosts are."""
    node, script = install_portkey()
    port = free_port()
    argv = [node, str(script), f"--port={port}", "--headless"]
    url = f"http://127.0.0.1:{port}"
    with _process(argv, _clean_env(), f"{url}/", PORTKEY) as pid:
        yield Target(
            PORTKEY,
            f"{url}/v1/chat/completions",
            {
                "Authorization": f"Bearer {upstream.key}",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"{upstream.url}/v1",
            },
            pid,
        )


@contextmanager
def references(
    wanted: Sequence[str], upstream: Upstream, master_key: str
) -> Iterator[tuple[list[Target], dict[str, dict[str, str]]]]:
    """The `wanted` references that install and start, for the block's duration, and each
    one's status: {"status": "ran"} or {"status": "skipped", "reason": ...}."""
    targets: list[Target] = []
    status: dict[str, dict[str, str]] = {}
    with ExitStack() as running, tempfile.TemporaryDirectory(prefix="llm-proxy-refs-") as tmp:
        for name in NAMES:
            if name not in wanted:
                status[name] = {"status": "skipped", "reason": "not asked for (--references)"}
                continue
            started = (
                litellm_proxy(upstream, master_key, Path(tmp))
                if name == LITELLM_PROXY
                else portkey(upstream)
            )
            try:
                targets.append(running.enter_context(started))
            except Unavailable as exc:
                status[name] = {"status": "skipped", "reason": str(exc)}
                print(f"{name}: skipped ({exc})", file=sys.stderr)
            else:
                status[name] = {"status": "ran"}
        yield targets, status
