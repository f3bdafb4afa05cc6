"""The api function restored as SnapStart restores it, under Lambda's own runtime client
(`awslambdaric`), against the loopback Runtime API (devstack.runtime_api).

With `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start` the runtime client imports the function, runs
its before-snapshot hooks, asks `restore/next` (where Lambda snapshots the environment), runs
the after-restore hooks and then asks for invocations, all in one process. A real restore
resumes the memory image of that process, so the same process going on is the nearest local
picture of it. Each request is an API Gateway event; what it cost is the runtime process's CPU
time from its thaw (the invocation handed over) to its response, and to its freeze (the
runtime and the after-response extension both done).

With `audit_imports`, the process also notes every module it imports (an audit hook), so
what a request imports that the hooks did not is known.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.aws import REPO_ROOT
from devstack.runtime_api import RuntimeApi

API_FUNCTION = REPO_ROOT / "functions" / "api"
EVENT = REPO_ROOT / "events" / "chat_completion.json"
QUESTION = [{"role": "user", "content": "Say hello"}]
# Each path a restored environment serves: name -> (URL path, body without the model).
PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat completions": ("/v1/chat/completions", {"messages": QUESTION}),
    "chat completions, streamed": ("/v1/chat/completions", {"messages": QUESTION, "stream": True}),
    "messages": ("/v1/messages", {"messages": QUESTION, "max_tokens": 16}),
    "responses": ("/v1/responses", {"input": "Say hello"}),
    "embeddings": ("/v1/embeddings", {"input": "Say hello"}),
}
START_TIMEOUT_S = 300.0

# The runtime client as Lambda starts it, with an audit hook that notes each import (when, and
# the module) in the file the first argument names.
_AUDITED = textwrap.dedent(
    """
    import runpy, sys, time
    log = open(sys.argv[1], "w", buffering=1)
    def note(event, args):
        if event == "import":
            log.write(f"{time.monotonic()} {args[0]}\\n")
    sys.addaudithook(note)
    sys.argv = ["awslambdaric", "app.handler"]
    runpy.run_module("awslambdaric", run_name="__main__", alter_sys=True)
    """
)


@dataclass(frozen=True)
class Served:
    path: str
    status: int
    # The runtime process's CPU, from the thaw to the response and to the freeze.
    cpu_to_response_ms: float
    cpu_to_freeze_ms: float
    # Wall time from the thaw to the freeze: what Lambda bills as the invocation's duration.
    wall_to_freeze_ms: float
    # Modules first imported while the request was served (with audit_imports).
    imports: tuple[str, ...]


def api_event(path: str, body: Mapping[str, Any], key: str) -> dict[str, Any]:
    """An API Gateway (REST, proxy) event for a POST of `body` to `path` with `key`."""
    event: dict[str, Any] = json.loads(EVENT.read_text())
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["body"] = json.dumps(body)
    event["headers"]["Authorization"] = f"Bearer {key}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {key}"]
    event["requestContext"]["requestId"] = f"restore-{time.monotonic_ns()}"
    return event


class RestoredFunction:
    def __init__(self, runtime: RuntimeApi, process: subprocess.Popen[str], log: Path | None):
        self.runtime = runtime
        self.process = process
        self.import_log = log

    @property
    def after_restore_cpu_ms(self) -> float:
        """The after-restore hooks' CPU: from restore/next to the first invocation's thaw."""
        first = self.runtime.handed[0] if self.runtime.handed else None
        return (first.thaw_cpu - self.runtime.restore_cpu) * 1000 if first else 0.0

    def serve(self, name: str, model: str, key: str, timeout_s: float = 120) -> Served:
        """One request of path `name` (PATHS), served to its freeze."""
        path, body = PATHS[name]
        invocation = self.runtime.invoke(api_event(path, {"model": model, **body}, key))
        if not invocation.frozen.wait(timeout_s):
            raise RuntimeError(f"{name}: not served within {timeout_s} s")
        answer = json.loads(invocation.response or b"{}")
        return Served(
            path=path,
            status=int(answer.get("statusCode", 0)),
            cpu_to_response_ms=(invocation.response_cpu - invocation.thaw_cpu) * 1000,
            cpu_to_freeze_ms=(invocation.freeze_cpu - invocation.thaw_cpu) * 1000,
            wall_to_freeze_ms=(invocation.frozen_at - invocation.handed_at) * 1000,
            imports=self._imports(invocation.handed_at, invocation.frozen_at),
        )

    def _imports(self, start: float, end: float) -> tuple[str, ...]:
        if self.import_log is None:
            return ()
        found = []
        for line in self.import_log.read_text().splitlines():
            at, _, module = line.partition(" ")
            if start <= float(at) <= end:
                found.append(module)
        return tuple(dict.fromkeys(found))


@contextmanager
def restored_function(
    env: Mapping[str, str],
    pythonpath: str,
    python: tuple[str, ...] = (sys.executable,),
    audit_imports: bool = False,
) -> Iterator[RestoredFunction]:
    """The api function in a process of its own under `awslambdaric`, from `pythonpath`, after
    its before-snapshot and after-restore hooks; stopped (SIGTERM, as Lambda's shutdown) after
    the block."""
    runtime = RuntimeApi().start()
    with tempfile.TemporaryDirectory(prefix="llm-proxy-restore-") as tmp:
        log = Path(tmp) / "imports.log" if audit_imports else None
        command = (
            [*python, "-c", _AUDITED, str(log)]
            if log
            else [*python, "-m", "awslambdaric", "app.handler"]
        )
        # The function's log lines go to a file: a pipe nobody reads would fill and block it.
        output = Path(tmp) / "output.log"
        with output.open("w") as sink:
            process = subprocess.Popen(
                command,
                cwd=API_FUNCTION,
                env={**env, **_lambda_env(runtime, pythonpath)},
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            runtime.watch(process.pid)
            _wait_restored(runtime, process, output)
            yield RestoredFunction(runtime, process, log)
        finally:
            if process.poll() is None and not runtime.shutdown(process):
                process.kill()
            process.wait(timeout=30)
            runtime.stop()


def _lambda_env(runtime: RuntimeApi, pythonpath: str) -> dict[str, str]:
    return {
        "AWS_LAMBDA_RUNTIME_API": runtime.address,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        "AWS_LAMBDA_FUNCTION_NAME": "api",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        # As Lambda's Python 3.12 runtime sets it: invocations are polled on a thread.
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": str(API_FUNCTION),
        "PYTHONPATH": pythonpath,
    }


def _wait_restored(runtime: RuntimeApi, process: subprocess.Popen[str], output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not runtime.restore_requested.wait(0.5):
        if runtime.errors or process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=30)
            tail = output.read_text()[-3000:]
            raise RuntimeError(f"the function did not reach its snapshot:\n{tail}")
    if runtime.errors:
        raise RuntimeError(f"the function reported an error: {runtime.errors[0][:2000]!r}")
