"""What the doctor reads and what it says: `Context`, `Subject`, `Finding`, `Evidence`.

A `Subject` is one machine as the doctor sees it: its node record (None for a MAC no port
names), its MACs, its timeline events (oldest first) and the time of the diagnosis. A
`Context` holds the few facts about the running server the rules compare against — our DHCP
server address, the DHCP mode, whether boots follow the inventory, the wait timeouts — taken
from `Settings` by `Context.from_settings`. Both are plain values: the rules do no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from pxeforge.config import DhcpMode, Settings
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import CLEANWAIT, DEPLOYWAIT, INSPECTWAIT, RESCUEWAIT, SERVICEWAIT
from pxeforge.timeline import Event
from pxeforge.trace.findings import Severity

__all__ = [
    "AGENT_HEARTBEAT_TIMEOUT",
    "Context",
    "Evidence",
    "Finding",
    "Severity",
    "Subject",
    "epoch",
]

AGENT_HEARTBEAT_TIMEOUT: Final = 300.0
"""Ironic's ``[api]ramdisk_heartbeat_timeout`` (`pxeforge.api.ramdisk`): the agent beats every
0.3–0.6 × this, so a gap longer than it means the agent is gone."""

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_EMPTY_TIMEOUTS: Final[Mapping[str, float]] = MappingProxyType({})


def epoch(value: datetime | str | float | None) -> float | None:
    """Seconds since the epoch of a record's timestamp (naive means UTC), an ISO string, or
    a number; None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need to know about the server that recorded the events."""

    servers: frozenset[str] = frozenset()  # our DHCP server identifiers (option 54)
    proxy: bool = False  # --dhcp proxy: REQUESTs naming the site's DHCP server are normal
    inventory: bool = True  # boots follow the inventory: an unknown MAC boots nothing
    api_url: str | None = None  # the ipa-api-url ramdisks are given
    root: str | None = None  # the boot root (TFTP/HTTP files)
    wait_timeouts: Mapping[str, float] = field(default_factory=lambda: _EMPTY_TIMEOUTS)
    heartbeat_timeout: float = AGENT_HEARTBEAT_TIMEOUT
    neighbors: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # IP → MAC (ARP)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, neighbors: Mapping[str, str] | None = None
    ) -> Context:
        return cls(
            servers=frozenset({str(settings.address)} if settings.address is not None else ()),
            proxy=settings.dhcp_mode is DhcpMode.PROXY,
            inventory=settings.kernel is None,
            api_url=settings.api_base,
            root=str(settings.root),
            wait_timeouts=MappingProxyType(
                {
                    DEPLOYWAIT: settings.deploy_callback_timeout,
                    INSPECTWAIT: settings.inspect_wait_timeout,
                    CLEANWAIT: settings.clean_callback_timeout,
                    RESCUEWAIT: settings.deploy_callback_timeout,
                    SERVICEWAIT: settings.deploy_callback_timeout,
                }
            ),
            neighbors=MappingProxyType(dict(neighbors or {})),
        )


@dataclass(frozen=True, slots=True)
class Subject:
    """One machine: its node (None: unknown MAC), MACs, timeline events, and the time now."""

    node: NodeRecord | None
    macs: tuple[str, ...]
    events: Sequence[Event]
    now: float
    context: Context = field(default_factory=Context)

    @property
    def mac(self) -> str | None:
        return self.macs[0] if self.macs else None

    def of(self, source: str, *kinds: str) -> list[Event]:
        """Events from ``source`` (of these kinds, or all), oldest first."""
        return [e for e in self.events if e.source == source and (not kinds or e.kind in kinds)]


@dataclass(frozen=True, slots=True)
class Evidence:
    """One event that shows a finding (``seq`` None: a fact of the node record)."""

    seq: int | None
    at: float | None
    what: str

    @classmethod
    def of(cls, event: Event, note: str | None = None) -> Evidence:
        """The event as ``source kind: summary``, with ``note`` (what matters here) after it."""
        what = f"{event.source} {event.kind}: {event.summary}"
        return cls(event.seq, event.at, f"{what} — {note}" if note else what)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "what": self.what}


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong with one machine: what, the evidence, and what to do about it."""

    code: str  # stable identifier: other-dhcp-server, boot-file-not-found, …
    severity: Severity
    what: str  # one line
    todo: str  # what to do
    evidence: tuple[Evidence, ...] = ()

    @property
    def time(self) -> float:
        return min((e.at for e in self.evidence if e.at is not None), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "what": self.what,
            "do": self.todo,
            "evidence": [e.to_json() for e in self.evidence],
        }
