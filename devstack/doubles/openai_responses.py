"""OpenAI's Responses API as the OpenAI double serves it: a response object, or the API's named
SSE events with sequence numbers, for string or item input, function tools (a call, then a
quote of its `function_call_output`), `text.format`, and reasoning items whose
`encrypted_content` is handed out under `include` and checked when it comes back.

As with `store: false` at OpenAI, a reasoning item sent back must carry the encrypted content
this double issued: an item it cannot read is refused as OpenAI refuses it.

Offered OpenAI's web search (`web_search`, `web_search_preview`), it searches before it answers:
a `web_search_call` output item per search, `{"type": "web_search_call", "id": "ws_...",
"status": "completed", "action": {"type": "search", "query": ...}}`, and in a stream each
item's `response.output_item.added`, `response.web_search_call.in_progress`, `.searching`,
`.completed` and `response.output_item.done` events, as OpenAI's Responses API reference has
them (https://platform.openai.com/docs/api-reference/responses/object, output "Web search tool
call"; https://platform.openai.com/docs/api-reference/responses-streaming)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from devstack.doubles.tool_calls import arguments_for, call_id, chosen_tools, tool_reply

ENCRYPTED_REASONING = "reasoning.encrypted_content"
ARGUMENT_PIECE = 8
# OpenAI's web search tool types.
WEB_SEARCH_TOOLS = frozenset({"web_search", "web_search_preview"})
# What makes a reasoning item's encrypted content this double's own.
SEAL = b"openai-double-reasoning"


def seal(item_id: str) -> str:
    return "gAAAA" + hashlib.sha256(SEAL + item_id.encode()).hexdigest()


def refused_reasoning(items: list[Any], stored: bool) -> str | None:
    """Why OpenAI would refuse the reasoning items sent back, or None."""
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "reasoning":
            continue
        item_id = str(item.get("id") or "")
        content = item.get("encrypted_content")
        if content is None and not stored:
            return (
                f"Item with id '{item_id}' not found. Items are not persisted when `store` is "
                "set to false. Try again with `store` set to true, or remove this item from "
                "your input."
            )
        if content is not None and content != seal(item_id):
            return f"The encrypted content for item {item_id} could not be verified."
    return None


def input_items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value or [])


def count_input_tokens(body: dict[str, Any]) -> int:
    """One token per word of the instructions and of every item's text or tool output."""
    texts = [str(body.get("instructions") or "")]
    for item in input_items(body):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list):
            texts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
        elif content is not None:
            texts.append(str(content))
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            texts.append(str(item.get("output", "")))
    return sum(len(text.split()) for text in texts)


@dataclass
class ResponsesAnswer:
    """One response: its output items, and its usage."""

    body: dict[str, Any]
    output: list[dict[str, Any]] = field(default_factory=list)
    response_id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")

    @classmethod
    def build(
        cls,
        body: dict[str, Any],
        reply: str,
        thoughts: str,
        tools: tuple[bool, str | None, dict[str, Any] | None, int],
        web_searches: int = 1,
    ) -> ResponsesAnswer:
        """`tools`: whether to call them, the one to call, its arguments, how many at once;
        `web_searches`: how many searches it runs where a web search tool is offered."""
        answer = cls(body)
        reasoning = body.get("reasoning")
        if isinstance(reasoning, dict) and reasoning.get("effort") != "none":
            answer.add_reasoning(thoughts if reasoning.get("summary") else "")
        if any(_tool_type(tool) in WEB_SEARCH_TOOLS for tool in body.get("tools") or []):
            for number in range(web_searches):
                answer.add_search(f"search {number + 1} for {str(body.get('model'))[:40]}")
        call_tools, name, arguments, parallel = tools
        offered = [tool for tool in body.get("tools") or [] if tool.get("type") == "function"]
        last = (input_items(body) or [{}])[-1]
        if isinstance(last, dict) and last.get("type") == "function_call_output":
            answer.add_message(tool_reply(last.get("output")))
        elif call_tools and offered:
            count = 1 if body.get("parallel_tool_calls") is False else parallel
            for tool in chosen_tools(offered, name, count):
                answer.add_call(tool["name"], arguments or arguments_for(tool.get("parameters")))
        else:
            answer.add_message(reply)
        return answer

    def add_reasoning(self, summary: str) -> None:
        item_id = f"rs_{uuid.uuid4().hex}"
        item: dict[str, Any] = {
            "type": "reasoning",
            "id": item_id,
            "summary": [{"type": "summary_text", "text": summary}] if summary else [],
        }
        if ENCRYPTED_REASONING in (self.body.get("include") or []):
            item["encrypted_content"] = seal(item_id)
        self.output.append(item)

    def add_search(self, query: str) -> None:
        self.output.append(
            {
                "type": "web_search_call",
                "id": f"ws_{uuid.uuid4().hex}",
                "status": "completed",
                "action": {"type": "search", "query": query},
            }
        )

    def add_message(self, text: str) -> None:
        part = {"type": "output_text", "text": text, "annotations": []}
        self.output.append(
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )

    def add_call(self, name: str, arguments: dict[str, Any]) -> None:
        self.output.append(
            {
                "type": "function_call",
                "id": f"fc_{uuid.uuid4().hex}",
                "call_id": call_id(),
                "name": name,
                "arguments": json.dumps(arguments),
                "status": "completed",
            }
        )

    def usage(self, cached_tokens: int) -> dict[str, Any]:
        input_tokens = count_input_tokens(self.body)
        reasoning_tokens = output_tokens = 0
        for item in self.output:
            if item["type"] == "reasoning":
                words = sum(len(part["text"].split()) for part in item["summary"])
                reasoning_tokens += words or 1
            elif item["type"] == "message":
                output_tokens += len(item["content"][0]["text"].split())
            elif item["type"] == "web_search_call":
                continue  # billed per search
            else:
                output_tokens += len(f"{item['name']} {item['arguments']}".split())
        output_tokens += reasoning_tokens
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        }

    def response(self, status: str = "completed", usage: dict[str, Any] | None = None) -> Any:
        body = self.body
        text = body.get("text") or {"format": {"type": "text"}}
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": self.output if status == "completed" else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": text,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "metadata": body.get("metadata") or {},
            # OpenAI's Response echoes the caller's `user` (ResponseProperties).
            **({"user": body["user"]} if body.get("user") else {}),
        }

    def events(self, usage: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The stream's events, numbered in order."""
        events = [
            {"type": "response.created", "response": self.response("in_progress")},
            {"type": "response.in_progress", "response": self.response("in_progress")},
        ]
        for index, item in enumerate(self.output):
            events.extend(_item_events(index, item))
        events.append({"type": "response.completed", "response": self.response(usage=usage)})
        for number, event in enumerate(events):
            yield {**event, "sequence_number": number}


def _item_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "reasoning":
        opened: dict[str, Any] = {**item, "summary": []}
        opened.pop("encrypted_content", None)
        middle = []
        for number, part in enumerate(item["summary"]):
            at = {**where, "summary_index": number}
            empty = {**part, "text": ""}
            middle += [
                {"type": "response.reasoning_summary_part.added", **at, "part": empty},
                {"type": "response.reasoning_summary_text.delta", **at, "delta": part["text"]},
                {"type": "response.reasoning_summary_text.done", **at, "text": part["text"]},
                {"type": "response.reasoning_summary_part.done", **at, "part": part},
            ]
    elif item["type"] == "web_search_call":
        opened = {**item, "status": "in_progress"}
        opened.pop("action", None)
        middle = [
            {"type": f"response.web_search_call.{stage}", **where}
            for stage in ("in_progress", "searching", "completed")
        ]
    elif item["type"] == "message":
        opened = {**item, "status": "in_progress", "content": []}
        part = item["content"][0]
        at = {**where, "content_index": 0}
        middle = [{"type": "response.content_part.added", **at, "part": {**part, "text": ""}}]
        middle += [
            {"type": "response.output_text.delta", **at, "delta": word, "logprobs": []}
            for word in _pieces(part["text"])
        ]
        middle += [
            {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
            {"type": "response.content_part.done", **at, "part": part},
        ]
    else:
        opened = {**item, "status": "in_progress", "arguments": ""}
        arguments = item["arguments"]
        middle = [
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in (
                arguments[start : start + ARGUMENT_PIECE]
                for start in range(0, len(arguments), ARGUMENT_PIECE)
            )
        ]
        middle.append(
            {"type": "response.function_call_arguments.done", **where, "arguments": arguments}
        )
    return [
        {"type": "response.output_item.added", "output_index": index, "item": opened},
        *middle,
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]


def _tool_type(tool: Any) -> Any:
    return tool.get("type") if isinstance(tool, dict) else None


def _pieces(text: str) -> list[str]:
    words = text.split()
    return [word if index == 0 else f" {word}" for index, word in enumerate(words)]
