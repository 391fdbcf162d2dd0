"""The dashboard's live feed: timeline events as server-sent events (``text/event-stream``).

Theory of operation
-------------------
One stream follows a set of timeline keys (a node's UUID and its ports' MACs, or one MAC).
`follow` **subscribes first, then replays** what the timeline already holds after the client's
position, so nothing recorded in between is lost. Each event goes out as::

    id: <epoch>-<seq>
    event: timeline
    data: <one line of JSON: pages.event_json>

``seq`` numbers restart with the process, so an id carries the timeline's **epoch** (a random
token per `Timeline`, `epoch`): a browser that reconnects after pxeforge restarted sends an id
of another epoch and gets all the new timeline has for its keys, not nothing. The client's
position is ``Last-Event-ID`` (what a browser sends when it reconnects), else the page's
``since`` (the newest event the page was rendered with); both ``<epoch>-<seq>``, a bare number
being a ``seq`` of this epoch.

**Duplicates and gaps.** `Timeline.record` numbers an event and stores it under one lock, so a
read of the timeline that returns events up to ``seq`` M holds every event of those keys up to
M: queued events numbered M or less are duplicates of that read and skipped. The
subscription's queue is bounded (`QUEUE`); when the page cannot keep up the timeline drops
events for it (`Subscription.dropped`). Everything dropped was offered after the event the
stream takes next, so the stream then re-reads the timeline from that event on (its history
keeps the last ``per_key`` events of each key) and carries on past that read. (Events recorded
by two threads in the same instant may be offered out of ``seq`` order; one of those lost to an
overflow in that instant is not recovered. The page only misses a line; the next read has it.)

An idle stream sends a comment (``: keep-alive``) every `HEARTBEAT` seconds so proxies and the
browser keep it open. It ends when the client goes away (checked every `POLL` seconds and on
every failed write), or when the server shuts down (the application's ``on_shutdown`` sets the
event `attach` registers), so a dashboard left open never holds up ``pxeforge serve`` stopping.
The subscription is always closed on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import weakref
from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web

from pxeforge.api.dashboard.pages import event_json
from pxeforge.timeline import Event, Timeline

__all__ = [
    "BACKLOG",
    "CLOSING",
    "HEARTBEAT",
    "POLL",
    "QUEUE",
    "RECENT",
    "attach",
    "comment",
    "epoch",
    "follow",
    "frame",
    "start_position",
]

HEARTBEAT: float = 15.0
"""Seconds of silence after which a stream sends a keep-alive comment."""
POLL: float = 1.0
"""Seconds between checks that the client is still there."""
QUEUE: Final = 256
"""Events a stream's subscription holds before the timeline drops some for it."""
BACKLOG: Final = 500
"""Most events replayed when a stream (re)connects."""
RECENT: Final = 50
"""Events replayed to a client that gives no position."""
RETRY_MS: Final = 3000
"""The ``retry:`` the browser waits before reconnecting a dropped stream."""

CLOSING: Final = web.AppKey("dashboard_closing", asyncio.Event)
"""Set when the application shuts down: every open stream ends."""

_EPOCHS: Final[weakref.WeakKeyDictionary[Timeline, str]] = weakref.WeakKeyDictionary()


def attach(app: web.Application) -> None:
    """Register the shutdown event open streams watch (before the application starts)."""
    closing = asyncio.Event()
    app[CLOSING] = closing

    async def _close(_app: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(_close)


def epoch(timeline: Timeline) -> str:
    """The random token that tells this timeline's ``seq`` numbers from another's."""
    token = _EPOCHS.get(timeline)
    if token is None:
        token = _EPOCHS.setdefault(timeline, secrets.token_hex(4))
    return token


def frame(event_id: str, payload: str, *, name: str = "timeline") -> bytes:
    """One SSE message; the id and ``payload`` must be single lines (JSON is)."""
    if any(c in text for text in (event_id, payload, name) for c in "\r\n"):
        raise ValueError("an SSE field cannot contain a line break")
    return f"id: {event_id}\nevent: {name}\ndata: {payload}\n\n".encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def start_position(last_event_id: str | None, since: str | None, current: str) -> int | None:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnect) if given, else after the
    page's ``since``; None (neither): the recent events. A position of another epoch than
    ``current`` gives 0 (everything this timeline has). `ValueError` if malformed."""
    for value in (last_event_id, since):
        if value is None or not value.strip():
            continue
        tag, dash, number = value.strip().rpartition("-")
        if not number.isdigit() or (dash and not tag):
            raise ValueError(f"not a stream position: {value!r}")
        if dash and tag != current:
            return 0
        return int(number)
    return None


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def follow(
    request: web.Request,
    timeline: Timeline,
    keys: Iterable[str],
    position: int | None,
) -> web.StreamResponse:
    """Stream ``keys``' events to the client until it leaves or the server stops."""
    keys = list(keys)
    closing = request.app.get(CLOSING) or asyncio.Event()
    subscription = timeline.subscribe(keys, maxsize=QUEUE)
    getter: asyncio.Future[Event] | None = None
    closed = asyncio.ensure_future(closing.wait())
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",
        }
    )
    token = epoch(timeline)
    mark = position or 0  # the newest seq sent from a read of the timeline

    async def send(events: Iterable[Event], *, read: bool = True) -> None:
        nonlocal mark
        for event in events:
            payload = json.dumps(event_json(event, token))
            await response.write(frame(f"{token}-{event.seq}", payload))
            if read:
                mark = max(mark, event.seq)

    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        if position is None:
            await send(timeline.events(keys, limit=RECENT))
        else:
            await send(timeline.events(keys, since=position, limit=BACKLOG))
        dropped = 0
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not _gone(request) and not closing.is_set():
            if getter is None:
                getter = asyncio.ensure_future(subscription.get())
            waiting: set[asyncio.Future[Any]] = {getter, closed}
            done, _ = await asyncio.wait(waiting, timeout=POLL)
            if closed in done:
                break
            if getter in done:
                event = getter.result()
                getter = None
                if event.seq <= mark:
                    continue  # a read of the timeline sent it already
                if subscription.dropped != dropped:  # the queue overflowed after this event
                    dropped = subscription.dropped
                    await send(timeline.events(keys, since=event.seq - 1))
                else:
                    await send([event], read=False)
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= HEARTBEAT:
                await response.write(comment("keep-alive"))
                quiet_since = loop.time()
    except ConnectionError:
        pass  # the client left: a write failed
    finally:
        subscription.close()
        for future in (getter, closed):
            if future is not None and not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await future
    return response
