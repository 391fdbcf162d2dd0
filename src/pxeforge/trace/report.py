"""A `Trace` for people (text, optionally coloured) and for machines (JSON). No I/O.

Theory of operation
-------------------
`render_lines` lays the trace out as ``(text, style)`` lines: a capture header, then per
client its identity, boot chain and stages, its timeline (times in seconds since the first
frame, ``#N`` the frame number as Wireshark and ``tcpdump -# -r`` count them), then the
findings with their evidence. ``style`` is a rich style name or None; `render_text` drops the
styles, and the CLI prints through rich only on a terminal.

`to_json` is the stable machine form (``schema: pxeforge.trace/1``): ``capture``,
``clients[]``, ``events[]``, ``transfers[]`` (TFTP and HTTP alike, ``protocol`` tells which),
``findings[]`` with ``code``, ``severity``, ``message`` and ``evidence[]``, and ``summary``.
Times are seconds since the first frame (``t``) — the capture's own start is
``capture.start`` (Unix time). New keys may be added; existing ones keep their meaning.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

from pxeforge.boot.firmware import firmware_for_arch
from pxeforge.trace import Trace
from pxeforge.trace.capture import LinkType
from pxeforge.trace.decode import HttpExchange, TftpTransfer
from pxeforge.trace.findings import Finding, Severity
from pxeforge.trace.timeline import Client, Event, http_role

__all__ = ["SCHEMA", "WIDTH", "Line", "render_lines", "render_text", "to_json"]

SCHEMA = "pxeforge.trace/1"
WIDTH = 100  # text is wrapped to this many columns
QUIET_GAP = 3.0  # a pause this long between two events of a client is shown

Line = tuple[str, str | None]

_KIND_STYLE = {"dhcp": "cyan", "tftp": "magenta", "config-search": "magenta", "http": "blue"}
_SEVERITY_STYLE = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.INFO: "blue",
}


def _clock(ts: float) -> str | None:
    """ISO time of a capture timestamp, or None when the timestamp is not a date."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def _rel(trace: Trace, t: float) -> float:
    return round(t - trace.start, 6)


def _link_name(link: int) -> str:
    try:
        return {
            LinkType.ETHERNET: "Ethernet",
            LinkType.LINUX_SLL: "Linux cooked",
            LinkType.LINUX_SLL2: "Linux cooked v2",
            LinkType.RAW: "raw IP",
            LinkType.IPV4: "raw IPv4",
            LinkType.NULL: "loopback",
            LinkType.LOOP: "loopback",
        }[LinkType(link)]
    except ValueError:
        return f"link type {link}"


def _wrap(text: str, indent: int, hang: int) -> list[str]:
    """Wrap ``text`` (already indented by ``indent``) with continuation lines at ``hang``."""
    if len(text) <= WIDTH:
        return [text]
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent="",
        subsequent_indent=" " * hang,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [text]


def _selected(macs: Collection[str] | None, mac: str | None) -> bool:
    """Shown under a --mac filter: that client's, or the capture's as a whole (mac None)."""
    return macs is None or mac is None or mac in macs


# --------------------------------------------------------------------------------------------
# text


def _header(trace: Trace, macs: Collection[str] | None) -> list[Line]:
    s = trace.stats
    clock = _clock(trace.start)
    start = (
        f"{clock[:10]} {clock[11:23]} UTC" if clock else f"timestamp {trace.start!r} (not a date)"
    )
    links = ", ".join(sorted(_link_name(x) for x in s.link_types)) or "no frames"
    out: list[Line] = [
        (f"pxeforge trace  {trace.name}", "bold"),
        (
            f"capture: {s.format}, {links}, {s.frames} frames, "
            f"{trace.end - trace.start:.3f} s from {start}",
            None,
        ),
    ]
    if s.skipped:
        skipped = ", ".join(f"{n} {what}" for what, n in sorted(s.skipped.items()) if n)
        out.append((f"not decoded: {skipped}", "dim"))
    for note in s.notes:
        out.append((f"note: {note}", "yellow"))
    servers: dict[str, set[str]] = {}
    for m in trace.decoded.dhcp:
        if m.is_reply:
            key = str(m.server) + (f" ({m.src_mac})" if m.src_mac else "")
            key += " ProxyDHCP" if m.proxy else ""
            servers.setdefault(key, set()).add(m.mac)
    if servers:
        parts = [
            f"{name} answered {len(who)} client{'s' if len(who) != 1 else ''}"
            for name, who in servers.items()
        ]
        out.append((f"DHCP servers: {'; '.join(parts)}", None))
    clients = [c for c in trace.clients if _selected(macs, c.mac)]
    out.append(
        (
            f"clients: {len(clients)}"
            + (" — " + ", ".join(c.mac for c in clients) if clients else ""),
            None,
        )
    )
    findings = [f for f in trace.findings if _selected(macs, f.mac)]
    counts = {sev: sum(1 for f in findings if f.severity is sev) for sev in Severity}
    out.append(
        (
            f"findings: {counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} "
            f"warning(s), {counts[Severity.INFO]} info",
            "bold red" if counts[Severity.ERROR] else None,
        )
    )
    return out


def _client_lines(trace: Trace, client: Client, events: Iterable[Event]) -> list[Line]:
    out: list[Line] = [
        ("", None),
        (f"━━ client {client.mac} " + "━" * max(0, WIDTH - 14 - len(client.mac)), "bold cyan"),
    ]
    ident: list[str] = []
    if client.addresses:
        ident.append("address " + ", ".join(str(a) for a in client.addresses))
    if client.arch is not None:
        firmware = firmware_for_arch(client.arch)
        ident.append(f"arch {client.arch} ({client.arch_name}, {firmware.value} firmware)")
    if client.uuid:
        ident.append(f"uuid {client.uuid}")
    if ident:
        out.append(("  " + " · ".join(ident), None))
    if client.chain:
        out += [
            (line, "bold") for line in _wrap("  boot chain: " + " → ".join(client.chain), 2, 14)
        ]
    for i, stage in enumerate(client.stages, 1):
        given: list[str] = []
        if stage.address:
            given.append(f"address {stage.address}")
        if stage.server:
            given.append(f"from {stage.server}")
        if stage.boot_file:
            given.append(f'file "{stage.boot_file}"')
        text = (
            f"  {i}. {stage.label}, #{stage.first_frame} at {_rel(trace, stage.first_time):.3f} s"
        )
        if given:
            text += ": " + ", ".join(given)
        if stage.files:
            text += "; fetched " + ", ".join(stage.files)
        out += [(line, None) for line in _wrap(text, 2, 7)]
    for search in client.searches:
        out += [(line, None) for line in _wrap("  " + search.summary, 2, 4)]
    out.append(("", None))
    out.append(("       time  frame   event", "dim"))
    last: float | None = None
    for ev in events:
        if last is not None and ev.time - last >= QUIET_GAP:
            out.append((f"{'':11}        … {ev.time - last:.1f} s later …", "dim"))
        last = ev.time
        out += _event_lines(trace, ev)
    return out


def _event_lines(trace: Trace, ev: Event) -> list[Line]:
    head = f"{_rel(trace, ev.time):11.3f}  #{ev.frame:<6} {ev.summary}"
    out: list[Line] = [(line, _KIND_STYLE.get(ev.kind)) for line in _wrap(head, 0, 21)]
    for detail in ev.details:
        style: str | None = "dim"
        if detail.startswith("→ "):
            style = "green" if detail.startswith("→ complete") else "yellow"
            if detail.startswith(("→ error", "→ no answer", "→ timed out")):
                style = "red"
        if detail.startswith("#"):  # a table row (config searches): never wrapped
            out.append((" " * 21 + detail, style))
            continue
        hang = 21 + (29 if len(detail) > 29 and detail[:3].strip().isdigit() else 2)
        out += [(line, style) for line in _wrap(" " * 21 + detail, 21, hang)]
    return out


def _finding_lines(trace: Trace, finding: Finding) -> list[Line]:
    who = f" {finding.mac}" if finding.mac else ""
    out: list[Line] = [
        (f"  [{finding.severity.value}] {finding.code}{who}", _SEVERITY_STYLE[finding.severity])
    ]
    out += [(line, None) for line in _wrap("    " + finding.message, 4, 4)]
    if finding.evidence:
        ev = "; ".join(
            f"#{e.frame} at {_rel(trace, e.time):.3f} s {e.what}" for e in finding.evidence
        )
        out += [(line, "dim") for line in _wrap("    evidence: " + ev, 4, 14)]
    return out


def render_lines(trace: Trace, macs: Collection[str] | None = None) -> list[Line]:
    """The whole report as (text, style) lines; ``macs`` limits it to those clients."""
    out = _header(trace, macs)
    by_client: dict[str, list[Event]] = {}
    for ev in trace.events:
        by_client.setdefault(ev.client, []).append(ev)
    for client in trace.clients:
        if _selected(macs, client.mac):
            out += _client_lines(trace, client, by_client.get(client.mac, []))
    findings = [f for f in trace.findings if _selected(macs, f.mac)]
    out.append(("", None))
    out.append(("findings" if findings else "findings: none — nothing looks wrong", "bold"))
    for finding in findings:
        out += _finding_lines(trace, finding)
    return out


def render_text(trace: Trace, macs: Collection[str] | None = None) -> str:
    """The report as plain text (no colour)."""
    return "\n".join(text.rstrip() for text, _ in render_lines(trace, macs)) + "\n"


# --------------------------------------------------------------------------------------------
# JSON


def _tftp_json(trace: Trace, t: TftpTransfer, client: str) -> dict[str, Any]:
    fail = t.failure
    return {
        "id": f"tftp-{t.index}",
        "protocol": "tftp",
        "client": client,
        "file": t.filename,
        "client_address": f"{t.client}:{t.client_port}",
        "server_address": f"{t.server}:69",
        "server_port": t.server_port,
        "request": t.opcode,
        "mode": t.mode,
        "options": dict(t.options),
        "oack": None if t.oack is None else dict(t.oack),
        "refused_options": list(t.refused_options),
        "frame": t.request_frame,
        "t": _rel(trace, t.request_time),
        "end_frame": t.end_frame,
        "end_t": _rel(trace, t.end_time),
        "seconds": round(t.seconds, 6),
        "bytes": t.bytes,
        "throughput": None if t.throughput is None else round(t.throughput, 1),
        "outcome": t.ending.value,
        "blksize": t.blksize,
        "windowsize": t.windowsize,
        "tsize": t.tsize,
        "blocks": t.blocks,
        "data_packets": t.data_packets,
        "retransmits": t.retransmits,
        "duplicate_acks": t.duplicate_acks,
        "missing_blocks": t.missing_blocks,
        "request_resends": list(t.request_resends),
        "error": None
        if fail is None
        else {"code": fail.code, "message": fail.message, "by": fail.by, "frame": fail.frame},
    }


def _http_json(trace: Trace, x: HttpExchange, client: str) -> dict[str, Any]:
    return {
        "id": f"http-{x.index}",
        "protocol": "http",
        "client": client,
        "file": x.path,
        "client_address": f"{x.client}:{x.client_port}",
        "server_address": f"{x.server}:{x.server_port}",
        "method": x.method,
        "target": x.target,
        "role": http_role(x),
        "frame": x.request_frame,
        "t": _rel(trace, x.request_time),
        "end_frame": x.end_frame,
        "end_t": _rel(trace, x.end_time),
        "seconds": round(x.seconds, 6),
        "bytes": x.response_bytes,
        "throughput": round(x.response_bytes / x.seconds, 1) if x.seconds > 0 else None,
        "outcome": x.outcome,
        "status": x.status,
        "reason": x.reason,
        "content_length": x.content_length,
        "head_captured": x.head_captured,
        "missing_bytes": x.missing_bytes,
        "user_agent": x.user_agent,
    }


def _client_json(trace: Trace, c: Client) -> dict[str, Any]:
    return {
        "mac": c.mac,
        "addresses": [str(a) for a in c.addresses],
        "arch": c.arch,
        "arch_name": c.arch_name if c.arch is not None else None,
        "firmware": firmware_for_arch(c.arch).value,
        "uuid": c.uuid,
        "first_t": _rel(trace, c.first_time),
        "last_t": _rel(trace, c.last_time),
        "last_frame": c.last_frame,
        "chain": list(c.chain),
        "stages": [
            {
                "label": s.label,
                "arch": s.arch,
                "vendor_class": s.vendor_class,
                "user_class": list(s.user_classes),
                "ipxe": s.ipxe,
                "frame": s.first_frame,
                "t": _rel(trace, s.first_time),
                "server": None if s.server is None else str(s.server),
                "address": None if s.address is None else str(s.address),
                "next_server": None if s.next_server is None else str(s.next_server),
                "boot_file": s.boot_file,
                "files": list(s.files),
            }
            for s in c.stages
        ],
        "files": list(c.files),
        "config_searches": [
            {
                "loader": s.loader,
                "steps": list(s.steps),
                "served": list(s.served),
                "summary": s.summary,
                "transfers": [f"tftp-{t.index}" for t in s.transfers],
            }
            for s in c.searches
        ],
        "callback": c.callback,
    }


def _event_json(trace: Trace, ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": _rel(trace, ev.time),
        "frame": ev.frame,
        "client": ev.client,
        "kind": ev.kind,
        "summary": ev.summary,
        "details": list(ev.details),
    }
    for key, value in ev.data.items():
        if key == "transfer":
            out["transfer"] = f"tftp-{value}"
        elif key == "exchange":
            out["transfer"] = f"http-{value}"
        elif key == "transfers":
            assert isinstance(value, Iterable)
            out["transfers"] = [f"tftp-{i}" for i in value]
        else:
            out[key] = value
    return out


def _finding_json(trace: Trace, f: Finding) -> dict[str, Any]:
    return {
        "code": f.code,
        "severity": f.severity.value,
        "client": f.mac,
        "message": f.message,
        "evidence": [
            {"frame": e.frame, "t": _rel(trace, e.time), "what": e.what} for e in f.evidence
        ],
    }


def _client_of(trace: Trace, mac: str | None, ip: IPv4Address) -> str:
    if mac is not None:
        return mac
    return trace.decoded.ip_macs.get(ip, f"ip {ip}")


def to_json(trace: Trace, macs: Collection[str] | None = None) -> dict[str, Any]:
    """The trace as JSON-ready data (see the module docstring for the schema)."""
    s = trace.stats
    transfers: list[dict[str, Any]] = []
    for t in trace.decoded.tftp:
        client = _client_of(trace, t.mac, t.client)
        if _selected(macs, client):
            transfers.append(_tftp_json(trace, t, client))
    for x in trace.decoded.http:
        client = _client_of(trace, x.mac, x.client)
        if _selected(macs, client):
            transfers.append(_http_json(trace, x, client))
    transfers.sort(key=lambda d: (d["t"], d["frame"]))
    findings = [f for f in trace.findings if _selected(macs, f.mac)]
    return {
        "schema": SCHEMA,
        "capture": {
            "name": trace.name,
            "format": s.format,
            "frames": s.frames,
            "start": trace.start,
            "start_iso": _clock(trace.start),
            "duration": round(trace.end - trace.start, 6),
            "link_types": sorted(_link_name(x) for x in s.link_types),
            "skipped": dict(sorted(s.skipped.items())),
            "snaplen_cut": s.snaplen_cut,
            "notes": list(s.notes),
        },
        "clients": [_client_json(trace, c) for c in trace.clients if _selected(macs, c.mac)],
        "events": [_event_json(trace, e) for e in trace.events if _selected(macs, e.client)],
        "transfers": transfers,
        "findings": [_finding_json(trace, f) for f in findings],
        "summary": {sev.value: sum(1 for f in findings if f.severity is sev) for sev in Severity},
    }
