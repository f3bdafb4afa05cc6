"""The seed's models: what litellm's bundled cost map no longer says about them.

litellm dropped retired models (the Claude 3 family, gpt-4-turbo-preview) from its map, so
bare names no longer resolve to a provider and their calls would cost 0. The seed's price
tables are the reference: USD per million tokens, input then output.
"""

from __future__ import annotations

from dataclasses import dataclass

PER_MILLION = 1e-6


@dataclass(frozen=True)
class SeedModel:
    input_per_million: float
    output_per_million: float
    max_output_tokens: int | None = None


SEED_MODELS: dict[str, SeedModel] = {
    "gpt-3.5-turbo": SeedModel(0.50, 1.50),
    "gpt-4": SeedModel(30.00, 60.00),
    "gpt-4-turbo-preview": SeedModel(10.00, 30.00, 4096),
    "gpt-4-turbo": SeedModel(10.00, 30.00, 4096),
    "claude-3-haiku-20240307": SeedModel(0.25, 1.25, 4096),
    "claude-3-sonnet-20240229": SeedModel(3.00, 15.00, 4096),
    "claude-3-opus-20240229": SeedModel(15.00, 75.00, 4096),
}

# Bare model names litellm cannot place any more, by prefix, and the provider they belong to.
BARE_NAME_PROVIDERS = (("claude-", "anthropic"), ("gpt-", "openai"), ("o1", "openai"))


def provider_for_bare_name(model: str) -> str | None:
    for prefix, provider in BARE_NAME_PROVIDERS:
        if model.startswith(prefix):
            return provider
    return None
