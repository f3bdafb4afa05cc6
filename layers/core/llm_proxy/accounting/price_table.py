"""The seed's price table: the USD-per-million-token prices (and output limits) that the seed
lists for its models, used where litellm's bundled cost map no longer knows them.

litellm dropped retired models (the Claude 3 family, gpt-4-turbo-preview) from its map, so
their calls would otherwise cost 0.
"""

from __future__ import annotations

from dataclasses import dataclass

PER_MILLION = 1e-6


@dataclass(frozen=True)
class ListedPrice:
    """One row of the seed's price table."""

    input_per_million: float
    output_per_million: float
    max_output_tokens: int | None = None


SEED_PRICE_TABLE: dict[str, ListedPrice] = {
    "gpt-3.5-turbo": ListedPrice(0.50, 1.50),
    "gpt-4": ListedPrice(30.00, 60.00),
    "gpt-4-turbo-preview": ListedPrice(10.00, 30.00, 4096),
    "gpt-4-turbo": ListedPrice(10.00, 30.00, 4096),
    "claude-3-haiku-20240307": ListedPrice(0.25, 1.25, 4096),
    "claude-3-sonnet-20240229": ListedPrice(3.00, 15.00, 4096),
    "claude-3-opus-20240229": ListedPrice(15.00, 75.00, 4096),
}
