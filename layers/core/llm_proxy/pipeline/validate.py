"""The pipeline's validate step. A caller chooses a model it may use and the parameters the
endpoint's public API defines, nothing else: each endpoint's parameters come from the official
SDKs' request types, plus the few the gateway itself defines (each API's row in `apis`), and
those the operator enables for a model group (`model_info.allowed_params`); and provider-run
tools only where the operator enables them (`server_tools`). Everything a caller controls is
bounded: names, metadata, numbers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from llm_proxy.access.auth import Caller
from llm_proxy.errors import (
    INVALID_AGENT_NAME,
    INVALID_MODEL_NAME,
    INVALID_VALUE,
    METADATA_TOO_LARGE,
    MISSING_MODEL,
    MODEL_NOT_ALLOWED,
    PROVIDER_KEY_MISSING,
    UNSUPPORTED_PARAMETER,
    ProxyError,
    model_not_found,
)
from llm_proxy.json_bodies import refuse_non_finite, refuse_unencodable_text
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import MAX_MODEL_NAME, GatewayRequest
from llm_proxy.pipeline.request_options import MOCK_TESTING_PARAMS, ROUTING_OPTIONS
from llm_proxy.pipeline.server_tools import refuse_server_tools

# What `metadata` may hold: the gateway's and LiteLLM's documented keys, Anthropic's user id.
METADATA_KEYS = frozenset(
    {"agent", "tags", "trace_id", "trace_name", "session_id", "generation_name", "user_id"}
)
MAX_METADATA_BYTES = 8 * 1024
# What only the gateway and its Router read, never the provider.
NOT_IN_EXTRA_BODY = frozenset({"extra_body", *ROUTING_OPTIONS, *MOCK_TESTING_PARAMS})
AGENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def validate_request(
    request: GatewayRequest, router: ModelRouter, operator_allowed: Iterable[str] = ()
) -> None:
    """Everything about the request but the model: its parameters (with those the operator
    allows on every model), the provider-run tools it offers, text and numbers."""
    sent = request.as_sent
    allowed = request.api.params | router.allowed_params(request.model) | set(operator_allowed)
    refuse_unsupported(sent, allowed)
    refuse_server_tools(request, router)
    check_metadata(sent.get("metadata"))
    if request.caller.claimed_agent is not None:
        check_agent_name(request.caller.claimed_agent, "x-agent")
    refuse_non_finite(sent)
    refuse_unencodable_text(sent)


def claimed_agents(caller: Caller, body: dict[str, Any]) -> list[str]:
    """The agents a caller names for itself: the `x-agent` header, then `metadata.agent`."""
    metadata = body.get("metadata")
    named = [caller.claimed_agent, metadata.get("agent") if isinstance(metadata, dict) else None]
    return [name for name in named if isinstance(name, str)]


def validate_model(
    request: GatewayRequest, router: ModelRouter, served: list[str], accepts_any: bool
) -> None:
    """The caller's key may use the model (checked first: a key learns nothing about models it
    may not use), and the model can be served: it is configured and its provider key is set."""
    model = request.model
    if not model:
        raise MISSING_MODEL("'model' is required.", param="model")
    if len(model) > MAX_MODEL_NAME:
        raise INVALID_MODEL_NAME(
            f"'model' is longer than {MAX_MODEL_NAME} characters.", param="model"
        )
    require_allowed(request.caller, model)
    if model in router.unavailable:
        missing = ", ".join(sorted(router.unavailable[model]))
        raise PROVIDER_KEY_MISSING(
            f"Model '{model}' cannot be served: {missing} is not set in the provider-keys "
            "secret or the environment.",
            param="model",
        )
    if model not in served and not accepts_any:
        raise model_not_found(model, served)


def require_allowed(caller: Caller, model: str) -> None:
    """The model is in the caller's key's, team's and user's model lists."""
    refusal = caller.refusal(model)
    if refusal is not None:
        raise MODEL_NOT_ALLOWED(refusal, param="model")


def permitted_groups(caller: Caller, router: ModelRouter) -> list[frozenset[str]]:
    """The model groups the caller may be served by, fallbacks included: one set per model
    list that restricts it (its key's, team's, user's; none: any), each the names it lists and
    the groups that aliases among them stand for."""
    return [
        frozenset(holder.models) | {router.group_of(name) for name in holder.models}
        for holder in (caller.key, *caller.owners)
        if holder is not None and not holder.allows_all
    ]


def allowed_params(api: ApiName, operator_enabled: Iterable[str] = ()) -> frozenset[str]:
    """What a caller of `api` may send: the API's parameters (`apis`), and those the operator
    enables for the model group."""
    return APIS[api].params | frozenset(operator_enabled)


def refuse_unsupported(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Any parameter the endpoint's API does not define is refused, at the top level and inside
    `extra_body` (which litellm would merge into the provider's request: the Router's own
    options have no place there)."""
    for name in body:
        if name not in allowed:
            raise unsupported(name)
    extra = body.get("extra_body")
    if extra is None:
        return
    if not isinstance(extra, dict):
        raise INVALID_VALUE("'extra_body' must be an object.", param="extra_body")
    for name in extra:
        if name not in allowed or name in NOT_IN_EXTRA_BODY:
            raise unsupported(f"extra_body.{name}")


def unsupported(name: str) -> ProxyError:
    return UNSUPPORTED_PARAMETER(
        f"Parameter '{name[:100]}' is not supported: a request may carry the parameters of the "
        "endpoint's public API, and those the gateway's operator enables for the model.",
        param=name[:100],
    )


def check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise INVALID_VALUE("'metadata' must be an object.", param="metadata")
    for name in metadata:
        if name not in METADATA_KEYS:
            raise unsupported(f"metadata.{name}")
    size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise METADATA_TOO_LARGE(
            f"'metadata' is larger than {MAX_METADATA_BYTES} bytes.", param="metadata"
        )
    if "agent" in metadata:
        check_agent_name(metadata["agent"], "metadata.agent")


def check_agent_name(agent: Any, param: str) -> str:
    if not isinstance(agent, str) or not AGENT_NAME.match(agent):
        raise INVALID_AGENT_NAME(
            f"'{param}' must be 1 to 64 letters, digits, '.', '_' or '-'.", param=param
        )
    return agent
