"""Sync entry points over the async core: one long-lived event loop in a daemon thread.

Sync callers submit the async implementation to this loop, so the logic exists once.  The
caller's context variables (deadline, degradation scope, request key) travel with the call.
Every sync call uses this same loop, so async clients created by sync calls are never shared
between loops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="lcha-sync-loop", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop with the caller's context; return its result."""
    loop = _background_loop()
    if threading.current_thread().name == "lcha-sync-loop":
        coro.close()
        raise RuntimeError("a sync LangChain call was made from inside an async one; use ainvoke")
    ctx = contextvars.copy_context()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(coro, context=ctx)

        def done(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                result.cancel()
            elif (exc := t.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(t.result())

        task.add_done_callback(done)

    loop.call_soon_threadsafe(start)
    return result.result()


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code.

    One task on the background loop drives the whole iteration (so context variables set
    inside it stay valid across items) and hands items over through a queue.  Closing the
    sync iterator early cancels that task.
    """
    loop = _background_loop()
    ctx = contextvars.copy_context()
    items: queue.Queue[tuple[str, Any]] = queue.Queue()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(("item", item))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put(("error", exc))
            if not isinstance(exc, Exception):
                raise
        else:
            items.put(("end", None))
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    handle: concurrent.futures.Future[asyncio.Task[None]] = concurrent.futures.Future()
    loop.call_soon_threadsafe(lambda: handle.set_result(loop.create_task(pump(), context=ctx)))
    task = handle.result()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        if not task.done():
            loop.call_soon_threadsafe(task.cancel)
