"""The one stream writer: sends an API's events and applies the stream faults to them.

Every API builds its answer as a list of :class:`Event` (one SSE event each, already in its
wire format, marked if it carries model output or is the end-of-stream terminator); this
module decides what of it reaches the client, and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.responses import StreamingResponse

from langchain_ha.providers._faults import Faults

HOLD_MAX_S = 600.0  # a held-open stream ends by itself after this long (or when the client goes)


class StreamCut(Exception):
    """Raised inside a streaming body to drop the connection mid-stream."""


@dataclass(frozen=True)
class Event:
    """One event of a stream, as bytes on the wire."""

    data: bytes
    content: bool = False  # carries model output: the first such event waits first_token_ms
    terminator: bool = False  # the API's end-of-stream marker (``[DONE]``, ``message_stop``)


def malformed(event: Event) -> bytes:
    """``event`` with its JSON cut short (at most 16 characters of it), still framed as an
    event, so a client's JSON parser fails on it: e.g. ``data: {"id":"chatcmpl-``."""
    marker = event.data.find(b"data: ")
    start = marker + len(b"data: ") if marker >= 0 else 0
    payload = event.data[start:].rstrip(b"\r\n")
    keep = max(1, min(16, len(payload) // 2))
    return event.data[:start] + payload[:keep] + b"\n\n"


async def hold() -> None:
    """Keep the connection open and silent (cancelled when the client disconnects)."""
    await asyncio.sleep(HOLD_MAX_S)


async def write(events: list[Event], fault: Faults) -> AsyncIterator[bytes]:
    """The bytes of ``events`` as ``fault`` lets them through.

    ``N`` in the ``*_after_chunks`` faults is the number of events sent intact first.  After
    them: ``disconnect`` drops the connection (an incomplete body), ``truncate`` ends the body
    cleanly, ``stall`` holds it open and silent, ``malformed`` sends one event of broken JSON
    and ends.  ``drop_terminator`` sends everything but the terminator and then holds.
    """
    first_content = True
    for i, event in enumerate(events):
        if fault.drop_terminator and event.terminator:
            continue
        if fault.disconnect_after_chunks is not None and i >= fault.disconnect_after_chunks:
            raise StreamCut(f"simulated disconnect after {i} chunks")
        if fault.truncate_after_chunks is not None and i >= fault.truncate_after_chunks:
            return
        if fault.stall_after_chunks is not None and i >= fault.stall_after_chunks:
            await hold()
            return
        if fault.malformed_after_chunks is not None and i >= fault.malformed_after_chunks:
            yield malformed(event)
            return
        delay_ms = fault.slow_stream_ms if i else 0.0
        if event.content and first_content:
            first_content = False
            delay_ms = max(delay_ms, fault.first_token_ms)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        yield event.data
    if fault.drop_terminator:
        await hold()


def stream_response(events: list[Event], fault: Faults, headers: dict[str, str],
                    media_type: str = "text/event-stream") -> StreamingResponse:
    """A streaming response of ``events`` under ``fault`` (headers go out at once)."""
    return StreamingResponse(write(events, fault), media_type=media_type,
                             headers={**headers, "cache-control": "no-cache"})
