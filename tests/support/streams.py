"""Reading what the gateway streams back."""

from __future__ import annotations

from typing import Any


def streamed_reasoning(stream: Any) -> tuple[str, str]:
    """A chat stream's reasoning (its `reasoning_content` deltas) and its text."""
    reasoning, content = "", ""
    for chunk in stream:
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    return reasoning, content
