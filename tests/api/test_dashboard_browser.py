"""The dashboard in a real browser (headless Chromium over the DevTools protocol, see
`tests.api.chromium`): the node list, filters and search, a node page whose timeline
receives a real state transition live (no reload), the unknown MACs, and HTTP Basic answered
the way a person answers the browser's prompt. Screenshots go to tests/api/screenshots/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeforge.recording import HistoryRecorder

from .chromium import Browser, Page, chromium_binary
from .conftest import LiveApi

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed"),
]

SHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium = Browser(tmp_path / "chromium").start()
    try:
        yield chromium
    finally:
        chromium.close()


def enroll(api: LiveApi, name: str, mac: str) -> str:
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "name": name})
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    assert api.post("/v1/ports", {"address": mac, "node_uuid": uuid}).status == 201
    return uuid


def provision(api: LiveApi, uuid: str, target: str) -> None:
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": target})
    assert reply.status == 202, reply.raw


ROWS = "document.querySelectorAll('#nodes tbody tr[data-uuid]').length"
TIMELINE = "Array.from(document.querySelectorAll('#timeline tbody tr'), r => r.innerText)"


def test_dashboard_in_a_browser(tmp_path: Path, browser: Browser) -> None:
    api = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}").start()
    # the production wiring of `pxeforge serve`: transitions reach the timeline
    api.store.observers.append(HistoryRecorder(api.ctx.timeline, api.store))
    try:
        uuids = [enroll(api, f"rack1-node{i:02d}", f"52:54:00:00:01:{i:02x}") for i in range(12)]
        for uuid in uuids[:4]:
            provision(api, uuid, "manage")
        api.wait_idle()
        timeline = api.ctx.timeline
        timeline.record("dhcp", "discover", "DISCOVER (UEFI x64)", mac="52:54:00:00:01:05")
        timeline.record("dhcp", "discover", "DISCOVER from a stranger", mac="de:ad:be:ef:00:01")
        timeline.record("tftp", "refused", "ipxe.efi not found", mac="de:ad:be:ef:00:02",
                        level="warning")  # fmt: skip
        base = f"http://127.0.0.1:{api.port}"
        target = uuids[7]
        api.store.save_inventory(
            target,
            {
                "system_vendor": {"manufacturer": "QEMU", "product_name": "Standard PC (Q35)"},
                "cpu": {"count": 2, "model_name": "QEMU Virtual CPU", "architecture": "x86_64"},
                "memory": {"physical_mb": 2048},
                "boot": {"current_boot_mode": "uefi"},
                "disks": [{"name": "/dev/vda", "size": 10 * 1024**3, "model": "virtio"}],
                "interfaces": [{"name": "enp1s0", "mac_address": "52:54:00:00:01:07"}],
            },
        )

        async def scenario() -> None:
            page = await browser.page()
            try:
                await walk(page, base, api, target)
            finally:
                await page.close()
            assert page.errors == []  # no script error, no CSP violation, no failed load

        asyncio.run(scenario())
    finally:
        api.close()


async def walk(page: Page, base: str, api: LiveApi, target: str) -> None:
    # the node list: every node, its state and power; the enrolled and managed counts
    await page.navigate(f"{base}/dashboard")
    assert await page.evaluate(ROWS) == 12
    states = await page.evaluate(
        "Array.from(document.querySelectorAll('#nodes .badge'), b => b.textContent)"
    )
    assert sorted(states) == ["enroll"] * 8 + ["manageable"] * 4
    assert "power off" in await page.evaluate("document.querySelector('#nodes').innerText")
    assert "DISCOVER (UEFI x64)" in await page.evaluate(
        "document.querySelector('tr[data-uuid] td.last').parentElement.parentElement.innerText"
    )
    await page.screenshot(SHOTS / "nodes.png")

    # a state filter chip, then the search box (a real form submit)
    await page.loads(lambda: page.evaluate("document.querySelector('a.st-manageable').click()"))
    assert await page.evaluate(ROWS) == 4
    await page.loads(
        lambda: page.evaluate(
            "document.querySelector('input[name=q]').value = 'node07';"
            "document.querySelector('select[name=state]').value = '';"
            "document.querySelector('form.filters').submit()"
        )
    )
    assert await page.evaluate(ROWS) == 1

    # open the node; its live feed connects
    await page.loads(
        lambda: page.evaluate(
            f"document.querySelector('a[href=\"/dashboard/nodes/{target}\"]').click()"
        )  # fmt: skip
    )
    assert await page.evaluate("location.pathname") == f"/dashboard/nodes/{target}"
    assert await page.evaluate("document.getElementById('state').textContent") == "enroll"
    await page.wait_for("document.getElementById('live').textContent.includes('live')")
    await page.evaluate("window.notReloaded = true")

    # a real transition through the API arrives in the page without a reload
    await asyncio.to_thread(provision, api, target, "manage")
    await page.wait_for("document.getElementById('state').textContent === 'manageable'")
    lines = await page.wait_for(f"{TIMELINE}.length >= 2 && {TIMELINE}")
    assert any("verifying → manageable" in line for line in lines), lines
    assert any("enroll → verifying" in line for line in lines), lines
    assert "verifying → manageable" in lines[0]  # newest first
    # text from the wire is text, never markup
    api.ctx.timeline.record(
        "dhcp", "discover", "<img src=x id=injected> hello", mac="52:54:00:00:01:07"
    )
    await page.wait_for(f"{TIMELINE}.some(line => line.includes('hello'))")
    assert await page.evaluate("document.getElementById('injected')") is None
    assert await page.evaluate("window.notReloaded") is True
    assert "2 × QEMU Virtual CPU, x86_64" in await page.evaluate(
        "document.getElementById('inventory').innerText"
    )
    await page.screenshot(SHOTS / "node.png")

    # the unknown MACs, then one of them, live too
    await page.navigate(f"{base}/dashboard/unknown")
    macs = await page.evaluate(
        "Array.from(document.querySelectorAll('#unknown tr[data-mac]'), r => r.dataset.mac)"
    )
    assert macs == ["de:ad:be:ef:00:02", "de:ad:be:ef:00:01"]
    await page.screenshot(SHOTS / "unknown.png")
    await page.loads(lambda: page.evaluate("document.querySelector('#unknown a').click()"))
    assert await page.evaluate("location.pathname") == "/dashboard/macs/de:ad:be:ef:00:02"
    await page.wait_for("document.getElementById('live').textContent.includes('live')")
    api.ctx.timeline.record("dhcp", "discover", "DISCOVER again", mac="de:ad:be:ef:00:02")
    await page.wait_for(f"{TIMELINE}.length === 2 && {TIMELINE}[0].includes('DISCOVER again')")
    assert await page.evaluate("document.getElementById('event-count').textContent") == "2"
    await page.screenshot(SHOTS / "mac.png")


def test_basic_auth_in_a_browser(tmp_path: Path, browser: Browser) -> None:
    api = LiveApi(f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path / "data").start()
    try:
        uuid = enroll(api, "locked-node", "52:54:00:00:02:01")
        assert api.user is not None and api.password is not None
        base = f"http://127.0.0.1:{api.port}"

        async def scenario() -> None:
            page = await browser.page()
            try:
                # the prompt cancelled, then a wrong password: the page is the 401
                await page.handle_basic_auth(None)
                await page.navigate(f"{base}/dashboard")
                assert page.challenges == 1
                assert "Authentication" in await page.evaluate("document.body.innerText")
                page.credentials = ("admin", "wrong")
                await page.navigate(f"{base}/dashboard")
                assert page.challenges >= 2
                assert "Authentication" in await page.evaluate("document.body.innerText")
                assert await page.evaluate("document.getElementById('nodes')") is None
                # the right ones: the pages and the live feed work
                page.credentials = (api.user or "", api.password or "")
                page.errors.clear()
                await page.navigate(f"{base}/dashboard/nodes/{uuid}")
                assert await page.evaluate("document.getElementById('state').textContent") == (
                    "enroll"
                )
                await page.wait_for("document.getElementById('live').textContent.includes('live')")
                api.ctx.timeline.record("dhcp", "discover", "behind auth", mac="52:54:00:00:02:01")
                await page.wait_for(f"{TIMELINE}.some(line => line.includes('behind auth'))")
            finally:
                await page.close()

        asyncio.run(scenario())
    finally:
        api.close()
