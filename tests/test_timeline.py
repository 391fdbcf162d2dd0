"""The timeline core: bounded retention, node/MAC keys, live subscribers across threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pxeforge.timeline import Timeline, normalize_key

MAC = "52:54:00:12:34:56"
NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def test_normalize_key() -> None:
    assert normalize_key("52-54-00-12-34-AB") == "52:54:00:12:34:ab"
    assert normalize_key(NODE.upper()) == NODE


def test_events_keyed_by_mac_then_node_in_record_order() -> None:
    tl = Timeline()
    tl.record("dhcp", "discover", "DISCOVER", mac=MAC.upper())
    tl.record("state", "transition", "manageable → inspecting", node=NODE)
    tl.record("agent", "lookup", "lookup", mac=MAC, node=NODE)
    got = tl.events([MAC, NODE])
    assert [e.kind for e in got] == ["discover", "transition", "lookup"]
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert tl.node_of(MAC) == NODE
    assert tl.events([MAC], since=got[0].seq)[0].kind == "lookup"
    assert [e.kind for e in tl.events([MAC, NODE], limit=1)] == ["lookup"]
    assert tl.events([MAC], limit=0) == []
    with pytest.raises(ValueError):
        tl.record("dhcp", "discover", "no key")


def test_retention_is_bounded_per_key_and_in_keys() -> None:
    tl = Timeline(per_key=3, max_keys=2)
    for i in range(10):
        tl.record("dhcp", "discover", f"#{i}", mac="02:00:00:00:00:01")
    assert [e.summary for e in tl.events(["02:00:00:00:00:01"])] == ["#7", "#8", "#9"]
    tl.record("dhcp", "discover", "b", mac="02:00:00:00:00:02")
    tl.record("dhcp", "discover", "a again", mac="02:00:00:00:00:01")  # a is now the newest
    tl.record("dhcp", "discover", "c", mac="02:00:00:00:00:03")  # evicts b, the least recent
    assert [s.key for s in tl.summaries()] == ["02:00:00:00:00:03", "02:00:00:00:00:01"]
    assert tl.evicted_keys == 1 and len(tl) == 4
    assert tl.summaries()[1].count == 11


def test_unknown_macs_are_summaries_without_node() -> None:
    tl = Timeline()
    tl.record("dhcp", "discover", "x", mac="02:00:00:00:00:09")
    tl.record("agent", "lookup", "y", mac=MAC, node=NODE)
    tl.record("state", "transition", "z", node=NODE)
    by_key = {s.key: s.node for s in tl.summaries()}
    assert by_key == {"02:00:00:00:00:09": None, MAC: NODE}  # the node key is not a MAC
    assert len(tl.summaries(macs_only=False)) == 3


def test_subscribers_get_events_from_other_threads_and_overflow_is_counted() -> None:
    async def main() -> None:
        tl = Timeline()
        with tl.subscribe([MAC]) as mine, tl.subscribe(maxsize=2) as small:
            t = threading.Thread(
                target=lambda: [tl.record("tftp", "finished", str(i), mac=MAC) for i in range(5)]
            )
            t.start()
            t.join()
            tl.record("dhcp", "discover", "other", mac="02:00:00:00:00:09")
            got = [await asyncio.wait_for(mine.get(), 5) for _ in range(5)]
            assert [e.summary for e in got] == ["0", "1", "2", "3", "4"]
            await asyncio.sleep(0.05)
            assert mine.queue.empty()  # the other MAC's event is not ours
            assert small.dropped == 4 and small.queue.qsize() == 2
        assert tl.subscribers == 0

    asyncio.run(main())


def test_total_events_are_bounded_least_recent_keys_first() -> None:
    tl = Timeline(per_key=4, max_keys=100, max_events=10)
    for i in range(5):
        for _ in range(3):
            tl.record("dhcp", "discover", f"m{i}", mac=f"02:00:00:00:00:0{i}")
    # 15 recorded, at most 10 kept: the two oldest keys went whole
    assert len(tl) == 9 and tl.evicted_keys == 2
    assert [s.key[-1] for s in tl.summaries()] == ["4", "3", "2"]
    for _ in range(10):  # per_key caps one key without counting twice
        tl.record("dhcp", "discover", "m4", mac="02:00:00:00:00:04")
    assert len(tl) == 10 and len(tl.events(["02:00:00:00:00:04"])) == 4
    assert tl.recorded == 25
