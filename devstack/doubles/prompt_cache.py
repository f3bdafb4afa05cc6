"""A provider's prompt cache, as the doubles keep it: one per double, as each deployment of a
real provider keeps its own. A prompt is a list of blocks (Anthropic's tools, system blocks and
message content blocks; OpenAI's messages or Responses input items), each with its tokens; the
cache holds prefixes of it, ended at a block boundary, as hash chains.

- Anthropic (https://docs.claude.com/en/docs/build-with-claude/prompt-caching): only a prefix
  ending at a `cache_control` breakpoint is written, once it holds the model's minimum (1,024
  tokens for Sonnet); a read is the longest cached prefix ending at one of the 20 block
  boundaries before each breakpoint, or at the breakpoint itself. `cache_control` itself is no
  part of the prefix: a mark that moves on to the newest message still reads the prefix the
  last request wrote. `cache_creation_input_tokens` are the tokens from the read up to the last
  breakpoint; `input_tokens` the rest.
- OpenAI (https://platform.openai.com/docs/guides/prompt-caching): automatic for prompts of
  1,024 tokens or more, every prefix written; a read is the longest cached prefix, counted in
  steps of 128 tokens after the first 1,024, and only under the same `prompt_cache_key`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

ANTHROPIC_MIN_TOKENS = 1024
LOOKBACK_BLOCKS = 20
OPENAI_MIN_TOKENS = 1024
OPENAI_STEP = 128


def chain(blocks: Iterable[Any], seed: str = "") -> list[str]:
    """The key of every prefix of `blocks` (one per block boundary), `cache_control` left out."""
    keys, last = [], hashlib.sha256(seed.encode()).hexdigest()
    for block in blocks:
        unmarked = (
            {name: value for name, value in block.items() if name != "cache_control"}
            if isinstance(block, dict)
            else block
        )
        text = json.dumps(unmarked, sort_keys=True, default=str)
        last = hashlib.sha256(f"{last}\0{text}".encode()).hexdigest()
        keys.append(last)
    return keys


def _running(tokens: list[int]) -> list[int]:
    total, running = 0, []
    for count in tokens:
        total += count
        running.append(total)
    return running


def anthropic_usage(
    cache: set[str], blocks: list[Any], tokens: list[int], min_tokens: int
) -> tuple[int, int] | None:
    """(read, written) for a prompt of `blocks` with `tokens` each; None without a breakpoint.
    The prefixes at its breakpoints are written to `cache`."""
    marks = [
        i for i, block in enumerate(blocks) if isinstance(block, dict) and "cache_control" in block
    ]
    if not marks:
        return None
    keys, through = chain(blocks), _running(tokens)
    if through[marks[-1]] < min_tokens:
        return 0, 0  # too short to cache, marked or not
    looked = {i for mark in marks for i in range(max(0, mark - LOOKBACK_BLOCKS), mark + 1)}
    hit = max((i for i in looked if keys[i] in cache), default=None)
    read = through[hit] if hit is not None else 0
    cache.update(keys[mark] for mark in marks if through[mark] >= min_tokens)
    return read, through[marks[-1]] - read


def openai_cached_tokens(
    cache: set[str], blocks: list[Any], tokens: list[int], cache_key: str | None
) -> int:
    """The prompt tokens read from `cache`; every prefix of the prompt is written to it."""
    keys, through = chain(blocks, seed=cache_key or ""), _running(tokens)
    hit = max((through[i] for i, key in enumerate(keys) if key in cache), default=0)
    cache.update(
        key for key, count in zip(keys, through, strict=True) if count >= OPENAI_MIN_TOKENS
    )
    if hit < OPENAI_MIN_TOKENS:
        return 0
    return OPENAI_MIN_TOKENS + (hit - OPENAI_MIN_TOKENS) // OPENAI_STEP * OPENAI_STEP
