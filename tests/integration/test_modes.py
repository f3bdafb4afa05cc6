"""The seed's LLM_PROXY__LLM_MODE: `litellm` forwards to an existing LiteLLM proxy (here the
OpenAI-format double, which is the wire format a LiteLLM proxy speaks) with no config file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from llm_proxy.config import ConfigError, config_for_mode

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY, usage_item

MESSAGES = [{"role": "user", "content": "Plan the next step"}]


def test_litellm_mode_forwards_any_model_to_the_proxy_with_its_key(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    url = gateway_for(
        None,
        LLM_PROXY__LLM_MODE="litellm",
        LLM_PROXY__LITELLM_PROXY_URL=f"{upstream.base_url}/v1",
        LLM_PROXY__DEFAULT_MODEL="gpt-3.5-turbo",
    )
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["gpt-3.5-turbo"]

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.parse().choices[0].message.content == upstream.reply
    assert upstream.requests[-1].body["model"] == "gpt-4"
    # The proxy's key is the secret's LLM_PROXY__LITELLM_API_KEY.
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["model_requested"] == "gpt-4" and item["provider"] == "litellm_proxy"

    # No model in the request: the seed's LLM_PROXY__DEFAULT_MODEL applies.
    response = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"messages": MESSAGES},
    )
    assert response.json()["choices"][0]["message"]["content"] == upstream.reply
    assert upstream.requests[-1].body["model"] == "gpt-3.5-turbo"


def test_unknown_mode_and_missing_proxy_url_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LLM_PROXY__LLM_MODE='proxy' is not one of"):
        config_for_mode(
            "proxy", None, tmp_path / "x.yaml", ollama_api_base="", litellm_proxy_url=None
        )
    with pytest.raises(ConfigError, match="needs LLM_PROXY__LITELLM_PROXY_URL"):
        config_for_mode(
            "litellm", None, tmp_path / "x.yaml", ollama_api_base="", litellm_proxy_url=None
        )


def test_ollama_mode_needs_no_config_file(tmp_path: Path) -> None:
    config = config_for_mode(
        "ollama",
        None,
        tmp_path / "missing.yaml",
        ollama_api_base="http://127.0.0.1:11434",
        litellm_proxy_url=None,
    )
    assert config.accepts_any_model and config.model_names() == []
    params = config.model_list[0].litellm_params
    assert (params.model, params.model_extra) == (
        "ollama_chat/*",
        {"api_base": "http://127.0.0.1:11434"},
    )
