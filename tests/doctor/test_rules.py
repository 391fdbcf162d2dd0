"""Each doctor rule over events recorded into a real `Timeline`, with real node records.

The events use the timeline's vocabulary (`pxeforge.timeline`: source/kind/data) as the
services record it; the node records come from a real SQLite `Store`, changed with
``dataclasses.replace`` into the state each case needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pxeforge.config import DhcpMode, Settings
from pxeforge.doctor import Context, Finding, Severity, diagnose
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.store import Store
from pxeforge.timeline import Event, Timeline

MAC = "52:54:00:aa:00:01"
US = "10.213.0.1"
ROGUE = "10.213.0.2"
T0 = 1_800_000_000.0
CTX = Context(servers=frozenset({US}), api_url=f"http://{US}:6385", root="/srv/tftp")


class Clock:
    """Records into a real Timeline at chosen times (seconds after T0)."""

    def __init__(self) -> None:
        self.tl = Timeline()

    def at(
        self,
        t: float,
        source: str,
        kind: str,
        summary: str = "",
        *,
        level: str = "info",
        mac: str | None = MAC,
        node: str | None = None,
        **data: Any,
    ) -> Event:
        return self.tl.record(
            source,
            kind,
            summary or f"{source} {kind}",
            mac=mac,
            node=node,
            level=level,
            data=data,
            at=T0 + t,
        )

    def events(self, *keys: str) -> list[Event]:
        return self.tl.events(keys or (MAC,))


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRecord]:
    path: Path = tmp_path_factory.mktemp("doctor") / "pxeforge.db"
    store = Store.connect(f"sqlite:///{path}")
    try:
        node = store.create_node("fake-hardware", name="n1", provision_state="enroll")
        store.create_port(node.uuid, MAC)
        yield store.get_node(node.uuid)
    finally:
        store.close()


def node_in(record: NodeRecord, state: str, since: float, **changes: Any) -> NodeRecord:
    when = datetime.fromtimestamp(T0 + since, UTC)
    return dataclasses.replace(record, provision_state=state, provision_updated_at=when, **changes)


def codes(found: list[Finding]) -> list[str]:
    return [f.code for f in found]


def only(found: list[Finding], code: str) -> Finding:
    hits = [f for f in found if f.code == code]
    assert len(hits) == 1, [(f.code, f.what) for f in found]
    return hits[0]


def seqs(finding: Finding) -> set[int]:
    return {e.seq for e in finding.evidence if e.seq is not None}


def pxe_offers(
    c: Clock, n: int, *, arch: int = 0, loader: str | None = "pxelinux.0"
) -> list[Event]:
    out = []
    for i in range(n):
        c.at(4.0 * i, "dhcp", "discover", arch=arch, vendor_class="PXEClient:Arch:00000")
        out.append(c.at(4.0 * i + 0.01, "dhcp", "offer", ip="10.213.0.150", loader=loader,
                        next_server=US))  # fmt: skip
    return out


# ---- DHCP -----------------------------------------------------------------------------------


def test_request_naming_another_server_is_another_dhcp_server() -> None:
    c = Clock()
    offers = pxe_offers(c, 4)
    req = c.at(16.5, "dhcp", "request", "REQUEST for 10.9.9.9", arch=0, server=ROGUE)
    context = dataclasses.replace(CTX, neighbors={ROGUE: "02:00:00:00:00:99"})
    found = diagnose(None, c.events(), T0 + 60, macs=[MAC], context=context)
    f = only(found, "other-dhcp-server")
    assert f.severity is Severity.ERROR
    assert f.what.startswith("OFFER sent 4 times, no REQUEST for it: another DHCP server is "
                             "answering — the client took the offer of 10.213.0.2 (MAC "
                             "02:00:00:00:00:99)")  # fmt: skip
    assert {req.seq, offers[0].seq, offers[-1].seq} <= seqs(f)
    assert "--dhcp proxy" in f.todo
    assert "offer-without-request" not in codes(found)  # the client did REQUEST: someone else


def test_another_server_answering_a_machine_pxeforge_ignores() -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", arch=7)
    c.at(0.01, "dhcp", "ignored", why="not-for-us")
    c.at(3, "dhcp", "request", arch=7, server=ROGUE)
    c.at(3.01, "dhcp", "ignored", why="chose another server")  # what `recording` files
    found = diagnose(None, c.events(), T0 + 30, macs=[MAC], context=CTX)
    f = only(found, "other-dhcp-server")
    assert "the client took the offer of 10.213.0.2" in f.what
    assert f.what.endswith("pxeforge did not answer it (not-for-us)")
    # and it is an unknown machine, since boots follow the inventory
    u = only(found, "unknown-machine")
    assert u.severity is Severity.WARNING and "(arch 7, x64 UEFI)" in u.what
    assert f"pxeforge node port create {MAC} --node NAME" in u.todo


def test_proxy_mode_expects_requests_to_the_site_server() -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", arch=0)
    c.at(0.01, "dhcp", "offer", proxy=True, loader="pxelinux.0", next_server=US)
    c.at(1, "dhcp", "request", arch=0, server=ROGUE)
    proxy = dataclasses.replace(CTX, proxy=True)
    assert codes(diagnose(None, c.events(), T0 + 60, context=proxy)) == ["unknown-machine"]
    assert "other-dhcp-server" in codes(diagnose(None, c.events(), T0 + 60, context=CTX))


def test_our_server_is_learnt_from_next_server_without_a_context() -> None:
    c = Clock()
    pxe_offers(c, 1)
    c.at(1, "dhcp", "request", server=ROGUE)
    assert "other-dhcp-server" in codes(diagnose(None, c.events(), T0 + 9))
    c2 = Clock()
    pxe_offers(c2, 1)
    c2.at(1, "dhcp", "request", server=US)
    c2.at(1.01, "dhcp", "ack", loader="pxelinux.0", next_server=US)
    assert diagnose(None, c2.events(), T0 + 9, context=Context(inventory=False)) == []


def test_offers_never_requested() -> None:
    c = Clock()
    offers = pxe_offers(c, 4)
    f = only(diagnose(None, c.events(), T0 + 20, context=CTX), "offer-without-request")
    assert f.severity is Severity.ERROR
    assert (
        f.what == "OFFER sent 4 times over 12 s, no REQUEST: the client ignores pxeforge's offers"
    )
    assert {o.seq for o in offers} <= seqs(f)
    # one OFFER a second ago: the client may still REQUEST; a minute later it is worth a look
    c1 = Clock()
    pxe_offers(c1, 1)
    assert "offer-without-request" not in codes(diagnose(None, c1.events(), T0 + 1, context=CTX))
    late = only(diagnose(None, c1.events(), T0 + 60, context=CTX), "offer-without-request")
    assert late.severity is Severity.WARNING


def test_offer_without_boot_file_says_so() -> None:
    c = Clock()
    pxe_offers(c, 2, loader=None)
    f = only(diagnose(None, c.events(), T0 + 20, context=CTX), "offer-without-request")
    assert "names no boot file" in f.todo


def test_pool_exhausted_and_nak() -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", arch=0)
    none = c.at(0.1, "dhcp", "no-address", level="warning")
    c.at(1, "dhcp", "request", server=US)
    nak = c.at(1.1, "dhcp", "nak", why="address 10.1.1.1 not available")
    found = diagnose(None, c.events(), T0 + 5, context=CTX)
    assert only(found, "no-address").evidence[0].seq == none.seq
    f = only(found, "dhcp-nak")
    assert f.what.endswith("address 10.1.1.1 not available") and seqs(f) == {nak.seq}
    c.at(2, "dhcp", "request", server=US)
    c.at(2.1, "dhcp", "ack", loader="pxelinux.0", next_server=US)
    assert "dhcp-nak" not in codes(diagnose(None, c.events(), T0 + 5, context=CTX))


# ---- loaders and files ----------------------------------------------------------------------


def test_uefi_client_offered_a_bios_loader_by_us() -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", arch=7)
    offer = c.at(0.01, "dhcp", "offer", loader="pxelinux.0", next_server=US)
    f = only(diagnose(None, c.events(), T0 + 1, context=CTX), "loader-mismatch")
    assert f.what == (
        'arch 7 (x64 UEFI) client got a BIOS loader: "pxelinux.0" (was offered by pxeforge (offer))'
    )
    assert "bootx64.efi or snponly.efi" in f.todo and offer.seq in seqs(f)


def test_uefi_client_sent_for_a_bios_loader_by_another_server() -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", arch=7)
    c.at(0.01, "dhcp", "ignored", why="not-for-us")
    req = c.at(4, "dhcp", "request", arch=7, server=ROGUE)
    rrq = c.at(5, "tftp", "started", file="pxelinux.0", bytes=42430, blksize=1468)
    c.at(5.2, "tftp", "finished", file="pxelinux.0", bytes=42430, seconds=0.2, retransmits=0)
    found = diagnose(None, c.events(), T0 + 30, context=CTX)
    f = only(found, "loader-mismatch")
    assert f.what == (
        'arch 7 (x64 UEFI) client got a BIOS loader: "pxelinux.0" (asked for it over TFTP); '
        "the DHCP answer came from another server, 10.213.0.2"
    )
    assert {req.seq, rrq.seq} <= seqs(f)
    assert "Fix the boot file the DHCP server 10.213.0.2 gives" in f.todo
    # the cause first: both show from the same REQUEST on, and the rules' order breaks ties
    assert codes(found) == ["other-dhcp-server", "loader-mismatch", "unknown-machine"]


@pytest.mark.parametrize(
    ("arch", "ipxe", "files"),
    [
        (7, False, ["bootx64.efi", "grubx64.efi", "grub/grub.cfg", "_pxeforge/kernel"]),
        (0, False, ["pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default"]),
        (7, True, ["http://10.213.0.1:8080/boot.ipxe"]),
        (0, True, ["http://10.213.0.1:8080/boot.ipxe"]),
    ],
)
def test_fitting_loaders_are_quiet(arch: int, ipxe: bool, files: list[str]) -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", arch=arch, ipxe=ipxe)
    c.at(0.1, "dhcp", "offer", loader=files[0], next_server=US)
    c.at(1, "dhcp", "request", arch=arch, ipxe=ipxe, server=US)
    c.at(1.1, "dhcp", "ack", loader=files[0], next_server=US)
    for i, name in enumerate(files[1:] if ipxe else files):
        c.at(2 + i, "tftp", "started", file=name, bytes=1000, blksize=1408)
        c.at(2.5 + i, "tftp", "finished", file=name, bytes=1000, seconds=0.1, retransmits=0)
    assert (
        diagnose(None, c.events(), T0 + 60, context=dataclasses.replace(CTX, inventory=False)) == []
    )


def test_boot_file_not_found_over_tftp() -> None:
    c = Clock()
    pxe_offers(c, 1)
    c.at(1, "dhcp", "request", server=US)
    c.at(1.1, "dhcp", "ack", loader="pxelinux.0", next_server=US)
    misses = [c.at(2 + i, "tftp", "refused", file="pxelinux.0", error="File not found",
                   level="warning") for i in range(3)]  # fmt: skip
    f = only(diagnose(None, c.events(), T0 + 30, context=CTX), "boot-file-not-found")
    assert f.severity is Severity.ERROR
    assert (
        f.what == 'boot file "pxelinux.0" not found over TFTP (3 times): the machine cannot start'
    )
    assert "`pxeforge assets fetch --root /srv/tftp`" in f.todo
    assert {m.seq for m in misses} <= seqs(f)


def test_config_probes_are_normal_and_a_missing_module_is_a_warning() -> None:
    c = Clock()
    for i, name in enumerate(
        ["pxelinux.cfg/01-52-54-00-aa-00-01", "pxelinux.cfg/C0A8", "ldlinux.c32"]
    ):
        c.at(i, "tftp", "refused", file=name, error="File not found")
    c.at(5, "tftp", "refused", file="grub/x86_64-efi/command.lst", error="File not found")
    found = diagnose(None, c.events(), T0 + 30, context=dataclasses.replace(CTX, inventory=False))
    assert codes(found) == ["file-not-found"]
    assert '"ldlinux.c32" not found over TFTP (once)' in found[0].what
    # found under that name later: nothing to say
    c.at(6, "tftp", "finished", file="/ldlinux.c32", bytes=100)
    assert (
        diagnose(None, c.events(), T0 + 30, context=dataclasses.replace(CTX, inventory=False)) == []
    )


def test_http_404_of_the_loader_and_access_violation() -> None:
    c = Clock()
    c.at(0, "http", "not-found", path="/snponly.efi")
    c.at(1, "tftp", "refused", file="../etc/passwd", error="Access violation")
    found = diagnose(None, c.events(), T0 + 9, context=dataclasses.replace(CTX, inventory=False))
    assert codes(found) == ["boot-file-not-found", "tftp-refused"]
    assert "over HTTP" in found[0].what and "Access violation" in found[1].what


def test_failed_transfers_and_retransmit_storm() -> None:
    c = Clock()
    c.at(0, "tftp", "started", file="_pxeforge/kernel", bytes=8_000_000, blksize=1408)
    fail = c.at(30, "tftp", "failed", file="_pxeforge/kernel", bytes=2_000_000, seconds=30,
                retransmits=900, error="timed out", level="error")  # fmt: skip
    found = diagnose(None, c.events(), T0 + 40, context=dataclasses.replace(CTX, inventory=False))
    f = only(found, "transfer-failed")
    assert f.severity is Severity.ERROR and f.what.endswith("failed once: timed out")
    storm = only(found, "retransmit-storm")
    assert storm.severity is Severity.ERROR and fail.seq in seqs(storm)
    assert "900 blocks sent again (63% of 1421)" in storm.what
    # a later try worked: a warning that says so, and the storm of a good transfer is a warning
    c.at(41, "tftp", "started", file="_pxeforge/kernel", bytes=8_000_000, blksize=1408)
    c.at(50, "tftp", "finished", file="_pxeforge/kernel", bytes=8_000_000, seconds=9,
         retransmits=3)  # fmt: skip
    found = diagnose(None, c.events(), T0 + 60, context=dataclasses.replace(CTX, inventory=False))
    assert only(found, "transfer-failed").severity is Severity.WARNING
    assert "(a later try worked)" in only(found, "transfer-failed").what


def test_a_few_retransmits_and_a_size_probe_are_normal() -> None:
    c = Clock()
    c.at(0, "tftp", "started", file="bootx64.efi", bytes=950_000, blksize=1468, windowsize=4)
    c.at(0.1, "tftp", "aborted", file="bootx64.efi", bytes=0, error="client: ERROR 8")
    c.at(0.15, "tftp", "aborted", file="bootx64.efi", bytes=5872, outcome="probed")
    c.at(0.2, "tftp", "started", file="bootx64.efi", bytes=950_000, blksize=1468)
    c.at(1, "tftp", "finished", file="bootx64.efi", bytes=950_000, retransmits=12)
    assert (
        diagnose(None, c.events(), T0 + 9, context=dataclasses.replace(CTX, inventory=False)) == []
    )
    c.at(2, "tftp", "started", file="grubx64.efi", bytes=2_000_000, blksize=512)
    c.at(3, "tftp", "aborted", file="grubx64.efi", bytes=600_000, error="client: ERROR 0",
         outcome="client_error")  # fmt: skip
    f = only(diagnose(None, c.events(), T0 + 9, context=CTX), "transfer-aborted")
    assert "after 600.0 kB" in f.what


# ---- the machine and its node ---------------------------------------------------------------


def test_unknown_machine_only_when_it_netboots_and_boots_follow_the_inventory() -> None:
    c = Clock()
    c.at(0, "dhcp", "discover", vendor_class="PXEClient:Arch:00000:UNDI:002001")
    assert codes(diagnose(None, c.events(), T0 + 1, context=CTX)) == ["unknown-machine"]
    static = dataclasses.replace(CTX, inventory=False)
    assert diagnose(None, c.events(), T0 + 1, context=static) == []
    plain = Clock()
    plain.at(0, "dhcp", "discover", vendor_class="dhcpcd-9.4.1")
    assert diagnose(None, plain.events(), T0 + 1, context=CTX) == []


def ramdisk_boot(c: Clock, start: float) -> Event:
    """DHCP, the loader, the deploy kernel and ramdisk: the ramdisk's download event."""
    c.at(start, "dhcp", "discover", arch=0, ipxe=True)
    c.at(start + 0.01, "dhcp", "offer", loader="http://10.213.0.1:8080/boot.ipxe", next_server=US)
    c.at(start + 1, "dhcp", "request", arch=0, ipxe=True, server=US)
    c.at(start + 1.01, "dhcp", "ack", loader="http://10.213.0.1:8080/boot.ipxe", next_server=US)
    c.at(start + 2, "http", "fetched", path="/boot.ipxe", status=200, bytes=300)
    c.at(start + 5, "http", "fetched", path="/_pxeforge/deploy-kernel", status=200, bytes=8_000_000)
    return c.at(start + 9, "http", "fetched", path="/_pxeforge/deploy-ramdisk", status=200,
                bytes=60_000_000)  # fmt: skip


def test_wait_callback_ramdisk_fetched_agent_never_looked_up(record: NodeRecord) -> None:
    c = Clock()
    c.at(0, "state", "transition", "deploying → wait call-back", node=record.uuid, mac=None,
         **{"from": "deploying", "to": "wait call-back", "event": "wait"})  # fmt: skip
    ramdisk = ramdisk_boot(c, 40)
    node = node_in(record, "wait call-back", 0, deploy_interface="direct")
    found = diagnose(node, c.events(MAC, record.uuid), T0 + 25 * 60, macs=[MAC], context=CTX)
    f = only(found, "stuck-waiting")
    assert f.what == "wait call-back for 25 min: ramdisk fetched, agent never looked up"
    assert f.todo.startswith(
        "check the API URL on the kernel command line (ipa-api-url=http://10.213.0.1:6385)"
    )
    assert ramdisk.seq in seqs(f)
    # before WAIT_PATIENCE the doctor keeps quiet; once the agent talks, too
    assert diagnose(node, c.events(MAC, record.uuid), T0 + 120, macs=[MAC], context=CTX) == []
    c.at(100, "agent", "lookup", found=True, node=record.uuid)
    c.at(101, "agent", "heartbeat", version="pxeforge", node=record.uuid)
    assert diagnose(node, c.events(MAC, record.uuid), T0 + 200, macs=[MAC], context=CTX) == []


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], "no DHCP from its MACs since: the machine did not PXE-boot"),
        (["ignored"], "it PXE-boots but pxeforge ignored it (not-for-us)"),
        (["offer"], 'DHCP answered (boot file "pxelinux.0") but it never fetched a file'),
        (["offer", "loader"],
         'the loader ran (last file fetched: "pxelinux.0") but the ramdisk was never fetched'),
        (["offer", "loader", "ramdisk", "lookup-404"],
         "the agent looked up once and pxeforge did not find the node"),
        (["offer", "loader", "ramdisk", "lookup"], "the agent looked up but never heartbeated"),
    ],
)  # fmt: skip
def test_how_far_a_stuck_boot_got(record: NodeRecord, steps: list[str], expected: str) -> None:
    c = Clock()
    c.at(0, "power", "reboot", result="ok", node=record.uuid)
    if "ignored" in steps:
        c.at(30, "dhcp", "discover", arch=0)
        c.at(30.1, "dhcp", "ignored", why="not-for-us")
    if "offer" in steps:
        pxe_offers_at = c.at(30, "dhcp", "discover", arch=0)
        assert pxe_offers_at
        c.at(30.1, "dhcp", "offer", loader="pxelinux.0", next_server=US)
        c.at(31, "dhcp", "request", server=US, arch=0)
        c.at(31.1, "dhcp", "ack", loader="pxelinux.0", next_server=US)
    if "loader" in steps:
        c.at(32, "tftp", "finished", file="pxelinux.0", bytes=42000)
    if "ramdisk" in steps:
        c.at(40, "tftp", "finished", file="_pxeforge/deploy-ramdisk", bytes=6e7)
    if "lookup-404" in steps:
        c.at(80, "agent", "lookup", found=False)
    if "lookup" in steps:
        c.at(80, "agent", "lookup", found=True, node=record.uuid)
    node = node_in(record, "clean wait", -5)
    found = diagnose(node, c.events(MAC, record.uuid), T0 + 600, macs=[MAC], context=CTX)
    f = only(found, "stuck-waiting")
    assert f.what == f"clean wait for 10 min: {expected}"


def test_failed_after_a_timeout_says_how_far_the_boot_got(record: NodeRecord) -> None:
    c = Clock()
    c.at(0, "state", "transition", node=record.uuid, mac=None, to="wait call-back")
    ramdisk_boot(c, 30)
    err = c.at(1800, "state", "transition", node=record.uuid, mac=None, level="error",
               **{"from": "wait call-back", "to": "deploy failed", "event": "fail",
                  "last_error": "Timeout reached while waiting for callback for node"})  # fmt: skip
    node = node_in(
        record, "deploy failed", 1800,
        last_error="Timeout reached while waiting for callback for node",
    )  # fmt: skip
    found = diagnose(node, c.events(MAC, record.uuid), T0 + 1900, macs=[MAC], context=CTX)
    f = only(found, "node-failed")
    assert f.what == (
        "node is in deploy failed: Timeout reached while waiting for callback for node — "
        "ramdisk fetched, agent never looked up"
    )
    assert "ipa-api-url=" in f.todo and "`pxeforge node deploy n1`" in f.todo
    assert err.seq in seqs(f)


def test_failed_maintenance_and_stale_error(record: NodeRecord) -> None:
    failed = node_in(record, "clean failed", 0, last_error="Disk erase failed: /dev/sda busy")
    f = only(diagnose(failed, [], T0 + 10, context=CTX), "node-failed")
    assert f.what == "node is in clean failed: Disk erase failed: /dev/sda busy"
    assert "`pxeforge node manage n1`" in f.todo
    assert f.evidence[0].seq is None and f.evidence[0].at == T0
    stale = node_in(record, "enroll", 0, last_error="IPMI: invalid credentials",
                    maintenance=True, maintenance_reason="BMC swap")  # fmt: skip
    found = diagnose(stale, [], T0 + 10, context=CTX)
    assert codes(found) == ["last-error", "maintenance"]
    assert found[1].what == "node is in maintenance: BMC swap"
    assert diagnose(node_in(record, "available", 0), [], T0 + 10, context=CTX) == []


def test_heartbeats_stopped(record: NodeRecord) -> None:
    c = Clock()
    c.at(0, "state", "transition", node=record.uuid, mac=None, to="clean wait")
    ramdisk_boot(c, 20)
    c.at(60, "agent", "lookup", found=True, node=record.uuid)
    beats = [c.at(60 + 120 * i, "agent", "heartbeat", node=record.uuid) for i in range(5)]
    node = node_in(record, "clean wait", 0)
    events = c.events(MAC, record.uuid)
    assert diagnose(node, events, beats[-1].at + 200, macs=[MAC], context=CTX) == []
    found = diagnose(node, events, beats[-1].at + 1200, macs=[MAC], context=CTX)
    f = only(found, "heartbeats-stopped")
    assert (
        f.what
        == "the agent's heartbeats stopped 20 min ago (it beats every 90 s–3 min; 5 in this wait)"
    )
    assert beats[-1].seq in seqs(f) and "power reboot n1" in f.todo
    # the node record's agent_last_heartbeat counts too (events may have been evicted)
    recent = datetime.fromtimestamp(beats[-1].at + 1100, UTC).isoformat()
    fresh = dataclasses.replace(node, driver_internal_info={"agent_last_heartbeat": recent})
    assert diagnose(fresh, events, beats[-1].at + 1200, macs=[MAC], context=CTX) == []


def test_power_errors_until_it_works(record: NodeRecord) -> None:
    c = Clock()
    a = c.at(0, "power", "on", level="error", node=record.uuid,
             result="error", error="IPMI: connection timed out")  # fmt: skip
    b = c.at(30, "power", "on", level="error", node=record.uuid,
             result="error", error="IPMI: connection timed out")  # fmt: skip
    node = node_in(record, "manageable", 0)
    f = only(diagnose(node, c.events(MAC, record.uuid), T0 + 60, context=CTX), "power-error")
    assert f.what == "power on failed 2 times: IPMI: connection timed out"
    assert seqs(f) == {a.seq, b.seq}
    c.at(90, "power", "on", result="ok", node=record.uuid)
    assert diagnose(node, c.events(MAC, record.uuid), T0 + 100, context=CTX) == []


def test_agent_refused_with_a_stale_token_and_a_failed_command(record: NodeRecord) -> None:
    c = Clock()
    c.at(0, "agent", "refused", level="warning", node=record.uuid,
         why="Invalid or missing agent token received.")  # fmt: skip
    c.at(5, "agent", "command", level="error", node=record.uuid,
         name="erase_devices", status="FAILED", error="/dev/sda: busy")  # fmt: skip
    node = node_in(record, "cleaning", 0)
    found = diagnose(node, c.events(MAC, record.uuid), T0 + 10, context=CTX)
    assert codes(found) == ["agent-command-failed", "agent-refused"]
    assert "old agent token" in found[1].todo
    assert found[0].what == 'agent command "erase_devices" failed: /dev/sda: busy'


def test_context_from_settings() -> None:
    from ipaddress import IPv4Address

    s = Settings(address=IPv4Address(US), dhcp_mode=DhcpMode.PROXY, deploy_callback_timeout=99)
    ctx = Context.from_settings(s, neighbors={ROGUE: "02:00:00:00:00:99"})
    assert ctx.servers == {US} and ctx.proxy and ctx.inventory
    assert ctx.api_url == "http://10.213.0.1:6385"
    assert ctx.wait_timeouts["wait call-back"] == 99
    assert ctx.neighbors[ROGUE] == "02:00:00:00:00:99"


def test_json_shape() -> None:
    c = Clock()
    pxe_offers(c, 2)
    (f,) = diagnose(None, c.events(), T0 + 30, context=dataclasses.replace(CTX, inventory=False))
    doc = f.to_json()
    assert set(doc) == {"code", "severity", "what", "do", "evidence"}
    assert doc["severity"] == "error" and doc["evidence"][0]["seq"] >= 1


def test_a_heartbeat_that_moved_provision_updated_at_is_not_a_boot_that_never_began(
    record: NodeRecord,
) -> None:
    """Heartbeats touch provision_updated_at: with no transition event left in the timeline
    the wait seems to begin at the last heartbeat — the doctor must not say "no DHCP"."""
    c = Clock()
    beat = c.at(100, "agent", "heartbeat", node=record.uuid)
    node = node_in(record, "wait call-back", 100,
                   driver_internal_info={"agent_last_heartbeat": datetime.fromtimestamp(
                       T0 + 100, UTC).isoformat()})  # fmt: skip
    found = diagnose(node, c.events(MAC, record.uuid), T0 + 1000, macs=[MAC], context=CTX)
    assert codes(found) == ["heartbeats-stopped"]
    assert seqs(found[0]) == {beat.seq}
    # only the record knows (the timeline was restarted): still the heartbeat rule
    found = diagnose(node, [], T0 + 1000, macs=[MAC], context=CTX)
    assert codes(found) == ["heartbeats-stopped"]
    assert found[0].evidence[0].what == "node record: agent_last_heartbeat"


def test_a_client_known_by_its_address_only_is_no_unknown_machine() -> None:
    c = Clock()
    c.at(0, "tftp", "refused", mac="ip:10.213.0.57", file="pxelinux.0", error="File not found",
         ip="10.213.0.57")  # fmt: skip
    found = diagnose(None, c.events("ip:10.213.0.57"), T0 + 9, macs=["ip:10.213.0.57"],
                     context=CTX)  # fmt: skip
    assert codes(found) == ["boot-file-not-found"]


def test_an_installer_that_never_calls_back_and_an_agent_that_never_posts_inventory(
    record: NodeRecord,
) -> None:
    c = Clock()
    c.at(0, "state", "transition", node=record.uuid, mac=None, to="wait call-back")
    c.at(10, "dhcp", "ack", loader="pxelinux.0", next_server=US)
    c.at(30, "http", "fetched", path="/_pxeforge/initrd-0", status=200, bytes=50_000_000)
    kickstart = node_in(record, "wait call-back", 0, deploy_interface="kickstart")
    events = c.events(MAC, record.uuid)
    f = only(diagnose(kickstart, events, T0 + 3600, macs=[MAC], context=CTX), "stuck-waiting")
    assert f.what == "wait call-back for 60 min: installer fetched 59 min ago, it never called back"
    assert "inst.ks" in f.todo
    c2 = Clock()
    c2.at(0, "state", "transition", node=record.uuid, mac=None, to="inspect wait")
    ramdisk_boot(c2, 10)
    c2.at(60, "agent", "lookup", found=True, node=record.uuid)
    inspecting = node_in(record, "inspect wait", 0)
    found = diagnose(inspecting, c2.events(MAC, record.uuid), T0 + 900, macs=[MAC], context=CTX)
    f = only(found, "stuck-waiting")
    assert f.what == "inspect wait for 15 min: the agent looked up but never posted its inventory"
    assert "heartbeats-stopped" not in codes(found)  # an inspecting agent posts, it does not beat
    c2.at(70, "agent", "inventory", node=record.uuid)
    assert diagnose(inspecting, c2.events(MAC, record.uuid), T0 + 900, context=CTX) == []


def test_evidence_is_capped_keeping_the_first_and_the_last() -> None:
    c = Clock()
    misses = [c.at(i, "tftp", "refused", file="pxelinux.0", error="File not found")
              for i in range(40)]  # fmt: skip
    (f,) = diagnose(None, c.events(), T0 + 60, context=dataclasses.replace(CTX, inventory=False))
    assert "(40 times)" in f.what
    shown = [e.seq for e in f.evidence]
    assert shown == [misses[0].seq, misses[1].seq, misses[2].seq, misses[-1].seq]
