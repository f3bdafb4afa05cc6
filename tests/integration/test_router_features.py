"""The litellm Router features a LiteLLM config can ask for, exercised through the official openai
SDK against the gateway: fallbacks, retries, timeouts, cooldowns, routing strategies and load
balancing. Deployments are told apart by the provider key each upstream double accepts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devstack.doubles.base import RecordedRequest
from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from devstack.server import serving
from tests.support.configs import deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
FIRST_REPLY = "The first deployment answers."
SECOND_REPLY = "The second deployment answers."
THIRD_REPLY = "The third deployment answers."
# OpenAI's own answer to a prompt over the model's context window.
CONTEXT_LENGTH_MESSAGE = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    "9000 tokens. Please reduce the length of the messages."
)
# Settings that keep one request's failure from steering the next. (litellm reads
# `cooldown_time: 0` as its 5 s default, so cooldowns are switched off by name.)
ISOLATED = {"num_retries": 0, "disable_cooldowns": True}


@dataclass
class Paced:
    """An upstream double served behind a pause before each request, to make it slow or busy."""

    double: OpenAIUpstream
    delay_s: float = 0.0
    base_url: str = ""

    def app(self) -> Any:
        inner = self.double.app()

        async def paced(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and self.delay_s:
                await asyncio.sleep(self.delay_s)
            await inner(scope, receive, send)

        return paced


@dataclass
class ContextLimited:
    """An OpenAI-format upstream whose model's context window every prompt exceeds: it answers
    400 `context_length_exceeded` exactly as OpenAI does."""

    api_key: str
    base_url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
            error = {
                "message": CONTEXT_LENGTH_MESSAGE,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            return JSONResponse({"error": error}, status_code=400)

        return api


def _served(key_variable: str, reply: str) -> Iterator[Paced]:
    paced = Paced(OpenAIUpstream(api_key=PROVIDER_KEYS[key_variable], reply=reply))
    with serving(paced):
        paced.double.base_url = paced.base_url
        yield paced


@pytest.fixture(scope="module")
def first() -> Iterator[Paced]:
    yield from _served("OPENAI_API_KEY", FIRST_REPLY)


@pytest.fixture(scope="module")
def second() -> Iterator[Paced]:
    yield from _served("DEEPSEEK_API_KEY", SECOND_REPLY)


@pytest.fixture(scope="module")
def third() -> Iterator[Paced]:
    yield from _served("OPENROUTER_API_KEY", THIRD_REPLY)


@pytest.fixture(scope="module")
def context_limited() -> Iterator[ContextLimited]:
    with serving(ContextLimited(api_key=PROVIDER_KEYS["OPENAI_API_KEY"])) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh_doubles(first: Paced, second: Paced, third: Paced) -> None:
    for paced in (first, second, third):
        paced.double.reset()
        paced.delay_s = 0.0


def on_double(
    name: str, paced: Paced | ContextLimited, key_variable: str, **params: Any
) -> dict[str, Any]:
    """One model_list entry on a double, its key from the secret; extra litellm_params."""
    return deployment(
        name,
        f"openai/{name}",
        api_base=f"{paced.base_url}/v1",
        api_key=f"os.environ/{key_variable}",
        **params,
    )


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


def ask(client: openai.OpenAI, model: str) -> tuple[str, str]:
    """One completion: its text and the gateway's request id."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-request-id"]


def served_by(*pairs: Paced) -> list[int]:
    return [len(paced.double.requests) for paced in pairs]


# -- fallbacks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["router_settings", "litellm_settings"])
def test_fallbacks_in_the_seed_syntax_answer_from_the_fallback_group(
    gateway_for: Callable[..., str],
    first: Paced,
    second: Paced,
    aws: dict[str, str],
    section: str,
) -> None:
    sections: dict[str, dict[str, Any]] = {
        "router_settings": dict(ISOLATED),
        "litellm_settings": {},
    }
    sections[section]["fallbacks"] = [{"gpt-4": ["gpt-3.5-turbo"]}]
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY"),
            on_double("gpt-3.5-turbo", second, "DEEPSEEK_API_KEY"),
            **sections,
        )
    )
    first.double.fail_next(Fault(status=500))
    text, request_id = ask(client_for(url), "gpt-4")
    assert text == SECOND_REPLY
    assert served_by(first, second) == [1, 1]
    item = usage_item(aws["UsageTable"], request_id)
    assert item["status"] == 200
    assert item["model_requested"] == "gpt-4"
    assert item["fallbacks"] >= 1
    assert item["deployment_id"] == "gpt-3.5-turbo#1"
    assert item["model_group"] == "gpt-3.5-turbo"


def test_without_fallbacks_the_same_failure_reaches_the_client(
    gateway_for: Callable[..., str], first: Paced, second: Paced
) -> None:
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY"),
            on_double("gpt-3.5-turbo", second, "DEEPSEEK_API_KEY"),
            router_settings=ISOLATED,
        )
    )
    first.double.fail_next(Fault(status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client_for(url), "gpt-4")
    assert caught.value.status_code == 502
    assert served_by(first, second) == [1, 0]


@pytest.fixture(scope="module")
def context_gateway(
    gateway_for: Callable[..., str], context_limited: ContextLimited, second: Paced, third: Paced
) -> str:
    # A context-window error goes to the long-context group; any other failure to the generic one.
    return gateway_for(
        gateway_config(
            on_double("gpt-4", context_limited, "OPENAI_API_KEY"),
            on_double("gpt-3.5-turbo", second, "DEEPSEEK_API_KEY"),
            on_double("gpt-4-32k", third, "OPENROUTER_API_KEY"),
            router_settings={
                **ISOLATED,
                "fallbacks": [{"gpt-4": ["gpt-3.5-turbo"]}],
                "context_window_fallbacks": [{"gpt-4": ["gpt-4-32k"]}],
            },
        )
    )


def test_context_window_fallbacks_answer_from_the_long_context_group(
    context_gateway: str,
    context_limited: ContextLimited,
    second: Paced,
    third: Paced,
    aws: dict[str, str],
) -> None:
    before = len(context_limited.requests)
    text, request_id = ask(client_for(context_gateway), "gpt-4")
    assert text == THIRD_REPLY
    assert len(context_limited.requests) == before + 1
    assert served_by(second, third) == [0, 1]
    item = usage_item(aws["UsageTable"], request_id)
    assert item["status"] == 200
    assert item["fallbacks"] >= 1
    assert item["deployment_id"] == "gpt-4-32k#2"
    assert item["model_group"] == "gpt-4-32k"


def test_a_context_window_error_without_fallbacks_is_400_context_length_exceeded(
    gateway_for: Callable[..., str], context_limited: ContextLimited
) -> None:
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", context_limited, "OPENAI_API_KEY"), router_settings=ISOLATED
        )
    )
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client_for(url), "gpt-4")
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


# -- retries --------------------------------------------------------------------------------------

RETRY_SETTINGS: dict[str, dict[str, Any]] = {
    "num_retries": {"num_retries": 2},
    # The seed's form; a short delay keeps the test quick.
    "seed retry_policy": {"retry_policy": {"max_retries": 2, "delay": 0.1, "backoff_factor": 2.0}},
    # litellm's per-error form.
    "per-error retry_policy": {
        "retry_policy": {"InternalServerErrorRetries": 2, "RateLimitErrorRetries": 0}
    },
}


@pytest.mark.parametrize("setting", list(RETRY_SETTINGS))
def test_retries_turn_transient_failures_into_a_success(
    gateway_for: Callable[..., str], first: Paced, aws: dict[str, str], setting: str
) -> None:
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY"),
            router_settings={"disable_cooldowns": True, **RETRY_SETTINGS[setting]},
        )
    )
    client = client_for(url)
    first.double.fail_next(Fault(status=500), times=2)
    text, request_id = ask(client, "gpt-4")
    assert text == FIRST_REPLY
    assert served_by(first) == [3]
    item = usage_item(aws["UsageTable"], request_id)
    assert (item["status"], item["retries"], item["fallbacks"]) == (200, 2, 0)
    assert item["deployment_id"] == "gpt-4#0"


def _one_retry(gateway_for: Callable[..., str], first: Paced) -> openai.APIStatusError:
    """A request that fails once more than `num_retries: 1` allows."""
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY"),
            router_settings={"disable_cooldowns": True, "num_retries": 1},
        )
    )
    first.double.fail_next(Fault(status=500), times=2)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client_for(url), "gpt-4")
    assert served_by(first) == [2]
    return caught.value


def test_a_failure_outlasting_the_retries_reaches_the_client(
    gateway_for: Callable[..., str], first: Paced, aws: dict[str, str]
) -> None:
    error = _one_retry(gateway_for, first)
    assert error.status_code == 502
    item = usage_item(aws["UsageTable"], error.response.headers["x-request-id"])
    assert (item["status"], item["error_code"]) == (502, "provider_error")
    assert (item["retries"], item["fallbacks"]) == (1, 0)
    assert item["deployment_id"] == "gpt-4#0"


def test_per_error_retry_policy_does_not_retry_what_it_excludes(
    gateway_for: Callable[..., str], first: Paced
) -> None:
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY"),
            router_settings={"disable_cooldowns": True, **RETRY_SETTINGS["per-error retry_policy"]},
        )
    )
    first.double.fail_next(Fault(status=429, message="Rate limit exceeded", retry_after="1"))
    with pytest.raises(openai.RateLimitError):
        ask(client_for(url), "gpt-4")
    assert served_by(first) == [1]


# -- timeouts and cooldowns -----------------------------------------------------------------------

# The double would answer (with an error) after this long; the gateway must give up well before.
SLOW_UPSTREAM_S = 3.0


@pytest.mark.parametrize("where", ["litellm_params", "router_settings"])
def test_a_slow_deployment_times_out_as_504(
    gateway_for: Callable[..., str], first: Paced, aws: dict[str, str], where: str
) -> None:
    params = {"timeout": 0.5} if where == "litellm_params" else {}
    settings = {"timeout": 0.5} if where == "router_settings" else {}
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY", **params),
            router_settings={**ISOLATED, **settings},
        )
    )
    first.double.fail_next(Fault(delay_s=SLOW_UPSTREAM_S))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client_for(url), "gpt-4")
    assert time.monotonic() - started < SLOW_UPSTREAM_S - 0.5
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "provider_timeout"  # type: ignore[index]
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert (item["status"], item["error_type"]) == (504, "timeout_error")


def _group(first: Paced, second: Paced, settings: dict[str, Any]) -> str:
    """Two deployments under one model_name, told apart by their keys."""
    return gateway_config(
        on_double("gpt-4", first, "OPENAI_API_KEY"),
        on_double("gpt-4", second, "DEEPSEEK_API_KEY"),
        router_settings=settings,
    )


@pytest.mark.parametrize("cooldown", [True, False])
def test_a_failed_deployment_cools_down_and_the_group_serves_from_the_other(
    gateway_for: Callable[..., str], first: Paced, second: Paced, cooldown: bool
) -> None:
    settings = (
        {"num_retries": 0, "allowed_fails": 0, "cooldown_time": 60}
        if cooldown
        else {"num_retries": 0, "disable_cooldowns": True}
    )
    client = client_for(gateway_for(_group(first, second, settings)))
    first.double.fail_next(Fault(status=500))
    # Shuffle until the first deployment has taken (and failed) one request.
    failed = 0
    for _ in range(30):
        try:
            ask(client, "gpt-4")
        except openai.APIStatusError as exc:
            assert exc.status_code == 502
            failed += 1
        if first.double.requests:
            break
    assert (len(first.double.requests), failed) == (1, 1)
    for _ in range(16):
        ask(client, "gpt-4")
    if cooldown:
        assert len(first.double.requests) == 1
    else:
        # Sixteen requests shuffled over two deployments: the first gets none with p = 2**-16.
        assert len(first.double.requests) > 1


# -- routing strategies and load balancing --------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    ["simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2"],
)
def test_every_routing_strategy_serves_a_group_of_two(
    gateway_for: Callable[..., str],
    first: Paced,
    second: Paced,
    aws: dict[str, str],
    strategy: str,
) -> None:
    url = gateway_for(_group(first, second, {**ISOLATED, "routing_strategy": strategy}))
    client = client_for(url)
    answers = [ask(client, "gpt-4") for _ in range(8)]
    assert {text for text, _ in answers} <= {FIRST_REPLY, SECOND_REPLY}
    assert sum(served_by(first, second)) == 8
    deployments = {usage_item(aws["UsageTable"], rid)["deployment_id"] for _, rid in answers}
    assert deployments <= {"gpt-4#0", "gpt-4#1"}


def test_simple_shuffle_follows_the_weights(
    gateway_for: Callable[..., str], first: Paced, second: Paced
) -> None:
    url = gateway_for(
        gateway_config(
            on_double("gpt-4", first, "OPENAI_API_KEY", weight=9),
            on_double("gpt-4", second, "DEEPSEEK_API_KEY", weight=1),
            router_settings={**ISOLATED, "routing_strategy": "simple-shuffle"},
        )
    )
    client = client_for(url)
    for _ in range(40):
        ask(client, "gpt-4")
    heavy, light = served_by(first, second)
    assert heavy + light == 40
    # Binomial(40, 0.9): under 28 with p < 1e-4; an unweighted shuffle reaches 28 with p < 0.01.
    assert heavy >= 28


def test_the_seed_two_key_gpt_4_example_uses_both_keys(
    gateway_for: Callable[..., str], first: Paced, second: Paced, aws: dict[str, str]
) -> None:
    # The seed's "Load balancing" entries, each pointed at a double that accepts only its key.
    url = gateway_for(
        gateway_config(
            deployment(
                "gpt-4",
                "gpt-4",
                api_base=f"{first.base_url}/v1",
                api_key="os.environ/OPENAI_API_KEY",
            ),
            deployment(
                "gpt-4",
                "gpt-4",
                api_base=f"{second.base_url}/v1",
                api_key="os.environ/DEEPSEEK_API_KEY",
            ),
            router_settings={"routing_strategy": "least-busy", **ISOLATED},
        )
    )
    client = client_for(url)
    first.delay_s = second.delay_s = 0.2
    # least-busy balances what is in flight at once.
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: ask(client, "gpt-4"), range(12)))
    keys = Counter(
        request.headers["authorization"]
        for paced in (first, second)
        for request in paced.double.requests
    )
    assert set(keys) == {
        f"Bearer {PROVIDER_KEYS['OPENAI_API_KEY']}",
        f"Bearer {PROVIDER_KEYS['DEEPSEEK_API_KEY']}",
    }
    assert sum(keys.values()) == 12
    deployments = {usage_item(aws["UsageTable"], rid)["deployment_id"] for _, rid in answers}
    assert deployments == {"gpt-4#0", "gpt-4#1"}
