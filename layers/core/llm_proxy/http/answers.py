"""How the pipeline's answer goes back: a JSON body, or a stream as Server-Sent Events."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response, StreamingResponse

from llm_proxy.gateway import Answer


def respond(answer: Answer) -> Response:
    if answer.events is not None:
        return StreamingResponse(
            answer.events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **answer.headers},
        )
    return JSONResponse(answer.body, headers=answer.headers)
