"""The test stack: its keys, the template resources' names, and reading back what the gateway
wrote there."""

from __future__ import annotations

import time
from typing import Any

import boto3

MASTER_KEY = "sk-test-master-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-secret-key-42"
WRONG_UPSTREAM_KEY = "sk-upstream-wrong-key-99"
TEST_NAMES = {
    "UsageTable": "test-usage",
    "KeysTable": "test-keys",
    "CountersTable": "test-counters",
    "CacheTable": "test-cache",
    "ProviderKeysSecret": "test/provider-keys",
}
# Every provider's key as stored in the test stack's provider-keys secret.
PROVIDER_KEYS = {
    "OPENAI_API_KEY": UPSTREAM_KEY,
    "ANTHROPIC_API_KEY": "sk-ant-test-secret-key-07",
    "AZURE_API_KEY": "azure-test-secret-key-0815",
    "OPENROUTER_API_KEY": "sk-or-test-secret-key-66",
    "DEEPSEEK_API_KEY": "sk-deepseek-test-secret-key-5",
    "WRONG_OPENAI_KEY": WRONG_UPSTREAM_KEY,
    # The existing LiteLLM proxy of LLM_PROXY__LLM_MODE=litellm is the OpenAI-format double.
    "LLM_PROXY__LITELLM_API_KEY": UPSTREAM_KEY,
    "LLM_PROXY__MASTER_KEY": MASTER_KEY,
}
# The tests serve the api and key management from one process, as `make dev` does, with the
# OpenAPI schema on (the schema tests read it).
ONE_PROCESS = {"LLM_PROXY__KEY_MANAGEMENT": "true", "LLM_PROXY__OPENAPI": "true"}


def usage_item(table: str, request_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The usage item for a request, read back from DynamoDB."""
    dynamodb = boto3.resource("dynamodb")
    deadline = time.monotonic() + timeout_s
    while True:
        item = dynamodb.Table(table).get_item(Key={"request_id": request_id}).get("Item")
        if item or time.monotonic() > deadline:
            assert item, f"no usage item for request {request_id}"
            return dict(item)
        time.sleep(0.05)
