"""`pxeforge.recording`: each service's report → timeline events, and who is who."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.machine import Machine
from pxeforge.inventory.records import HistoryRecord
from pxeforge.inventory.store import HistoryNotice
from pxeforge.leases import LeasePool
from pxeforge.protocols.dhcp import MessageType, Option, Packet
from pxeforge.protocols.tftp import Outcome
from pxeforge.recording import (
    BootPlaneRecorder,
    best_mac,
    classify_history,
    dhcp_records,
    history_records,
    http_record,
    tftp_record,
)
from pxeforge.servers.dhcp import DhcpEvent, with_request
from pxeforge.servers.http import HttpEvent
from pxeforge.servers.tftp import EventKind, TftpEvent
from pxeforge.timeline import Timeline

MAC = "52:54:00:12:34:56"
SERVER = IPv4Address("10.0.0.1")


def _history(text: str, event_type: str = "provisioning", severity: str = "INFO") -> HistoryRecord:
    return HistoryRecord(1, "h", 1, datetime.now(UTC), text, event_type, severity, None, None)


def test_dhcp_event_carries_the_requests_options_and_both_records() -> None:
    packet = Packet(
        xid=1,
        chaddr=bytes.fromhex(MAC.replace(":", "")),
        options={
            Option.MESSAGE_TYPE: bytes([MessageType.REQUEST]),
            Option.VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:003016",
            Option.USER_CLASS: b"iPXE",
            Option.CLIENT_ARCH: (7).to_bytes(2, "big"),
            Option.SERVER_ID: SERVER.packed,
        },
    )
    decided = DhcpEvent(MAC, "REQUEST", "ack", IPv4Address("10.0.0.100"), None, "snponly.efi")
    event = with_request(decided, packet)
    # arch filled from option 93; the other details take no part in comparisons
    assert event == DhcpEvent(MAC, "REQUEST", "ack", IPv4Address("10.0.0.100"), 7, "snponly.efi")
    assert (event.arch, event.ipxe, event.server) == (7, True, "10.0.0.1")
    assert (event.vendor_class, event.user_class) == ("PXEClient:Arch:00007:UNDI:003016", "iPXE")
    seen, ack = dhcp_records(event, "10.0.0.1")
    assert (seen.source, seen.kind) == ("dhcp", "request")
    assert seen.data == {
        "type": "REQUEST",
        "arch": 7,
        "vendor_class": "PXEClient:Arch:00007:UNDI:003016",
        "user_class": "iPXE",
        "ipxe": True,
        "server": "10.0.0.1",
    }
    assert "iPXE" in seen.summary and "arch 7" in seen.summary
    assert (ack.kind, ack.level) == ("ack", "info")
    assert ack.data == {
        "ip": "10.0.0.100",
        "loader": "snponly.efi",
        "next_server": "10.0.0.1",
        "proxy": False,
    }


def test_dhcp_decisions_map_to_the_vocabulary() -> None:
    def decided(outcome: str, ip: str | None = None, loader: str | None = None) -> tuple[str, ...]:
        event = DhcpEvent(MAC, "DISCOVER", outcome, IPv4Address(ip) if ip else None, 0, loader)
        record = dhcp_records(event, "10.0.0.1")[1]
        return record.kind, record.level, str(record.data.get("why") or record.data.get("ip"))

    assert decided("proxy-offer", None, "pxelinux.0")[:2] == ("offer", "info")
    assert decided("ignored:not-for-us") == ("ignored", "info", "not-for-us")
    assert decided("forgotten") == ("ignored", "info", "chose another server")
    assert decided("nak", "10.0.0.7") == ("nak", "warning", "10.0.0.7")
    assert decided("no-address")[:2] == ("no-address", "error")
    assert decided("declined", "10.0.0.9") == ("declined", "warning", "10.0.0.9")
    assert decided("released", "10.0.0.9") == ("released", "info", "10.0.0.9")
    proxy = dhcp_records(DhcpEvent(MAC, "REQUEST", "proxy-ack", None, 0, "x.efi"), "10.0.0.1")[1]
    assert proxy.data["proxy"] is True and proxy.summary.startswith("ProxyDHCP ACK")
    no_boot = dhcp_records(DhcpEvent(MAC, "REQUEST", "ack", SERVER, 0, None), "10.0.0.1")[1]
    assert no_boot.data["next_server"] is None and "no boot file" in no_boot.summary


def test_tftp_and_http_records() -> None:
    client = ("10.0.0.100", 2070)
    miss = tftp_record(TftpEvent(EventKind.REFUSED, client, "pxelinux.cfg/x", 0.0,
                                 error="File not found"))  # fmt: skip
    assert (miss.kind, miss.level, miss.data["error"]) == ("refused", "info", "File not found")
    denied = tftp_record(TftpEvent(EventKind.REFUSED, client, "../x", 0.0,
                                   error="Access violation"))  # fmt: skip
    assert denied.level == "warning"
    done = TftpEvent(EventKind.FINISHED, client, "a", 0.0, bytes=10, seconds=0.5,
                     outcome=Outcome.COMPLETE)  # fmt: skip
    assert (tftp_record(done).kind, tftp_record(done).level) == ("finished", "info")
    stormy = TftpEvent(EventKind.FINISHED, client, "a", 0.0, retransmits=9,
                       outcome=Outcome.COMPLETE)  # fmt: skip
    assert tftp_record(stormy).level == "warning" and "9 retransmits" in tftp_record(stormy).summary
    probed = TftpEvent(EventKind.FINISHED, client, "a", 0.0, outcome=Outcome.PROBED)
    assert tftp_record(probed).kind == "aborted"
    lost = TftpEvent(EventKind.FAILED, client, "a", 0.0, outcome=Outcome.TIMED_OUT)
    assert (tftp_record(lost).kind, tftp_record(lost).level) == ("failed", "error")
    assert "timed out" in tftp_record(lost).summary
    fetched = http_record(HttpEvent("10.0.0.100", "GET", "/vmlinuz", 200, 2048, 0.25))
    assert (fetched.kind, fetched.data["bytes"], fetched.data["status"]) == ("fetched", 2048, 200)
    missing = http_record(HttpEvent("10.0.0.100", "GET", "/nope", 404, 10, 0.0))
    assert (missing.kind, missing.level, missing.data["path"]) == ("not-found", "warning", "/nope")
    assert http_record(HttpEvent("", "GET", "/ipxe", 500, 0, 0.0)).level == "error"


def test_power_and_state_history() -> None:
    on = classify_history(
        _history('Power state changed from "power off" to "power on" ("power on" asked)')
    )
    assert (on.source, on.kind, on.data["result"], on.data["from"]) == (
        "power", "on", "power on", "power off",
    )  # fmt: skip
    reboot = classify_history(
        _history('Power state changed from "power on" to "power on" ("rebooting" asked); ok')
    )
    assert reboot.kind == "reboot"
    failed = classify_history(
        _history(
            "Failed to change power state to 'power off' by 'power off'. Error: BMC down",
            severity="ERROR",
        )  # fmt: skip
    )
    assert (failed.kind, failed.level, failed.data["error"]) == ("off", "error", "BMC down")
    boot = classify_history(_history('Boot device set to "pxe" (persistent)'))
    assert (boot.kind, boot.data["result"], boot.data["persistent"]) == ("boot-device", "pxe", True)
    note = classify_history(_history("Maintenance mode set: disk swap"))
    assert (note.source, note.kind, note.data["text"]) == ("state", "note", note.summary)
    notice = HistoryNotice(
        "u1",
        (
            _history("Waiting for the agent"),
            _history('"deploying" -> "deploy failed" on "fail": boom', "transition", "ERROR"),
        ),
        from_state="deploying",
        to_state="deploy failed",
        seconds_in_state=12.5,
        last_error="boom",
    )
    first, transition = history_records(notice)
    assert first.kind == "note"
    assert (transition.kind, transition.level) == ("transition", "error")
    assert transition.data == {
        "from": "deploying",
        "to": "deploy failed",
        "event": "fail",
        "last_error": "boom",
        "seconds_in_state": 12.5,
    }


def test_who_is_who() -> None:
    timeline = Timeline()
    registry = ClientRegistry()
    registry.seen(Machine(mac=MAC, ip=IPv4Address("10.0.0.105")))
    pool = LeasePool(IPv4Address("10.0.0.100"), IPv4Address("10.0.0.110"),
                     subnet=IPv4Network("10.0.0.0/24"))  # fmt: skip
    leased = pool.offer("52:54:00:00:00:02", None, None, 0.0)
    recorder = BootPlaneRecorder(timeline, registry, pool=pool, next_server=SERVER)
    assert recorder.mac_of("10.0.0.105") == MAC
    assert recorder.mac_of("::ffff:10.0.0.105") == MAC
    assert recorder.mac_of(str(leased)) == "52:54:00:00:00:02"  # a lease the registry lacks
    assert recorder.mac_of("10.0.0.200") == "ip:10.0.0.200"
    assert recorder.mac_of("fe80::1") == "ip:fe80::1"
    recorder.tftp(TftpEvent(EventKind.STARTED, ("10.0.0.200", 1), "f", 0.0, bytes=1))
    event = timeline.events(["ip:10.0.0.200"])[0]
    assert (event.mac, event.data["ip"]) == ("ip:10.0.0.200", "10.0.0.200")
    recorder.http(HttpEvent("10.0.0.7", "GET", "/ipxe", 200, 5, 0.0, mac="52:54:00:00:00:09"))
    assert timeline.last("52:54:00:00:00:09") is not None  # /ipxe?mac= beats the address
    # node → MAC: the NIC heard from last, else the first (PXE ports first)
    assert best_mac(timeline, []) is None
    assert best_mac(timeline, ["aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb"]) == "aa:aa:aa:aa:aa:aa"
    timeline.record("dhcp", "discover", "x", mac="bb:bb:bb:bb:bb:bb")
    assert best_mac(timeline, ["aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb"]) == "bb:bb:bb:bb:bb:bb"
