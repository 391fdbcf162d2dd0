"""What each service did, turned into timeline events (`pxeforge.timeline`'s vocabulary).

Theory of operation
-------------------
The services know nothing of the timeline: each already reports what it did — `DhcpEvent`,
`TftpEvent`, `HttpEvent`, the store's `HistoryNotice`, the agent's API calls — and this module
translates those reports into `Timeline.record` calls. The translations are pure functions
(``*_records``: a report in, ``Record`` values out); the recorders add who is who:

* **IP → MAC** (`BootPlaneRecorder`): TFTP and HTTP requests carry an address only. The
  `ClientRegistry` (filled by our DHCP answers) maps it to a MAC, then the lease pool (leases
  restored from disk after a restart). An address neither knows — DHCP off, or another DHCP
  server handed it out — is filed under the key ``ip:<address>`` (in the event's ``mac``
  field, with ``data["ip"]``): the operator still sees it, in the unknown machines too, and
  it never pretends to be a MAC.
* **node → MAC** (`HistoryRecorder`, the agent's calls): events that know only a node are
  filed under one of its ports' MACs — the one the timeline heard from last (the NIC that is
  booting), else the first PXE-enabled port — with the node's UUID, so they sit beside that
  machine's DHCP and TFTP events and teach the timeline the MAC's node. A node without ports
  is filed under its UUID.

Everything here runs where the report is made — the event loop for DHCP, TFTP, HTTP and the
API, the conductor's worker threads for history — and must stay cheap: one `Timeline.record`
per event (two for a DHCP request: what was seen, what was decided), at most one store read for
a history notice. A recorder that fails is logged by its caller and never stops a service.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING, Any, Final

from pxeforge.boot.clients import ClientRegistry
from pxeforge.inventory.states import (
    POWER_OFF,
    POWER_ON,
    REBOOT,
    SEVERITY_ERROR,
    SOFT_POWER_OFF,
    SOFT_REBOOT,
    HistoryType,
)
from pxeforge.protocols.tftp import Outcome
from pxeforge.timeline import Timeline

if TYPE_CHECKING:
    from pxeforge.inventory.records import HistoryRecord
    from pxeforge.inventory.store import HistoryNotice, Store
    from pxeforge.leases import LeasePool
    from pxeforge.servers.dhcp import DhcpEvent
    from pxeforge.servers.http import HttpEvent
    from pxeforge.servers.tftp import TftpEvent

__all__ = [
    "BootPlaneRecorder",
    "HistoryRecorder",
    "Record",
    "best_mac",
    "classify_history",
    "dhcp_records",
    "history_records",
    "http_record",
    "ip_key",
    "macs_of",
    "tftp_record",
]

log = logging.getLogger(__name__)

IP_PREFIX: Final = "ip:"
RETRANSMIT_WARNING: Final = 5
"""A transfer with at least this many retransmits is worth a look (level warning)."""


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, and this is hot
class Record:
    """The arguments of one `Timeline.record` call, minus the key."""

    source: str
    kind: str
    summary: str
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)

    def into(self, timeline: Timeline, *, mac: str | None, node: str | None = None) -> None:
        timeline.record(
            self.source,
            self.kind,
            self.summary,
            mac=mac,
            node=node,
            level=self.level,
            data=self.data,
        )


def ip_key(address: str) -> str:
    """The timeline key of a client known by its address only: ``ip:<address>``."""
    return IP_PREFIX + address


def best_mac(timeline: Timeline, macs: Sequence[str]) -> str | None:
    """The MAC of ``macs`` the timeline heard from last; the first when it knows none."""
    best, best_seq = None, -1
    for mac in macs:
        last = timeline.last(mac)
        if last is not None and last.seq > best_seq:
            best, best_seq = mac, last.seq
    if best is not None:
        return best
    return macs[0] if macs else None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


# ---- DHCP ---------------------------------------------------------------------------------------

_KINDS: Final = {t: t.lower() for t in ("DISCOVER", "REQUEST", "INFORM", "RELEASE", "DECLINE")}
_DECISIONS: Final = {
    "offer": ("offer", False),
    "ack": ("ack", False),
    "proxy-offer": ("offer", True),
    "proxy-ack": ("ack", True),
}


def dhcp_records(event: DhcpEvent, next_server: str | None) -> tuple[Record, Record]:
    """What a DHCP request showed (kind: its type, lower-case) and what was decided.

    On the DHCP hot path (two of these per request): plain string concatenation, no lists.
    """
    mtype = event.type
    arch = event.arch
    details = event.vendor_class or ""
    if arch is not None:
        details += f", arch {arch}" if details else f"arch {arch}"
    if event.user_class:
        details += ", user class " + event.user_class if details else event.user_class
    if event.ipxe:
        details += ", iPXE" if details else "iPXE"
    if event.server:
        details += ", for server " + event.server if details else "for server " + event.server
    seen = Record(
        "dhcp",
        _KINDS.get(mtype) or mtype.lower(),
        f"{mtype} ({details})" if details else mtype,
        "info",
        {
            "type": mtype,
            "arch": arch,
            "vendor_class": event.vendor_class,
            "user_class": event.user_class,
            "ipxe": event.ipxe,
            "server": event.server,
        },
    )
    ip = str(event.ip) if event.ip is not None else None
    outcome = event.outcome
    decided = _DECISIONS.get(outcome)
    if decided is not None:
        kind, proxy = decided
        server = next_server if event.loader else None
        boot = f", boot {event.loader}" if event.loader else ", no boot file"
        what = "ProxyDHCP " + kind.upper() if proxy else kind.upper()
        decision = Record(
            "dhcp",
            kind,
            f"{what}{' ' + ip if ip else ''}{boot}",
            data={"ip": ip, "loader": event.loader, "next_server": server, "proxy": proxy},
        )
    elif outcome.startswith("ignored:") or outcome == "forgotten":
        why = "chose another server" if outcome == "forgotten" else outcome[8:]
        decision = Record("dhcp", "ignored", f"{mtype} ignored: {why}", data={"why": why, "ip": ip})
    elif outcome == "nak":
        decision = Record(
            "dhcp", "nak", f"NAK{' for ' + ip if ip else ''}", "warning", data={"ip": ip}
        )
    elif outcome == "no-address":
        decision = Record(
            "dhcp", "no-address", "no free address in the pool", "error", data={"ip": None}
        )
    elif outcome in ("released", "declined"):
        level = "warning" if outcome == "declined" else "info"
        text = f"{ip} declined: in use by another host" if outcome == "declined" else f"{ip}"
        decision = Record("dhcp", outcome, f"{outcome} {text}", level, data={"ip": ip})
    else:  # an outcome this module does not know yet: keep it visible
        decision = Record("dhcp", outcome, f"{mtype}: {outcome}", data={"ip": ip})
    return seen, decision


# ---- TFTP ---------------------------------------------------------------------------------------


def tftp_record(event: TftpEvent) -> Record:
    """A `TftpEvent` as ``started`` / ``finished`` / ``aborted`` / ``failed`` / ``refused``."""
    from pxeforge.servers.tftp import EventKind

    client = f"{event.client[0]}:{event.client[1]}"
    name = event.file
    if event.kind is EventKind.STARTED:
        return Record(
            "tftp",
            "started",
            f"TFTP {name} started ({_size(event.bytes)}, blksize {event.blksize}"
            + (f", windowsize {event.windowsize}" if event.windowsize > 1 else "")
            + ")",
            data={
                "file": name,
                "bytes": event.bytes,
                "blksize": event.blksize,
                "windowsize": event.windowsize,
                "client": client,
            },
        )
    if event.kind is EventKind.REFUSED:
        error = event.error or ""
        return Record(
            "tftp",
            "refused",
            f"TFTP {name} refused: {error}",
            # pxelinux and GRUB look for several config names: a miss is normal
            "info" if error == "File not found" else "warning",
            data={"file": name, "error": error, "client": client},
        )
    outcome = event.outcome
    if event.kind is EventKind.FAILED:
        kind, level = "failed", "error"
    elif outcome in (Outcome.COMPLETE, Outcome.COMPLETE_UNCONFIRMED):
        kind, level = "finished", "info"
    else:  # probed, client error: the client ended it
        kind, level = "aborted", "info"
    if level == "info" and event.retransmits >= RETRANSMIT_WARNING:
        level = "warning"
    how = outcome.value.replace("_", " ") if outcome is not None else "closed"
    summary = f"TFTP {name} {kind}: {_size(event.bytes)} in {event.seconds:.2f} s"
    if kind != "finished":
        summary += f" ({how}{': ' + event.error if event.error else ''})"
    if event.retransmits:
        summary += f", {event.retransmits} retransmits"
    return Record(
        "tftp",
        kind,
        summary,
        level,
        data={
            "file": name,
            "bytes": event.bytes,
            "seconds": round(event.seconds, 6),
            "retransmits": event.retransmits,
            "outcome": outcome.value if outcome is not None else None,
            "error": event.error,
            "client": client,
        },
    )


# ---- HTTP ---------------------------------------------------------------------------------------


def http_record(event: HttpEvent) -> Record:
    """An `HttpEvent` as ``fetched`` (any status but 404) or ``not-found``."""
    data = {
        "path": event.path,
        "method": event.method,
        "status": event.status,
        "bytes": event.bytes,
        "seconds": round(event.seconds, 6),
        "client": event.client,
    }
    if event.status == 404:
        return Record("http", "not-found", f"HTTP {event.path} not found", "warning", data)
    level = "error" if event.status >= 500 else "warning" if event.status >= 400 else "info"
    return Record(
        "http",
        "fetched",
        f"HTTP {event.method} {event.path}: {event.status}, {_size(event.bytes)} "
        f"in {event.seconds:.2f} s",
        level,
        data,
    )


# ---- history: power actions and state transitions -----------------------------------------------

_POWER_KIND: Final = {
    POWER_ON: "on",
    POWER_OFF: "off",
    SOFT_POWER_OFF: "off",
    REBOOT: "reboot",
    SOFT_REBOOT: "reboot",
}
_POWER_CHANGED: Final = re.compile(r'Power state changed from "([^"]*)" to "([^"]*)" \("([^"]*)"')
_POWER_FAILED: Final = re.compile(r"Failed to change power state to '([^']*)'.*?Error: (.*)", re.S)
_BOOT_DEVICE: Final = re.compile(r'Boot device set to "?([\w-]+)"?( \(persistent\))?')
_BOOT_DEVICE_FAILED: Final = re.compile(r"Could not set the boot device to (\w+): (.*)", re.S)
_TRANSITION: Final = re.compile(r'^"([^"]*)" -> "([^"]*)" on "([^"]*)"')


def classify_history(record: HistoryRecord) -> Record:
    """One history record as ``power`` (on/off/reboot/boot-device) or ``state`` (``note``)."""
    text = record.event
    error = record.severity == SEVERITY_ERROR
    if m := _POWER_CHANGED.match(text):
        old, new, asked = m.groups()
        kind = _POWER_KIND.get(asked, "on" if new == POWER_ON else "off")
        return Record(
            "power",
            kind,
            f"power {asked}: {old} → {new}",
            data={"result": new, "from": old, "asked": asked, "error": None},
        )
    if m := _POWER_FAILED.match(text):
        asked, why = m.groups()
        return Record(
            "power",
            _POWER_KIND.get(asked, "on"),
            f"power {asked} failed: {why}",
            "error",
            data={"result": "error", "asked": asked, "error": why},
        )
    if m := _BOOT_DEVICE.match(text):
        device, persistent = m.groups()
        return Record(
            "power",
            "boot-device",
            text,
            data={"result": device, "persistent": bool(persistent), "error": None},
        )
    if m := _BOOT_DEVICE_FAILED.match(text):
        device, why = m.groups()
        return Record(
            "power",
            "boot-device",
            text,
            "error",
            data={"result": "error", "device": device, "error": why},
        )
    return Record(
        "state",
        "note",
        text,
        "error" if error else "info",
        data={"text": text, "type": record.event_type, "severity": record.severity},
    )


def history_records(notice: HistoryNotice) -> list[Record]:
    """A notice's records: the transition (when it is one) and its notes, in their order."""
    out: list[Record] = []
    for record in notice.records:
        m = _TRANSITION.match(record.event)
        if (
            notice.from_state is not None
            and record.event_type == HistoryType.TRANSITION
            and (m is not None or record.severity == SEVERITY_ERROR)
        ):
            event = m.group(3) if m is not None else None
            error = record.severity == SEVERITY_ERROR
            last_error = notice.last_error if error else None
            summary = f"{notice.from_state} → {notice.to_state}"
            if event:
                summary += f" ({event})"
            if last_error:
                summary += f": {last_error}"
            out.append(
                Record(
                    "state",
                    "transition",
                    summary,
                    "error" if error else "info",
                    data={
                        "from": notice.from_state,
                        "to": notice.to_state,
                        "event": event,
                        "last_error": last_error,
                        "seconds_in_state": notice.seconds_in_state,
                    },
                )
            )
        else:
            out.append(classify_history(record))
    return out


class HistoryRecorder:
    """A `Store` observer: files each history notice under the node's best port MAC."""

    def __init__(self, timeline: Timeline, store: Store) -> None:
        self.timeline = timeline
        self.store = store

    def __call__(self, notice: HistoryNotice) -> None:
        records = history_records(notice)
        if not records:
            return
        try:
            uuid, macs = self.store.node_macs(notice.node)
        except Exception:  # the node was deleted meanwhile: file it under its UUID
            uuid, macs = notice.node, []
        mac = best_mac(self.timeline, macs)
        for record in records:
            record.into(self.timeline, mac=mac, node=uuid)


# ---- the boot plane -----------------------------------------------------------------------------


class BootPlaneRecorder:
    """``on_event`` for the DHCP, TFTP and HTTP servers of one ``pxeforge serve``."""

    def __init__(
        self,
        timeline: Timeline,
        registry: ClientRegistry,
        *,
        pool: LeasePool | None = None,
        next_server: IPv4Address | None = None,
    ) -> None:
        self.timeline = timeline
        self.registry = registry
        self.pool = pool
        self.next_server = str(next_server) if next_server is not None else None

    def mac_of(self, address: str) -> str:
        """The MAC behind a client address, else its ``ip:`` key (see the module docstring)."""
        try:
            ip = ip_address(address)
        except ValueError:
            return ip_key(address)
        if not isinstance(ip, IPv4Address):
            mapped = ip.ipv4_mapped
            if mapped is None:
                return ip_key(str(ip))
            ip = mapped
        machine = self.registry.by_ip(ip)
        if machine is not None:
            return machine.mac
        if self.pool is not None:
            lease = self.pool.lookup(ip)
            if lease is not None and lease.mac:
                return lease.mac
        return ip_key(str(ip))

    def dhcp(self, event: DhcpEvent) -> None:
        seen, decided = dhcp_records(event, self.next_server)
        seen.into(self.timeline, mac=event.mac)
        decided.into(self.timeline, mac=event.mac)

    def tftp(self, event: TftpEvent) -> None:
        record = tftp_record(event)
        mac = self.mac_of(event.client[0])
        if mac.startswith(IP_PREFIX):
            record.data["ip"] = mac[len(IP_PREFIX) :]
        record.into(self.timeline, mac=mac)

    def http(self, event: HttpEvent) -> None:
        record = http_record(event)
        mac = event.mac or self.mac_of(event.client)
        if mac.startswith(IP_PREFIX):
            record.data["ip"] = mac[len(IP_PREFIX) :]
        record.into(self.timeline, mac=mac, node=event.node)


def macs_of(addresses: Iterable[str]) -> list[str]:
    """The valid MACs of a list (the agent's ``addresses``), normalised, in order, once."""
    from pxeforge.boot.machine import normalize_mac

    out: list[str] = []
    for address in addresses:
        try:
            mac = normalize_mac(address)
        except (ValueError, AttributeError):
            continue
        if mac not in out:
            out.append(mac)
    return out
