"""What the dashboard's pages show, as plain values: pure functions, no I/O.

The handlers (`pxeforge.api.dashboard`) read the store and the timeline and hand the results
here; what comes back is dicts and small dataclasses the templates print (autoescaped) and the
live stream sends as JSON. Times are the server's wall clock (``now``, epoch seconds) so a page
and the events streamed into it agree; clock times are shown in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pxeforge.inventory.records import HistoryRecord, NodeRecord
from pxeforge.inventory.states import (
    ACTIVE,
    AVAILABLE,
    ERROR,
    FAILURE_STATES,
    HOLD_STATES,
    WAIT_STATES,
)
from pxeforge.timeline import Event

__all__ = [
    "LIST_COLUMNS",
    "PAGE_SIZES",
    "SORTS",
    "SORT_LABELS",
    "EventView",
    "NodeRow",
    "clock",
    "duration",
    "event_view",
    "history_rows",
    "inventory_summary",
    "node_rows",
    "state_class",
]

PAGE_SIZES: Final = (25, 50, 100, 200, 500)
"""Rows per page the node list offers (the first page size is not the default: 50 is)."""

SORTS: Final[dict[str, tuple[str, str]]] = {
    "created": ("id", "asc"),
    "name": ("name", "asc"),
    "state": ("provision_state", "asc"),
    "since": ("provision_updated_at", "asc"),  # longest in its state first
}
"""The node list's orders: name → (store sort key, direction)."""
SORT_LABELS: Final = {
    "created": "enrolment order",
    "name": "name",
    "state": "state",
    "since": "longest in state",
}

LIST_COLUMNS: Final = (
    "id",
    "uuid",
    "name",
    "provision_state",
    "target_provision_state",
    "power_state",
    "maintenance",
    "last_error",
    "created_at",
    "provision_updated_at",
)
"""The node columns the list reads (nothing else of 10,000 rows)."""

_DETAIL_SKIP: Final = frozenset({"summary"})


def state_class(state: str | None) -> str:
    """A CSS class for a provision state: ``ok``, ``ready``, ``fail``, ``wait``, ``busy`` or
    ``idle`` (enroll, manageable and the like)."""
    if state is None:
        return "idle"
    if state in FAILURE_STATES or state == ERROR:
        return "fail"
    if state == ACTIVE:
        return "ok"
    if state == AVAILABLE:
        return "ready"
    if state in WAIT_STATES or state in HOLD_STATES:
        return "wait"
    if state.endswith("ing"):
        return "busy"
    return "idle"


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``, ``5d 03h`` (negative clock skew reads as 0s)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def clock(at: float, *, date: bool = False) -> str:
    """``12:03:04`` (UTC), or ``2025-01-31 12:03:04`` with ``date``."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _detail_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.3g}"
    return json.dumps(value, separators=(",", ":"), default=str)


def details(data: Mapping[str, Any]) -> str:
    """An event's ``data`` as one line: ``ip=10.0.0.5 loader=ipxe.efi`` (``None`` left out)."""
    return " ".join(
        f"{key}={_detail_value(value)}"
        for key, value in data.items()
        if value is not None and key not in _DETAIL_SKIP
    )


@dataclass(frozen=True, slots=True)
class EventView:
    """One timeline event as a row (the template's and the live stream's shape)."""

    seq: int
    at: float
    time: str
    source: str
    kind: str
    summary: str
    level: str
    mac: str | None
    node: str | None
    details: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "time": self.time,
            "source": self.source,
            "kind": self.kind,
            "summary": self.summary,
            "level": self.level,
            "mac": self.mac,
            "node": self.node,
            "details": self.details,
            "to": None,
        }


def event_view(event: Event) -> EventView:
    return EventView(
        seq=event.seq,
        at=event.at,
        time=clock(event.at),
        source=event.source,
        kind=event.kind,
        summary=event.summary,
        level=event.level,
        mac=event.mac,
        node=event.node,
        details=details(event.data),
    )


def event_json(event: Event, epoch: str) -> dict[str, Any]:
    """What the live stream sends for ``event`` of the timeline ``epoch`` (`stream.epoch`);
    ``to`` is the new state of a transition."""
    doc = event_view(event).to_json()
    doc["epoch"] = epoch
    if event.source == "state" and event.kind == "transition":
        to = event.data.get("to")
        doc["to"] = to if isinstance(to, str) else None
        doc["to_class"] = state_class(doc["to"])
    return doc


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One line of the node list."""

    uuid: str
    name: str | None
    state: str
    state_class: str
    target: str | None
    power: str | None
    maintenance: bool
    last_error: str | None
    since: float  # epoch seconds the node entered its state
    in_state: str
    macs: tuple[str, ...]
    last_event: EventView | None
    last_age: str | None

    @property
    def label(self) -> str:
        return self.name or self.uuid


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def node_rows(
    rows: Sequence[Mapping[str, Any]],
    macs: Mapping[int, Sequence[str]],
    last_event: Callable[[Iterable[str]], Event | None],
    now: float,
) -> list[NodeRow]:
    """The list's rows: ``rows`` are `LIST_COLUMNS` dicts, ``macs`` each node's MACs by id,
    ``last_event(keys)`` the newest timeline event of any of those keys."""
    out = []
    for row in rows:
        node_macs = tuple(macs.get(row["id"], ()))
        since = _epoch(row["provision_updated_at"]) or _epoch(row["created_at"]) or now
        last = last_event((*node_macs, row["uuid"]))
        out.append(
            NodeRow(
                uuid=row["uuid"],
                name=row["name"],
                state=row["provision_state"],
                state_class=state_class(row["provision_state"]),
                target=row["target_provision_state"],
                power=row["power_state"],
                maintenance=bool(row["maintenance"]),
                last_error=row["last_error"],
                since=since,
                in_state=duration(now - since),
                macs=node_macs,
                last_event=event_view(last) if last is not None else None,
                last_age=duration(now - last.at) if last is not None else None,
            )
        )
    return out


def node_since(record: NodeRecord, now: float) -> float:
    """When ``record`` entered its provision state (epoch seconds)."""
    return _epoch(record.provision_updated_at) or _epoch(record.created_at) or now


def history_rows(records: Iterable[HistoryRecord]) -> list[dict[str, Any]]:
    """A node's history (store records), newest first, as template rows."""
    rows = [
        {
            "time": clock(r.created_at.timestamp(), date=True),
            "event": r.event,
            "type": r.event_type or "",
            "severity": (r.severity or "").lower(),
            "user": r.user or "",
            "conductor": r.conductor or "",
        }
        for r in records
    ]
    rows.reverse()
    return rows


def _size(value: Any) -> str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if number < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return None  # pragma: no cover - the loop always returns


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def inventory_summary(inventory: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The few lines of an inspection inventory a person looks for (IPA's shape): system,
    CPU, memory, boot mode, disks, NICs. Unknown or odd shapes give fewer lines, never an
    error."""
    lines: list[tuple[str, str]] = []
    system = " ".join(
        str(v)
        for v in (
            _get(inventory, "system_vendor", "manufacturer"),
            _get(inventory, "system_vendor", "product_name"),
        )
        if v
    )
    serial = _get(inventory, "system_vendor", "serial_number")
    if system or serial:
        lines.append(("System", f"{system} (serial {serial})" if serial else system))
    cpu = _get(inventory, "cpu")
    if isinstance(cpu, Mapping):
        parts = [str(cpu[k]) for k in ("count", "model_name", "architecture") if cpu.get(k)]
        if parts:
            count = f"{parts[0]} × " if cpu.get("count") else ""
            rest = parts[1:] if cpu.get("count") else parts
            lines.append(("CPU", count + ", ".join(rest)))
    memory = _get(inventory, "memory", "physical_mb")
    if isinstance(memory, int | float) and not isinstance(memory, bool):
        lines.append(("Memory", f"{memory / 1024:.1f} GiB"))
    else:
        total = _size(_get(inventory, "memory", "total"))
        if total:
            lines.append(("Memory", total))
    boot = _get(inventory, "boot", "current_boot_mode")
    if boot:
        lines.append(("Boot mode", str(boot)))
    disks = _get(inventory, "disks")
    if isinstance(disks, list):
        for disk in disks[:16]:
            if isinstance(disk, Mapping):
                size = _size(disk.get("size")) or "?"
                model = f" {disk['model']}" if disk.get("model") else ""
                lines.append(("Disk", f"{disk.get('name', '?')} {size}{model}"))
    nics = _get(inventory, "interfaces")
    if isinstance(nics, list):
        for nic in nics[:16]:
            if isinstance(nic, Mapping):
                ip = f" {nic['ipv4_address']}" if nic.get("ipv4_address") else ""
                lines.append(("NIC", f"{nic.get('name', '?')} {nic.get('mac_address', '?')}{ip}"))
    return lines
