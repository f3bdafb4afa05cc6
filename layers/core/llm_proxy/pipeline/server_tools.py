"""Tools the provider runs, and bills, itself: Anthropic's server tools (`web_search_20250305`,
`web_fetch_*`, `code_execution_*`, ...), OpenAI's built-in tools (`web_search`,
`web_search_preview`, `file_search`, `code_interpreter`, `image_generation`,
`computer_use_preview`, `mcp`, ...) and chat's `web_search_options`.

The rule: a request may offer such a tool only to a model group whose every deployment enables
it (`model_info.server_tools: [web_search]`), and every group it may fall back to, where the
API's answers from those deployments report the tool's uses; otherwise it is refused (400
`server_tool_not_enabled`) before any provider is called. Web searches are reported by
Anthropic, Vertex AI and Gemini on chat and Messages (`usage.server_tool_use.web_search_requests`)
and by OpenAI and Azure OpenAI on the Responses API, which litellm forwards to them natively (one
`web_search_call` output item per search); litellm's bridge from the Responses API to chat drops
the count, so no other provider serves it there. A deployment may enable a tool only where the
gateway can meter it: `web_search` on such a provider with a price per search
(`search_context_cost_per_query`, the deployment's or litellm's cost map); `web_fetch`, which
Anthropic charges as tokens only (chat and Messages). Any other is refused at config load.

Which tools the client runs itself is an allow-list (the SDKs' function and custom tools,
Codex's shell and patch tools, Anthropic's versioned client tools); any other `type` is the
provider's, whatever its name: a tool a provider adds tomorrow is refused until it is priced."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_proxy.accounting.pricing import WEB_SEARCH_PRICE, per_use_price
from llm_proxy.errors import SERVER_TOOL_NOT_ENABLED
from llm_proxy.pipeline.request_options import candidate_models

if TYPE_CHECKING:
    from llm_proxy.pipeline.model_router import ModelRouter
    from llm_proxy.pipeline.request import GatewayRequest

# Where the operator enables server tools for a deployment.
ENABLE_FIELD = "server_tools"
WEB_SEARCH = "web_search"
WEB_FETCH = "web_fetch"
# The tools a deployment may enable: priced per use (the price's LiteLLM name), or charged
# as tokens only (None).
ENABLEABLE: dict[str, str | None] = {WEB_SEARCH: WEB_SEARCH_PRICE, WEB_FETCH: None}
# The providers whose answers say how many web searches ran, on each API: litellm reads
# Anthropic's `server_tool_use` and Gemini's grounding searches on chat (and Messages, served
# through chat); OpenAI's Responses API lists a `web_search_call` item per search.
CHAT_SEARCH_COUNTERS = frozenset({"anthropic", "vertex_ai", "gemini"})
SEARCH_COUNTERS: dict[str, frozenset[str]] = {
    "chat": CHAT_SEARCH_COUNTERS,
    "messages": CHAT_SEARCH_COUNTERS,
    "responses": frozenset({"openai", "azure"}),
}
# The tools each API's answers meter (`web_fetch` is Anthropic's, charged as tokens, which
# litellm's Responses bridge would reach only through chat).
METERED_TOOLS: dict[str, frozenset[str]] = {
    "chat": frozenset({WEB_SEARCH, WEB_FETCH}),
    "messages": frozenset({WEB_SEARCH, WEB_FETCH}),
    "responses": frozenset({WEB_SEARCH}),
}
# Tools the client runs: OpenAI's chat and Responses types, and Anthropic's versioned ones.
CLIENT_TOOL_TYPES = frozenset({"function", "custom", "local_shell", "shell", "apply_patch"})
ANTHROPIC_CLIENT_TOOL = re.compile(r"^(bash|text_editor|computer|memory)_\d{8}$")
# A tool type's version suffix (`_20250305`, `_2025_03_11`) and OpenAI's preview mark.
VERSION = re.compile(r"(_preview)?(_\d{8}|_\d{4}_\d{2}_\d{2})?$")
# Gemini's search tool, which litellm passes on untyped, is a web search (its searches are
# counted as Anthropic's are).
UNTYPED_KINDS = {"googleSearch": WEB_SEARCH, "google_search": WEB_SEARCH}
# OpenAI's groups of function tools (Responses `namespace`): their members are checked.
NAMESPACE = "namespace"
# litellm's `max_uses` for chat's `web_search_options.search_context_size` on Anthropic.
SEARCHES_PER_CONTEXT_SIZE = {"low": 1, "medium": 5, "high": 10}


@dataclass(frozen=True)
class ServerTool:
    """A provider-run tool a request offers: its kind (`web_search`), where it is, and the most
    uses the request allows it (None: no bound)."""

    kind: str
    param: str
    max_uses: int | None = None


def kind_of(tool_type: str) -> str:
    """`web_search_20250305`, `web_search_preview_2025_03_11` -> `web_search`."""
    return VERSION.sub("", tool_type) or tool_type


def server_tools(body: Mapping[str, Any]) -> list[ServerTool]:
    """The provider-run tools a request body offers (chat, Messages or Responses)."""
    found = list(_in_tools(body.get("tools"), "tools"))
    options = body.get("web_search_options")
    if options is not None:
        size = options.get("search_context_size") if isinstance(options, dict) else None
        found.append(
            ServerTool(WEB_SEARCH, "web_search_options", SEARCHES_PER_CONTEXT_SIZE.get(str(size)))
        )
    return found


def _in_tools(tools: Any, param: str, *, nested: bool = False) -> Iterator[ServerTool]:
    if not isinstance(tools, list):
        return
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        where = f"{param}[{index}]"
        tool_type = tool.get("type")
        if tool_type == NAMESPACE and not nested:
            # One level, as OpenAI defines it: a namespace within one is no client's tool.
            yield from _in_tools(tool.get("tools"), f"{where}.tools", nested=True)
        elif tool_type is None:
            # Anthropic's custom tool leaves `type` out; an OpenAI function tool without it is
            # still a function. Anything else untyped is a provider's (Gemini's `googleSearch`).
            if "function" not in tool and "input_schema" not in tool:
                name = str(next(iter(tool), "(untyped)"))
                yield ServerTool(UNTYPED_KINDS.get(name, name), where)
        elif not isinstance(tool_type, str):
            yield ServerTool("(invalid)", f"{where}.type")
        elif tool_type not in CLIENT_TOOL_TYPES and not ANTHROPIC_CLIENT_TOOL.match(tool_type):
            max_uses = tool.get("max_uses")
            bounded = isinstance(max_uses, int) and not isinstance(max_uses, bool) and max_uses > 0
            yield ServerTool(kind_of(tool_type), where, max_uses if bounded else None)


def enabled(deployment: Mapping[str, Any]) -> frozenset[str]:
    """The server tools the operator enables on a deployment."""
    listed = (deployment.get("model_info") or {}).get(ENABLE_FIELD) or ()
    return frozenset(str(name) for name in listed)


def candidate_groups(request: GatewayRequest, router: ModelRouter) -> list[str]:
    """The model groups that may answer: the one asked for and its fallbacks."""
    return [model for model in candidate_models(request, router) if isinstance(model, str)]


def refuse_server_tools(request: GatewayRequest, router: ModelRouter) -> None:
    """A provider-run tool is refused unless every deployment that may answer enables it, and
    the API's answers from each carry the count of its uses."""
    if request.api.router_call is None:
        return  # counting tokens runs no tool
    api = request.api.name
    for tool in server_tools(request.as_sent):
        if tool.kind in ENABLEABLE and tool.kind not in METERED_TOOLS.get(api, ()):
            raise SERVER_TOOL_NOT_ENABLED(
                f"The provider-run tool '{tool.kind[:100]}' is not served on this endpoint: "
                "its uses are billed by the provider and cannot be metered here. Use "
                "/v1/chat/completions or /v1/messages with a model group that enables it "
                "(model_info.server_tools).",
                param=tool.param,
            )
        for model in candidate_groups(request, router):
            deployments = list(router.in_group(model))
            if not deployments or not all(tool.kind in enabled(d) for d in deployments):
                raise SERVER_TOOL_NOT_ENABLED(
                    f"The provider-run tool '{tool.kind[:100]}' is not enabled for model "
                    f"'{model[:256]}': it is billed by the provider per use, and the gateway's "
                    f"operator enables it per model group (model_info.server_tools: "
                    f"[{tool.kind[:100]}]).{_turn_off_hint(tool.kind)}",
                    param=tool.param,
                )
            if not all(counted(tool.kind, api, d) for d in deployments):
                raise SERVER_TOOL_NOT_ENABLED(
                    f"The provider-run tool '{tool.kind[:100]}' is not served for model "
                    f"'{model[:256]}' on this endpoint: its provider's answers here do not "
                    "report its uses, so they cannot be metered (model_info.server_tools "
                    "enables web_search on /v1/responses for OpenAI and Azure OpenAI "
                    "deployments, on /v1/chat/completions and /v1/messages for Anthropic, "
                    f"Vertex AI and Gemini ones).{_turn_off_hint(tool.kind)}",
                    param=tool.param,
                )


def counted(kind: str, api: str, deployment: Mapping[str, Any]) -> bool:
    """Whether the API's answers from the deployment report the tool's uses."""
    if kind != WEB_SEARCH:
        return True
    provider = deployment.get("provider") or _provider(deployment.get("litellm_params") or {})
    return provider in SEARCH_COUNTERS.get(api, ())


def _turn_off_hint(kind: str) -> str:
    # Codex CLI offers OpenAI's web search on every request unless told not to.
    if kind != WEB_SEARCH:
        return ""
    return ' Or send the request without it (Codex CLI: -c web_search="disabled").'


def server_tool_reserve(request: GatewayRequest, router: ModelRouter) -> float:
    """The most the request's provider-run tools may cost, in USD, for the admission's
    estimate: each tool's `max_uses` at the dearest per-use price among the deployments that may
    answer. A tool with no `max_uses` has no bound to reserve (its uses are metered after)."""
    bounded = [tool for tool in server_tools(request.as_sent) if tool.max_uses]
    if not bounded:
        return 0.0
    deployments = [
        deployment
        for model in candidate_groups(request, router)
        for deployment in router.in_group(model)
    ]
    total = 0.0
    for tool in bounded:
        price = ENABLEABLE.get(tool.kind)
        if price is not None and tool.max_uses:
            dearest = max((per_use_price(d, price) or 0.0 for d in deployments), default=0.0)
            total += tool.max_uses * dearest
    return total


def config_problem(litellm_params: Mapping[str, Any], model_info: Mapping[str, Any]) -> str | None:
    """Why a deployment cannot enable the server tools it lists (None: it can)."""
    listed = model_info.get(ENABLE_FIELD)
    if listed is None:
        return None
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        return f"model_info.{ENABLE_FIELD}: must be a list of tool names"
    deployment = {"litellm_params": litellm_params, "model_info": model_info}
    for name in listed:
        if name not in ENABLEABLE:
            return (
                f"model_info.{ENABLE_FIELD}: '{name}' cannot be enabled: the gateway meters "
                f"only {', '.join(sorted(ENABLEABLE))}"
            )
        if name == WEB_SEARCH and not any(
            _provider(litellm_params) in providers for providers in SEARCH_COUNTERS.values()
        ):
            return (
                f"model_info.{ENABLE_FIELD}: '{name}' cannot be enabled: this provider's "
                "answers do not report how many searches ran (Anthropic, Vertex AI and Gemini "
                "do on chat and Messages, OpenAI and Azure OpenAI on the Responses API)"
            )
        price = ENABLEABLE[name]
        if price is not None and per_use_price(deployment, price) is None:
            return (
                f"model_info.{ENABLE_FIELD}: '{name}' needs a price per use: set {price} "
                "(USD) in model_info; litellm's cost map has none for this model"
            )
    return None


def _provider(litellm_params: Mapping[str, Any]) -> str | None:
    import litellm

    declared = litellm_params.get("custom_llm_provider")
    if declared:
        return str(declared)
    try:
        return str(litellm.get_llm_provider(str(litellm_params.get("model", "")))[1])
    except Exception:
        return None
