"""The live timeline: what every service saw of each machine, recently, in memory.

Theory of operation
-------------------
Every service records what it does for a machine as an `Event` — DHCP decisions, TFTP
transfers, HTTP fetches, the agent's lookups and heartbeats, power actions, state transitions —
keyed by the machine's MAC (lower-case ``aa:bb:…``) or, when no MAC is known (a transition
made by the API), by the node's UUID. `Timeline` keeps the last ``per_key`` events of each of
the ``max_keys`` most recently active keys, and at most ``max_events`` events in all (older keys
are evicted whole, least recently active first), so memory is bounded whatever the wire sends:
an unknown MAC that PXE-boots in a loop costs at most ``per_key`` events, and 10,000 machines
booting at once cannot take more than ``max_events`` (about 700 bytes each).

It is cheap enough for the hot paths: `Timeline.record` builds one small frozen object and
appends it to a `collections.deque` under a lock (DHCP and TFTP run on the event loop, the
conductor's workers in threads); live subscribers, if any, get the event through
``loop.call_soon_threadsafe``. A subscriber that does not keep up loses events (its queue is
bounded) and is told so (`Subscription.dropped`), never the recorder.

Who is who: the timeline knows MACs and node UUIDs, not the inventory. A record that carries
both (the agent's lookup, a transition of a node with ports) teaches it which node a MAC
belongs to (`Timeline.node_of`); the API joins the rest with the node's ports, and a MAC that no
port names is an **unknown machine** — the first thing an operator needs to see.

Vocabulary (``source`` / ``kind``) — the contract the doctor, the dashboard and the metrics read
(`pxeforge.recording` writes it):

========  ====================================================================================
source    kinds (``data`` keys)
========  ====================================================================================
dhcp      ``discover``/``request``/``inform``/``release``/``decline`` seen (``type``, ``arch``,
          ``vendor_class``, ``user_class``, ``ipxe``, ``server`` for a REQUEST's server id), and
          the decision: ``offer``/``ack`` (``ip``, ``loader``, ``next_server``, ``proxy``),
          ``nak``, ``ignored`` (``why``: ``not-for-us``, ``chose another server``…),
          ``no-address``, ``released``, ``declined``
tftp      ``started`` (``file``, ``bytes`` = size, ``blksize``, ``windowsize``), ``finished``
          / ``failed`` / ``aborted`` (``file``, ``bytes``, ``seconds``, ``retransmits``,
          ``error``, ``outcome``), ``refused`` (``file``, ``error``: not found, access
          violation…); all with ``client`` (address:port)
http      ``fetched`` (``path``, ``status``, ``bytes``, ``seconds``), ``not-found`` (``path``);
          both with ``method`` and ``client``
agent     ``lookup`` (``found``, ``addresses``), ``heartbeat`` (``version``,
          ``status_message``), ``inventory`` (``interfaces``: MACs), ``command`` (``name``,
          ``status``, ``error``), ``refused`` (``why``, ``call``, ``status``)
power     ``on``/``off``/``reboot``/``boot-device`` (``result``, ``error``; ``from`` and
          ``asked`` for on/off/reboot)
state     ``transition`` (``from``, ``to``, ``event``, ``last_error``,
          ``seconds_in_state``), ``note`` (``text``, ``type``, ``severity``: any other node
          history record — maintenance, a driver's note, an auto-enrolment)
========  ====================================================================================

Keys: besides MACs and node UUIDs, a TFTP/HTTP client whose address no DHCP exchange of ours
maps to a MAC (DHCP off, or another server's lease) is keyed ``ip:<address>`` — in the event's
``mac`` field, with ``data["ip"]``; it is listed among the unknown machines like a MAC.

``level`` is ``info``, ``warning`` (worth a look: a retransmit storm, a refused file) or
``error`` (a failure: ``deploy failed``, a transfer that failed).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

__all__ = [
    "LEVELS",
    "Event",
    "Subscription",
    "Timeline",
    "normalize_key",
]

LEVELS: Final = ("info", "warning", "error")
_EMPTY: Final[Mapping[str, Any]] = {}


def normalize_key(key: str) -> str:
    """A MAC ``AA-BB-…`` / ``aa:bb:…`` → ``aa:bb:…``; anything else (a node UUID) lower-cased."""
    k = key.lower()
    if len(k) != 17:
        k = k.strip()
    if len(k) == 17 and k[2] == "-":
        return k.replace("-", ":")
    return k


class Event(NamedTuple):
    """One thing a service did for one machine (a tuple: the cheapest immutable object to
    build, which matters at thousands of DHCP requests a second)."""

    seq: int  # increasing over the whole timeline: the order of record() calls
    at: float  # wall-clock time.time()
    source: str
    kind: str
    summary: str  # one line a person reads
    mac: str | None = None
    node: str | None = None  # node UUID when known
    level: str = "info"
    data: Mapping[str, Any] = _EMPTY

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "source": self.source,
            "kind": self.kind,
            "summary": self.summary,
            "mac": self.mac,
            "node": self.node,
            "level": self.level,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class KeySummary:
    """One MAC (or node key) of the timeline: counts and its last event."""

    key: str
    node: str | None
    first_at: float
    last: Event
    count: int  # events recorded for this key, evicted ones included


class Subscription:
    """Live events matching a filter, delivered into an asyncio queue on one loop."""

    def __init__(
        self,
        timeline: Timeline,
        loop: asyncio.AbstractEventLoop,
        keys: frozenset[str] | None,
        maxsize: int,
    ) -> None:
        self._timeline = timeline
        self._loop = loop
        self.keys = keys  # None: every event
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def matches(self, event: Event) -> bool:
        if self.keys is None:
            return True
        return (event.mac is not None and event.mac in self.keys) or (
            event.node is not None and event.node in self.keys
        )

    def _put(self, event: Event) -> None:  # on the subscriber's loop
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def offer(self, event: Event) -> None:
        if self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(event)
        else:
            self._loop.call_soon_threadsafe(self._put, event)

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self._timeline.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Key:
    __slots__ = ("count", "events", "first_at", "node")

    def __init__(self, per_key: int, at: float) -> None:
        self.events: deque[Event] = deque(maxlen=per_key)
        self.count = 0
        self.first_at = at
        self.node: str | None = None


class Timeline:
    """Bounded per-key event history with live subscribers; safe to call from any thread."""

    def __init__(
        self,
        *,
        per_key: int = 256,
        max_keys: int = 20_000,
        max_events: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_key < 1 or max_keys < 1 or max_events < 1:
            raise ValueError("per_key, max_keys and max_events must be at least 1")
        self.per_key = per_key
        self.max_keys = max_keys
        self.max_events = max_events
        self._total = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._seq = itertools.count(1)
        self._subscribers: list[Subscription] = []
        self.recorded = 0
        self.evicted_keys = 0

    # ---- recording ---------------------------------------------------------------------------

    def record(
        self,
        source: str,
        kind: str,
        summary: str,
        *,
        mac: str | None = None,
        node: str | None = None,
        level: str = "info",
        data: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> Event:
        """Record one event; keyed by ``mac`` when given, else by ``node``; returns it."""
        if mac is not None:
            mac = normalize_key(mac)
        if node is not None:
            node = node.lower()
        key = mac if mac is not None else node
        if key is None:
            raise ValueError("an event needs a mac or a node")
        with self._lock:
            event = Event(
                next(self._seq),
                self._clock() if at is None else at,
                source,
                kind,
                summary,
                mac,
                node,
                level,
                data if data is not None else _EMPTY,
            )
            keys = self._keys
            entry = keys.get(key)
            if entry is None:
                entry = keys[key] = _Key(self.per_key, event.at)
            else:
                keys.move_to_end(key)
            events = entry.events
            if len(events) != self.per_key:
                self._total += 1
            events.append(event)
            entry.count += 1
            # bounded twice: keys, and events in all (the least recently active keys go first)
            while (len(keys) > self.max_keys or self._total > self.max_events) and len(keys) > 1:
                _, old = keys.popitem(last=False)
                self._total -= len(old.events)
                self.evicted_keys += 1
            if node is not None and mac is not None:
                entry.node = node
            self.recorded += 1
            subscribers = self._subscribers
        for sub in subscribers:  # a copy-on-write list: no lock needed to iterate
            if sub.matches(event):
                sub.offer(event)
        return event

    def learn(self, mac: str, node: str | None) -> None:
        """Remember (or forget, ``node`` None) which node ``mac`` belongs to."""
        mac = normalize_key(mac)
        with self._lock:
            entry = self._keys.get(mac)
            if entry is not None:
                entry.node = node

    # ---- reading -----------------------------------------------------------------------------

    def events(
        self,
        keys: Iterable[str],
        *,
        since: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        """Events of these MACs / node UUIDs with ``seq > since``, oldest first; the newest
        ``limit`` of them when given."""
        wanted = {normalize_key(k) for k in keys}
        with self._lock:
            found = [
                e
                for k in wanted
                if (entry := self._keys.get(k)) is not None
                for e in entry.events
                if e.seq > since
            ]
        found.sort(key=lambda e: e.seq)
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        return found

    def node_of(self, mac: str) -> str | None:
        with self._lock:
            entry = self._keys.get(normalize_key(mac))
            return entry.node if entry is not None else None

    def summaries(self, *, macs_only: bool = True) -> list[KeySummary]:
        """One `KeySummary` per key (MACs only by default), most recently active first."""
        with self._lock:
            items = [
                KeySummary(key, entry.node, entry.first_at, entry.events[-1], entry.count)
                for key, entry in reversed(self._keys.items())
                if entry.events and (not macs_only or entry.events[-1].mac == key)
            ]
        return items

    def last(self, key: str) -> Event | None:
        with self._lock:
            entry = self._keys.get(normalize_key(key))
            return entry.events[-1] if entry is not None and entry.events else None

    def __len__(self) -> int:
        return self._total

    # ---- live --------------------------------------------------------------------------------

    def subscribe(
        self,
        keys: Iterable[str] | None = None,
        *,
        maxsize: int = 1000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Subscription:
        """A `Subscription` to new events of ``keys`` (all when None), delivered on ``loop``
        (the running loop by default)."""
        target = loop if loop is not None else asyncio.get_running_loop()
        wanted = None
        if keys is not None:
            wanted = frozenset(normalize_key(k) for k in keys)
        sub = Subscription(self, target, wanted, maxsize)
        with self._lock:
            self._subscribers = [*self._subscribers, sub]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not sub]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
