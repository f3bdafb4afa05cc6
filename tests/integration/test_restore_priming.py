"""After SnapStart's hooks, each path's first request does no more work than a warm one: under
the runtime's own client (`awslambdaric`, devstack.lambda_restore, which `make bench` times),
it imports nothing; and through the handler in this process, it makes about as many Python
calls as a warm one of the same path (a count, not a timing: litellm's per-Router lookups and
botocore's shapes left to the first request made it several times as many)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from llm_proxy import snapstart
from mangum import Mangum

from devstack.aws import LocalAWS
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.lambda_restore import PATHS, api_event, restored_function
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

MODEL = "gpt-3.5-turbo"
# The most Python calls a first request may make against a warm one of its path.
CALLS_LIMIT = 1.5


def test_under_the_runtime_client_a_restored_function_imports_nothing_to_serve(
    aws_stack: LocalAWS, upstream: OpenAIUpstream
) -> None:
    env = {
        **os.environ,
        **aws_stack.env,
        **aws_stack.function_env("ApiFunction"),
        "LLM_PROXY__ENV": "aws",
        "LLM_PROXY__CONFIG_PATH": str(REPO / "tests" / "fixtures" / "gateway.yaml"),
        "TEST_OPENAI_BASE": f"{upstream.base_url}/v1",
    }
    env.pop("LLM_PROXY__MASTER_KEY", None)
    with restored_function(env, str(REPO / "layers" / "core"), audit_imports=True) as function:
        first = {name: function.serve(name, MODEL, MASTER_KEY) for name in PATHS}
        warm = function.serve("chat completions", MODEL, MASTER_KEY)
        runtime = function.runtime
        assert function.after_restore_cpu_ms > 0
    assert runtime.errors == [] and runtime.refused == []
    assert runtime.extensions, "the after-response extension registered during init"
    assert runtime.restore_requested.is_set()
    for name, served in first.items():
        assert served.status == 200, name
        assert served.imports == (), f"{name} imported {served.imports}"
        assert 0 < served.cpu_to_response_ms <= served.cpu_to_freeze_ms
    assert warm.imports == ()
    assert len(upstream.requests) == len(PATHS) + 1  # the priming called no provider


class Calls:
    """Python function calls made on any thread while counting (sys.monitoring)."""

    TOOL = sys.monitoring.PROFILER_ID

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> Calls:
        sys.monitoring.use_tool_id(self.TOOL, "restore-priming-test")
        sys.monitoring.register_callback(self.TOOL, sys.monitoring.events.PY_START, self._note)
        sys.monitoring.set_events(self.TOOL, sys.monitoring.events.PY_START)
        return self

    def _note(self, *args: Any) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        sys.monitoring.set_events(self.TOOL, 0)
        sys.monitoring.register_callback(self.TOOL, sys.monitoring.events.PY_START, None)
        sys.monitoring.free_tool_id(self.TOOL)


@pytest.fixture
def restored(api: ModuleType) -> Iterator[Mangum]:
    """The api module's gateway through both hooks, as the runtime runs them, and a handler."""
    handler = Mangum(api.app, lifespan="off")
    snapstart.before_snapshot(api.gateway, api.app)
    snapstart.after_restore(api.gateway, snapstart.handler_loop())
    yield handler


def test_each_paths_first_request_makes_about_the_calls_of_a_warm_one(
    restored: Mangum, upstream: OpenAIUpstream
) -> None:
    def calls(name: str) -> int:
        path, body = PATHS[name]
        event = api_event(path, {"model": MODEL, **body}, MASTER_KEY)
        with Calls() as counted:
            answer = restored(event, LambdaContext())
        assert answer["statusCode"] == 200, answer["body"][:500]
        return counted.count

    first = {name: calls(name) for name in PATHS}
    warm = {name: min(calls(name) for _ in range(3)) for name in PATHS}
    over = {
        name: f"{first[name]} calls against {warm[name]}"
        for name in PATHS
        if first[name] > CALLS_LIMIT * warm[name]
    }
    assert over == {}


class LambdaContext:
    function_name = "api"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "restore-priming"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000
