"""Per-client timelines: events in words, boot stages, and the config searches recognised.

Theory of operation
-------------------
`build` groups everything `decode` found by client MAC (DHCP by ``chaddr``; TFTP and HTTP by
the Ethernet source of the client's packets, else by the address DHCP gave that MAC) and
turns it into `Event`s: one per DHCP message (every option decoded by `explain`), one per
HTTP exchange, one per TFTP transfer — except runs of configuration lookups, which become one
`ConfigSearch` event each, because that is what they are:

* pxelinux (syslinux ``doc/pxelinux.txt``): ``pxelinux.cfg/<uuid>``, ``01-<mac>``, the IP as
  8 hex digits and its 7 shorter prefixes, then ``default``; the first file found wins.
* GRUB: ``grub.cfg-01-<mac>`` / ``grub.cfg-<mac>`` / ``grub.cfg-<hex IP>`` … then
  ``grub.cfg``; Debian's grubnetx64 first reads ``x86_64-efi/*.lst`` (misses are normal).
* shim's optional files (``revocations_*.efi``, ``shim_certificate_*.efi``): misses are normal.

A `Stage` is one DHCP identity of the client — PXE firmware, then iPXE, then the booted OS
each send a different option 60/77/93 — with the boot file its server gave and the files it
fetched until the next stage began. The stages in order are the boot chain.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from types import MappingProxyType
from urllib.parse import parse_qsl

from pxeforge.boot.firmware import firmware_for_arch
from pxeforge.errors import DhcpError
from pxeforge.protocols import pxe
from pxeforge.protocols.dhcp import Option
from pxeforge.trace.decode import Decoded, DhcpMessage, Ending, HttpExchange, TftpTransfer
from pxeforge.trace.explain import arch_label, explain_option, option_name

__all__ = [
    "CALLBACK_PATHS",
    "Client",
    "ConfigSearch",
    "Event",
    "Stage",
    "build",
    "http_role",
    "human_bytes",
    "probe_miss",
]

CALLBACK_PATHS = ("/_pxeforge/callback", "/cb", "/callback")  # pxeforge's lab, older lab
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_MAC_01 = re.compile(r"^01-(?:[0-9a-f]{2}-){5}[0-9a-f]{2}$", re.I)
_MAC_ANY = re.compile(r"^(?:01-)?(?:[0-9a-f]{2}[-:]){5}[0-9a-f]{2}$", re.I)
_HEX_IP = re.compile(r"^[0-9A-F]{1,8}$")
_SHIM_PROBES = re.compile(r"^(revocations_[a-z]+\.efi|shim_certificate_\d+\.efi|[mf]b\w+\.efi)$")


def human_bytes(count: int) -> str:
    """``8.2 MB`` (decimal units, as transfer rates are usually given)."""
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} PB"


def _rate(count: int, seconds: float) -> str:
    if seconds <= 0 or count <= 0:
        return ""
    return f"{human_bytes(int(count / seconds))}/s"


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a client's timeline, with its explanation."""

    time: float
    frame: int
    client: str
    kind: str  # "dhcp", "tftp", "http", "config-search"
    summary: str
    details: tuple[str, ...] = ()
    data: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ConfigSearch:
    """A run of configuration-file lookups by one loader."""

    loader: str  # "pxelinux", "grub", "shim"
    client: str
    transfers: tuple[TftpTransfer, ...]
    steps: tuple[str, ...]  # each name: "uuid", "01-mac", "hex-ip/8", "default", "optional"…
    served: tuple[str, ...]

    @property
    def summary(self) -> str:
        served = ", ".join(self.served) if self.served else "nothing"
        if self.loader == "shim":
            names = ", ".join(t.filename.rsplit("/", 1)[-1] for t in self.transfers)
            return f"shim probed its optional files ({names}); served: {served}"
        what = (
            "pxelinux looked for its config"
            if self.loader == "pxelinux"
            else ("GRUB looked for its config")
        )
        return f"{what}: {_fold_steps(self.steps)}; served: {served}"


def _fold_steps(steps: Sequence[str]) -> str:
    """``uuid → 01-mac → 8 hex-IP prefixes → default``."""
    out: list[str] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        if step.startswith("hex-ip/"):
            j = i
            while j + 1 < len(steps) and steps[j + 1].startswith("hex-ip/"):
                j += 1
            count = j - i + 1
            out.append("1 hex-IP name" if count == 1 else f"{count} hex-IP prefixes")
            i = j + 1
            continue
        if step == "module-list":
            j = i
            while j + 1 < len(steps) and steps[j + 1] == "module-list":
                j += 1
            out.append(f"{j - i + 1} module lists (*.lst)")
            i = j + 1
            continue
        out.append(step)
        i += 1
    return " → ".join(out)


@dataclass(frozen=True, slots=True)
class Stage:
    """One DHCP identity of a client in the boot chain, and what it fetched."""

    label: str
    arch: int | None
    vendor_class: str | None
    user_classes: tuple[str, ...]
    ipxe: bool
    first_frame: int
    first_time: float
    server: IPv4Address | None
    address: IPv4Address | None
    boot_file: str | None
    next_server: IPv4Address | None
    files: tuple[str, ...]  # fetched (TFTP file names and HTTP paths), in order


@dataclass(frozen=True, slots=True)
class Client:
    """Everything one MAC did, summarised."""

    mac: str
    addresses: tuple[IPv4Address, ...]
    arch: int | None
    uuid: str | None
    first_time: float
    last_time: float  # last frame sent by the client (any protocol)
    last_frame: int
    stages: tuple[Stage, ...]
    files: tuple[str, ...]
    searches: tuple[ConfigSearch, ...]
    callback: bool  # the lab callback or an agent heartbeat arrived

    @property
    def arch_name(self) -> str:
        return arch_label(self.arch)

    @property
    def chain(self) -> tuple[str, ...]:
        """The boot chain: each stage, the file it was given, then what it fetched."""
        out: list[str] = []
        for stage in self.stages:
            out.append(stage.label)
            fetched: list[str] = []
            for name in (_short(f) for f in stage.files):
                if name not in fetched:
                    fetched.append(name)
            given = _short(stage.boot_file) if stage.boot_file else None
            if given and given not in fetched and not stage.label.startswith("OS"):
                out.append(f"{given} (not fetched)")
            out.extend(fetched)
        if self.callback:
            out.append("callback")
        return tuple(out)


def _short(name: str) -> str:
    """A file name or URL as people say it: ``boot.ipxe`` for ``http://…/boot.ipxe``."""
    path = name.split("?", 1)[0].rstrip("/")
    return path.rsplit("/", 1)[-1] or name


# --------------------------------------------------------------------------------------------
# probes and roles


def probe_miss(name: str) -> bool:
    """A file whose absence is normal: config lookups, GRUB module lists, shim's extras."""
    low = name.lower().lstrip("/")
    base = low.rsplit("/", 1)[-1]
    if "pxelinux.cfg/" in low or base.startswith("grub.cfg") or base.endswith(".lst"):
        return True
    return bool(_SHIM_PROBES.match(base))


def http_role(x: HttpExchange) -> str:
    """What a request is for: ``callback``, ``lookup``, ``heartbeat``, ``script`` or ``file``."""
    path = x.path
    if path in CALLBACK_PATHS:
        return "callback"
    if path.startswith("/v1/lookup"):
        return "lookup"
    if path.startswith("/v1/heartbeat/"):
        return "heartbeat"
    if path.endswith(".ipxe") or path == "/ipxe" or x.body_prefix.startswith(b"#!ipxe"):
        return "script"
    return "file"


# --------------------------------------------------------------------------------------------
# DHCP events


def _options_lines(msg: DhcpMessage) -> list[str]:
    p = msg.packet
    lines: list[str] = []
    for code, value in p.options.items():
        try:
            text = explain_option(p, code, value)
        except (DhcpError, ValueError) as exc:
            text = f"{value.hex()} (cannot decode: {exc})"
        lines.append(f"{code:>3} {option_name(code):<24} {text}")
    return lines


def _dhcp_event(msg: DhcpMessage, client: str, seen: dict[tuple[str, str], int]) -> Event:
    p = msg.packet
    route = f"{msg.src}:{msg.sport} → {msg.dst}:{msg.dport}"
    details: list[str] = []
    header: list[str]
    if not msg.is_reply:
        where = "PXE boot-server " if msg.boot_server_port else ""
        summary = f"{where}DHCP {msg.kind}  {route}  xid {p.xid:#010x}, secs {p.secs}"
        header = [
            "broadcast flag set: replies must be broadcast"
            if p.broadcast
            else "broadcast flag clear: replies may be unicast"
        ]
        if int(p.ciaddr):
            header.append(f"ciaddr {p.ciaddr}")
        if int(p.giaddr):
            header.append(f"relayed by {p.giaddr}")
    else:
        proxy = (
            "ProxyDHCP"
            if msg.proxy
            else ("PXE boot-server DHCP" if msg.boot_server_port else "DHCP")
        )
        server_id = msg.server_id
        who = (
            str(msg.src)
            if server_id is None or server_id == msg.src
            else f"{msg.src} (server id {server_id})"
        )
        what: list[str] = []
        if int(p.yiaddr):
            what.append(f"address {p.yiaddr}")
        elif msg.kind in ("OFFER", "ACK"):
            what.append("no address")
        if int(p.siaddr):
            what.append(f"next-server {p.siaddr}")
        if msg.boot_file:
            what.append(f'file "{msg.boot_file}"')
        elif msg.kind in ("OFFER", "ACK"):
            what.append("no boot file")
        message = p.text(Option.MESSAGE)
        if message:
            what.append(f'message "{message}"')
        summary = f"{proxy} {msg.kind} from {who} → {msg.dst}:{msg.dport}: " + ", ".join(what)
        header = [f"xid {p.xid:#010x}"]
        sname = p.sname.split(b"\0", 1)[0].decode("latin-1")
        file_field = p.file.split(b"\0", 1)[0].decode("latin-1")
        if sname:
            header.append(f'sname "{sname}"')
        header.append(f'file field "{file_field}"' if file_field else "file field empty")
        if int(p.giaddr):
            header.append(f"via relay {p.giaddr}")
    key = (
        msg.kind + ("<" if msg.is_reply else ">") + str(msg.server if msg.is_reply else ""),
        repr(sorted(p.options.items())),
    )
    first = seen.get(key)
    if first is None:
        seen[key] = msg.frame
        details.append("; ".join(header))
        details.extend(_options_lines(msg))
    else:
        details.append("; ".join([*header, f"options as in #{first}"]))
    data: dict[str, object] = {
        "message": msg.kind,
        "xid": p.xid,
        "src": f"{msg.src}:{msg.sport}",
        "dst": f"{msg.dst}:{msg.dport}",
        "options": {str(code): value.hex() for code, value in p.options.items()},
    }
    if msg.is_reply:
        data.update(
            server=str(msg.server),
            yiaddr=str(p.yiaddr),
            siaddr=str(p.siaddr),
            file=msg.boot_file,
            proxy=msg.proxy,
        )
    else:
        arch = pxe.client_arch(p)
        data.update(
            arch=arch,
            vendor_class=pxe.vendor_class(p),
            user_class=list(pxe.user_classes(p)),
            ipxe=pxe.is_ipxe(p),
            secs=p.secs,
            broadcast=p.broadcast,
        )
    return Event(
        msg.time, msg.frame, client, "dhcp", summary, tuple(details), MappingProxyType(data)
    )


# --------------------------------------------------------------------------------------------
# TFTP events


def _options_text(options: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def transfer_result(t: TftpTransfer) -> str:
    """How a transfer ended, in one line."""
    size = f"{t.bytes} bytes ({human_bytes(t.bytes)})" if t.bytes >= 1000 else f"{t.bytes} bytes"
    retrans = (
        "no retransmits"
        if not t.retransmits
        else f"{t.retransmits} retransmit{'s' if t.retransmits != 1 else ''}"
    )
    window = f", windowsize {t.windowsize}" if t.windowsize > 1 else ""
    rate = _rate(t.bytes, t.seconds)
    timing = f"{t.seconds:.3f} s" + (f" ({rate})" if rate else "")
    fail = t.failure
    match t.ending:
        case Ending.COMPLETE:
            tail = "" if t.last_ack_seen else " (its last ACK is not in the capture)"
            gaps = f", {t.missing_blocks} blocks not in the capture" if t.missing_blocks else ""
            return (
                f"complete: {size} in {t.blocks} blocks of {t.blksize}{window}, {timing}, "
                f"{retrans}{gaps}{tail}"
            )
        case Ending.PROBE:
            assert fail is not None
            tsize = t.tsize
            if "tsize" in t.options and tsize is not None:
                return (
                    f'client abort after the OACK (ERROR {fail.code} "{fail.message}"): a size '
                    f"probe — OVMF asks tsize=0, learns the size ({tsize} bytes) and asks again"
                )
            return f'client abort after the OACK (ERROR {fail.code} "{fail.message}")'
        case Ending.ABORTED:
            assert fail is not None
            return (
                f'client aborted at block {t.blocks} (ERROR {fail.code} "{fail.message}") '
                f"after {size}"
            )
        case Ending.ERROR:
            assert fail is not None
            return f'error {fail.code} "{fail.message}" from the server'
        case Ending.TIMED_OUT:
            return (
                f"timed out: block {t.blocks} sent {t.tail_resends + 1} times with no ACK; "
                f"{size} moved before, {retrans}"
            )
        case Ending.NOT_CAPTURED:
            return (
                "not in the capture: no DATA or ACK captured after the "
                + ("OACK" if t.oack is not None else "request")
                + ", yet the client carried on (a filtered capture?)"
            )
        case Ending.NO_ANSWER:
            resent = f", sent {len(t.request_resends) + 1} times" if t.request_resends else ""
            return f"no answer from {t.server}:69{resent}"
        case _:
            return (
                f"unfinished: {size} in {t.blocks} blocks of {t.blksize}, last packet "
                f"#{t.end_frame}, {retrans}"
            )


def _tftp_event(t: TftpTransfer, client: str, after: str = "") -> Event:
    opts = _options_text(t.options)
    summary = (
        f'TFTP {t.opcode} "{t.filename}" {t.mode}{" " + opts if opts else ""}  '
        f"{t.client}:{t.client_port} → {t.server}:69"
    )
    details: list[str] = []
    if t.request_resends:
        frames = ", ".join(f"#{f}" for f in t.request_resends)
        details.append(f"request sent again: {frames}")
    if t.oack is not None:
        details.append(f"OACK #{t.oack_frame} from port {t.server_port}: {_options_text(t.oack)}")
    elif t.server_port is not None and t.first_data_frame is not None and t.options:
        details.append("no OACK: the server ignored every option (RFC 1350 transfer)")
    refused = [
        k for k in t.refused_options if t.server_port is not None and t.ending != Ending.ERROR
    ]
    if refused and t.oack is not None:
        details.append(
            "not acknowledged: "
            + ", ".join(
                f"{k}={t.options[k]} ({_OPTION_RFC.get(k, 'unknown option')})" for k in refused
            )
        )
    if t.stray_packets:
        details.append(
            f"{t.stray_packets} datagrams from a second server port (RRQ answered twice)"
        )
    where = f"#{t.failure.frame} " if t.failure is not None else ""
    details.append(f"→ {where}{transfer_result(t)}")
    if after:
        details.append(after)
    data: dict[str, object] = {"transfer": t.index}
    return Event(
        t.request_time,
        t.request_frame,
        client,
        "tftp",
        summary,
        tuple(details),
        MappingProxyType(data),
    )


_OPTION_RFC = {
    "blksize": "RFC 2348",
    "tsize": "RFC 2349",
    "timeout": "RFC 2349",
    "windowsize": "RFC 7440",
}


# --------------------------------------------------------------------------------------------
# config searches


def _pxelinux_step(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    if base == "default":
        return "default"
    if _UUID.match(base):
        return "uuid"
    if _MAC_01.match(base):
        return "01-mac"
    if _HEX_IP.match(base):
        return f"hex-ip/{len(base)}"
    return base


def _grub_step(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    if base.endswith(".lst"):
        return "module-list"
    if base == "grub.cfg":
        return "grub.cfg"
    suffix = base[len("grub.cfg-") :] if base.startswith("grub.cfg-") else base
    if _MAC_01.match(suffix):
        return "grub.cfg-01-mac"
    if _MAC_ANY.match(suffix):
        return "grub.cfg-mac"
    if _UUID.match(suffix):
        return "grub.cfg-uuid"
    if _HEX_IP.match(suffix):
        return f"hex-ip/{len(suffix)}"
    return base


def _search_kind(t: TftpTransfer) -> str | None:
    low = t.filename.lower()
    base = low.rsplit("/", 1)[-1]
    if "pxelinux.cfg/" in low:
        return "pxelinux"
    if base.startswith("grub.cfg") or (base.endswith(".lst") and "efi" in low):
        return "grub"
    if _SHIM_PROBES.match(base):
        return "shim"
    return None


def _served(t: TftpTransfer) -> bool:
    return t.ending in (Ending.COMPLETE, Ending.NOT_CAPTURED, Ending.UNFINISHED)


def _searches(client: str, transfers: Sequence[TftpTransfer]) -> list[ConfigSearch]:
    out: list[ConfigSearch] = []
    run: list[TftpTransfer] = []
    kind: str | None = None

    def close() -> None:
        if run and kind is not None and (len(run) > 1 or kind != "shim" or not _served(run[0])):
            if kind == "pxelinux":
                steps = tuple(_pxelinux_step(t.filename) for t in run)
            elif kind == "grub":
                steps = tuple(_grub_step(t.filename) for t in run)
            else:
                steps = tuple("optional" for _ in run)
            served = tuple(t.filename.rsplit("/", 1)[-1] for t in run if _served(t))
            out.append(ConfigSearch(kind, client, tuple(run), steps, served))
        run.clear()

    for t in transfers:
        k = _search_kind(t)
        if k is not None and k == kind:
            run.append(t)
            continue
        close()
        kind = k
        if k is not None:
            run.append(t)
    close()
    return out


def _search_event(s: ConfigSearch, uuid: str | None, mac: str, ips: Iterable[IPv4Address]) -> Event:
    first = s.transfers[0]
    details: list[str] = []
    dirs = {t.filename.rpartition("/")[0] for t in s.transfers}
    common = dirs.pop() if len(dirs) == 1 else None
    if common:
        details.append(f"in {common}/:")
    names = [t.filename.rpartition("/")[2] if common else t.filename for t in s.transfers]
    name_width = min(max(len(n) for n in names), 48)
    step_width = max(len(step) for step in s.steps)
    for t, name, step in zip(s.transfers, names, s.steps, strict=True):
        if t.ending == Ending.ERROR and t.failure is not None:
            result = f"ERROR {t.failure.code}"
        elif _served(t):
            result = f"served ({t.bytes} bytes)" if t.ending == Ending.COMPLETE else "served"
        else:
            result = str(t.ending)
        check = _check_step(step, t.filename, uuid, mac, ips)
        details.append(
            f"#{t.request_frame:<6} {name:<{name_width}}  {step:<{step_width}}  {result}{check}"
        )
    data = {
        "loader": s.loader,
        "steps": list(s.steps),
        "served": list(s.served),
        "transfers": [t.index for t in s.transfers],
    }
    return Event(
        first.request_time,
        first.request_frame,
        s.client,
        "config-search",
        s.summary,
        tuple(details),
        MappingProxyType(data),
    )


def _check_step(
    step: str, name: str, uuid: str | None, mac: str, ips: Iterable[IPv4Address]
) -> str:
    base = name.rsplit("/", 1)[-1]
    if step == "uuid" and uuid is not None:
        return "  = option 97" if base.lower() == uuid else f"  ≠ option 97 ({uuid})"
    if step == "01-mac":
        want = "01-" + mac.replace(":", "-")
        return "  = MAC" if base.lower() == want else f"  ≠ MAC ({want})"
    if step == "hex-ip/8":
        for ip in ips:
            if base.upper() == f"{int(ip):08X}":
                return f"  = {ip}"
        return ""
    return ""


# --------------------------------------------------------------------------------------------
# HTTP events


def _ipxe_script_lines(body: bytes) -> list[str]:
    text = body.decode("utf-8", errors="replace")
    keep = ("kernel", "initrd", "chain", "imgfetch", "module", "boot", "sanboot", "exit", "goto")
    out = [line.strip() for line in text.splitlines() if line.strip().split(" ", 1)[0] in keep]
    return out[:12]


def _http_event(x: HttpExchange, client: str) -> Event:
    role = http_role(x)
    target = x.target if len(x.target) <= 80 else x.target[:77] + "…"
    where = f"{x.server}:{x.server_port}"
    timing = f"{x.seconds:.3f} s"
    if x.head_captured:
        result = f"{x.status} {x.reason}".strip() + f", {x.body_bytes} bytes"
        if x.body_bytes >= 1000:
            result = f"{x.status} {x.reason}".strip() + f", {human_bytes(x.body_bytes)}"
        if not x.complete:
            result += " (incomplete)"
    elif x.wire_bytes:
        result = f"response head not captured; {human_bytes(x.wire_bytes)} sent by the server"
    else:
        result = "no response"
    rate = _rate(x.response_bytes, x.seconds) if x.response_bytes >= 100_000 else ""
    if rate:
        timing += f" ({rate})"
    summary = f"HTTP {x.method} {target} → {result} in {timing}  ({where})"
    label = {
        "callback": "boot callback",
        "lookup": "agent lookup",
        "heartbeat": "agent heartbeat",
    }.get(role)
    if label:
        summary = f"{label}: {summary}"
    details: list[str] = []
    if x.user_agent:
        details.append(f"user agent {x.user_agent}")
    query = x.target.split("?", 1)[1] if "?" in x.target else ""
    body = x.request_body
    json_body = body.lstrip().startswith(b"{")
    if role == "callback":
        params = dict(parse_qsl(query))
        if body and not json_body:
            params.update(parse_qsl(body.decode("latin-1")))  # a form, as busybox wget posts
        if json_body:
            details.append("body " + body.decode("utf-8", errors="replace")[:300])
        if params:
            shown = list(params.items())[:12]
            details.append("reported " + ", ".join(f"{k}={v}" for k, v in shown))
        details.append("the booted kernel ran and called back: the boot worked")
    elif role == "lookup":
        params = dict(parse_qsl(query))
        if params:
            details.append("looked up by " + ", ".join(f"{k}={v}" for k, v in params.items()))
        if x.status == 404:
            details.append(
                "no node matched: not enrolled, or not in a state that waits for the agent"
            )
    elif role == "heartbeat":
        node = x.path[len("/v1/heartbeat/") :]
        details.append(f"node {node}")
        if x.request_body:
            details.append("body " + x.request_body.decode("utf-8", errors="replace")[:300])
    if x.body_prefix.startswith(b"#!ipxe"):
        partial = "" if x.head_captured else " (as far as captured)"
        lines = _ipxe_script_lines(x.body_prefix)
        details.append(
            f"iPXE script{partial}: " + (" | ".join(lines) if lines else "no boot commands")
        )
    if x.missing_bytes:
        details.append(f"{human_bytes(x.missing_bytes)} of the response is not in the capture")
    data: dict[str, object] = {"exchange": x.index, "role": role}
    return Event(
        x.request_time,
        x.request_frame,
        client,
        "http",
        summary,
        tuple(details),
        MappingProxyType(data),
    )


# --------------------------------------------------------------------------------------------
# stages


def _stage_key(msg: DhcpMessage) -> tuple[object, ...]:
    p = msg.packet
    return (pxe.client_arch(p), pxe.vendor_class(p), pxe.user_classes(p), pxe.is_ipxe(p))


def _stage_label(msg: DhcpMessage) -> str:
    p = msg.packet
    arch = pxe.client_arch(p)
    vendor = pxe.vendor_class(p)
    ndi = pxe.ndi(p)
    undi = f", UNDI {ndi[1]}.{ndi[2]}" if ndi else ""
    if pxe.is_ipxe(p):
        return f"iPXE ({arch_label(arch)})" if arch is not None else "iPXE"
    if pxe.is_http_client(p):
        return f"UEFI HTTP boot ({arch_label(arch)})"
    if arch is not None or pxe.is_pxe_client(p):
        firmware = firmware_for_arch(arch)
        kind = "UEFI" if firmware.is_efi else ("BIOS" if firmware.value == "bios" else "")
        return f"{kind + ' ' if kind else ''}PXE firmware ({arch_label(arch)}{undi})"
    return f'OS DHCP client (vendor class "{vendor}")' if vendor else "OS DHCP client"


def _stages(
    msgs: Sequence[DhcpMessage],
    tftp: Sequence[TftpTransfer],
    http: Sequence[HttpExchange],
) -> list[Stage]:
    starts: list[tuple[DhcpMessage, list[DhcpMessage]]] = []
    key: tuple[object, ...] | None = None
    for msg in msgs:
        if msg.is_reply:
            if starts:
                starts[-1][1].append(msg)
            continue
        k = _stage_key(msg)
        if k != key:
            starts.append((msg, []))
            key = k
        else:
            starts[-1][1].append(msg)
    stages: list[Stage] = []
    for i, (first, rest) in enumerate(starts):
        until = starts[i + 1][0].time if i + 1 < len(starts) else float("inf")
        replies = [m for m in rest if m.is_reply and m.kind in ("OFFER", "ACK")]
        acks = [m for m in replies if m.kind == "ACK" and not m.proxy] or [
            m for m in replies if not m.proxy
        ]
        proxies = [m for m in replies if m.proxy or m.boot_server_port]
        best = acks[-1] if acks else None
        boot_file = best.boot_file if best is not None else None
        if proxies and proxies[-1].boot_file:
            boot_file = proxies[-1].boot_file
        files: list[str] = []
        fetched = [
            (t.request_time, t.filename) for t in tftp if first.time <= t.request_time < until
        ]
        fetched += [
            (x.request_time, x.path)
            for x in http
            if first.time <= x.request_time < until and http_role(x) in ("file", "script")
        ]
        for _, name in sorted(fetched):
            if not probe_miss(name) and name not in files:
                files.append(name)
        stages.append(
            Stage(
                label=_stage_label(first),
                arch=pxe.client_arch(first.packet),
                vendor_class=pxe.vendor_class(first.packet),
                user_classes=pxe.user_classes(first.packet),
                ipxe=pxe.is_ipxe(first.packet),
                first_frame=first.frame,
                first_time=first.time,
                server=best.server if best is not None else None,
                address=best.packet.yiaddr
                if best is not None and int(best.packet.yiaddr)
                else None,
                boot_file=boot_file,
                next_server=best.packet.siaddr
                if best is not None and int(best.packet.siaddr)
                else None,
                files=tuple(files),
            )
        )
    return stages


def _after(t: TftpTransfer, stages: Sequence[Stage]) -> str:
    """For a transfer the capture does not show finishing: did the loader run anyway?"""
    if t.ending not in (Ending.NOT_CAPTURED, Ending.UNFINISHED):
        return ""
    current = [s for s in stages if s.first_time <= t.request_time]
    later = [s for s in stages if s.first_time > t.end_time]
    if not current or not later:
        return ""
    given, nxt = current[-1], later[0]
    if not given.boot_file or _short(given.boot_file) != _short(t.filename):
        return ""
    return (
        f"the client's next DHCP (#{nxt.first_frame}, {nxt.first_time - t.end_time:.1f} s "
        f"later) came from {nxt.label}: {_short(t.filename)} was loaded and ran"
    )


# --------------------------------------------------------------------------------------------
# build


def _client_key(mac: str | None, ip: IPv4Address, ip_macs: Mapping[IPv4Address, str]) -> str:
    if mac is not None:
        return mac
    return ip_macs.get(ip, f"ip {ip}")


def build(
    decoded: Decoded,
    mac_last_seen: Mapping[str, tuple[int, float]],
    t0: float,
) -> tuple[list[Client], list[Event]]:
    """Clients (ordered by first appearance) and every event, in time order."""
    by_client_dhcp: dict[str, list[DhcpMessage]] = defaultdict(list)
    by_client_tftp: dict[str, list[TftpTransfer]] = defaultdict(list)
    by_client_http: dict[str, list[HttpExchange]] = defaultdict(list)
    for msg in decoded.dhcp:
        by_client_dhcp[msg.mac].append(msg)
    for t in decoded.tftp:
        by_client_tftp[_client_key(t.mac, t.client, decoded.ip_macs)].append(t)
    for x in decoded.http:
        by_client_http[_client_key(x.mac, x.client, decoded.ip_macs)].append(x)
    keys = {*by_client_dhcp, *by_client_tftp, *by_client_http}
    clients: list[Client] = []
    events: list[Event] = []
    for key in keys:
        msgs = by_client_dhcp.get(key, [])
        tftp = sorted(by_client_tftp.get(key, []), key=lambda t: t.request_frame)
        http = by_client_http.get(key, [])
        requests = [m for m in msgs if not m.is_reply]
        arch = next(
            (a for a in (pxe.client_arch(m.packet) for m in requests) if a is not None), None
        )
        uuid = None
        for m in requests:
            raw = m.packet.get(Option.CLIENT_UUID)
            if raw is not None:
                uuid = pxe.uuid_from_option97(raw)
                if uuid:
                    break
        addresses: list[IPv4Address] = []
        for m in msgs:
            if m.is_reply and m.kind in ("OFFER", "ACK") and int(m.packet.yiaddr):
                if m.packet.yiaddr not in addresses:
                    addresses.append(m.packet.yiaddr)
        for t in tftp:
            if t.client not in addresses:
                addresses.append(t.client)
        for x in http:
            if x.client not in addresses:
                addresses.append(x.client)
        seen: dict[tuple[str, str], int] = {}
        evs = [_dhcp_event(m, key, seen) for m in msgs]
        searches = _searches(key, tftp)
        in_search = {t.index for s in searches for t in s.transfers}
        evs += [_search_event(s, uuid, key, addresses) for s in searches]
        stages = _stages(msgs, tftp, http)
        evs += [_tftp_event(t, key, _after(t, stages)) for t in tftp if t.index not in in_search]
        evs += [_http_event(x, key) for x in http]
        evs.sort(key=lambda e: (e.time, e.frame))
        events.extend(evs)
        times = [e.time for e in evs]
        last = mac_last_seen.get(key)
        files: list[str] = []
        for name in [
            t.filename for t in tftp if t.ending in (Ending.COMPLETE, Ending.NOT_CAPTURED)
        ] + [x.path for x in http if http_role(x) in ("file", "script")]:
            if name not in files:
                files.append(name)
        clients.append(
            Client(
                mac=key,
                addresses=tuple(addresses),
                arch=arch,
                uuid=uuid,
                first_time=min(times) if times else t0,
                last_time=last[1] if last else (max(times) if times else t0),
                last_frame=last[0] if last else (max(e.frame for e in evs) if evs else 0),
                stages=tuple(stages),
                files=tuple(files),
                searches=tuple(searches),
                callback=any(http_role(x) in ("callback", "heartbeat") for x in http),
            )
        )
    clients.sort(key=lambda c: (c.first_time, c.mac))
    events.sort(key=lambda e: (e.time, e.frame))
    return clients, events
