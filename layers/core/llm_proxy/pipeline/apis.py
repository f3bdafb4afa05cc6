"""The APIs the gateway serves, one row each: everything that differs between them, read by
the pipeline's steps and the HTTP layer instead of asking which API a request came in on.

Adding an API is adding a row here, with its translation, answer and stream encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llm_proxy.pipeline import api_params, chat, messages, response_items, responses
from llm_proxy.pipeline.anthropic_native import NativeParts
from llm_proxy.pipeline.request import CLIENT_ONLY_PARAMS
from llm_proxy.pipeline.request_options import ROUTING_OPTIONS
from llm_proxy.pipeline.streams import StreamReader

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest
    from llm_proxy.pipeline.streams import MeteredStream

ApiName = Literal["chat", "embeddings", "messages", "responses", "count_tokens", "input_tokens"]
# The litellm Router call that serves an API (its `a`-prefixed method).
RouterCall = Literal["chat", "embedding", "responses"]
# The error body an API's clients expect: OpenAI's shape, or Anthropic's envelope.
Envelope = Literal["openai", "anthropic"]
# What the provider gets from what the client sent, and what only Anthropic deployments get.
Translate = Callable[[dict[str, Any], Mapping[str, str]], tuple[dict[str, Any], NativeParts | None]]
# litellm's whole answer (None where nothing is called) as the API's JSON body.
JsonAnswer = Callable[[Any, "GatewayRequest"], Any]
Encoder = Callable[["MeteredStream", "GatewayRequest"], AsyncIterator[str] | AsyncIterator[bytes]]


@dataclass(frozen=True)
class Api:
    name: ApiName
    # The parameters a caller may send: the SDK's request type, plus the gateway's own (why,
    # in each row).
    params: frozenset[str]
    # None: the API calls no model (validated and answered by the gateway).
    router_call: RouterCall | None
    envelope: Envelope
    # The JSON answer; the stream's reader and encoder (None: the API does not stream).
    answer: JsonAnswer
    reader: type[StreamReader] | None = None
    encode: Encoder | None = None
    # Where the client's body is not the Router's (the Messages API): the translation.
    translate: Translate | None = None
    # A cached answer as litellm's answer type (None: answers are not cached).
    from_cache: Callable[[dict[str, Any]], Any] | None = None
    # Whether answers say if they came from the response cache (where the cache is on).
    cache_header: bool = False
    # The Responses API's own ids, stored responses and `previous_response_id`.
    conversations: bool = False
    # Whether the API's answer is generated text (priced as output, at most the model's
    # longest answer where the request sets no max tokens).
    generates: bool = True

    def __repr__(self) -> str:
        return f"Api({self.name})"


CHAT = Api(
    name="chat",
    # LiteLLM's per-request cache control (the response cache) and routing options (every
    # API's, request_options); `extra_body`, a container of more parameters, checked against
    # the same list.
    params=api_params.CHAT_COMPLETIONS | {"cache", "extra_body"} | ROUTING_OPTIONS,
    router_call="chat",
    envelope="openai",
    answer=chat.chat_answer,
    reader=chat.ChatReader,
    encode=chat.chat_events,
    from_cache=chat.from_cache,
    cache_header=True,
)
EMBEDDINGS = Api(
    name="embeddings",
    params=api_params.EMBEDDINGS | {"extra_body"} | ROUTING_OPTIONS,
    router_call="embedding",
    envelope="openai",
    answer=chat.dumped,
    generates=False,
)
MESSAGES = Api(
    name="messages",
    # The Messages API's sampling parameters, which SDK versions before the current types send.
    params=api_params.MESSAGES | {"temperature", "top_p", "top_k"} | ROUTING_OPTIONS,
    router_call="chat",
    envelope="anthropic",
    answer=messages.message_answer,
    reader=chat.ChatReader,
    encode=messages.message_events,
    translate=messages.translate_message,
    cache_header=True,
)
RESPONSES = Api(
    name="responses",
    params=api_params.RESPONSES | {"cache", "extra_body", *CLIENT_ONLY_PARAMS} | ROUTING_OPTIONS,
    router_call="responses",
    envelope="openai",
    answer=responses.responses_answer,
    reader=responses.ResponsesReader,
    encode=responses.responses_events,
    from_cache=responses.from_cache,
    cache_header=True,
    conversations=True,
)
COUNT_TOKENS = Api(
    name="count_tokens",
    params=api_params.MESSAGES_COUNT_TOKENS,
    router_call=None,
    envelope="anthropic",
    answer=messages.count_answer,
    translate=messages.translate_count,
)
# The Responses API's count (`/v1/responses/input_tokens`): a stored conversation it continues
# is counted too.
INPUT_TOKENS = Api(
    name="input_tokens",
    params=api_params.RESPONSES_INPUT_TOKENS,
    router_call=None,
    envelope="openai",
    answer=response_items.input_tokens_answer,
    conversations=True,
)

APIS: dict[ApiName, Api] = {
    api.name: api for api in (CHAT, EMBEDDINGS, MESSAGES, RESPONSES, COUNT_TOKENS, INPUT_TOKENS)
}
