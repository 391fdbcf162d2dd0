"""The dashboard over real HTTP: the pages (filters, search, paging, escaping, errors, auth)
and the live feed (server-sent events: replay, Last-Event-ID, heartbeats, disconnects, a slow
reader, shutdown) against a live API server with a real store and conductor."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pxeforge.api.dashboard import stream
from pxeforge.timeline import Subscription, Timeline

from .conftest import LiveApi

MAC1, MAC2, MAC3 = "52:54:00:10:00:01", "52:54:00:10:00:02", "52:54:00:20:00:01"
STRANGER = "de:ad:be:ef:00:01"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    live = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}").start()
    try:
        yield live
    finally:
        live.close()


def page(api: LiveApi, path: str, status: int = 200) -> str:
    reply = api.get(path, version=None)
    assert reply.status == status, (path, reply.status, reply.raw[:500])
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    return reply.raw.decode()


def rows(text: str, attr: str = "data-uuid") -> dict[str, str]:
    """``{attribute value: the row's visible text}`` of the table rows carrying ``attr``."""
    found = {}
    for value, inner in re.findall(rf'<tr {attr}="([^"]+)"[^>]*>(.*?)</tr>', text, re.S):
        words = re.sub(r"<[^>]+>", " ", inner)
        found[value] = " ".join(html.unescape(words).split())
    return found


def new_node(api: LiveApi, name: str, *macs: str) -> str:
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "name": name})
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    for mac in macs:
        assert api.post("/v1/ports", {"address": mac, "node_uuid": uuid}).status == 201
    return uuid


def manage(api: LiveApi, uuid: str) -> None:
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "manage"})
    assert reply.status == 202, reply.raw
    api.wait_idle()
    assert api.node(uuid)["provision_state"] == "manageable"


# ---- pages ----------------------------------------------------------------------------------


def test_node_list_filters_search_and_pages(api: LiveApi) -> None:
    uuids = {name: new_node(api, name) for name in ("rack1-a", "rack1-b", "rack2-a", "rack2-b")}
    uuids["web-01"] = new_node(api, "web-01", MAC1, MAC2)
    manage(api, uuids["rack2-a"])
    manage(api, uuids["web-01"])
    api.ctx.timeline.record("dhcp", "discover", "old news", mac=MAC1)
    api.ctx.timeline.record("tftp", "finished", "<b>sent</b> ipxe.efi", mac=MAC2, level="warning")

    reply = api.get("/dashboard", version=None)
    assert reply.status == 200
    assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
    assert re.fullmatch(r"db;dur=[\d.]+, render;dur=[\d.]+", reply.headers["Server-Timing"])
    text = reply.raw.decode()
    listed = rows(text)
    assert set(listed) == set(uuids.values())
    web = listed[uuids["web-01"]]
    # state, power, MACs, time in state, and the newest event of any of the node's MACs
    assert "manageable" in web and "power off" in web and MAC1 in web and MAC2 in web
    assert re.search(r"\b\d+s\b", web)
    assert "tftp <b>sent</b> ipxe.efi" in web and "old news" not in web
    assert "&lt;b&gt;sent&lt;/b&gt;" in text and "<b>sent</b>" not in text  # escaped
    assert "enroll" in listed[uuids["rack1-a"]] and "—" in listed[uuids["rack1-a"]]
    assert ">all <b>5</b>" in text and "manageable <b>2</b>" in text and "enroll <b>3</b>" in text

    assert set(rows(page(api, "/dashboard?state=manageable"))) == {
        uuids["rack2-a"],
        uuids["web-01"],
    }
    assert set(rows(page(api, "/dashboard?q=RACK2"))) == {uuids["rack2-a"], uuids["rack2-b"]}
    assert set(rows(page(api, "/dashboard?q=52-54-00-10-00-02"))) == {uuids["web-01"]}
    assert set(rows(page(api, f"/dashboard?q={uuids['rack1-b'][:8]}"))) == {uuids["rack1-b"]}
    assert rows(page(api, "/dashboard?q=rack&state=manageable")) == {
        uuids["rack2-a"]: rows(page(api, "/dashboard"))[uuids["rack2-a"]]
    }
    assert "No node matches." in page(api, "/dashboard?q=nothing-like-this")

    # paging: the next link carries the filters and the marker, pages do not overlap
    seen: list[str] = []
    url: str | None = "/dashboard?sort=name&limit=2"
    for _ in range(5):
        assert url is not None
        text = page(api, url)
        seen += list(rows(text))
        found = re.search(r'<a href="([^"]+)" id="next">', text)
        url = html.unescape(found.group(1)) if found else None
        if url is None:
            break
        assert "sort=name" in url and "limit=2" in url and "marker=" in url
    assert url is None
    assert seen == [uuids[n] for n in sorted(uuids)]

    # bad input: a 400 page saying what is wrong; the server keeps serving
    for bad, words in (
        ("state=sleeping", "not a provision state"),
        ("limit=100000", "limit must be between 1 and 500"),
        ("marker=nope", "marker must be a node UUID"),
        ("sort=random", "sort must be one of"),
        ("colour=red", "Unknown query parameter"),
        (f"marker={'0' * 8}-0000-0000-0000-{'0' * 12}", "start from the first page"),
    ):
        assert words in html.unescape(page(api, f"/dashboard?{bad}", 400)), bad
    assert api.get("/dashboard", version=None).status == 200


def test_node_page(api: LiveApi) -> None:
    uuid = new_node(api, "web-01", MAC1)
    manage(api, uuid)
    record = api.store.get_node(uuid)
    api.store.save_inventory(
        record.id,
        {
            "cpu": {"count": 4, "model_name": "Xeon <E5>", "architecture": "x86_64"},
            "memory": {"physical_mb": 8192},
            "interfaces": [{"name": "eth0", "mac_address": MAC1}],
        },
    )
    first = api.ctx.timeline.record("dhcp", "offer", "OFFER 10.0.0.7", mac=MAC1, data={"ip": "x"})
    last = api.ctx.timeline.record("state", "transition", "enroll → manageable", node=uuid)
    api.ctx.timeline.record("dhcp", "discover", "someone else", mac=MAC3)

    text = page(api, f"/dashboard/nodes/{uuid}")
    assert f'<dd class="mono">{uuid}</dd>' in page(api, "/dashboard/nodes/web-01")  # by name
    assert '<span id="state" class="badge idle">manageable</span>' in text
    assert f'href="/dashboard/macs/{MAC1}"' in text
    # inventory summary (escaped) and the raw document
    assert "4 × Xeon &lt;E5&gt;, x86_64" in text and "8.0 GiB" in text
    assert "Full inventory (JSON)" in text
    # the live timeline: both keys (MAC and UUID), newest first; the stream resumes after it
    timeline = rows(text, "data-seq")
    assert list(timeline) == [str(last.seq), str(first.seq)]
    assert "OFFER 10.0.0.7" in timeline[str(first.seq)] and "ip=x" in timeline[str(first.seq)]
    epoch = stream.epoch(api.ctx.timeline)
    assert f'data-stream="/dashboard/events?node={uuid}&amp;since={epoch}-{last.seq}"' in text
    # the history the conductor wrote (manage: enroll → verifying → manageable)
    history = re.search(r'<table class="events" id="history">(.*?)</table>', text, re.S)
    assert history is not None and history.group(1).count("<tr") >= 2
    assert "No history." not in text

    fresh = new_node(api, "blank")
    text = page(api, f"/dashboard/nodes/{fresh}")
    assert "Not inspected yet." in text and "No history." in text
    assert f"since={epoch}-0" in text and "Nothing recorded yet" in text
    assert "could not be found" in page(api, "/dashboard/nodes/nope", 404)


def test_unknown_macs(api: LiveApi) -> None:
    uuid = new_node(api, "web-01", MAC1)
    timeline = api.ctx.timeline
    timeline.record("dhcp", "discover", "a port's MAC, never tied to a node", mac=MAC1)
    timeline.record("agent", "lookup", "learned", mac=MAC3, node=uuid)  # learned, no port
    timeline.record("dhcp", "discover", "first", mac=STRANGER, data={"arch": 7})
    timeline.record("dhcp", "ignored", "<i>no</i> such node", mac=STRANGER, level="warning")
    timeline.record("tftp", "refused", "other", mac="de:ad:be:ef:01:01")
    timeline.record("state", "transition", "node key, not a MAC", node=uuid)
    timeline.record("tftp", "finished", "by IP", mac="ip:10.0.0.99")

    text = page(api, "/dashboard/unknown")
    found = rows(text, "data-mac")
    assert list(found) == ["ip:10.0.0.99", "de:ad:be:ef:01:01", STRANGER]  # newest first
    assert "&lt;i&gt;no&lt;/i&gt; such node" in text
    assert "2" in found[STRANGER].split() and "dhcp" in found[STRANGER]
    assert list(rows(page(api, "/dashboard/unknown?q=DE-AD-BE-EF-00"), "data-mac")) == [STRANGER]
    assert list(rows(page(api, "/dashboard/unknown?limit=2"), "data-mac")) == [
        "ip:10.0.0.99",
        "de:ad:be:ef:01:01",
    ]
    assert "show more" in page(api, "/dashboard/unknown?limit=2")
    assert list(rows(page(api, "/dashboard/unknown?q=ip:10."), "data-mac")) == ["ip:10.0.0.99"]
    assert "not (the start of) a MAC" in html.unescape(page(api, "/dashboard/unknown?q=zz", 400))
    # a port that appears makes the MAC known
    assert api.post("/v1/ports", {"address": STRANGER, "node_uuid": uuid}).status == 201
    assert STRANGER not in rows(page(api, "/dashboard/unknown"), "data-mac")

    mac_page = page(api, "/dashboard/macs/DE-AD-BE-EF-01-01")
    assert "baremetal port create de:ad:be:ef:01:01" in mac_page and "other" in mac_page
    reply = api.get(f"/dashboard/macs/{MAC1}", version=None)
    assert reply.status == 302 and reply.headers["Location"] == f"/dashboard/nodes/{uuid}"
    assert "not a MAC address" in html.unescape(page(api, "/dashboard/macs/xyz", 400))
    assert "by IP" in page(api, "/dashboard/macs/ip:10.0.0.99")
    assert "not a MAC address" in html.unescape(page(api, "/dashboard/macs/ip:10.0.0.999", 400))


def test_static_files(api: LiveApi) -> None:
    reply = api.get("/dashboard/static/dashboard.js", version=None)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/javascript")
    assert b"EventSource" in reply.raw
    reply = api.get("/dashboard/static/dashboard.css", version=None)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/css")
    assert api.get("/dashboard/static/..%2Fpages.py", version=None).status == 404
    assert api.get("/dashboard/static/pages.py", version=None).status == 404


def test_dashboard_needs_the_api_credentials(tmp_path: Path) -> None:
    api = LiveApi(f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path / "data").start()
    try:
        uuid = new_node(api, "n1", MAC1)
        for path in (
            "/dashboard",
            f"/dashboard/nodes/{uuid}",
            "/dashboard/unknown",
            f"/dashboard/events?node={uuid}",
            "/dashboard/static/dashboard.js",
        ):
            for auth in (False, ("admin", "wrong")):
                reply = api.get(path, auth=auth, version=None)
                assert reply.status == 401, (path, auth)
                assert reply.headers["WWW-Authenticate"] == 'Basic realm="Baremetal API"'
        assert uuid in page(api, "/dashboard")  # with the credentials
    finally:
        api.close()


# ---- the live feed --------------------------------------------------------------------------


class Sse:
    """A minimal server-sent events reader over an aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 5.0) -> dict[str, str]:
        """The next message or comment: ``{"id", "event", "data"}`` or ``{"comment"}``."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if not line:
                    if fields:
                        return fields
                    continue
                name, _, value = line.partition(":")
                fields[name or "comment"] = value[1:] if value.startswith(" ") else value

    async def event(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next ``timeline`` event's JSON (skipping comments and ``retry``)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if message.get("event") == "timeline":
                    doc: dict[str, Any] = json.loads(message["data"])
                    assert message["id"] == f"{doc['epoch']}-{doc['seq']}"
                    return doc


@asynccontextmanager
async def sse(api: LiveApi, query: str, **headers: str) -> AsyncIterator[Sse]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{api.port}/dashboard/events?{query}"
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache, no-store"
            yield Sse(response)


async def until(check: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_stream_replays_then_follows(api: LiveApi) -> None:
    uuid = new_node(api, "web-01", MAC1)
    timeline = api.ctx.timeline
    before = [timeline.record("dhcp", "discover", f"old {i}", mac=MAC1) for i in range(3)]

    async def scenario() -> None:
        # no position: the recent backlog, then live events of the node's keys only
        async with sse(api, f"node={uuid}") as feed:
            assert (await feed.next()) == {"retry": "3000"}
            assert [(await feed.event())["summary"] for _ in range(3)] == [
                "old 0",
                "old 1",
                "old 2",
            ]
            await until(lambda: timeline.subscribers == 1)
            timeline.record("dhcp", "discover", "not this node", mac=MAC3)
            move = timeline.record(
                "state", "transition", "enroll → manageable", node=uuid, data={"to": "manageable"}
            )
            doc = await feed.event()
            assert doc["seq"] == move.seq and doc["to"] == "manageable" and doc["node"] == uuid
            offer = timeline.record("dhcp", "offer", "OFFER", mac=MAC1, data={"ip": "10.0.0.9"})
            doc = await feed.event()
            assert (doc["seq"], doc["details"], doc["mac"]) == (offer.seq, "ip=10.0.0.9", MAC1)
        # the page's since: only what came after; Last-Event-ID (a reconnect) wins over it
        async with sse(api, f"node=web-01&since={before[1].seq}") as feed:
            assert [(await feed.event())["seq"] for _ in range(3)] == [
                before[2].seq,
                move.seq,
                offer.seq,
            ]
        epoch = stream.epoch(timeline)
        headers = {"Last-Event-ID": f"{epoch}-{move.seq}"}
        async with sse(api, f"node={uuid}&since=0", **headers) as feed:
            assert (await feed.event())["seq"] == offer.seq
        # an id of another epoch (pxeforge restarted since): all this timeline has
        headers = {"Last-Event-ID": f"0ld-{offer.seq + 100}"}
        async with sse(api, f"node={uuid}&since={epoch}-{offer.seq}", **headers) as feed:
            assert (await feed.event())["summary"] == "old 0"
        # one MAC
        async with sse(api, f"mac={MAC3.upper().replace(':', '-')}&since=0") as feed:
            assert (await feed.event())["summary"] == "not this node"
        timeline.record("http", "fetched", "GET /boot.ipxe", mac="ip:10.0.0.7")
        async with sse(api, "mac=ip:10.0.0.7") as feed:
            assert (await feed.event())["summary"] == "GET /boot.ipxe"

    asyncio.run(scenario())
    for query, status in (
        ("", 400),
        (f"node={uuid}&mac={MAC1}", 400),
        ("mac=nope", 400),
        (f"node={uuid}&since=x", 400),
        ("node=nope", 404),
        (f"node={uuid}&what=1", 400),
    ):
        assert api.get(f"/dashboard/events?{query}", version=None).status == status, query


def test_stream_heartbeat_and_client_disconnect(
    api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "HEARTBEAT", 0.3)
    monkeypatch.setattr(stream, "POLL", 0.05)
    timeline = api.ctx.timeline

    async def scenario() -> None:
        async with sse(api, f"mac={MAC1}") as feed:
            assert (await feed.next())["retry"] == "3000"
            started = time.monotonic()
            assert (await feed.next(timeout=3)) == {"comment": "keep-alive"}
            assert (await feed.next(timeout=3)) == {"comment": "keep-alive"}
            assert 0.5 <= time.monotonic() - started < 3
            assert timeline.subscribers == 1
        # the client left: the server notices and drops its subscription
        await until(lambda: timeline.subscribers == 0, 5)

    asyncio.run(scenario())


class WatchedTimeline(Timeline):
    """A timeline that keeps the subscriptions it made (to look at their drop counts)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.made: list[Subscription] = []

    def subscribe(self, *args: Any, **kwargs: Any) -> Subscription:
        sub = super().subscribe(*args, **kwargs)
        self.made.append(sub)
        return sub


def test_a_slow_reader_loses_nothing_the_timeline_still_has(api: LiveApi) -> None:
    timeline = WatchedTimeline(per_key=5000)
    api.ctx.timeline = timeline
    burst = 2000  # far more than the stream's queue (stream.QUEUE) holds

    def record_burst() -> None:  # on the server's loop: no chance for the stream to drain
        for i in range(burst):
            timeline.record("tftp", "started", f"block {i}", mac=MAC1)

    async def scenario() -> None:
        async with sse(api, f"mac={MAC1}&since=0") as feed:
            await until(lambda: timeline.subscribers == 1)
            api._loop.call_soon_threadsafe(record_burst)
            got = [(await feed.event())["summary"] for _ in range(burst)]
            assert sorted(got, key=lambda s: int(s.split()[1])) == [
                f"block {i}" for i in range(burst)
            ]
            assert len(set(got)) == burst
            assert timeline.made[0].dropped > 0  # it did overflow, and caught up
            assert timeline.made[0].queue.maxsize == stream.QUEUE

    asyncio.run(scenario())


def test_open_streams_do_not_hold_up_shutdown(tmp_path: Path) -> None:
    api = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}").start()
    closed = False
    try:

        async def scenario() -> None:
            nonlocal closed
            async with sse(api, f"mac={MAC1}") as feed:
                await feed.next()
                await until(lambda: api.ctx.timeline.subscribers == 1)
                started = time.monotonic()
                await asyncio.to_thread(api.close)
                closed = True
                assert time.monotonic() - started < 5  # not aiohttp's 60 s shutdown timeout
                with pytest.raises((EOFError, aiohttp.ClientError)):
                    await feed.next(timeout=5)
            assert api.ctx.timeline.subscribers == 0

        asyncio.run(scenario())
    finally:
        if not closed:
            api.close()
