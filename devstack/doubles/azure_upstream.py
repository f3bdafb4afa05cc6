"""An upstream that speaks Azure OpenAI's chat-completions wire format, with fault injection.

`POST /openai/deployments/{deployment}/chat/completions?api-version=...` with the key in the
`api-key` header. The answer is OpenAI's JSON or SSE with Azure's additions: content-filter
results, the underlying model's name (not the deployment's) in `model`, and a first stream chunk
that carries only the prompt's filter results. As on Azure, `stream_options` is refused by
API versions older than 2024-09-01-preview, and an unknown API version or deployment is a 404.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from devstack.doubles.base import RecordedRequest, UpstreamDouble
from devstack.doubles.openai_upstream import Fault, OpenAIUpstream, _count_tokens

# Data-plane inference versions (azure-rest-api-specs) this double accepts.
API_VERSIONS = frozenset(
    {
        "2023-05-15",
        "2023-12-01-preview",
        "2024-02-01",
        "2024-06-01",
        "2024-09-01-preview",
        "2024-10-21",
        "2025-01-01-preview",
        "2025-02-01-preview",
    }
)
# The first version whose chat-completions schema has `stream_options`.
STREAM_OPTIONS_SINCE = "2024-09-01"
_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS = {
    "hate": _SAFE,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER_RESULTS}]


@dataclass(kw_only=True)
class AzureRequest(RecordedRequest):
    deployment: str
    api_version: str | None


@dataclass(kw_only=True)
class AzureOpenAIUpstream(UpstreamDouble[Fault]):
    """`deployments` maps each deployment's name to the model it serves (what `model` reports)."""

    api_key: str
    deployments: dict[str, str]
    reply: str = "Hello from the Azure double."

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/openai/deployments/{deployment}/chat/completions")
        async def chat(deployment: str, request: Request) -> Response:
            body = await request.json()
            api_version = request.query_params.get("api-version")
            self.requests.append(
                AzureRequest(
                    path=request.url.path,
                    headers=dict(request.headers),
                    body=body,
                    deployment=deployment,
                    api_version=api_version,
                )
            )
            if request.headers.get("api-key") != self.api_key:
                return _azure_error(
                    401,
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. Make "
                    "sure to provide a valid key for an active subscription and use a correct "
                    "regional API endpoint for your resource.",
                )
            if api_version not in API_VERSIONS:
                return _azure_error(404, "404", "Resource not found")
            if deployment not in self.deployments:
                return _azure_error(
                    404,
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try again.",
                )
            if "stream_options" in body and api_version < STREAM_OPTIONS_SINCE:
                return _azure_error(
                    400, None, "Unrecognized request argument supplied: stream_options"
                )
            fault = self.next_fault()
            if fault and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault:
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                return _azure_error(fault.status, str(fault.status), fault.message, headers)
            model = self.deployments[deployment]
            prompt_tokens = _count_tokens(body.get("messages", []))
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(
                    self._chunks(model, body, prompt_tokens, include_usage),
                    media_type="text/event-stream",
                )
            completion_tokens = len(self.reply.split())
            return JSONResponse(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "system_fingerprint": None,
                    "prompt_filter_results": PROMPT_FILTER_RESULTS,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": self.reply},
                            "content_filter_results": CONTENT_FILTER_RESULTS,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )

        return api

    async def _chunks(
        self, model: str, body: dict[str, Any], prompt_tokens: int, include_usage: bool
    ) -> AsyncIterator[bytes]:
        # Azure sends the prompt's filter results first, in a chunk with no choices or model.
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
        yield f"data: {json.dumps(first)}\n\n".encode()
        # The rest is OpenAI's stream, as the OpenAI double writes it.
        openai_format = OpenAIUpstream(api_key=self.api_key, reply=self.reply)
        answer = openai_format._answer(body)
        usage = openai_format._usage(prompt_tokens, answer) if include_usage else None
        async for frame in openai_format._chunks({**body, "model": model}, answer, usage, None):
            yield frame


def _azure_error(
    status: int, code: str | None, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if status == 400:
        error.update(param=None, type="invalid_request_error")
    return JSONResponse({"error": error}, status_code=status, headers=headers)
