"""Server-sent event streams whose status and headers wait for the first chunk."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Send


def sse(event: str, data: Any) -> bytes:
    """One named server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def sse_data(data: Any) -> bytes:
    """One unnamed server-sent event (OpenAI's streams)."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class FirstChunkStreamingResponse(StreamingResponse):
    """A stream whose headers go out with its first chunk, not before.

    Until then the replica has sent nothing, so if it dies while working on the answer the
    load balancer can still retry the request on another replica (it cannot once bytes are
    on the wire).  And if the stream's first item is a :class:`Response` (the request failed
    before any of the answer was produced) that response is sent instead, with its own status:
    a client gets a 503 it can retry rather than a 200 holding an error event.
    """

    async def stream_response(self, send: Send) -> None:
        chunks = self.body_iterator.__aiter__()
        first: Any = None
        with contextlib.suppress(StopAsyncIteration):
            first = await chunks.__anext__()
        if isinstance(first, Response):
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
            await send({"type": "http.response.start", "status": first.status_code,
                        "headers": first.raw_headers})
            await send({"type": "http.response.body", "body": bytes(first.body),
                        "more_body": False})
            return
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if first is not None:
            await send({"type": "http.response.body", "body": _bytes(first, self.charset),
                        "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": _bytes(chunk, self.charset),
                            "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _bytes(chunk: Any, charset: str) -> bytes:
    return bytes(chunk) if isinstance(chunk, bytes | memoryview) else str(chunk).encode(charset)
