"""An upstream that speaks Anthropic's Messages API wire format, with fault injection.

`POST /v1/messages` checks `x-api-key` and `anthropic-version`, validates the body the way
the real API does (`max_tokens` required and within the model's output limit, no "system"
role inside `messages`, a thinking budget of at least 1,024 tokens and below `max_tokens`),
answers a `message` object or the SSE event sequence (message_start, then per content block
content_block_start, its deltas and content_block_stop, then message_delta and
message_stop), and records every request it received with the answer it gave.

With `thinking` enabled the answer opens with a `thinking` block whose `signature` is an HMAC
of its text under a secret only the double holds (and, with `redacted`, a `redacted_thinking`
block whose opaque `data` the double can recognise); thinking blocks sent back in assistant
messages are checked against that secret, and a tampered one is refused with the 400 Anthropic
sends. Asked to (`call_tools`), it calls a tool the request offers (`tool_use`, arguments a
client can run) and, once the `tool_result` is back, answers a text that quotes it.

Offered Anthropic's web search server tool (a `web_search_*` tool), it searches as the real
API does (https://docs.claude.com/en/docs/agents-and-tools/tool-use/web-search-tool): each
search is a `server_tool_use` block (`name: web_search`, the query as its `input`) followed by
its `web_search_tool_result` block (`web_search_result` entries with `encrypted_content`), then
the reply; `usage.server_tool_use.web_search_requests` counts them, in the JSON answer and in the
stream's `message_delta` usage. It runs `web_searches` searches (capped by the tool's
`max_uses`).

Token counts are one per word of text (input: the text blocks of `system` and `messages`;
output: every text and thinking block's words, plus a fixed count per `tool_use` and
`redacted_thinking` block), so tests can assert exact numbers and costs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from devstack.doubles.base import RecordedRequest, UpstreamDouble
from devstack.doubles.prompt_cache import ANTHROPIC_MIN_TOKENS, anthropic_usage
from devstack.doubles.tool_calls import arguments_for, call_id, chosen_tools, tool_reply

# The error `type` Anthropic sends with each HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# The most output tokens each model accepts as `max_tokens`; Anthropic answers 400 above it.
MAX_OUTPUT_TOKENS = {
    "claude-3-haiku-20240307": 4096,
    "claude-3-sonnet-20240229": 4096,
    "claude-3-opus-20240229": 4096,
}
# The smallest thinking budget Anthropic accepts.
MIN_THINKING_BUDGET = 1024
# The output tokens a block without words costs, whatever it holds.
TOOL_USE_TOKENS = 10
REDACTED_THINKING_TOKENS = 5
# The type prefix of Anthropic's web search server tool (`web_search_20250305`, ...).
WEB_SEARCH_TOOL = "web_search_"
# How many characters of a tool call's input each `input_json_delta` carries.
INPUT_JSON_PIECE = 8
THINKING_BLOCKS = ("thinking", "redacted_thinking")


@dataclass
class Fault:
    """What the next matching request gets instead of a normal answer."""

    status: int = 500
    message: str = "upstream failure"
    error_type: str | None = None  # defaults to Anthropic's type for `status`
    retry_after: str | None = None
    delay_s: float = 0.0
    malformed: bool = False
    cut_stream: bool = False  # drop the connection halfway through the last block's deltas
    error_event: bool = False  # send an `event: error` halfway through the last block's deltas
    # Answer 200 and the stream's headers, then send nothing for this long before the events.
    silent_s: float = 0.0
    # Set once the client hung up during that silence (it let the deployment go).
    hung_up: bool = False
    # Pause this long halfway through the last block's deltas, then go on.
    stall_s: float = 0.0
    # `event: error` right after message_start, before any content (Anthropic's overload).
    error_at_start: bool = False

    async def keep_silent(self) -> None:
        try:
            await asyncio.sleep(self.silent_s)
        except BaseException:
            self.hung_up = True
            raise

    @property
    def in_stream(self) -> bool:
        """Whether the fault happens inside a 200 stream rather than as an error status."""
        stream_faults = (self.cut_stream, self.error_event, self.silent_s, self.stall_s)
        return any(stream_faults) or self.error_at_start


@dataclass(kw_only=True)
class AnthropicUpstream(UpstreamDouble[Fault]):
    api_key: str
    reply: str = "Hello from the Anthropic double."
    thoughts: str = "The user wants a short friendly answer."
    redacted: bool = False  # add a redacted_thinking block after the thinking block
    call_tools: bool = False
    tool_name: str | None = None  # the tool to call; the first offered when None
    tool_input: dict[str, Any] | None = None  # its input; generated from its schema when None
    web_searches: int = 1  # searches run when a web_search server tool is offered
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # This deployment's prompt cache: the prefixes written to it (`prompt_cache`).
    cached_prefixes: set[str] = field(default_factory=set)
    # The fewest tokens a cached prefix holds (Anthropic's minimum for Sonnet).
    min_cache_tokens: int = ANTHROPIC_MIN_TOKENS

    def reset(self) -> None:
        super().reset()
        self.cached_prefixes.clear()
        self.redacted, self.call_tools = False, False
        self.tool_name, self.tool_input = None, None
        self.web_searches = 1

    @property
    def output_tokens(self) -> int:
        """What a plain text answer (no thinking, no tools) costs."""
        return len(self.reply.split())

    def sign(self, thinking: str) -> str:
        """The `signature` of a thinking block with this text."""
        digest = hmac.new(self.secret, thinking.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def redacted_data(self) -> str:
        """Opaque `data` for a redacted_thinking block: a nonce and its HMAC."""
        nonce = secrets.token_bytes(16)
        return base64.b64encode(nonce + self._mac(nonce)).decode()

    def issued(self, data: Any) -> bool:
        """Whether this double issued a redacted_thinking block's `data`."""
        try:
            raw = base64.b64decode(str(data), validate=True)
        except ValueError:
            return False
        return len(raw) > 16 and hmac.compare_digest(raw[16:], self._mac(raw[:16]))

    def _mac(self, nonce: bytes) -> bytes:
        return hmac.new(self.secret, b"redacted_thinking:" + nonce, hashlib.sha256).digest()

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/messages")
        async def messages(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return _error(400, "invalid_request_error", "There was an issue with the body.")
            recorded = RecordedRequest(request.url.path, dict(request.headers), body)
            self.requests.append(recorded)
            if request.headers.get("x-api-key") != self.api_key:
                return _error(401, "authentication_error", "invalid x-api-key")
            if not request.headers.get("anthropic-version"):
                return _error(400, "invalid_request_error", "anthropic-version: header is required")
            problem = _invalid_body(body) or self._invalid_history(body)
            if problem:
                return _error(400, "invalid_request_error", problem)
            fault = self.next_fault()
            if fault and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault and fault.malformed:
                return Response("{not json", media_type="application/json")
            if fault and not fault.in_stream:
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                error_type = fault.error_type or ERROR_TYPES.get(fault.status, "api_error")
                return _error(fault.status, error_type, fault.message, headers)
            recorded.answer = message = self._message(body)
            headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
            if body.get("stream"):
                return StreamingResponse(
                    self._events(message, fault), media_type="text/event-stream", headers=headers
                )
            return JSONResponse(message, headers=headers)

        return api

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self._content(body)
        stop_reason = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
        searches = sum(1 for block in content if block["type"] == "server_tool_use")
        server_tool_use = {"server_tool_use": {"web_search_requests": searches}} if searches else {}
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                **self._prompt_usage(body),
                "output_tokens": count_output_tokens(content),
                **server_tool_use,
            },
        }

    def _prompt_usage(self, body: dict[str, Any]) -> dict[str, int]:
        """Anthropic's prompt counts under its caching rules (`prompt_cache`): the prefix read
        from this deployment's cache, the part up to the last breakpoint written to it, and
        `input_tokens` the rest."""
        blocks = prompt_blocks(body)
        tokens = [len(_text([block]).split()) for block in blocks]
        cached = anthropic_usage(self.cached_prefixes, blocks, tokens, self.min_cache_tokens)
        if cached is None:
            return {"input_tokens": count_input_tokens(body)}
        read, written = cached
        return {
            "input_tokens": count_input_tokens(body) - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }

    def _content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Thinking first where it is enabled; then a tool call, the quote of a tool's result,
        or the reply."""
        blocks = self._thinking_blocks() if thinking_enabled(body) else []
        result = last_tool_result(body)
        if result is not None:
            return [*blocks, {"type": "text", "text": tool_reply(result)}]
        tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
        chosen = chosen_tools(tools, self.tool_name, 1) if self.call_tools else []
        if chosen:
            return [*blocks, self._tool_use(chosen[0])]
        return [*blocks, *self._searches(tools), {"type": "text", "text": self.reply}]

    def _searches(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The web searches a web_search server tool runs: each a `server_tool_use` block and
        its `web_search_tool_result`."""
        search = next(
            (t for t in tools if str(t.get("type", "")).startswith(WEB_SEARCH_TOOL)), None
        )
        if search is None:
            return []
        count = self.web_searches
        if isinstance(search.get("max_uses"), int):
            count = min(count, search["max_uses"])
        blocks: list[dict[str, Any]] = []
        for number in range(count):
            tool_use_id = call_id("srvtoolu")
            query = f"search {number + 1}"
            blocks.append(
                {
                    "type": "server_tool_use",
                    "id": tool_use_id,
                    "name": "web_search",
                    "input": {"query": query},
                }
            )
            blocks.append(
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": tool_use_id,
                    "content": [
                        {
                            "type": "web_search_result",
                            "url": f"https://example.com/{number + 1}",
                            "title": f"Result for {query}",
                            "encrypted_content": base64.b64encode(query.encode()).decode(),
                            "page_age": "April 30, 2025",
                        }
                    ],
                }
            )
        return blocks

    def _thinking_blocks(self) -> list[dict[str, Any]]:
        blocks = [
            {"type": "thinking", "thinking": self.thoughts, "signature": self.sign(self.thoughts)}
        ]
        if self.redacted:
            blocks.append({"type": "redacted_thinking", "data": self.redacted_data()})
        return blocks

    def _tool_use(self, tool: dict[str, Any]) -> dict[str, Any]:
        arguments = self.tool_input or arguments_for(tool.get("input_schema"))
        return {
            "type": "tool_use",
            "id": call_id("toolu"),
            "name": tool["name"],
            "input": arguments,
        }

    def _invalid_history(self, body: dict[str, Any]) -> str | None:
        """Thinking blocks sent back must be the double's own, unchanged; and with thinking on,
        the assistant turn that called the tools being answered must open with one."""
        for index, message in enumerate(body["messages"]):
            content = message.get("content")
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            for position, block in enumerate(content):
                problem = self._tampered(block)
                if problem:
                    return f"messages.{index}.content.{position}: {problem}"
        return _missing_thinking(body)

    def _tampered(self, block: Any) -> str | None:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            signature = str(block.get("signature") or "")
            if not hmac.compare_digest(signature, self.sign(str(block.get("thinking") or ""))):
                return "Invalid `signature` in `thinking` block"
        if kind == "redacted_thinking" and not self.issued(block.get("data")):
            return "Invalid `data` in `redacted_thinking` block"
        return None

    async def _events(self, message: dict[str, Any], fault: Fault | None) -> AsyncIterator[bytes]:
        if fault and fault.silent_s:
            await fault.keep_silent()
        started = {**message, "content": [], "stop_reason": None}
        started["usage"] = {**message["usage"], "output_tokens": 1}
        yield _event("message_start", {"message": started})
        if fault and fault.error_at_start:
            error_type = fault.error_type or "overloaded_error"
            yield _event("error", {"error": {"type": error_type, "message": fault.message}})
            return
        blocks = message["content"]
        for index, block in enumerate(blocks):
            yield _event("content_block_start", {"index": index, "content_block": _opening(block)})
            if index == 0:
                yield _event("ping", {})
            deltas = _deltas(block)
            for position, delta in enumerate(deltas):
                if fault and index == len(blocks) - 1 and position == len(deltas) // 2:
                    if fault.stall_s:
                        await asyncio.sleep(fault.stall_s)
                    elif fault.cut_stream:
                        raise ConnectionResetError("stream cut by fault injection")
                    elif fault.error_event:
                        error_type = fault.error_type or ERROR_TYPES.get(fault.status, "api_error")
                        error = {"type": error_type, "message": fault.message}
                        yield _event("error", {"error": error})
                        return
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield _event("content_block_delta", {"index": index, "delta": delta})
            yield _event("content_block_stop", {"index": index})
        yield _event(
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {
                    "output_tokens": message["usage"]["output_tokens"],
                    **_server_tool_use(message["usage"]),
                },
            },
        )
        yield _event("message_stop", {})


def _server_tool_use(usage: dict[str, Any]) -> dict[str, Any]:
    """The server tools' counts, which Anthropic sends in the `message_delta` usage."""
    counts = usage.get("server_tool_use")
    return {"server_tool_use": counts} if counts else {}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _opening(block: dict[str, Any]) -> dict[str, Any]:
    """A block as its content_block_start carries it: empty, to be filled by the deltas."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind in ("tool_use", "server_tool_use"):
        return {**block, "input": {}}
    return block  # redacted_thinking and web_search_tool_result arrive whole


def _deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        return [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
    if kind == "thinking":
        thoughts = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        return [*thoughts, {"type": "signature_delta", "signature": block["signature"]}]
    if kind in ("tool_use", "server_tool_use"):
        raw = json.dumps(block["input"])
        return [
            {"type": "input_json_delta", "partial_json": raw[start : start + INPUT_JSON_PIECE]}
            for start in range(0, len(raw), INPUT_JSON_PIECE)
        ]
    return []


def _pieces(text: str) -> list[str]:
    """A text a word at a time, each word with the whitespace before it, so the pieces join
    back to the text."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text)


def thinking_enabled(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def last_tool_result(body: dict[str, Any]) -> str | None:
    """The text of the tool_result in the last message, where it is a user's that holds one."""
    last = body["messages"][-1]
    content = last.get("content")
    if last.get("role") != "user" or not isinstance(content, list):
        return None
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            result = block.get("content")
            return _text(result) if isinstance(result, list) else str(result or "")
    return None


def _missing_thinking(body: dict[str, Any]) -> str | None:
    """Anthropic's rule for tool loops with thinking on: the assistant turn whose tool calls the
    last message answers must start with its thinking block, sent back as it came."""
    messages = body["messages"]
    if not thinking_enabled(body) or last_tool_result(body) is None or len(messages) < 2:
        return None
    index, content = len(messages) - 2, messages[-2].get("content")
    if messages[-2].get("role") != "assistant" or not isinstance(content, list) or not content:
        return None
    first = content[0].get("type") if isinstance(content[0], dict) else None
    if first in THINKING_BLOCKS:
        return None
    return (
        f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a "
        "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). "
        "We recommend you include thinking blocks from previous turns. To avoid this "
        "requirement, disable `thinking`."
    )


def count_input_tokens(body: dict[str, Any]) -> int:
    """A deterministic stand-in for a tokenizer: one token per word of text, `system` included."""
    total = len(_text(body.get("system")).split())
    for message in body.get("messages", []):
        total += len(_text(message.get("content")).split())
    return total


def prompt_blocks(body: dict[str, Any]) -> list[Any]:
    """The prompt as Anthropic caches it: tools, then system, then messages, block by block
    (a message's blocks carry its role)."""
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    blocks += system if isinstance(system, list) else [{"type": "text", "text": system or ""}]
    for message in body.get("messages", []):
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        role = message.get("role")
        blocks += [{"role": role, **part} if isinstance(part, dict) else part for part in parts]
    return blocks


def count_output_tokens(content: list[dict[str, Any]]) -> int:
    """One token per word of text and thinking, a fixed count per tool call (a client's or a
    server tool's) and redacted block."""
    total = 0
    for block in content:
        kind = block.get("type")
        if kind in ("text", "thinking"):
            total += len(str(block.get(kind) or "").split())
        elif kind in ("tool_use", "server_tool_use"):
            total += TOOL_USE_TOKENS
        elif kind == "redacted_thinking":
            total += REDACTED_THINKING_TOKENS
    return total


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content or "")


def _invalid_body(body: Any) -> str | None:
    """The checks Anthropic makes that an OpenAI-shaped body would fail."""
    if not isinstance(body, dict):
        return "body: Input should be an object"
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return "max_tokens: Input should be a positive integer"
    limit = MAX_OUTPUT_TOKENS.get(str(body["model"]))
    if limit is not None and body["max_tokens"] > limit:
        return (
            f"max_tokens: {body['max_tokens']} > {limit}, which is the maximum allowed number "
            f"of output tokens for {body['model']}"
        )
    if not isinstance(body["messages"], list) or not body["messages"]:
        return "messages: at least one message is required"
    for index, message in enumerate(body["messages"]):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return (
                f'messages.{index}.role: Unexpected role "{role}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
    return _invalid_thinking(body)


def _invalid_thinking(body: dict[str, Any]) -> str | None:
    """An enabled thinking budget is at least 1,024 tokens and below `max_tokens`, and thinking
    takes no temperature but 1."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        return (
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{MIN_THINKING_BUDGET}"
        )
    if body["max_tokens"] <= budget:
        return "`max_tokens` must be greater than `thinking.budget_tokens`."
    if body.get("temperature", 1) != 1:
        return (
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
        )
    return None


def _error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)
