"""Agent libraries against a served gateway: the OpenAI Agents SDK (its default Responses model,
streamed runs, the chat-completions model, structured output) and LangChain's `ChatOpenAI` and
`OpenAIEmbeddings`. Mock deployments answer without a network; embeddings go to the
OpenAI-format double. Every call's usage item is read back by the request id it was answered
with. Tracing is off, so nothing leaves loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIProvider,
    OpenAIResponsesModel,
    RawResponsesStreamEvent,
    RunConfig,
    Runner,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent
from pydantic import BaseModel

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY, usage_item

REPLY = "Hello from the gateway."
CONFIG = gateway_config(
    deployment(
        "assistant",
        "openai/house-assistant",
        mock_response=REPLY,
        input_cost_per_token=0,
        output_cost_per_token=0,
    ),
    deployment(
        "city",
        "openai/house-city",
        mock_response='{"city": "Paris"}',
        input_cost_per_token=0,
        output_cost_per_token=0,
    ),
    openai_double(
        "city-upstream", "openai/house-city", input_cost_per_token=0, output_cost_per_token=0
    ),
    openai_double(
        "embedder", "openai/house-embedder", input_cost_per_token=0.001, output_cost_per_token=0
    ),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)


class City(BaseModel):
    city: str


class Calls:
    """What the SDK's HTTP clients (httpx2, openai's transport) sent the gateway (path, JSON
    body) and the `x-request-id` each was answered with, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []

    def record(self, response: httpx2.Response) -> None:
        self.seen.append((response.request.url.path, response.headers.get("x-request-id", "")))
        self.bodies.append(json.loads(response.request.content or b"{}"))

    async def record_async(self, response: httpx2.Response) -> None:
        self.record(response)

    def client(self) -> httpx2.Client:
        return httpx2.Client(event_hooks={"response": [self.record]})

    def async_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(event_hooks={"response": [self.record_async]})

    def ids(self, path: str) -> list[str]:
        assert self.seen, "the client made no request"
        assert {p for p, _ in self.seen} == {path}, self.seen
        return [request_id for _, request_id in self.seen]


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], upstream: OpenAIUpstream) -> str:
    return gateway_for(CONFIG)


@pytest.fixture(autouse=True, scope="module")
def _event_loop_kept() -> Iterator[None]:
    """`asyncio.run` and `Runner.run_sync` leave the thread without an event loop; the Lambda
    handler (Mangum) that later tests call runs on the loop the thread had."""
    policy = asyncio.get_event_loop_policy()
    loop = policy.get_event_loop()
    yield
    policy.set_event_loop(loop)


@pytest.fixture(autouse=True, scope="module")
def _no_tracing() -> Iterator[None]:
    """Neither library's tracing exporter runs (the Agents SDK's, LangSmith's)."""
    set_tracing_disabled(True)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
            patch.delenv(name, raising=False)
        yield
    set_tracing_disabled(False)


@pytest.fixture
def calls() -> Calls:
    return Calls()


def gateway_client(url: str, calls: Calls, key: str = MASTER_KEY) -> AsyncOpenAI:
    """An async client of the gateway, recorded; one per event loop (one per run here)."""
    return AsyncOpenAI(
        base_url=f"{url}/v1", api_key=key, max_retries=0, http_client=calls.async_client()
    )


@pytest.fixture
def default_client(url: str, calls: Calls) -> Iterator[Callable[[], AsyncOpenAI]]:
    """Makes a gateway client the Agents SDK's default one (for the next run), as users do."""
    before = _openai_shared.get_default_openai_client()

    def use() -> AsyncOpenAI:
        client = gateway_client(url, calls)
        set_default_openai_client(client, use_for_tracing=False)
        return client

    yield use
    _openai_shared.set_default_openai_client(before)  # type: ignore[arg-type]


def agent(model: Any = "assistant", **fields: Any) -> Agent[Any]:
    return Agent(name="helper", instructions="Answer briefly.", model=model, **fields)


def endpoints(table: str, request_ids: list[str]) -> set[str]:
    return {usage_item(table, request_id)["endpoint"] for request_id in request_ids}


def new_key(url: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/key/generate",
        json=fields,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    made: dict[str, Any] = response.json()
    return made


def chat(url: str, calls: Calls, model: str = "assistant", **fields: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{url}/v1",
        api_key=MASTER_KEY,  # type: ignore[arg-type]
        model=model,
        max_retries=0,
        http_client=calls.client(),
        http_async_client=calls.async_client(),
        **fields,
    )


# The OpenAI Agents SDK.


def test_agents_sdk_default_model_runs_over_the_responses_api(
    default_client: Callable[[], AsyncOpenAI], calls: Calls, aws: dict[str, str]
) -> None:
    default_client()
    result = asyncio.run(Runner.run(agent(), "Say hi"))
    assert result.final_output == REPLY
    assert (result.raw_responses[0].response_id or "").startswith("resp_")
    default_client()
    assert Runner.run_sync(agent(), "Say hi again").final_output == REPLY
    request_ids = calls.ids("/v1/responses")
    assert len(request_ids) == 2
    assert endpoints(aws["UsageTable"], request_ids) == {"/v1/responses"}


def test_agents_sdk_with_a_virtual_key_is_metered_as_its_agent(
    url: str, calls: Calls, aws: dict[str, str]
) -> None:
    made = new_key(url, models=["assistant"], metadata={"agent": "researcher"})
    client = gateway_client(url, calls, key=made["key"])
    model = OpenAIResponsesModel(model="assistant", openai_client=client)
    assert Runner.run_sync(agent(model), "Say hi").final_output == REPLY
    [request_id] = calls.ids("/v1/responses")
    item = usage_item(aws["UsageTable"], request_id)
    assert (item["endpoint"], item["key_id"], item["agent"]) == (
        "/v1/responses",
        made["token"],
        "researcher",
    )


def test_agents_sdk_streamed_run_yields_the_reply_as_deltas(
    default_client: Callable[[], AsyncOpenAI], calls: Calls, aws: dict[str, str]
) -> None:
    async def stream() -> tuple[str, Any]:
        result = Runner.run_streamed(agent(), "Say hi")
        deltas = [
            event.data.delta
            async for event in result.stream_events()
            if isinstance(event, RawResponsesStreamEvent)
            and isinstance(event.data, ResponseTextDeltaEvent)
        ]
        return "".join(deltas), result.final_output

    default_client()
    streamed, final = asyncio.run(stream())
    assert streamed == final == REPLY
    [request_id] = calls.ids("/v1/responses")
    item = usage_item(aws["UsageTable"], request_id)
    assert (item["endpoint"], item["stream"]) == ("/v1/responses", True)


def test_agents_sdk_chat_completions_model(url: str, calls: Calls, aws: dict[str, str]) -> None:
    model = OpenAIChatCompletionsModel(model="assistant", openai_client=gateway_client(url, calls))
    assert Runner.run_sync(agent(model), "Say hi").final_output == REPLY
    # The same through the provider, as `set_default_openai_api("chat_completions")` runs it.
    provider = OpenAIProvider(openai_client=gateway_client(url, calls), use_responses=False)
    result = Runner.run_sync(agent(), "Say hi", run_config=RunConfig(model_provider=provider))
    assert result.final_output == REPLY
    request_ids = calls.ids("/v1/chat/completions")
    assert len(request_ids) == 2
    assert endpoints(aws["UsageTable"], request_ids) == {"/v1/chat/completions"}


def test_agents_sdk_structured_output(
    default_client: Callable[[], AsyncOpenAI], calls: Calls, aws: dict[str, str]
) -> None:
    default_client()
    result = Runner.run_sync(agent("city", output_type=City), "Capital of France?")
    assert result.final_output == City(city="Paris")
    [request_id] = calls.ids("/v1/responses")
    sent = calls.bodies[0]["text"]["format"]
    assert (sent["type"], sent["schema"]["required"]) == ("json_schema", ["city"])
    assert usage_item(aws["UsageTable"], request_id)["endpoint"] == "/v1/responses"


# LangChain.


def test_langchain_invoke_stream_ainvoke_and_batch(
    url: str, calls: Calls, aws: dict[str, str]
) -> None:
    llm = chat(url, calls)
    assert llm.invoke("Say hi").content == REPLY
    chunks = [chunk.content for chunk in llm.stream("Say hi")]
    assert len(chunks) > 1 and "".join(map(str, chunks)) == REPLY
    assert asyncio.run(llm.ainvoke("Say hi")).content == REPLY
    assert [message.content for message in llm.batch(["One", "Two"])] == [REPLY, REPLY]
    request_ids = calls.ids("/v1/chat/completions")
    assert len(request_ids) == 5
    assert endpoints(aws["UsageTable"], request_ids) == {"/v1/chat/completions"}


@pytest.mark.parametrize("model", ["city", "city-upstream"])
def test_langchain_structured_output_with_a_json_schema(
    url: str,
    calls: Calls,
    model: str,
    upstream: OpenAIUpstream,
    monkeypatch: pytest.MonkeyPatch,
    aws: dict[str, str],
) -> None:
    monkeypatch.setattr(upstream, "reply", '{"city": "Paris"}')
    structured = chat(url, calls, model=model).with_structured_output(City, method="json_schema")
    assert structured.invoke("Capital of France?") == City(city="Paris")
    [request_id] = calls.ids("/v1/chat/completions")
    assert usage_item(aws["UsageTable"], request_id)["endpoint"] == "/v1/chat/completions"
    if model == "city-upstream":
        # The schema reached the provider: the gateway passes `response_format` through.
        forwarded = upstream.requests[-1].body["response_format"]
        assert forwarded["type"] == "json_schema"
        assert forwarded["json_schema"]["schema"]["properties"] == {
            "city": {"title": "City", "type": "string"}
        }


def test_langchain_over_the_responses_api(url: str, calls: Calls, aws: dict[str, str]) -> None:
    reply = chat(url, calls, use_responses_api=True).invoke("Say hi")
    assert reply.text == REPLY
    [request_id] = calls.ids("/v1/responses")
    assert usage_item(aws["UsageTable"], request_id)["endpoint"] == "/v1/responses"


def test_langchain_embeddings(
    url: str, calls: Calls, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=f"{url}/v1",
        api_key=MASTER_KEY,  # type: ignore[arg-type]
        model="embedder",
        check_embedding_ctx_length=False,
        max_retries=0,
        http_client=calls.client(),
    )
    texts = ["first text here", "second one"]
    assert embeddings.embed_documents(texts) == [[0.0, 3.0, 0.5], [1.0, 2.0, 0.5]]
    assert embeddings.embed_query("one two") == [0.0, 2.0, 0.5]
    sent = upstream.requests[-2]
    assert (sent.path, sent.body["input"]) == ("/v1/embeddings", texts)
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    request_id = calls.ids("/v1/embeddings")[0]
    item = usage_item(aws["UsageTable"], request_id)
    assert (item["endpoint"], item["prompt_tokens"]) == ("/v1/embeddings", 5)
