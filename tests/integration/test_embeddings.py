"""POST /v1/embeddings in OpenAI's shape, through litellm to the OpenAI-format double."""

from __future__ import annotations

import openai
import pytest

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY, usage_item


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_embeddings_come_back_in_openai_shape_and_are_metered(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="priced", input=["first text here", "second one"], encoding_format="float"
    )
    result = raw.parse()
    assert [item.embedding for item in result.data] == [[0.0, 3.0, 0.5], [1.0, 2.0, 0.5]]
    assert result.usage.prompt_tokens == 5
    sent = upstream.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body["input"] == ["first text here", "second one"]

    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["endpoint"] == "/v1/embeddings"
    assert (item["prompt_tokens"], item["completion_tokens"]) == (5, 0)
    assert float(item["cost_usd"]) == pytest.approx(5 * 0.001)
    assert item["deployment_id"] == "priced#1"


def test_embedding_errors_are_openai_shaped(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedder", input="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="priced", input="x", extra_body={"api_base": "http://x"})
    assert caught.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    # litellm's OpenAI client retries embeddings itself; every attempt fails here.
    upstream.fail_next(Fault(status=500), times=5)
    with pytest.raises(openai.APIStatusError) as failed:
        client.embeddings.create(model="priced", input="x")
    assert failed.value.status_code == 502
