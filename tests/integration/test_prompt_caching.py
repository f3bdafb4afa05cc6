"""Anthropic's prompt caching through the gateway, against the Anthropic double (which writes
the prompt up to a `cache_control` breakpoint to its cache the first time and reads it after):
`cache_control` reaches the provider from the Messages API and from OpenAI-format chat
messages; the cache's writes and reads come back to the caller in each API's own terms, and are
metered and priced at the cache prices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.server import serving
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

INPUT, OUTPUT = Decimal("3e-6"), Decimal("15e-6")
WRITE, READ = Decimal("3.75e-6"), Decimal("0.3e-6")


def config_for(base: str) -> str:
    return gateway_config(
        deployment(
            "claude",
            "anthropic/claude-sonnet-4-5",
            api_base=base,
            api_key="os.environ/ANTHROPIC_API_KEY",
            input_cost_per_token=INPUT,
            output_cost_per_token=OUTPUT,
            cache_creation_input_token_cost=WRITE,
            cache_read_input_token_cost=READ,
        ),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


# The instructions are cached (a token a word); the question after them is not.
RULES = "You review code for a team that ships small careful changes."
CACHED = len(RULES.split())
QUESTION = "Is this fine?"


@pytest.fixture(scope="module")
def double() -> Iterator[AnthropicUpstream]:
    # Short prompts, so the counts are exact: no minimum cached length.
    double = AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"], min_cache_tokens=0)
    with serving(double) as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh(double: AnthropicUpstream) -> None:
    double.reset()


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], double: AnthropicUpstream) -> str:
    return gateway_for(config_for(double.base_url))


def system() -> Any:
    return [{"type": "text", "text": RULES, "cache_control": {"type": "ephemeral"}}]


def question() -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 64,
        "system": system(),
        "messages": [{"role": "user", "content": QUESTION}],
    }


def priced(item: dict[str, Any], written: int, read: int, uncached: int, out: int) -> None:
    assert (item["cache_write_tokens"], item["cached_tokens"]) == (written, read)
    assert item["prompt_tokens"] == written + read + uncached
    expected = written * WRITE + read * READ + uncached * INPUT + out * OUTPUT
    assert Decimal(item["cost_usd"]) == pytest.approx(expected)


def test_the_messages_api_reports_and_prices_cache_writes_then_reads(
    url: str, double: AnthropicUpstream, aws: dict[str, str]
) -> None:
    client = anthropic.Anthropic(base_url=url, api_key=MASTER_KEY, max_retries=0)
    asked = question()
    first = client.messages.with_raw_response.create(**asked)
    second = client.messages.with_raw_response.create(**asked)
    assert double.requests[0].body["system"] == system()
    wrote, read = first.parse().usage, second.parse().usage
    assert (wrote.cache_creation_input_tokens, wrote.cache_read_input_tokens or 0) == (CACHED, 0)
    assert (read.cache_creation_input_tokens or 0, read.cache_read_input_tokens) == (0, CACHED)
    assert wrote.input_tokens == read.input_tokens == 3  # the uncached part, as Anthropic says
    out = double.output_tokens
    priced(usage_item(aws["UsageTable"], first.headers["x-request-id"]), CACHED, 0, 3, out)
    priced(usage_item(aws["UsageTable"], second.headers["x-request-id"]), 0, CACHED, 3, out)


def test_a_streamed_message_reports_the_cache_in_its_final_usage(
    url: str, double: AnthropicUpstream
) -> None:
    client = anthropic.Anthropic(base_url=url, api_key=MASTER_KEY, max_retries=0)
    asked = question()
    client.messages.create(**asked)
    with client.messages.stream(**asked) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(event for event in events if event.type == "message_start")
    assert (start.message.usage.input_tokens, start.message.usage.cache_read_input_tokens) == (
        3,
        CACHED,
    )
    assert final.usage.cache_read_input_tokens == CACHED
    assert final.usage.input_tokens == 3


def test_cache_control_in_chat_messages_reaches_anthropic_and_reads_are_priced(
    url: str, double: AnthropicUpstream, aws: dict[str, str]
) -> None:
    """Roo Code, Kilo Code and Cline mark their system prompt with `cache_control` in OpenAI's
    format; cached tokens come back as `prompt_tokens_details.cached_tokens`."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    messages: Any = [
        {"role": "system", "content": system()},
        {"role": "user", "content": QUESTION},
    ]
    client.chat.completions.create(model="claude", messages=messages)
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=messages)
    sent = double.requests[-1].body["system"]
    assert sent[0]["cache_control"] == {"type": "ephemeral"}
    answer = raw.parse()
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == CACHED
    assert answer.usage.prompt_tokens == CACHED + 3
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    priced(item, 0, CACHED, 3, double.output_tokens)
