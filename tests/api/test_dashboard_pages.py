"""The dashboard's pure parts: wording of durations, state classes, event rows, node rows,
the inventory summary, the list's query parsing, SSE framing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from pxeforge.api.dashboard import PageError, list_query, pages, stream
from pxeforge.timeline import Event, Timeline


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m 00s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (86399, "23h 59m"),
        (86400 * 3 + 3600 * 4 + 5, "3d 04h"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert pages.duration(seconds) == text


def test_state_class() -> None:
    assert pages.state_class("active") == "ok"
    assert pages.state_class("available") == "ready"
    assert pages.state_class("deploy failed") == "fail"
    assert pages.state_class("error") == "fail"
    assert pages.state_class("wait call-back") == "wait"
    assert pages.state_class("deploy hold") == "wait"
    assert pages.state_class("deploying") == "busy"
    assert pages.state_class("enroll") == "idle"
    assert pages.state_class(None) == "idle"


def test_event_rows_and_transition_json() -> None:
    timeline = Timeline(clock=lambda: 1_700_000_000.25)
    dhcp = timeline.record(
        "dhcp",
        "offer",
        "OFFER 10.0.0.5",
        mac="52-54-00-AA-BB-CC",
        data={"ip": "10.0.0.5", "proxy": False, "server": None, "seconds": 0.123456},
    )
    view = pages.event_view(dhcp)
    assert view.time == "22:13:20"
    assert view.mac == "52:54:00:aa:bb:cc"
    assert view.details == "ip=10.0.0.5 proxy=false seconds=0.123"  # None left out
    doc = pages.event_json(dhcp, "e1")
    assert doc["to"] is None and doc["seq"] == dhcp.seq and doc["summary"] == "OFFER 10.0.0.5"
    assert doc["epoch"] == "e1"
    move = timeline.record(
        "state", "transition", "deploying → active", node="N1", data={"from": "x", "to": "active"}
    )
    doc = pages.event_json(move, "e1")
    assert doc["to"] == "active" and doc["to_class"] == "ok" and doc["node"] == "n1"


def test_node_rows_last_event_over_all_keys() -> None:
    timeline = Timeline(clock=lambda: 1000.0)
    timeline.record("dhcp", "discover", "old", mac="52:54:00:00:00:01")
    newest = timeline.record("tftp", "finished", "new", mac="52:54:00:00:00:02")
    changed = datetime.fromtimestamp(400, UTC)
    rows = [
        {
            "id": 1,
            "uuid": "u1",
            "name": None,
            "provision_state": "deploy failed",
            "target_provision_state": None,
            "power_state": "power on",
            "maintenance": 0,
            "last_error": "boom",
            "created_at": datetime.fromtimestamp(100, UTC),
            "provision_updated_at": changed,
        },
        {
            "id": 2,
            "uuid": "u2",
            "name": "n2",
            "provision_state": "enroll",
            "target_provision_state": None,
            "power_state": None,
            "maintenance": True,
            "last_error": None,
            "created_at": datetime.fromtimestamp(100, UTC),
            "provision_updated_at": None,
        },
    ]

    def last(keys: Iterable[str]) -> Event | None:
        found = [e for e in map(timeline.last, keys) if e is not None]
        return max(found, key=lambda e: e.seq, default=None)

    out = pages.node_rows(rows, {1: ["52:54:00:00:00:01", "52:54:00:00:00:02"]}, last, now=1000.0)
    assert out[0].label == "u1" and out[0].state_class == "fail"
    assert out[0].in_state == "10m 00s" and out[0].since == 400
    assert out[0].last_event is not None and out[0].last_event.seq == newest.seq
    assert out[0].last_age == "0s"
    assert out[1].label == "n2" and out[1].maintenance is True
    assert out[1].since == 100 and out[1].last_event is None and out[1].macs == ()


def test_inventory_summary() -> None:
    inventory = {
        "system_vendor": {
            "manufacturer": "QEMU",
            "product_name": "Standard PC",
            "serial_number": "",
        },
        "cpu": {"count": 2, "model_name": "Virtual CPU", "architecture": "x86_64"},
        "memory": {"total": 2147483648, "physical_mb": 2048},
        "boot": {"current_boot_mode": "bios"},
        "disks": [{"name": "/dev/vda", "size": 10737418240, "model": "virtio"}, "junk"],
        "interfaces": [
            {"name": "eth0", "mac_address": "52:54:00:12:34:56", "ipv4_address": "10.0.0.5"}
        ],
    }
    assert pages.inventory_summary(inventory) == [
        ("System", "QEMU Standard PC"),
        ("CPU", "2 × Virtual CPU, x86_64"),
        ("Memory", "2.0 GiB"),
        ("Boot mode", "bios"),
        ("Disk", "/dev/vda 10.0 GiB virtio"),
        ("NIC", "eth0 52:54:00:12:34:56 10.0.0.5"),
    ]
    # odd shapes give fewer lines, never an error
    assert pages.inventory_summary({"cpu": "x", "memory": {"total": "lots"}, "disks": 3}) == []
    assert pages.inventory_summary({"memory": {"total": 1024**3}}) == [("Memory", "1.0 GiB")]


def test_list_query() -> None:
    q = list_query({})
    assert (q.state, q.search, q.sort, q.limit, q.marker) == (None, None, "created", 50, None)
    q = list_query({"state": "clean wait", "q": "  rack ", "sort": "since", "limit": "500"})
    assert (q.state, q.search, q.sort, q.limit) == ("clean wait", "rack", "since", 500)
    assert q.params(marker="m") == "state=clean+wait&q=rack&sort=since&limit=500&marker=m"
    assert q.params(state=None) == "q=rack&sort=since&limit=500"
    for bad in (
        {"state": "sleeping"},
        {"sort": "random"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"marker": "not-a-uuid"},
        {"q": "x" * 101},
    ):
        with pytest.raises(PageError) as info:
            list_query(bad)
        assert info.value.status == 400


def test_sse_framing() -> None:
    assert stream.frame("ab-7", '{"a":1}') == b'id: ab-7\nevent: timeline\ndata: {"a":1}\n\n'
    for bad in (("1", "two\nlines"), ("1\r", "x")):
        with pytest.raises(ValueError):
            stream.frame(*bad)
    assert stream.comment("keep-alive") == b": keep-alive\n\n"


def test_stream_positions_and_epochs() -> None:
    one, two = Timeline(), Timeline()
    assert stream.epoch(one) == stream.epoch(one) != stream.epoch(two)
    assert len(stream.epoch(one)) == 8
    position = stream.start_position
    assert position(None, None, "ab") is None
    assert position("ab-12", "ab-5", "ab") == 12  # a reconnect wins over the page's since
    assert position(" ", "ab-5", "ab") == 5
    assert position(None, "7", "ab") == 7  # a bare number: this epoch
    assert position("cd-12", "ab-5", "ab") == 0  # pxeforge restarted: all the new one has
    for bad in ("x", "-1", "1.5", "ab-", "-5", "ab-x"):
        with pytest.raises(ValueError):
            position(bad, None, "ab")
