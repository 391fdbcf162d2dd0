"""The doctor's rules: one small function each, over a `Subject`, yielding `Finding`s.

Each rule reads the machine's timeline events (the vocabulary of `pxeforge.timeline`) and its
node record, never anything else; `diagnose` runs them all (`RULES`) and sorts what they
found, most severe first. The wording and the loader facts come from `pxeforge trace`
(`trace.findings`, `trace.explain`): a capture and the live timeline tell the same story in
the same words.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from pxeforge.boot.firmware import firmware_for_arch
from pxeforge.doctor.model import Context, Evidence, Finding, Severity, Subject, epoch
from pxeforge.inventory.booter import DEPLOY_KERNEL_REF, DEPLOY_RAMDISK_REF
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import (
    ADOPTFAIL,
    CLEANFAIL,
    CLEANWAIT,
    DEPLOYFAIL,
    DEPLOYWAIT,
    ERROR,
    FAILURE_STATES,
    INSPECTFAIL,
    INSPECTWAIT,
    RESCUEFAIL,
    RESCUEWAIT,
    SERVICEFAIL,
    SERVICEWAIT,
    UNRESCUEFAIL,
    WAIT_STATES,
)
from pxeforge.recording import IP_PREFIX
from pxeforge.timeline import Event
from pxeforge.trace.explain import FileKind, arch_label, file_kind, firmware_loaders, loader_fits
from pxeforge.trace.findings import OFFER_PATIENCE, STORM_MIN, STORM_RATIO
from pxeforge.trace.timeline import human_bytes, probe_miss

__all__ = ["RULES", "WAIT_PATIENCE", "Rule", "diagnose"]

Rule = Callable[[Subject], Iterable[Finding]]

WAIT_PATIENCE: Final = 300.0
"""Seconds in a wait state before the doctor looks at how far the boot got (a TCG lab boot to
the agent takes 30–60 s; real servers POST for minutes)."""
AGENT_PATIENCE: Final = 180.0
"""Seconds from the ramdisk's download to the agent's lookup before that counts as never."""
_EVIDENCE_MAX: Final = 8
IP_KEY: Final = IP_PREFIX  # the timeline key of a client known by its address only
_SLACK: Final = 5.0  # seconds: a record's timestamp and the event that moved it differ a bit
_LOADER_KINDS: Final = frozenset(
    {
        FileKind.BIOS,
        FileKind.EFI,
        FileKind.EFI_X64,
        FileKind.EFI_IA32,
        FileKind.EFI_ARM64,
        FileKind.EFI_ARM32,
    }
)
_CHOSE_ANOTHER: Final = "chose another server"  # `recording`: a REQUEST for another server
_CLIENT_KINDS: Final = frozenset({"discover", "request", "inform", "release", "decline"})
_INSTALLER_DEPLOYS: Final = frozenset({"kickstart", "anaconda"})
_RECOVERY: Final[dict[str, str]] = {
    DEPLOYFAIL: "fix the cause, then deploy again (`pxeforge node deploy {id}`) or tear it down "
    "(`pxeforge node undeploy {id}`)",
    INSPECTFAIL: "fix the cause, then `pxeforge node manage {id}` and `pxeforge node inspect "
    "{id}` again",
    CLEANFAIL: "fix the cause, then `pxeforge node manage {id}` (and `pxeforge node provide "
    "{id}` to clean again)",
    RESCUEFAIL: "fix the cause, then rescue again, or unrescue the node",
    UNRESCUEFAIL: "fix the cause, then unrescue again",
    ADOPTFAIL: "fix instance_info (image, root device), then adopt again",
    SERVICEFAIL: "fix the cause, then service again, or abort",
    ERROR: "fix the cause, then `pxeforge node undeploy {id}` again (or put it in maintenance "
    "and delete it)",
}


# ---- helpers --------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """``40 s``, ``25 min``, ``3 h 10 min``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _base(name: str) -> str:
    return str(name).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()


def _file(e: Event) -> str:
    """The file a TFTP or HTTP event is about."""
    return str(e.data.get("file") or e.data.get("path") or "")


def _ours(s: Subject) -> frozenset[str]:
    """Our DHCP server identifiers: the configured address, else next-server of our answers."""
    if s.context.servers:
        return s.context.servers
    return frozenset(
        str(e.data["next_server"])
        for e in s.of("dhcp", "offer", "ack")
        if e.data.get("next_server") and not e.data.get("proxy")
    )


def _foreign(s: Subject) -> list[Event]:
    """Client messages that name (option 54) a DHCP server other than us."""
    ours = _ours(s)
    if s.context.proxy or not ours:
        return []
    return [
        e
        for e in s.of("dhcp")
        if e.kind not in ("offer", "ack", "nak")
        and e.data.get("server")
        and str(e.data["server"]) not in ours
    ]


def _server_name(s: Subject, ip: str) -> str:
    mac = s.context.neighbors.get(ip)
    return f"{ip} (MAC {mac})" if mac else ip


def _fetched(e: Event) -> bool:
    """A TFTP transfer or HTTP download that completed."""
    if e.source == "tftp":
        return e.kind == "finished"
    if e.source == "http":
        return e.kind == "fetched" and int(e.data.get("status") or 200) < 400
    return False


def _is_ramdisk(name: str) -> bool:
    base = _base(name)
    return base == _base(DEPLOY_RAMDISK_REF) or "initrd" in base or "ramdisk" in base


def _is_kernel(name: str) -> bool:
    base = _base(name)
    return base in (_base(DEPLOY_KERNEL_REF), "kernel") or "vmlinuz" in base or base == "linux"


def _not_found(e: Event) -> bool:
    if e.source == "http":
        return e.kind == "not-found" or (e.kind == "fetched" and e.data.get("status") == 404)
    if e.source == "tftp" and e.kind == "refused":
        error = str(e.data.get("error") or "").lower()
        return "not found" in error or e.data.get("code") == 1 or "no such file" in error
    return False


def _evidence(
    events: Iterable[Event], note: Callable[[Event], str] | None = None
) -> list[Evidence]:
    return [Evidence.of(e, note(e) if note else None) for e in events]


def _cap(evidence: Iterable[Evidence]) -> tuple[Evidence, ...]:
    """At most `_EVIDENCE_MAX`, in time order, each event once; the first and last kept."""
    seen: dict[tuple[int | None, str], Evidence] = {}
    for e in evidence:
        seen.setdefault((e.seq, e.what if e.seq is None else ""), e)
    items = sorted(seen.values(), key=lambda e: (e.at or 0.0, e.seq or 0))
    if len(items) > _EVIDENCE_MAX:
        items = items[: _EVIDENCE_MAX - 1] + items[-1:]
    return tuple(items)


def _who(node: NodeRecord) -> str:
    return node.name or node.uuid


# ---- DHCP -----------------------------------------------------------------------------------


def other_dhcp_server(s: Subject) -> Iterable[Finding]:
    """A REQUEST naming another server: the client took someone else's OFFER."""
    foreign = _foreign(s)
    if not foreign:
        return
    by_server: dict[str, list[Event]] = defaultdict(list)
    for e in foreign:
        by_server[str(e.data["server"])].append(e)
    first = foreign[0]
    offers = [e for e in s.of("dhcp", "offer") if not e.data.get("proxy")]
    ignored = [e for e in s.of("dhcp", "ignored") if e.at >= first.at - 60]
    acks_after = [e for e in s.of("dhcp", "ack") if e.seq > first.seq]
    servers = ", ".join(_server_name(s, ip) for ip in by_server)
    named = f"its REQUEST named {'it' if len(by_server) == 1 else 'them'} (option 54) " + _times(
        sum(len(v) for v in by_server.values())
    )
    if offers:
        what = (
            f"OFFER sent {_times(len(offers))}, no REQUEST for it: another DHCP server is "
            f"answering — the client took the offer of {servers}; {named}"
        )
    else:
        what = f"another DHCP server is answering: the client took the offer of {servers}; {named}"
        refused = [e for e in ignored if e.data.get("why") != _CHOSE_ANOTHER]
        if refused:
            why = refused[-1].data.get("why") or refused[-1].summary
            what += f"; pxeforge did not answer it ({why})"
    todo = (
        f"find {servers}, the other server, and switch it off, or keep it from answering this "
        "machine (a host exclusion, another segment); if it must stay, run pxeforge with "
        "--dhcp proxy beside it. Two servers answering make boots a lottery: whichever "
        "answers first wins."
    )
    evidence = _evidence(foreign[:4] + foreign[-1:], lambda e: f"server id {e.data['server']}")
    evidence += _evidence(offers[:3] + offers[-1:])
    evidence += _evidence(ignored[-1:])
    yield Finding(
        "other-dhcp-server",
        Severity.WARNING if acks_after else Severity.ERROR,
        what + (" (it also got pxeforge's ACK since)" if acks_after else ""),
        todo,
        _cap(evidence),
    )


def offers_unanswered(s: Subject) -> Iterable[Finding]:
    """OFFERs after the client's last REQUEST (to anyone), and no REQUEST since."""
    if s.context.proxy:
        return
    offers = [e for e in s.of("dhcp", "offer") if not e.data.get("proxy")]
    requests = s.of("dhcp", "request")
    last_request = requests[-1].seq if requests else 0
    pending = [e for e in offers if e.seq > last_request]
    if not pending:
        return
    if len(pending) < 2 and s.now - pending[-1].at < OFFER_PATIENCE:
        return  # the client may still REQUEST (iPXE waits ~3 s for ProxyDHCP)
    file = next((str(e.data["loader"]) for e in reversed(pending) if e.data.get("loader")), None)
    arch = next((e.data.get("arch") for e in reversed(s.of("dhcp", "discover"))), None)
    lacks = (
        " Our OFFER names no boot file, which PXE firmware insists on."
        if file is None and arch is not None
        else ""
    )
    yield Finding(
        "offer-without-request",
        Severity.ERROR if len(pending) >= 2 else Severity.WARNING,
        f"OFFER sent {_times(len(pending))} over {_duration(pending[-1].at - pending[0].at)}, "
        "no REQUEST: the client ignores pxeforge's offers",
        "Had another DHCP server won, the client's REQUEST would name it (none seen), so the "
        "OFFER most likely never reaches the client: check the interface pxeforge serves "
        "(--interface), a relay's ip helper, a firewall on UDP 68, the broadcast flag; "
        "`pxeforge trace` on a capture of the segment shows which." + lacks,
        _cap(_evidence(pending[:4] + pending[-2:])),
    )


def dhcp_refusals(s: Subject) -> Iterable[Finding]:
    """No address left, NAKs, declined addresses."""
    none = s.of("dhcp", "no-address")
    if none:
        yield Finding(
            "no-address",
            Severity.ERROR,
            f"no free address for it ({_times(len(none))}): the pool is exhausted",
            "widen --pool, or shorten --lease-time so leases of machines that left expire "
            "sooner; reservations (--reserve) take addresses out of the pool too",
            _cap(_evidence(none[:3] + none[-1:])),
        )
    naks = s.of("dhcp", "nak")
    acks = s.of("dhcp", "ack")
    if naks and not (acks and acks[-1].seq > naks[-1].seq):
        why = naks[-1].data.get("why") or naks[-1].summary
        yield Finding(
            "dhcp-nak",
            Severity.WARNING,
            f"pxeforge refused its REQUEST (NAK) {_times(len(naks))}: {why}",
            "the client asks for an address that is not ours or is taken (a lease from another "
            "network or another DHCP server); it starts over with a DISCOVER. If it keeps "
            "failing, look for another DHCP server on the segment.",
            _cap(_evidence(naks[:3] + naks[-1:])),
        )
    declined = s.of("dhcp", "declined")
    if declined:
        ips = sorted({str(e.data.get("ip")) for e in declined if e.data.get("ip")})
        yield Finding(
            "address-declined",
            Severity.WARNING,
            f"the client declined {', '.join(ips) or 'its address'}: another host uses it",
            "a host on the segment has that address configured statically: exclude it from "
            "--pool (pxeforge has quarantined it)",
            _cap(_evidence(declined[:4])),
        )


# ---- loaders and files ----------------------------------------------------------------------


def loader_mismatch(s: Subject) -> Iterable[Finding]:
    """A loader offered to, or fetched by, a client whose option 93 it does not fit."""
    arch: int | None = None
    ipxe = False
    said: Event | None = None  # the client message that told us the arch
    foreign: Event | None = None  # its latest REQUEST naming another server
    ours = _ours(s)
    reported: set[tuple[int, bool, str]] = set()
    for e in s.events:
        if e.source == "dhcp" and e.kind in _CLIENT_KINDS:
            a = e.data.get("arch")
            arch = int(a) if isinstance(a, int) else None
            ipxe = bool(e.data.get("ipxe"))
            said = e
            server = e.data.get("server")
            if server and ours and str(server) not in ours and not s.context.proxy:
                foreign = e
            elif e.kind == "discover":
                foreign = None
            continue
        if arch is None or said is None:
            continue
        if e.source == "dhcp" and e.kind in ("offer", "ack") and e.data.get("loader"):
            name, how, ours_gave = (
                str(e.data["loader"]),
                f"was offered by pxeforge ({e.kind})",
                True,
            )
        elif e.source in ("tftp", "http") and e.kind in ("started", "refused", "fetched"):
            name = _file(e)
            if file_kind(name) not in _LOADER_KINDS:
                continue
            how, ours_gave = f"asked for it over {e.source.upper()}", False
        else:
            continue
        firmware = firmware_for_arch(arch)
        if loader_fits(firmware, ipxe, name) is not False:
            continue
        key = (arch, ipxe, _base(name))
        if key in reported:
            continue
        reported.add(key)
        kind = file_kind(name).value.upper().replace("-", " ")
        expects = " or ".join(firmware_loaders(firmware)) or "a loader built for it"
        who = f"iPXE ({arch_label(arch)})" if ipxe else f"arch {arch} ({arch_label(arch)})"
        if foreign is not None and not ours_gave:
            other = _server_name(s, str(foreign.data["server"]))
            origin = f"; the DHCP answer came from another server, {other}"
            todo = (
                f"Option 93 = {arch} means {firmware.value} firmware, which needs {expects}. "
                f"Fix the boot file the DHCP server {other} gives this machine (choose it by "
                "option 93), or stop that server answering PXE clients and let pxeforge answer."
            )
        else:
            origin = ""
            todo = (
                f"Option 93 = {arch} means {firmware.value} firmware, which needs {expects}. "
                "Check --boot-method and the loaders in the boot root (`pxeforge assets fetch`)."
            )
        evidence = [Evidence.of(said, f"option 93 = {arch}"), Evidence.of(e)]
        if foreign is not None and foreign is not said:
            evidence.append(Evidence.of(foreign))
        yield Finding(
            "loader-mismatch",
            Severity.ERROR,
            f'{who} client got a {kind} loader: "{name}" ({how}){origin}',
            todo,
            _cap(evidence),
        )


def missing_files(s: Subject) -> Iterable[Finding]:
    """TFTP ERROR 1 / HTTP 404: the boot file (an error) or another file (a warning)."""
    given = {
        _base(str(e.data["loader"])) for e in s.of("dhcp", "offer", "ack") if e.data.get("loader")
    }
    misses: dict[str, list[Event]] = defaultdict(list)
    for e in s.events:
        if _not_found(e):
            misses[_file(e)].append(e)
    root = s.context.root or "the boot root"
    foreign = _foreign(s)
    for name, events in misses.items():
        base = _base(name)
        later = any(
            _fetched(o) and _base(_file(o)) == base and o.seq > events[-1].seq for o in s.events
        )
        if later or probe_miss(name):
            continue
        boot = base in given or file_kind(name) in _LOADER_KINDS
        proto = "TFTP" if events[0].source == "tftp" else "HTTP"
        evidence = _cap(_evidence(events[:3] + events[-1:]))
        if boot:
            if foreign and base not in given:
                other = _server_name(s, str(foreign[-1].data["server"]))
                todo = (
                    f"the DHCP server {other} named this file: put it in {root} "
                    f"(`pxeforge assets fetch --root {root}` installs the usual loaders) or fix "
                    "the file name that server gives"
                )
            else:
                todo = (
                    f"put it in {root} (`pxeforge assets fetch --root {root}` installs the "
                    "loaders) or fix the file name the DHCP answer gives"
                )
            yield Finding(
                "boot-file-not-found",
                Severity.ERROR,
                f'boot file "{name}" not found over {proto} ({_times(len(events))}): the '
                "machine cannot start",
                todo,
                evidence,
            )
        else:
            yield Finding(
                "file-not-found",
                Severity.WARNING,
                f'"{name}" not found over {proto} ({_times(len(events))}) and not fetched under '
                "another name later",
                f"the loader that asked for it will fail or fall back: add it to {root}, or fix "
                "the configuration that names it",
                evidence,
            )
    refused = [e for e in s.of("tftp", "refused") if not _not_found(e)]
    by_file: dict[str, list[Event]] = defaultdict(list)
    for e in refused:
        by_file[_file(e)].append(e)
    for name, events in by_file.items():
        error = events[-1].data.get("error") or events[-1].summary
        yield Finding(
            "tftp-refused",
            Severity.WARNING,
            f'TFTP refused "{name}" ({_times(len(events))}): {error}',
            "an access violation means the path leaves the boot root or is not readable by "
            "pxeforge; check the file's permissions and the name the client asks for",
            _cap(_evidence(events[:3] + events[-1:])),
        )
    bad = [
        e
        for e in s.of("http", "fetched")
        if int(e.data.get("status") or 0) >= 400 and not _not_found(e)
    ]
    if bad:
        last = bad[-1]
        yield Finding(
            "http-error",
            Severity.WARNING,
            f"HTTP {last.data.get('status')} for {_file(last)} ({_times(len(bad))} HTTP errors)",
            "the server log says why; a 5xx is a pxeforge error worth reporting",
            _cap(_evidence(bad[:3] + bad[-1:])),
        )


def transfers(s: Subject) -> Iterable[Finding]:
    """Failed and aborted TFTP transfers, and retransmit storms."""
    failed: dict[str, list[Event]] = defaultdict(list)
    for e in s.of("tftp", "failed"):
        failed[_file(e)].append(e)
    for name, events in failed.items():
        base = _base(name)
        recovered = any(
            _fetched(o) and _base(_file(o)) == base and o.seq > events[-1].seq for o in s.events
        )
        error = events[-1].data.get("error") or events[-1].summary
        yield Finding(
            "transfer-failed",
            Severity.WARNING if recovered else Severity.ERROR,
            f'TFTP transfer of "{name}" failed {_times(len(events))}: {error}'
            + (" (a later try worked)" if recovered else ""),
            "timeouts mean lost packets or a client that stopped answering (it crashed or "
            "rebooted): check the link and the switch port, try a smaller blksize/windowsize "
            "(--tftp-max-blksize), or boot the big files over HTTP (--boot-method ipxe)",
            _cap(_evidence(events[:3] + events[-1:])),
        )
    for e in s.of("tftp", "aborted"):
        size = int(e.data.get("bytes") or 0)
        base = _base(_file(e))
        if (
            size == 0
            or e.data.get("outcome") == "probed"
            or any(_fetched(o) and _base(_file(o)) == base and o.seq > e.seq for o in s.events)
        ):
            continue  # a size probe (OVMF aborts right after the OACK), or it worked later
        yield Finding(
            "transfer-aborted",
            Severity.WARNING,
            f'the client aborted "{_file(e)}" after {human_bytes(size)}: '
            f"{e.data.get('error') or e.summary}",
            "the loader ran out of memory or disliked the file (wrong architecture, corrupt); "
            "look at the machine's console",
            (Evidence.of(e),),
        )
    started: dict[str, Event] = {}
    storms: list[tuple[Event, int, int]] = []
    for e in s.of("tftp"):
        if e.kind == "started":
            started[_file(e)] = e
            continue
        resent = int(e.data.get("retransmits") or 0)
        if e.kind not in ("finished", "failed") or resent < STORM_MIN:
            continue
        first = started.get(_file(e))
        blksize = int((first.data.get("blksize") if first else None) or 512)
        blocks = max(1, int(e.data.get("bytes") or 0) // blksize + 1)
        if resent >= STORM_RATIO * blocks:
            storms.append((e, resent, blocks))
    if storms:
        worst, resent, blocks = max(storms, key=lambda t: t[1] / t[2])
        failed_any = any(e.kind == "failed" for e, _, _ in storms)
        yield Finding(
            "retransmit-storm",
            Severity.ERROR if failed_any else Severity.WARNING,
            f'retransmit storm: "{_file(worst)}" had {resent} blocks sent again '
            f"({100 * resent / blocks:.0f}% of {blocks})"
            + (f", {len(storms)} transfers like it" if len(storms) > 1 else ""),
            "packets are lost, or the client is slower than the window/block size: check the "
            "link, try a smaller blksize/windowsize (--tftp-max-blksize, "
            "--tftp-max-windowsize), or boot the big files over HTTP (--boot-method ipxe)",
            _cap(_evidence([e for e, _, _ in storms])),
        )


# ---- the machine and its node ---------------------------------------------------------------


def unknown_machine(s: Subject) -> Iterable[Finding]:
    """A MAC that network-boots and no port names, while boots follow the inventory."""
    if s.node is not None or not s.context.inventory or not s.events:
        return
    if s.mac is not None and s.mac.startswith(IP_KEY):
        return  # a client known by its address only: we cannot tell which machine it is
    dhcp = [e for e in s.of("dhcp") if e.kind in _CLIENT_KINDS]
    netboot = any(
        e.data.get("arch") is not None
        or e.data.get("ipxe")
        or str(e.data.get("vendor_class") or "").startswith(("PXEClient", "HTTPClient"))
        for e in dhcp
    ) or any(e.source in ("tftp", "http") for e in s.events)
    if not netboot:
        return
    mac = s.mac or "?"
    arch = next((e.data["arch"] for e in dhcp if e.data.get("arch") is not None), None)
    label = f" (arch {arch}, {arch_label(arch)})" if arch is not None else ""
    discovers = [e for e in dhcp if e.kind == "discover"]
    yield Finding(
        "unknown-machine",
        Severity.WARNING,
        f"{mac}{label} PXE-boots but is not enrolled: no node has this MAC as a port, so "
        f"pxeforge boots nothing ({len(discovers)} DISCOVER(s) over "
        f"{_duration(s.events[-1].at - s.events[0].at)})",
        "if pxeforge should provision it, enroll it: `pxeforge node create --driver ipmi "
        "--name NAME --driver-info ipmi_address=…` and `pxeforge node port create "
        f"{mac} --node NAME` (or serve with --discovery: the agent enrolls it with its "
        "inventory); if not, take it off this segment or out of network boot",
        _cap(_evidence(dhcp[:2] + dhcp[-1:])),
    )


def node_state(s: Subject) -> Iterable[Finding]:
    """A failed node (with last_error and how far its boot got), maintenance, a stale error."""
    node = s.node
    if node is None:
        return
    state = node.provision_state
    since = epoch(node.provision_updated_at)
    record = Evidence(None, since, f"node record: provision_state {state!r}")
    errors = [e for e in s.of("state", "transition") if e.data.get("last_error")]
    if state in FAILURE_STATES or state == ERROR:
        what = f"node is in {state}" + (f": {node.last_error}" if node.last_error else "")
        todo = _RECOVERY.get(state, "fix the cause, then retry").format(id=_who(node))
        evidence = [record, *_evidence(errors[-2:])]
        error = (node.last_error or "").lower()
        if "timeout" in error or "timed out" in error:
            stage = _progress(s, _wait_began(s, errors))
            if stage is not None:
                what += f" — {stage.what}"
                todo = f"{stage.todo}; then {todo}"
                evidence += stage.evidence
        yield Finding("node-failed", Severity.ERROR, what, todo, _cap(evidence))
    elif node.last_error:
        yield Finding(
            "last-error",
            Severity.WARNING,
            f"node is {state} with last_error: {node.last_error}",
            "the last action failed and the node stayed where it was: fix the cause and repeat "
            "it (power credentials: `pxeforge node set --driver-info …`, then `pxeforge node "
            f"manage {_who(node)}`)",
            _cap([record, *_evidence(errors[-2:])]),
        )
    if node.maintenance:
        reason = f": {node.maintenance_reason}" if node.maintenance_reason else ""
        yield Finding(
            "maintenance",
            Severity.WARNING,
            f"node is in maintenance{reason}",
            "the conductor leaves it alone (no power sync, no wait timeouts); when it is fixed: "
            f"`pxeforge node maintenance unset {_who(node)}`",
            (Evidence(None, since, "node record: maintenance true"),),
        )


class _Stage:
    """How far a boot got: ``what`` (a phrase), ``todo``, and the events that show it."""

    __slots__ = ("evidence", "todo", "what")

    def __init__(self, what: str, todo: str, evidence: Sequence[Evidence]) -> None:
        self.what = what
        self.todo = todo
        self.evidence = list(evidence)


def _wait_began(s: Subject, transitions: Sequence[Event] = ()) -> float:
    """When the current wait (or the failure's wait) began: the last transition into a wait
    state, else the record's provision_updated_at."""
    node = s.node
    moves = [e for e in s.of("state", "transition") if e.data.get("to") in WAIT_STATES]
    if moves:
        return moves[-1].at
    updated = epoch(node.provision_updated_at) if node is not None else None
    return updated if updated is not None else (s.events[0].at if s.events else s.now)


def _progress(s: Subject, since: float) -> _Stage | None:
    """Where the boot since ``since`` stopped; None when the agent is still talking."""
    node = s.node
    events = [e for e in s.events if e.at >= since - 1.0]
    dhcp = [e for e in events if e.source == "dhcp"]
    answers = [e for e in dhcp if e.kind in ("offer", "ack", "proxy-offer", "proxy-ack")]
    ignored = [e for e in dhcp if e.kind == "ignored"]
    fetched = [e for e in events if _fetched(e)]
    agent = [e for e in events if e.source == "agent"]
    power = [e for e in events if e.source == "power"]
    installer = node is not None and (node.deploy_interface or "") in _INSTALLER_DEPLOYS
    macs = ", ".join(s.macs) or "none"
    if not dhcp:
        failed_power = [e for e in power if e.level == "error" or e.data.get("error")]
        todo = (
            "is it powered on and set to boot from the network first? Check the boot order "
            f"and that the MAC that boots is one of the node's ports ({macs}, pxe_enabled)"
        )
        if failed_power:
            todo = "the power action failed (see power errors); " + todo
        return _Stage(
            "no DHCP from its MACs since: the machine did not PXE-boot",
            todo,
            _evidence((power or [])[-2:]),
        )
    if not answers and ignored:
        why = ignored[-1].data.get("why") or ignored[-1].summary
        return _Stage(
            f"it PXE-boots but pxeforge ignored it ({why})",
            "pxeforge had no boot answer: check that the booting MAC is a port of this node "
            "with pxe_enabled, and --deploy-kernel/--deploy-ramdisk",
            _evidence(ignored[-2:]),
        )
    if not fetched:
        loader = next(
            (str(e.data["loader"]) for e in reversed(answers) if e.data.get("loader")), "?"
        )
        return _Stage(
            f'DHCP answered (boot file "{loader}") but it never fetched a file',
            "wrong next-server, a firewall on TFTP (UDP 69 and the ephemeral data ports) or "
            "HTTP, or a loader it cannot run (see the other findings)",
            _evidence(answers[-2:]),
        )
    ramdisk = [e for e in fetched if _is_ramdisk(_file(e))]
    if not ramdisk:
        kernel = [e for e in fetched if _is_kernel(_file(e))]
        last = fetched[-1]
        return _Stage(
            f'the loader ran (last file fetched: "{_file(last)}") but the ramdisk was never '
            "fetched" + (" (the kernel was)" if kernel else ""),
            "look at the machine's console: the loader's configuration or a download failed; "
            "`pxeforge trace` on a capture shows where",
            _evidence(fetched[-2:]),
        )
    got = ramdisk[-1]
    if installer:
        if s.now - got.at < AGENT_PATIENCE:
            return None
        return _Stage(
            f"installer fetched {_duration(s.now - got.at)} ago, it never called back",
            "look at the machine's console: the kickstart (inst.ks) URL, the install source "
            "and the %post callback",
            [Evidence.of(got)],
        )
    lookups = [e for e in agent if e.kind == "lookup" and e.seq > got.seq]
    if not lookups:
        if s.now - got.at < AGENT_PATIENCE:
            return None
        url = s.context.api_url or "the API URL"
        return _Stage(
            "ramdisk fetched, agent never looked up",
            f"check the API URL on the kernel command line (ipa-api-url={url}): the ramdisk "
            "must reach it (address, routing, a firewall on its port); the machine's console "
            "shows the agent's errors",
            [Evidence.of(got, f"{_duration(s.now - got.at)} ago")],
        )
    found = [e for e in lookups if e.data.get("found")]
    if not found:
        return _Stage(
            f"the agent looked up {_times(len(lookups))} and pxeforge did not find the node",
            "the lookup sends the MACs the ramdisk sees: one must be a port of this node, and "
            "the node must be in a state that waits for the agent",
            _evidence(lookups[-2:]),
        )
    after = [e for e in agent if e.seq > found[-1].seq and e.kind in ("heartbeat", "inventory")]
    if after:
        return None
    refused = [e for e in agent if e.kind == "refused"]
    if node is not None and node.provision_state == INSPECTWAIT:
        return _Stage(
            "the agent looked up but never posted its inventory",
            "look at the machine's console for the agent's error (continue_inspection)",
            _evidence(found[-1:] + refused[-1:]),
        )
    return _Stage(
        "the agent looked up but never heartbeated",
        "heartbeats carry the agent token from the lookup: see refused heartbeats, and the "
        "machine's console",
        _evidence(found[-1:] + refused[-1:]),
    )


def _beat_since(s: Subject, began: float) -> float | None:
    """The agent's last heartbeat in the wait that began at ``began`` (timeline or record).

    A heartbeat in a wait state also moves ``provision_updated_at`` (Ironic's
    touch_provisioning), so without the transition event ``began`` may be that heartbeat.
    """
    beats = [e.at for e in s.of("agent", "heartbeat")]
    if s.node is not None:
        recorded = epoch(s.node.driver_internal_info.get("agent_last_heartbeat"))
        if recorded is not None:
            beats.append(recorded)
    last = max(beats, default=None)
    return last if last is not None and last >= began - _SLACK else None


def stuck_waiting(s: Subject) -> Iterable[Finding]:
    """A node in a wait state for long, with where its boot stopped."""
    node = s.node
    if node is None or node.provision_state not in WAIT_STATES or node.maintenance:
        return
    state = node.provision_state
    began = _wait_began(s)
    waited = s.now - began
    if waited < WAIT_PATIENCE or _beat_since(s, began) is not None:
        return  # fresh, or the agent talked in this wait (heartbeats_stopped watches it)
    stage = _progress(s, began)
    if stage is None:
        return
    timeout = s.context.wait_timeouts.get(state)
    limit = f" (it fails when {_duration(timeout)} have passed)" if timeout else ""
    yield Finding(
        "stuck-waiting",
        Severity.ERROR,
        f"{state} for {_duration(waited)}: {stage.what}",
        stage.todo + limit,
        _cap([Evidence(None, began, f"{state} since then"), *stage.evidence]),
    )


def heartbeats_stopped(s: Subject) -> Iterable[Finding]:
    """The agent heartbeated in this wait, then stopped."""
    node = s.node
    if node is None or node.maintenance:
        return
    if node.provision_state not in (CLEANWAIT, DEPLOYWAIT, RESCUEWAIT, SERVICEWAIT):
        return
    if (node.deploy_interface or "") in _INSTALLER_DEPLOYS:
        return
    began = _wait_began(s)
    last = _beat_since(s, began)
    if last is None:
        return  # never beat in this wait: stuck_waiting says where the boot stopped
    beats = [e for e in s.of("agent", "heartbeat") if e.at >= began - _SLACK]
    quiet = s.now - last
    limit = s.context.heartbeat_timeout
    if quiet <= limit:
        return
    evidence = _evidence(beats[-3:]) or [Evidence(None, last, "node record: agent_last_heartbeat")]
    yield Finding(
        "heartbeats-stopped",
        Severity.ERROR,
        f"the agent's heartbeats stopped {_duration(quiet)} ago (it beats every "
        f"{_duration(0.3 * limit)}–{_duration(0.6 * limit)}; {len(beats)} in this wait)",
        "the ramdisk crashed, rebooted or lost its network: look at the machine's console; "
        f"`pxeforge node power reboot {_who(node)}` boots it into the ramdisk again",
        _cap(evidence),
    )


def power_errors(s: Subject) -> Iterable[Finding]:
    """Power actions that failed and have not worked since."""
    by_kind: dict[str, list[Event]] = defaultdict(list)
    for e in s.of("power"):
        by_kind[e.kind].append(e)
    for kind, events in by_kind.items():
        failures = [
            e
            for e in events
            if e.level == "error"
            or e.data.get("error")
            or e.data.get("result") in ("error", "failed")
        ]
        if not failures or events[-1] is not failures[-1]:
            continue
        error = failures[-1].data.get("error") or failures[-1].summary
        yield Finding(
            "power-error",
            Severity.ERROR,
            f"power {kind} failed {_times(len(failures))}: {error}",
            "check the BMC address and credentials in driver_info and that the BMC answers "
            "from this host (a timeout: unreachable or slow); `pxeforge node manage` "
            "validates them",
            _cap(_evidence(failures[:3] + failures[-1:])),
        )


def agent_trouble(s: Subject) -> Iterable[Finding]:
    """Refused agent calls and failed agent commands."""
    refused = s.of("agent", "refused")
    later_ok = [e for e in s.of("agent", "heartbeat") if refused and e.seq > refused[-1].seq]
    if refused and not later_ok:
        why = str(refused[-1].data.get("why") or refused[-1].summary)
        todo = (
            "a ramdisk from an earlier boot, with an old agent token, is still running: reboot "
            "the machine so its agent looks up afresh"
            if "token" in why.lower()
            else "the agent's call does not fit the node's state or ports: see the server log"
        )
        yield Finding(
            "agent-refused",
            Severity.WARNING,
            f"the agent was refused {_times(len(refused))}: {why}",
            todo,
            _cap(_evidence(refused[:3] + refused[-1:])),
        )
    for e in s.of("agent", "command"):
        status = str(e.data.get("status") or "").lower()
        if status in ("failed", "error") or e.data.get("error"):
            yield Finding(
                "agent-command-failed",
                Severity.ERROR,
                f'agent command "{e.data.get("name") or "?"}" failed: '
                f"{e.data.get('error') or e.summary}",
                "the step's error is the agent's: see the machine's console and the node's "
                "last_error; fix the cause and repeat the operation",
                (Evidence.of(e),),
            )


RULES: Final[tuple[Rule, ...]] = (
    other_dhcp_server,
    offers_unanswered,
    dhcp_refusals,
    loader_mismatch,
    missing_files,
    transfers,
    unknown_machine,
    node_state,
    stuck_waiting,
    heartbeats_stopped,
    power_errors,
    agent_trouble,
)


def diagnose(
    node: NodeRecord | None,
    events: Sequence[Event],
    now: float,
    *,
    macs: Sequence[str] = (),
    context: Context | None = None,
    rules: Sequence[Rule] = RULES,
) -> list[Finding]:
    """Every finding for one machine, most severe first, then in time order (ties: in the
    order of ``rules``, causes before their consequences)."""
    if not macs:
        macs = sorted({e.mac for e in events if e.mac is not None})
    subject = Subject(
        node,
        tuple(m.lower() for m in macs),
        sorted(events, key=lambda e: e.seq),
        now,
        context if context is not None else Context(),
    )
    found = [(i, f) for i, rule in enumerate(rules) for f in rule(subject)]
    found.sort(key=lambda t: (t[1].severity.rank, t[1].time, t[0], t[1].code))
    return [f for _, f in found]
