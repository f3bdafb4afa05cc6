"""The seed's AGENT_MODELS as model aliases: an agent asks for its role by name."""

from __future__ import annotations

from collections.abc import Callable

import openai

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import deployment, gateway_config
from tests.support.stack import MASTER_KEY, usage_item

MESSAGES = [{"role": "user", "content": "Refactor this function"}]


def test_agent_roles_route_to_their_models_and_tag_usage(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    base = f"{upstream.base_url}/v1"
    url = gateway_for(
        gateway_config(
            deployment("gpt-3.5-turbo", "openai/gpt-3.5-turbo", api_base=base),
            deployment("gpt-4", "openai/gpt-4", api_base=base),
            router_settings={
                "model_group_alias": {
                    "orchestrator": "gpt-3.5-turbo",
                    "coder": "gpt-4",
                    "ask": "gpt-3.5-turbo",
                }
            },
        )
    )
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == [
        "gpt-3.5-turbo",
        "gpt-4",
        "orchestrator",
        "coder",
        "ask",
    ]

    raw = client.chat.completions.with_raw_response.create(
        model="coder",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.parse().choices[0].message.content == upstream.reply
    assert upstream.requests[-1].body["model"] == "gpt-4"
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert (item["agent"], item["model_requested"], item["model_group"]) == (
        "coder",
        "coder",
        "gpt-4",
    )

    # An explicit agent header wins over the alias.
    raw = client.chat.completions.with_raw_response.create(
        model="ask",
        messages=MESSAGES,
        extra_headers={"x-agent": "debug"},  # type: ignore[arg-type]
    )
    assert usage_item(aws["UsageTable"], raw.headers["x-request-id"])["agent"] == "debug"
