"""What went wrong (or could go faster) in a capture, each with the packets that show it.

Theory of operation
-------------------
`find` runs a list of small rules over the decoded capture and the per-client timelines.
Each rule returns `Finding`s: a stable ``code``, a `Severity`, the client MAC (None for the
capture as a whole), a message that says what happened and what to do, and the `Evidence`
(frame numbers and times, with what each frame shows). Rules and where their facts come from:

========================  ========  ===========================================================
code                      severity  rule
========================  ========  ===========================================================
rogue-dhcp                error     two servers (server id or source address) OFFER/ACK the
                                    same client; ProxyDHCP replies (no address, PXEClient) are
                                    not counted (PXE 2.1 §2.2.3)
no-dhcp-answer            error     DISCOVERs and not one OFFER
offer-without-request     warning   an OFFER whose transaction never saw a REQUEST (RFC 2131
                                    §3.1); error when the client never got an ACK at all
request-other-server      warning   a REQUEST names (option 54) a server other than the one
                                    whose OFFER we saw for that transaction
dhcp-nak                  error     the server refused the REQUEST
loader-mismatch           error     the boot file does not fit option 93's firmware
                                    (`explain.loader_fits`: arch 7 given pxelinux.0 …)
no-boot-file              error     a PXE client's ACK (and ProxyDHCP, if any) has no boot file
boot-file-not-found       error     TFTP ERROR 1 for the file DHCP gave, or HTTP 404
file-not-found            warning   another TFTP miss that is not a known probe and was not
                                    found elsewhere later
tftp-error                error     another TFTP error from the server
tftp-no-answer            error     a TFTP request nobody answered
tftp-aborted              warning   the client aborted a transfer mid-way (a probe is normal)
tftp-option-refused       warning   blksize asked and absent from the OACK (RFC 2348 §2);
                          info      windowsize likewise (RFC 7440) — a speed-up missed
retransmit-storm          warning   many DATA blocks sent again in one transfer
ipxe-loop                 error     iPXE (option 77 "iPXE" / 175) was given an iPXE loader and
                                    fetched it again: it chainloads itself forever
ipxe-proxydhcp-wait       info      iPXE took ~3 s from OFFER to REQUEST waiting for ProxyDHCP;
                                    option 175.176 = 1 in the OFFER skips that (lab.md)
client-silent             error     the client's last packet is long before the end of the
                                    capture, mid-transfer, after an OFFER, or after an ACK whose
                                    file it never asked for
http-error                warning   any other HTTP status >= 400
agent-lookup-failed       warning   the ramdisk agent's GET /v1/lookup was not answered 200
capture-incomplete        info      the capture lacks packets (filtered, snap length, loss):
                                    sizes then come from TCP sequence numbers
malformed-packets         info      packets that do not decode
========================  ========  ===========================================================
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from pxeforge.boot.firmware import firmware_for_arch
from pxeforge.errors import DhcpError
from pxeforge.protocols import pxe
from pxeforge.protocols.dhcp import Option
from pxeforge.trace.decode import Decoded, DhcpMessage, Ending, HttpExchange, TftpTransfer
from pxeforge.trace.explain import (
    arch_label,
    file_kind,
    firmware_loaders,
    is_ipxe_loader,
    loader_fits,
)
from pxeforge.trace.timeline import Client, http_role, human_bytes, probe_miss

__all__ = [
    "DEFAULT_SILENT_AFTER",
    "Evidence",
    "Finding",
    "Severity",
    "find",
]

DEFAULT_SILENT_AFTER = 10.0  # seconds without a packet before a client counts as silent
OFFER_PATIENCE = 5.0  # a client may take this long from OFFER to REQUEST (iPXE waits 3 s)
STORM_MIN = 10  # retransmits before a storm is called …
STORM_RATIO = 0.1  # … and at least this share of the blocks
_EVIDENCE_MAX = 12


class Severity(enum.StrEnum):
    ERROR = "error"  # the boot fails or goes wrong
    WARNING = "warning"  # it works, slowly or by luck
    INFO = "info"  # worth knowing

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Evidence:
    frame: int
    time: float  # seconds since the epoch (reports show it relative to the capture start)
    what: str


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    mac: str | None
    message: str
    evidence: tuple[Evidence, ...]

    @property
    def time(self) -> float:
        return min((e.time for e in self.evidence), default=0.0)


class _Context:
    """The decoded capture, indexed by client once (rules ask per client, many times)."""

    def __init__(
        self,
        decoded: Decoded,
        clients: Sequence[Client],
        end_time: float,
        silent_after: float,
        snaplen_cut: int,
    ) -> None:
        self.decoded = decoded
        self.clients = clients
        self.end_time = end_time
        self.silent_after = silent_after
        self.snaplen_cut = snaplen_cut
        self._dhcp: dict[str, list[DhcpMessage]] = defaultdict(list)
        self._tftp: dict[str, list[TftpTransfer]] = defaultdict(list)
        self._http: dict[str, list[HttpExchange]] = defaultdict(list)
        for m in decoded.dhcp:
            self._dhcp[m.mac].append(m)
        for t in decoded.tftp:
            self._tftp[self._key(t.mac, t.client)].append(t)
        for x in decoded.http:
            self._http[self._key(x.mac, x.client)].append(x)

    def _key(self, mac: str | None, ip: IPv4Address) -> str:
        return mac if mac is not None else self.decoded.ip_macs.get(ip, f"ip {ip}")

    def dhcp_of(self, mac: str) -> list[DhcpMessage]:
        return self._dhcp.get(mac, [])

    def tftp_of(self, mac: str) -> list[TftpTransfer]:
        return self._tftp.get(mac, [])

    def http_of(self, mac: str) -> list[HttpExchange]:
        return self._http.get(mac, [])


def _ev(msg: DhcpMessage, what: str | None = None) -> Evidence:
    return Evidence(msg.frame, msg.time, what or f"DHCP {msg.kind} from {msg.src}")


def _base(name: str) -> str:
    return name.lstrip("/").rsplit("/", 1)[-1].lower()


def _same_file(a: str, b: str) -> bool:
    """TFTP paths equal up to a leading slash; URLs compared by path."""
    if a.startswith(("http://", "https://")):
        a = "/" + a.split("/", 3)[-1] if a.count("/") >= 3 else a
    if b.startswith(("http://", "https://")):
        b = "/" + b.split("/", 3)[-1] if b.count("/") >= 3 else b
    return a.lstrip("/") == b.lstrip("/")


def _request_for(reply: DhcpMessage, msgs: Sequence[DhcpMessage]) -> DhcpMessage | None:
    """The client's request this reply answers: same xid, latest before it."""
    best: DhcpMessage | None = None
    for m in msgs:
        if m.is_reply or m.time > reply.time:
            continue
        if m.packet.xid == reply.packet.xid or best is None:
            best = m
    return best


def _server_name(msg: DhcpMessage) -> str:
    sid = msg.server_id
    mac = f", MAC {msg.src_mac}" if msg.src_mac else ""
    if sid is not None and sid != msg.src:
        return f"{sid} (from {msg.src}{mac})"
    return f"{msg.src}{mac and ' (' + mac[2:] + ')'}"


# --------------------------------------------------------------------------------------------
# DHCP rules


def _rogue(ctx: _Context, mac: str) -> Iterable[Finding]:
    replies = [
        m
        for m in ctx.dhcp_of(mac)
        if m.is_reply and m.kind in ("OFFER", "ACK", "NAK", "BOOTREPLY") and not m.proxy
    ]
    by_server: dict[IPv4Address, list[DhcpMessage]] = defaultdict(list)
    for m in replies:
        by_server[m.server].append(m)
    if len(by_server) < 2:
        return
    parts = []
    evidence: list[Evidence] = []
    for msgs in by_server.values():
        first = msgs[0]
        offer = f"offered {first.packet.yiaddr}" if int(first.packet.yiaddr) else "no address"
        file = f', file "{first.boot_file}"' if first.boot_file else ", no boot file"
        parts.append(f"{_server_name(first)} ({len(msgs)} replies, {offer}{file})")
        evidence += [_ev(m, f"{m.kind} from {_server_name(m)}") for m in msgs[:4]]
    yield Finding(
        "rogue-dhcp",
        Severity.ERROR,
        mac,
        f"{len(by_server)} DHCP servers answered {mac}: "
        + "; ".join(parts)
        + ". Only one should: whichever answers first wins, so boots are a lottery — "
        "find the other server (its MAC is in the evidence) and switch it off or exclude "
        "this segment, or run pxeforge in ProxyDHCP mode beside it.",
        tuple(sorted(evidence, key=lambda e: e.frame)[:_EVIDENCE_MAX]),
    )


def _offers(ctx: _Context, mac: str) -> Iterable[Finding]:
    msgs = ctx.dhcp_of(mac)
    discovers = [m for m in msgs if m.kind == "DISCOVER"]
    offers = [m for m in msgs if m.kind == "OFFER"]
    requests = [m for m in msgs if m.kind == "REQUEST"]
    acks = [m for m in msgs if m.kind == "ACK"]
    if discovers and not offers and ctx.end_time - discovers[0].time >= 2.0:
        yield Finding(
            "no-dhcp-answer",
            Severity.ERROR,
            mac,
            f"{mac} sent {len(discovers)} DISCOVER(s) and no DHCP server offered anything: "
            "is a DHCP server (pxeforge serve) listening on this segment, or a relay "
            "(ip helper) forwarding to it? Is this MAC refused by policy?",
            tuple(_ev(m) for m in discovers[:_EVIDENCE_MAX]),
        )
    by_xid: dict[int, list[DhcpMessage]] = defaultdict(list)
    for m in offers:
        by_xid[m.packet.xid].append(m)
    for xid, xid_offers in by_xid.items():
        first = xid_offers[0]
        if any(r.packet.xid == xid and r.time >= first.time for r in requests):
            continue
        if ctx.end_time - xid_offers[-1].time < OFFER_PATIENCE:
            continue
        later_ack = any(a.time > first.time for a in acks)
        servers = sorted({str(m.server) for m in xid_offers})
        proxy = all(m.proxy for m in xid_offers)
        if proxy:
            continue
        yield Finding(
            "offer-without-request",
            Severity.WARNING if later_ack else Severity.ERROR,
            mac,
            f"{len(xid_offers)} OFFER(s) from {', '.join(servers)} to {mac} (xid {xid:#010x}) "
            "and no REQUEST followed: the client ignored the offer. Usual causes: another DHCP "
            "server's offer was preferred, the offer lacks something the firmware insists on "
            "(a boot file for PXE ROMs), or the reply never reached it (broadcast flag set "
            "but the reply was unicast)" + (" — it got an address later." if later_ack else "."),
            tuple(_ev(m, f"OFFER from {m.server}") for m in xid_offers[:_EVIDENCE_MAX]),
        )
    for req in requests:
        sid = req.server_id
        if sid is None:
            continue
        same_xid = [m for m in offers if m.packet.xid == req.packet.xid and m.time <= req.time]
        if not same_xid or any(m.server == sid for m in same_xid):
            continue
        seen = sorted({str(m.server) for m in same_xid})
        yield Finding(
            "request-other-server",
            Severity.WARNING,
            mac,
            f"{mac} REQUESTed server {sid} (option 54), not {', '.join(seen)} whose OFFER is "
            "in the capture: another server answered too (its offer may not be captured) and "
            "the client chose it.",
            (
                _ev(req, f"REQUEST naming server {sid}"),
                *(_ev(m, f"OFFER from {m.server}") for m in same_xid[:4]),
            ),
        )
    for m in msgs:
        if m.kind == "NAK":
            text = m.packet.text(Option.MESSAGE)
            yield Finding(
                "dhcp-nak",
                Severity.ERROR,
                mac,
                f"{m.server} refused {mac}'s REQUEST (NAK"
                + (f': "{text}"' if text else "")
                + "): the requested address is wrong for this segment or taken.",
                (_ev(m, "NAK"),),
            )


def _loader(ctx: _Context, mac: str) -> Iterable[Finding]:
    msgs = ctx.dhcp_of(mac)
    reported: set[tuple[int | None, bool, str]] = set()
    for reply in msgs:
        if not reply.is_reply or reply.kind not in ("OFFER", "ACK", "BOOTREPLY"):
            continue
        req = _request_for(reply, msgs)
        if req is None:
            continue
        arch = pxe.client_arch(req.packet)
        if arch is None:
            continue
        ipxe = pxe.is_ipxe(req.packet)
        file = reply.boot_file
        if not file:
            continue
        firmware = firmware_for_arch(arch)
        fits = loader_fits(firmware, ipxe, file)
        key = (arch, ipxe, file)
        if fits is not False or key in reported:
            continue
        reported.add(key)
        kind = file_kind(file).value
        expects = " or ".join(firmware_loaders(firmware)) or "a loader for it"
        who = f"iPXE ({arch_label(arch)})" if ipxe else f"arch {arch} ({arch_label(arch)})"
        yield Finding(
            "loader-mismatch",
            Severity.ERROR,
            mac,
            f'{who} client was given "{file}", which looks like a {kind} file: it cannot run '
            f"it. Option 93 = {arch} means {firmware.value} firmware, which needs {expects}.",
            (
                _ev(req, f"{req.kind} with option 93 = {arch}"),
                _ev(reply, f'{reply.kind}: file "{file}"'),
            ),
        )
    # a PXE client that was told nothing to boot
    acks = [m for m in msgs if m.kind == "ACK"]
    for ack in acks:
        req = _request_for(ack, msgs)
        if req is None or pxe.client_arch(req.packet) is None or ack.boot_file:
            continue
        proxied = any(m.proxy and m.boot_file and m.time >= req.time - 5 for m in msgs)
        if proxied or (None, False, "") in reported:
            continue
        reported.add((None, False, ""))
        yield Finding(
            "no-boot-file",
            Severity.ERROR,
            mac,
            f"{mac} is a PXE client (option 93) but the ACK from {ack.server} names no boot file "
            "(option 67 and the file field are empty) and no ProxyDHCP offered one: the "
            "firmware has nothing to load.",
            (_ev(ack, "ACK without a boot file"),),
        )


def _ipxe_wait(ctx: _Context, mac: str) -> Iterable[Finding]:
    msgs = ctx.dhcp_of(mac)
    for req in msgs:
        if req.kind != "REQUEST" or not pxe.is_ipxe(req.packet):
            continue
        offers = [m for m in msgs if m.kind == "OFFER" and m.packet.xid == req.packet.xid]
        if not offers or any(m.proxy for m in offers):
            continue
        wait = req.time - offers[0].time
        no_wait = any(
            pxe.parse_ipxe_encap(m.packet.options.get(Option.IPXE_ENCAP, b"")).get(
                pxe.IpxeSetting.NO_PXEDHCP
            )
            == b"\x01"
            for m in offers
            if _safe_encap(m)
        )
        if wait >= 2.5 and not no_wait:
            yield Finding(
                "ipxe-proxydhcp-wait",
                Severity.INFO,
                mac,
                f"iPXE waited {wait:.1f} s between the first OFFER and its REQUEST, listening "
                "for ProxyDHCP offers. Put option 175 sub-option 176 (no-pxedhcp) = 1 in the "
                "OFFER to skip the wait.",
                (_ev(offers[0], "first OFFER"), _ev(req, "REQUEST")),
            )
            return


def _safe_encap(m: DhcpMessage) -> bool:
    """Option 175 of ``m`` decodes (a malformed one teaches nothing)."""
    try:
        pxe.parse_ipxe_encap(m.packet.options.get(Option.IPXE_ENCAP, b""))
    except DhcpError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# files


def _dhcp_boot_files(msgs: Sequence[DhcpMessage], before: float) -> list[str]:
    return [m.boot_file for m in msgs if m.is_reply and m.boot_file and m.time <= before]


def _files(ctx: _Context, mac: str) -> Iterable[Finding]:
    msgs = ctx.dhcp_of(mac)
    transfers = ctx.tftp_of(mac)
    for t in transfers:
        fail = t.failure
        if t.ending == Ending.ERROR and fail is not None:
            boot_files = _dhcp_boot_files(msgs, t.request_time)
            is_boot = bool(boot_files) and _same_file(boot_files[-1], t.filename)
            evidence = (
                Evidence(t.request_frame, t.request_time, f'RRQ "{t.filename}"'),
                Evidence(fail.frame, fail.time, f'ERROR {fail.code} "{fail.message}"'),
            )
            if fail.code == 1 and is_boot:
                yield Finding(
                    "boot-file-not-found",
                    Severity.ERROR,
                    mac,
                    f'the boot file DHCP gave ("{boot_files[-1]}") is not on TFTP server '
                    f'{t.server}: ERROR 1 "{fail.message}". Put it in the boot root '
                    "(pxeforge assets fetch) or fix the file name in the DHCP answer.",
                    evidence,
                )
            elif fail.code == 1:
                if probe_miss(t.filename):
                    continue
                later = any(
                    _base(o.filename) == _base(t.filename)
                    and o.request_time > t.request_time
                    and o.ending in (Ending.COMPLETE, Ending.NOT_CAPTURED)
                    for o in transfers
                )
                if later:
                    continue
                yield Finding(
                    "file-not-found",
                    Severity.WARNING,
                    mac,
                    f'"{t.filename}" is not on TFTP server {t.server} (ERROR 1) and was not '
                    "found under another name later: the loader that asked for it will fail "
                    "or fall back.",
                    evidence,
                )
            else:
                yield Finding(
                    "tftp-error",
                    Severity.ERROR if is_boot else Severity.WARNING,
                    mac,
                    f'TFTP server {t.server} refused "{t.filename}": ERROR {fail.code} '
                    f'"{fail.message}".',
                    evidence,
                )
        elif t.ending == Ending.NO_ANSWER:
            times = len(t.request_resends) + 1
            yield Finding(
                "tftp-no-answer",
                Severity.ERROR,
                mac,
                f'nobody answered the request for "{t.filename}" sent to {t.server}:69 '
                f"({times} time{'s' if times > 1 else ''}): no TFTP server there, a firewall, "
                "or a wrong next-server in the DHCP answer.",
                (
                    Evidence(t.request_frame, t.request_time, f'RRQ "{t.filename}"'),
                    *(Evidence(f, t.request_time, "RRQ again") for f in t.request_resends[:4]),
                ),
            )
        elif t.ending == Ending.ABORTED and fail is not None:
            yield Finding(
                "tftp-aborted",
                Severity.WARNING,
                mac,
                f'the client aborted "{t.filename}" at block {t.blocks}: ERROR {fail.code} '
                f'"{fail.message}".',
                (Evidence(fail.frame, fail.time, f"client ERROR {fail.code}"),),
            )
    for x in ctx.http_of(mac):
        if x.status is None or x.status < 400:
            continue
        role = http_role(x)
        ev = (
            Evidence(x.request_frame, x.request_time, f"{x.method} {x.target}"),
            Evidence(x.response_frame or x.end_frame, x.response_time or x.end_time, f"{x.status}"),
        )
        if role == "lookup":
            yield Finding(
                "agent-lookup-failed",
                Severity.WARNING,
                mac,
                f"the ramdisk agent's lookup ({x.target}) got {x.status} {x.reason}: no node "
                "matches its MACs, or the node is not in a state that waits for the agent.",
                ev,
            )
        elif x.status == 404:
            yield Finding(
                "boot-file-not-found",
                Severity.ERROR,
                mac,
                f"HTTP 404 for {x.path} from {x.server}:{x.server_port}: the file is not "
                "there (or, for /ipxe, no boot spec exists for this machine).",
                ev,
            )
        else:
            yield Finding(
                "http-error",
                Severity.WARNING,
                mac,
                f"HTTP {x.status} {x.reason} for {x.method} {x.path} from {x.server}.",
                ev,
            )


def _options(ctx: _Context, mac: str) -> Iterable[Finding]:
    refused: dict[str, list[TftpTransfer]] = defaultdict(list)
    for t in ctx.tftp_of(mac):
        if t.server_port is None or t.ending in (Ending.ERROR, Ending.NO_ANSWER):
            continue
        if t.oack is None and t.first_data_frame is None:
            continue
        for name in t.refused_options:
            if name in ("blksize", "windowsize"):
                refused[name].append(t)
    for name, transfers in refused.items():
        first = transfers[0]
        asked = first.options[name]
        evidence = []
        for t in transfers[:6]:
            evidence.append(
                Evidence(
                    t.request_frame, t.request_time, f'RRQ "{t.filename}" {name}={t.options[name]}'
                )
            )
            if t.oack_frame is not None:
                evidence.append(Evidence(t.oack_frame, t.request_time, "OACK without " + name))
            elif t.first_data_frame is not None and t.first_data_time is not None:
                evidence.append(
                    Evidence(t.first_data_frame, t.first_data_time, "DATA 1: no OACK at all")
                )
        count = len(transfers)
        where = f"{count} transfer{'s' if count > 1 else ''} from {first.server}"
        if name == "blksize":
            yield Finding(
                "tftp-option-refused",
                Severity.WARNING,
                mac,
                f"the client asked blksize={asked} and the server did not acknowledge it "
                f"({where}): the transfer falls back to 512-byte blocks (RFC 2348), about "
                f"{max(int(asked) // 512, 1) if asked.isdigit() else 'several'}× more round "
                "trips.",
                tuple(evidence[:_EVIDENCE_MAX]),
            )
        else:
            yield Finding(
                "tftp-option-refused",
                Severity.INFO,
                mac,
                f"the client asked windowsize={asked} (RFC 7440) and the server did not "
                f"acknowledge it ({where}): one ACK per block instead of one per {asked}; "
                "granting it is a free speed-up.",
                tuple(evidence[:_EVIDENCE_MAX]),
            )


def _storms(ctx: _Context, mac: str) -> Iterable[Finding]:
    for t in ctx.tftp_of(mac):
        storm = t.retransmits >= STORM_MIN and t.retransmits >= STORM_RATIO * max(t.blocks, 1)
        if not storm:
            continue
        share = 100 * t.retransmits / max(t.blocks, 1)
        failed = t.ending in (Ending.TIMED_OUT, Ending.UNFINISHED)
        yield Finding(
            "retransmit-storm",
            Severity.ERROR if failed else Severity.WARNING,
            mac,
            f'{t.server} sent {t.retransmits} DATA blocks of "{t.filename}" again '
            f"({share:.0f}% of {t.blocks}; {t.duplicate_acks} duplicate ACKs): packets are lost, "
            "the client is slower than the window/block size, or two servers answer the same "
            "request. Check the link and try a smaller blksize/windowsize.",
            tuple(Evidence(f, t.request_time, "DATA sent again") for f in t.retransmit_frames)
            + (Evidence(t.request_frame, t.request_time, f'RRQ "{t.filename}"'),),
        )


def _ipxe_loop(ctx: _Context, mac: str) -> Iterable[Finding]:
    msgs = ctx.dhcp_of(mac)
    given: list[tuple[DhcpMessage, DhcpMessage]] = []
    for reply in msgs:
        if reply.kind != "ACK" or not reply.boot_file or not is_ipxe_loader(reply.boot_file):
            continue
        req = _request_for(reply, msgs)
        if req is not None and pxe.is_ipxe(req.packet):
            given.append((req, reply))
    if not given:
        return
    loader = given[0][1].boot_file or ""
    fetches = [t for t in ctx.tftp_of(mac) if _base(t.filename) == _base(loader)]
    http_fetches = [x for x in ctx.http_of(mac) if _base(x.path) == _base(loader)]
    count = len(fetches) + len(http_fetches)
    evidence = [_ev(req, f"{req.kind} from iPXE (user class iPXE)") for req, _ in given[:3]]
    evidence += [_ev(ack, f'ACK: file "{ack.boot_file}"') for _, ack in given[:3]]
    evidence += [
        Evidence(t.request_frame, t.request_time, f'RRQ "{t.filename}"') for t in fetches[:4]
    ]
    severe = count >= 2 or len(given) >= 2
    yield Finding(
        "ipxe-loop",
        Severity.ERROR if severe else Severity.WARNING,
        mac,
        f'iPXE asked for its boot file and was given "{loader}" — an iPXE loader — '
        f"{len(given)} time(s), fetched {count} time(s): it will load itself in a loop. "
        'Recognise iPXE (option 77 "iPXE" or option 175) and answer it with a script URL '
        "(http://…/boot.ipxe) instead of the loader.",
        tuple(sorted(evidence, key=lambda e: e.frame)[:_EVIDENCE_MAX]),
    )


def _silent(ctx: _Context, client: Client) -> Iterable[Finding]:
    mac = client.mac
    quiet = ctx.end_time - client.last_time
    if quiet < ctx.silent_after:
        return
    why: str | None = None
    evidence: list[Evidence] = [
        Evidence(client.last_frame, client.last_time, "last packet from the client")
    ]
    transfers = ctx.tftp_of(mac)
    exchanges = ctx.http_of(mac)
    msgs = ctx.dhcp_of(mac)
    pending_t = [
        t
        for t in transfers
        if t.ending in (Ending.UNFINISHED, Ending.TIMED_OUT) and t.end_time >= client.last_time - 5
    ]
    pending_x = [
        x
        for x in exchanges
        if x.outcome in ("incomplete", "no-response") and x.end_time >= client.last_time - 5
    ]
    last_dhcp = msgs[-1] if msgs else None
    last_fetch = max(
        [t.request_time for t in transfers] + [x.request_time for x in exchanges], default=None
    )
    if pending_t:
        t = pending_t[-1]
        size = f"{human_bytes(t.bytes)} in {t.blocks} blocks"
        of = f" of {human_bytes(t.tsize)}" if t.tsize else ""
        why = f'in the middle of the TFTP transfer of "{t.filename}" ({size}{of} received)'
        evidence.append(Evidence(t.request_frame, t.request_time, f'RRQ "{t.filename}"'))
    elif pending_x:
        x = pending_x[-1]
        why = f"in the middle of HTTP {x.method} {x.path}"
        evidence.append(Evidence(x.request_frame, x.request_time, f"{x.method} {x.path}"))
    elif (
        last_dhcp is not None
        and last_dhcp.kind == "OFFER"
        and last_dhcp.time >= client.last_time - 5
    ):
        why = f"after an OFFER from {last_dhcp.server} (no REQUEST)"
        evidence.append(_ev(last_dhcp, "OFFER"))
    elif (
        last_dhcp is not None
        and last_dhcp.kind == "ACK"
        and last_dhcp.boot_file
        and (last_fetch is None or last_fetch < last_dhcp.time)
        and pxe.client_arch((_request_for(last_dhcp, msgs) or last_dhcp).packet) is not None
    ):
        why = (
            f'after its ACK named the boot file "{last_dhcp.boot_file}", which it never asked '
            "for (wrong next-server, a firewall on TFTP/HTTP, or a file it cannot use)"
        )
        evidence.append(_ev(last_dhcp, "ACK"))
    if why is None:
        return
    yield Finding(
        "client-silent",
        Severity.ERROR,
        mac,
        f"{mac} went silent {why}: its last packet is {quiet:.1f} s before the end of the capture.",
        tuple(evidence),
    )


def _capture(ctx: _Context) -> Iterable[Finding]:
    d = ctx.decoded
    missing_tftp = [t for t in d.tftp if t.ending == Ending.NOT_CAPTURED]
    missing_blocks = sum(t.missing_blocks for t in d.tftp)
    parts: list[str] = []
    evidence: list[Evidence] = []
    if d.http_missing_bytes:
        parts.append(
            f"{human_bytes(d.http_missing_bytes)} of HTTP the peers acknowledged is not in it"
        )
        for x in d.http:
            if x.missing_bytes:
                evidence.append(
                    Evidence(
                        x.request_frame,
                        x.request_time,
                        f"{x.method} {x.path}: {human_bytes(x.missing_bytes)} missing",
                    )
                )
    if missing_tftp:
        parts.append(f"{len(missing_tftp)} TFTP transfer(s) have no data packets")
        evidence += [
            Evidence(t.request_frame, t.request_time, f'RRQ "{t.filename}": no DATA captured')
            for t in missing_tftp
        ]
    if missing_blocks:
        parts.append(f"{missing_blocks} TFTP blocks are missing")
    if ctx.snaplen_cut:
        parts.append(f"{ctx.snaplen_cut} frames were cut by the snap length")
    if parts:
        yield Finding(
            "capture-incomplete",
            Severity.INFO,
            None,
            "the capture does not hold every packet ("
            + "; ".join(parts)
            + "): sizes come from sequence numbers and some outcomes are inferred. Capture "
            "with tcpdump -i <bridge> -s 0 --immediate-mode -U -w FILE, without a port filter "
            "(TFTP data uses ephemeral ports).",
            tuple(evidence[:_EVIDENCE_MAX]),
        )
    if d.notes:
        notes = [n for n in d.notes if n.frame is not None]
        yield Finding(
            "malformed-packets",
            Severity.INFO,
            None,
            f"{len(d.notes)} packet(s) could not be decoded: "
            + "; ".join(n.text for n in d.notes[:3]),
            tuple(Evidence(n.frame or 0, n.time or 0.0, n.text) for n in notes[:_EVIDENCE_MAX]),
        )


_PER_CLIENT: tuple[Callable[[_Context, str], Iterable[Finding]], ...] = (
    _rogue,
    _offers,
    _loader,
    _files,
    _options,
    _storms,
    _ipxe_loop,
    _ipxe_wait,
)


def find(
    decoded: Decoded,
    clients: Sequence[Client],
    end_time: float,
    *,
    silent_after: float = DEFAULT_SILENT_AFTER,
    snaplen_cut: int = 0,
) -> list[Finding]:
    """Every finding, most severe first, then in time order."""
    ctx = _Context(decoded, clients, end_time, silent_after, snaplen_cut)
    out: list[Finding] = []
    for client in clients:
        for rule in _PER_CLIENT:
            out.extend(rule(ctx, client.mac))
        out.extend(_silent(ctx, client))
    out.extend(_capture(ctx))
    out.sort(key=lambda f: (f.severity.rank, f.time, f.code))
    return out
