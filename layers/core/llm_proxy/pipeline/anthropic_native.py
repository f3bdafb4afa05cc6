"""What a Messages API caller sends that only Anthropic understands, handed to Anthropic
deployments as sent and kept from the others: the `anthropic-beta` and `anthropic-version`
headers (the operator may drop or rename betas per model group), the tool definitions
(`defer_loading`, `cache_control`, server tools), which the chat translation would rewrite,
and Anthropic-only parameters such as `thinking` and `context_management`.

litellm's deployment hook (`litellm_hooks`) applies them once it has picked the deployment, so a
fallback to another provider gets the translated request only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")
# Messages API parameters only Anthropic serves: the chat translation passes them on, and any
# other provider would refuse the request for them (Claude Code sends several every time).
ANTHROPIC_ONLY = frozenset(
    {
        "thinking",
        "context_management",
        "container",
        "mcp_servers",
        "output_config",
        "speed",
        "inference_geo",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
        "cache_control",
    }
)
ANTHROPIC_PREFIX = "anthropic/"


@dataclass(frozen=True)
class NativeParts:
    headers: Mapping[str, str] = field(default_factory=dict)
    tools: list[Any] | None = None
    thinking: Any = None


def native_parts(headers: Mapping[str, str], sent: Mapping[str, Any]) -> NativeParts:
    forwarded = {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}
    tools = sent.get("tools")
    return NativeParts(
        forwarded, list(tools) if isinstance(tools, list) else None, sent.get("thinking")
    )


def betas_for(value: str, model_info: Mapping[str, Any]) -> str:
    """The caller's betas after the operator's `model_info.anthropic_betas` (`drop`: a list,
    `map`: old name -> new name)."""
    rules = model_info.get("anthropic_betas") or {}
    dropped = set(rules.get("drop") or ())
    renamed = rules.get("map") or {}
    betas = [beta.strip() for beta in value.split(",") if beta.strip()]
    return ",".join(str(renamed.get(beta, beta)) for beta in betas if beta not in dropped)


def for_deployment(kwargs: dict[str, Any], parts: NativeParts) -> dict[str, Any]:
    """The call's arguments for the deployment litellm picked: an Anthropic deployment gets the
    caller's headers (betas edited by the operator's rules), tool definitions and thinking as
    sent; any other loses the Anthropic-only parameters."""
    if not str(kwargs.get("model", "")).startswith(ANTHROPIC_PREFIX):
        for name in ANTHROPIC_ONLY & kwargs.keys():
            del kwargs[name]
        return kwargs
    headers = dict(kwargs.get("extra_headers") or {})
    for name, value in parts.headers.items():
        if name == "anthropic-beta":
            value = betas_for(value, kwargs.get("model_info") or {})
        if value:
            headers[name] = value
    kwargs["extra_headers"] = headers
    if parts.tools is not None:
        kwargs["tools"] = parts.tools
        # The translation turned a web_search tool into `web_search_options`, which litellm
        # would turn back into a second web_search tool beside the one sent.
        kwargs.pop("web_search_options", None)
    if parts.thinking is not None:
        # The caller's own thinking settings: the chat translation turns them into a
        # reasoning_effort for a model group named without "claude", and back into a budget
        # of litellm's choosing.
        kwargs["thinking"] = parts.thinking
        kwargs.pop("reasoning_effort", None)
    return kwargs
