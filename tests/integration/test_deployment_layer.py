"""The layers as they deploy: built by `scripts/build_layer.py opt` (the code `sam build`
runs), made read-only, and run alone, the way Lambda runs them.

- The Mangum handler answers a chat completion with PYTHONPATH set to the layer only (plus the
  runtime's boto3, which the layer leaves to the runtime), no network but loopback, and every
  third-party module loaded from the shipped bytecode.
- Its shared libraries carry no debug information or symbol tables, and every one loads.
- The Lambda Web Adapter start script serves the same app under uvicorn, and an SSE stream
  reaches the client while the upstream is still producing it; the SnapStart hooks the adapter
  calls warm the app before the snapshot and refresh it after a restore.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devstack.aws import load_template
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.lambda_fs import read_only, writable
from devstack.processes import wait_until_answered
from devstack.server import free_port, serving
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY

pytestmark = pytest.mark.timeout(600)

CONFIG = REPO / "tests" / "fixtures" / "gateway.yaml"
API_FUNCTION = REPO / "functions" / "api"
EVENT = REPO / "events" / "chat_completion.json"


@dataclass(frozen=True)
class Deployment:
    opt: Path  # /opt: the layers, merged as Lambda merges them
    runtime: Path  # the runtime's own boto3
    task: Path  # /var/task: the function's code

    @property
    def pythonpath(self) -> str:
        return f"{self.opt / 'python'}{os.pathsep}{self.runtime}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("lambda")
    built = subprocess.run(
        [sys.executable, "scripts/build_layer.py", "opt", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    runtime = root / "runtime"
    task = root / "task"
    shutil.copytree(API_FUNCTION, task, ignore=shutil.ignore_patterns("__pycache__"))
    for tree in (root / "opt", runtime, task):
        read_only(tree)
    yield Deployment(root / "opt", runtime, task)
    for tree in (root / "opt", runtime, task):
        writable(tree)


def lambda_env(deployment: Deployment, aws: dict[str, str], **extra: str) -> dict[str, str]:
    """What Lambda gives the function: its variables, the layer on PYTHONPATH, and nothing of
    this machine's Python environment."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        PYTHONPATH=deployment.pythonpath,
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        LAMBDA_TASK_ROOT=str(deployment.task),
        AWS_ENDPOINT_URL=aws["endpoint"],
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        LLM_PROXY__ENV="aws",
        LLM_PROXY__CONFIG_PATH=str(CONFIG),
        LLM_PROXY__SECRET_ID=aws["ProviderKeysSecret"],
        LLM_PROXY__USAGE_TABLE=aws["UsageTable"],
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        **extra,
    )
    return env


def base_python() -> str:
    """The interpreter without this project's virtual environment."""
    return str(getattr(sys, "_base_executable", sys.executable))


PROBE = textwrap.dedent(
    """
    import importlib.machinery, importlib.util, json, os, socket, sys

    LOOPBACK = ("127.0.0.1", "::1", "localhost")
    refused, writes = [], []

    def audit(event, args):
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else str(address)
            if host not in LOOPBACK:
                refused.append(host)
                raise ConnectionRefusedError(f"no network: {host}")
        elif event == "socket.getaddrinfo" and args[0] not in LOOPBACK:
            refused.append(str(args[0]))
            raise socket.gaierror(f"no network: {args[0]}")
        elif event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & 0o3)
            if writing and not str(path).startswith(("/tmp", "/dev/")):
                writes.append(str(path))

    sys.addaudithook(audit)
    task = os.environ["LAMBDA_TASK_ROOT"]
    sys.path.insert(0, task)
    spec = importlib.util.spec_from_file_location("app", os.path.join(task, "app.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    event = json.load(open(sys.argv[1]))
    # A request id of its own: the event file's belongs to test_lambda_handler's usage item.
    event["requestContext"]["requestId"] = "layer-probe-" + os.urandom(8).hex()
    event["headers"]["Authorization"] = "Bearer " + sys.argv[2]
    event["multiValueHeaders"]["Authorization"] = ["Bearer " + sys.argv[2]]
    event["body"] = json.dumps(
        {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]})
    response = app.handler(event, None)

    roots = [os.path.realpath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep)]
    sources = sorted(
        name for name, module in list(sys.modules.items())
        if isinstance(getattr(module, "__spec__", None) and module.__spec__.loader,
                      importlib.machinery.SourceFileLoader)
        and os.path.realpath(module.__file__ or "").startswith(roots[0])
        and not name.startswith("llm_proxy")
    )
    outside = sorted(
        name for name, module in list(sys.modules.items())
        if (getattr(module, "__file__", None) or "").endswith((".py", ".pyc", ".so"))
        and "site-packages" in module.__file__
        and not os.path.realpath(module.__file__).startswith(tuple(roots))
    )
    print("PROBE " + json.dumps({"response": response, "refused": refused, "writes": writes,
                                  "from_source": sources, "outside_layer": outside}))
    """
)


def test_the_built_layer_alone_serves_a_chat_completion(
    deployment: Deployment, aws: dict[str, str], upstream: OpenAIUpstream
) -> None:
    env = lambda_env(deployment, aws, TEST_OPENAI_BASE=f"{upstream.base_url}/v1")
    done = subprocess.run(
        [base_python(), "-s", "-c", PROBE, str(EVENT), MASTER_KEY],
        env=env,
        cwd=deployment.task,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [row for row in done.stdout.splitlines() if row.startswith("PROBE ")][-1]
    report = json.loads(line.removeprefix("PROBE "))
    response = report["response"]
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert body["choices"][0]["message"]["content"] == upstream.reply
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert report["refused"] == []
    assert report["writes"] == []
    # Third-party code runs from the shipped bytecode; nothing was compiled from source.
    assert report["from_source"] == []
    assert report["outside_layer"] == []


def _section_names(library: Path) -> set[str]:
    """The section names of a 64-bit little-endian ELF file."""
    data = library.read_bytes()
    shoff = int.from_bytes(data[0x28:0x30], "little")
    entsize, count, names = (
        int.from_bytes(data[at : at + 2], "little") for at in (0x3A, 0x3C, 0x3E)
    )
    headers = [data[shoff + i * entsize : shoff + (i + 1) * entsize] for i in range(count)]
    table = int.from_bytes(headers[names][24:32], "little")
    found = set()
    for header in headers:
        start = table + int.from_bytes(header[0:4], "little")
        found.add(data[start : data.index(b"\0", start)].decode())
    return found


def test_the_layer_ships_its_libraries_stripped_and_loadable(deployment: Deployment) -> None:
    site = deployment.opt / "python"
    libraries = sorted(site.rglob("*.so"))
    assert libraries
    for library in libraries:
        leftover = {name for name in _section_names(library) if name.startswith(".debug")}
        leftover |= {".symtab", ".strtab"} & _section_names(library)
        assert not leftover, f"{library.relative_to(site)} keeps {sorted(leftover)}"
    modules = sorted(
        ".".join(library.relative_to(site).with_suffix("").with_suffix("").parts)
        for library in libraries
    )
    done = subprocess.run(
        [
            base_python(),
            "-s",
            "-c",
            f"import importlib\nfor m in {modules!r}: importlib.import_module(m)",
        ],
        env={"PYTHONPATH": deployment.pythonpath, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


# --- the streaming function: Lambda Web Adapter's start script ------------------------------


@dataclass(kw_only=True)
class HeldUpstream(OpenAIUpstream):
    """Streams every chunk but the last at once, then waits for `release`."""

    release: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    async def _chunks(self, *args: object, **kwargs: object) -> AsyncIterator[bytes]:
        frames = [frame async for frame in super()._chunks(*args, **kwargs)]  # type: ignore[arg-type]
        for frame in frames[:-1]:
            yield frame
        await asyncio.to_thread(self.release.wait, 60)
        self.finished.set()
        yield frames[-1]


@contextmanager
def adapter_app(
    deployment: Deployment, aws: dict[str, str], upstream_url: str, **extra: str
) -> Iterator[tuple[str, Path]]:
    """run.sh started as Lambda Web Adapter starts it (PORT set, the handler run under
    /opt/bootstrap), for the block; yields its URL once it serves /health, and its log file."""
    assert os.access(deployment.task / "run.sh", os.X_OK)
    port = free_port()
    env = lambda_env(
        deployment,
        aws,
        PORT=str(port),
        TEST_OPENAI_BASE=f"{upstream_url}/v1",
        PATH=f"{Path(base_python()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        AWS_LWA_INVOKE_MODE="response_stream",
        **extra,
    )
    with tempfile.TemporaryDirectory() as logs:
        log = Path(logs) / "run.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [str(deployment.task / "run.sh")],
                env=env,
                cwd=deployment.task,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until_answered(f"{url}/health", process, name="run.sh")
                yield url, log
            finally:
                process.terminate()
                process.wait(timeout=10)


def test_the_adapter_start_script_streams_chunks_as_they_come(
    deployment: Deployment, aws: dict[str, str]
) -> None:
    held = HeldUpstream(api_key=UPSTREAM_KEY)
    with serving(held) as double, adapter_app(deployment, aws, double.base_url) as (url, _):
        try:
            body = {
                "model": "gpt-3.5-turbo",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            content: list[str] = []
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.iter_lines()
                for line in lines:
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        content.append(delta.get("content") or "")
                    if "".join(content).strip() == held.reply:
                        break
                # The whole reply reached the client while the upstream still held its end.
                assert not held.finished.is_set()
                held.release.set()
                rest = [line for line in lines if line]
            assert rest[-1] == "data: [DONE]"
        finally:
            held.release.set()


def test_the_adapter_snapstart_hooks_warm_the_app_and_refresh_it(
    deployment: Deployment, aws: dict[str, str]
) -> None:
    # The template's paths, as Lambda Web Adapter 1.1.0 calls them around a snapshot.
    hooks = _stream_function_hooks()
    upstream = OpenAIUpstream(api_key=UPSTREAM_KEY)
    with (
        serving(upstream) as double,
        adapter_app(deployment, aws, double.base_url, **hooks) as (url, log),
    ):
        before = hooks["AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH"]
        after = hooks["AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH"]
        # An invocation relayed by the adapter (it adds x-amzn-lambda-context) never runs a
        # hook; the adapter itself answers those with 403 before they reach the app.
        relayed = {"x-amzn-lambda-context": "{}", "x-amzn-request-context": "{}"}
        for path in (before, after):
            refused = httpx.post(f"{url}{path}", headers=relayed, timeout=30)
            assert refused.status_code == 404, refused.text
            assert httpx.get(f"{url}{path}", timeout=30).status_code in (404, 405)
        assert "warmed before the snapshot" not in log.read_text()

        warmed = httpx.post(f"{url}{before}", timeout=120)
        assert warmed.status_code == 204, warmed.text
        assert upstream.requests == []  # the rehearsal calls no provider
        restored = httpx.post(f"{url}{after}", timeout=120)
        assert restored.status_code == 204, restored.text

        output = log.read_text()
        assert "warmed before the snapshot" in output
        assert "warm-up request failed" not in output
        assert "refreshed after restore" in output
        body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        answered = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)
        assert answered.status_code == 200, answered.text
        assert upstream.requests, "the restored app reached the provider"


def _stream_function_hooks() -> dict[str, str]:
    template = load_template()
    variables = template["Resources"]["ApiStreamFunction"]["Properties"]["Environment"]
    return {
        name: value
        for name, value in variables["Variables"].items()
        if name.startswith("AWS_LWA_SNAPSTART_")
    }
