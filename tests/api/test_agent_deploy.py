"""Image deploy and cleaning through the agent, end to end over HTTP: the live API and
conductor (`LiveApi`), an agent serving the spec's ``/v1/commands`` on loopback
(`agent_peer.AgentPeer`: looks up, heartbeats, really downloads, hashes and writes the image
into a file standing for the disk), and the image served by pxeforge's own boot-plane HTTP
server (``/images/<name>``, uploaded with ``PUT /v1/images/<name>``).

Covers the spec's heartbeat table (docs/agent-protocol.md) — deploy with and without power
control, automated and manual cleaning — and what goes wrong: wrong checksum, unreachable
image, disk too small, a wrong agent token, refusals at the verb, heartbeats without a token,
progress, wait timeouts and an agent that dies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeforge.boot.booter import StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.resolve import BootFiles
from pxeforge.config import Settings
from pxeforge.drivers.base import BootDevice, BootSetting, PowerState
from pxeforge.images import ImageStore
from pxeforge.servers.http import start_http

from .agent_peer import AgentPeer
from .conftest import LiveApi

MAC = "52:54:00:aa:bb:01"
DISK = 8 * 1024 * 1024
IMAGE = os.urandom(3 * 1024 * 1024 + 123)  # a "raw whole-disk image"


@pytest.fixture
def images(tmp_path: Path) -> Iterator[str]:
    """pxeforge's boot-plane HTTP server for ``<data_dir>/images`` (``disk.raw`` stored);
    yields the base URL of the images."""
    store = ImageStore(tmp_path / "data" / "images")
    upload = store.begin("disk.raw")
    upload.write(IMAGE)
    upload.commit()
    (tmp_path / "vmlinuz").write_bytes(b"K")
    booter = StaticBooter(tmp_path / "vmlinuz", [], "")
    registry = ClientRegistry()
    (tmp_path / "root").mkdir()
    files = BootFiles(booter, tmp_path / "root", registry, http_base="http://unused")
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        start_http("127.0.0.1", 0, files, booter=booter, registry=registry, images=store)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}/images"
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    kernel, ramdisk = tmp_path / "deploy.kernel", tmp_path / "deploy.initrd"
    kernel.write_bytes(b"k")
    ramdisk.write_bytes(b"r")
    values: dict[str, Any] = {
        "deploy_kernel": kernel,
        "deploy_ramdisk": ramdisk,
        "data_dir": tmp_path / "data",
        "automated_clean": False,
        "agent_command_timeout": 10.0,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., LiveApi]]:
    started: list[LiveApi] = []

    def make(db_url: str | None = None, **changes: Any) -> LiveApi:
        url = db_url or f"sqlite:///{tmp_path / 'pxeforge.db'}"
        api = LiveApi(url, settings=_settings(tmp_path, **changes)).start()
        started.append(api)
        return api

    try:
        yield make
    finally:
        for api in started:
            api.close()


@pytest.fixture
def make_peer(tmp_path: Path) -> Iterator[Callable[..., AgentPeer]]:
    peers: list[AgentPeer] = []

    def make(api: LiveApi, disk_size: int = DISK, **kw: Any) -> AgentPeer:
        disk = tmp_path / f"disk{len(peers)}.img"
        disk.write_bytes(b"\xee" * disk_size)  # "old data" everywhere
        peer = AgentPeer(api.port, MAC, disk, disk_size, **kw)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.close()


def new_node(api: LiveApi, driver: str = "fake-hardware", **fields: Any) -> str:
    body: dict[str, Any] = {"driver": driver, "name": "n1", **fields}
    if driver == "fake-hardware":
        body.setdefault("driver_info", {"fake_id": "m1"})
    reply = api.post("/v1/nodes", body)
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    assert api.post("/v1/ports", {"node_uuid": uuid, "address": MAC}).status == 201
    return uuid


def put_verb(api: LiveApi, uuid: str, target: str, **body: Any) -> Any:
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": target, **body})
    api.wait_idle()
    return reply


def verb(api: LiveApi, uuid: str, target: str, **body: Any) -> dict[str, Any]:
    reply = put_verb(api, uuid, target, **body)
    assert reply.status == 202, reply.raw
    return api.node(uuid)


def wait_for(api: LiveApi, uuid: str, *states: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (node := api.node(uuid))["provision_state"] not in states:
        assert time.monotonic() < deadline, (
            f"never {states}: {node['provision_state']!r}, last_error {node['last_error']!r}"
        )
        time.sleep(0.05)
    api.wait_idle()
    return api.node(uuid)


def image_fields(base: str, **changes: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "image_source": f"{base}/disk.raw",
        "image_os_hash_algo": "sha256",
        "image_os_hash_value": hashlib.sha256(IMAGE).hexdigest(),
        "image_disk_format": "raw",
    }
    info.update(changes)
    return {k: v for k, v in info.items() if v is not None}


def available(api: LiveApi, uuid: str) -> None:
    verb(api, uuid, "manage")
    assert verb(api, uuid, "provide")["provision_state"] == "available"


def set_image(api: LiveApi, uuid: str, info: dict[str, Any]) -> None:
    reply = api.patch(f"/v1/nodes/{uuid}", [{"op": "add", "path": "/instance_info",
                                             "value": info}])  # fmt: skip
    assert reply.status == 200, reply.raw


def history(api: LiveApi, uuid: str) -> str:
    return "\n".join(e["event"] for e in api.get(f"/v1/nodes/{uuid}/history").json["history"])


# ---- deploy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_image_deploy_with_power_control(
    db: str,
    request: pytest.FixtureRequest,
    make_api: Callable[..., LiveApi],
    make_peer: Callable[..., AgentPeer],
    images: str,
) -> None:
    api = make_api(request.getfixturevalue("pg_url") if db == "postgresql" else None)
    uuid = new_node(api, properties={"root_device": {"size": ">= 1"}})
    available(api, uuid)
    # the image as an operator stores it: PUT /v1/images/<name>, then its URL and sha256
    reply = api.request("PUT", "/v1/images/uploaded.raw", raw=IMAGE,
                        headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert reply.status == 201, reply.raw
    stored = reply.json
    assert stored["url"].endswith("/images/uploaded.raw")
    set_image(api, uuid, image_fields(images, image_source=f"{images}/uploaded.raw",
                                      image_os_hash_value=stored["sha256"]))  # fmt: skip
    node = verb(api, uuid, "deploy")
    assert node["provision_state"] == "wait call-back"
    machine = api.fake.machines["m1"]
    assert (
        machine.boot == BootSetting(BootDevice.PXE, False) and machine.power is PowerState.POWER_ON
    )

    peer = make_peer(api)
    assert peer.boot() == uuid
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", node["last_error"]
    assert node["last_error"] is None and node["power_state"] == "power on"
    # the image is on the "disk", the rest of the disk untouched
    data = peer.disk.read_bytes()
    assert data[: len(IMAGE)] == IMAGE and data[len(IMAGE) :] == b"\xee" * (DISK - len(IMAGE))
    # boot device disk (persistent), synced, powered off then on by the driver
    assert machine.boot == BootSetting(BootDevice.DISK, True)
    assert machine.power is PowerState.POWER_ON
    assert peer.events == ["sync"]
    names = [c.name for c in peer.commands]
    assert names == ["prepare_image", "sync"]
    internal = node["driver_internal_info"]
    assert internal["deploy_result"]["bytes_written"] == len(IMAGE)
    assert internal["deploy_result"]["os_hash_value"] == hashlib.sha256(IMAGE).hexdigest()
    for gone in ("agent_secret_token", "agent_url", "agent_command"):
        assert gone not in internal, gone
    text = history(api, uuid)
    assert "The agent writes" in text and "Image written to" in text
    assert '"deploying" -> "active" on "done"' in text
    # undeploy: back to available (automated cleaning off in these settings)
    assert verb(api, uuid, "undeploy")["provision_state"] == "available"
    assert "deploy_result" not in api.node(uuid)["driver_internal_info"]


def test_image_deploy_manual_management_reboots_through_the_agent(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api, driver="manual-management")
    available(api, uuid)
    sha512 = hashlib.sha512(IMAGE).hexdigest()
    set_image(api, uuid, image_fields(images, image_os_hash_algo="sha512",
                                      image_os_hash_value=sha512))  # fmt: skip
    assert verb(api, uuid, "deploy")["provision_state"] == "wait call-back"
    peer = make_peer(api)
    peer.boot()
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", node["last_error"]
    deadline = time.monotonic() + 10
    while "run_image" not in peer.events:
        assert time.monotonic() < deadline, peer.events
        time.sleep(0.05)
    assert peer.events == ["sync", "run_image"]
    assert peer.disk.read_bytes()[: len(IMAGE)] == IMAGE
    assert "reboots the machine into the instance" in history(api, uuid)


def test_image_checksum_accepted_as_image_checksum(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    digest = hashlib.sha256(IMAGE).hexdigest()
    set_image(api, uuid, image_fields(images, image_os_hash_algo=None, image_os_hash_value=None,
                                      image_checksum=f"sha256:{digest}"))  # fmt: skip
    verb(api, uuid, "deploy")
    make_peer(api).boot()
    assert wait_for(api, uuid, "active", "deploy failed")["provision_state"] == "active"


def test_wrong_checksum_fails_with_the_agents_error(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    wrong = hashlib.sha256(b"another image").hexdigest()
    set_image(api, uuid, image_fields(images, image_os_hash_value=wrong))
    verb(api, uuid, "deploy")
    peer = make_peer(api)
    peer.boot()
    node = wait_for(api, uuid, "deploy failed", "active")
    assert node["provision_state"] == "deploy failed"
    error = node["last_error"]
    assert "prepare_image failed" in error and "ImageChecksumError" in error, error
    assert wrong in error and hashlib.sha256(IMAGE).hexdigest() in error, error
    assert node["target_provision_state"] == "active"
    assert peer.events == []  # never synced nor rebooted into a bad image
    assert peer.disk.read_bytes()[: len(IMAGE)] == b"\0" * len(IMAGE)  # the agent zeroed it
    # retry with the right checksum: deploy again from "deploy failed", with a new agent boot
    set_image(api, uuid, image_fields(images))
    assert verb(api, uuid, "active")["provision_state"] == "wait call-back"
    assert "agent_secret_token" not in api.node(uuid)["driver_internal_info"]
    make_peer(api).boot()
    assert wait_for(api, uuid, "active", "deploy failed")["provision_state"] == "active"


def test_unreachable_image_fails_the_deploy(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images, image_source=f"{images}/missing.raw"))
    verb(api, uuid, "deploy")
    make_peer(api).boot()
    node = wait_for(api, uuid, "deploy failed", "active")
    assert "ImageDownloadError" in node["last_error"] and "missing.raw" in node["last_error"]


def test_disk_too_small_fails_the_deploy(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    verb(api, uuid, "deploy")
    peer = make_peer(api, disk_size=1024 * 1024)
    peer.boot()
    node = wait_for(api, uuid, "deploy failed", "active")
    assert "does not fit" in node["last_error"], node["last_error"]
    assert peer.disk.read_bytes() == b"\xee" * (1024 * 1024)  # refused before writing


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_disk_format": "iso"}, "image_disk_format 'iso' is not permitted"),
        ({"image_disk_format": None}, "image_disk_format is required"),
        ({"image_os_hash_algo": None, "image_os_hash_value": None}, "no image checksum"),
        ({"image_os_hash_algo": "md5"}, "'md5' is not accepted"),
        ({"image_os_hash_value": "abc"}, "64 hex digits"),
        (
            {"image_os_hash_algo": None, "image_os_hash_value": None, "image_checksum": "0" * 32},
            "must name its algorithm",
        ),  # fmt: skip
        ({"image_source": "file:///dev/zero"}, "must be an http:// or https:// URL"),
        ({"image_source": None}, "image_source is required"),
        ({"image_type": "partition"}, "only whole-disk images"),
    ],
)
def test_verb_refuses_what_cannot_be_deployed(
    make_api: Callable[..., LiveApi], images: str, changes: dict[str, Any], message: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images, **changes))
    reply = put_verb(api, uuid, "deploy")
    assert reply.status == 400 and message in reply.fault, reply.raw
    deploy = api.get(f"/v1/nodes/{uuid}/validate").json["deploy"]
    assert deploy["result"] is False and message in deploy["reason"]
    node = api.node(uuid)
    assert node["provision_state"] == "available" and api.fake.machines["m1"].boots == 0


def test_verb_refuses_image_deploys_without_an_agent_ramdisk(
    make_api: Callable[..., LiveApi], images: str
) -> None:
    api = make_api(deploy_kernel=None, deploy_ramdisk=None)
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    reply = put_verb(api, uuid, "deploy")
    assert reply.status == 400 and "--deploy-kernel" in reply.fault
    assert api.node(uuid)["provision_state"] == "available"


def test_agent_token_is_required_on_agent_calls(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    verb(api, uuid, "deploy")
    peer = make_peer(api)
    _, body = peer._api("GET", f"/v1/lookup?addresses={MAC}")
    peer.node, peer.token = uuid, body["config"]["agent_token"]
    real = peer.token
    peer.token = "x" * 128  # the agent's command server expects another token than pxeforge's
    assert peer.heartbeat(token=real) == 202
    node = wait_for(api, uuid, "deploy failed", "active")
    assert "HTTP 401" in node["last_error"] and real not in node["last_error"]
    assert peer.commands == []


def test_heartbeat_without_token_is_refused_and_nothing_runs(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    verb(api, uuid, "deploy")
    peer = make_peer(api)
    peer._api("GET", f"/v1/lookup?addresses={MAC}")
    peer.node = uuid
    status, body = peer._api("POST", f"/v1/heartbeat/{uuid}", {"callback_url": peer.url})
    assert status == 400 and "token is required" in body["error_message"]
    status, _ = peer._api("POST", f"/v1/heartbeat/{uuid}",
                          {"callback_url": peer.url, "agent_token": "y" * 128})  # fmt: skip
    assert status == 400
    api.wait_idle()
    assert peer.commands == [] and api.node(uuid)["provision_state"] == "wait call-back"


def test_progress_is_visible_and_heartbeats_keep_the_wait_alive(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    # the write takes longer than deploy_callback_timeout: only silence may time out
    api = make_api(deploy_callback_timeout=1.5, check_provision_state_interval=0.2)
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    verb(api, uuid, "deploy")
    peer = make_peer(api, progress_interval=0.3)
    peer.slow_write = 3.0 / (len(IMAGE) // (64 * 1024))  # about 3 s in all
    peer.boot()
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while (node := api.node(uuid))["provision_state"] in ("wait call-back", "deploying"):
        message = node["driver_internal_info"].get("agent_status_message")
        if message and message not in seen:
            seen.append(message)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", node["last_error"]
    assert len(seen) >= 3 and all(m.startswith("prepare_image: ") for m in seen), seen
    assert seen[-1].endswith("bytes written")


# ---- cleaning -------------------------------------------------------------------------------


def test_automated_cleaning_on_provide(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer]
) -> None:
    api = make_api(automated_clean=True)
    uuid = new_node(api)
    verb(api, uuid, "manage")
    node = verb(api, uuid, "provide")
    assert node["provision_state"] == "clean wait" and node["power_state"] == "power on"
    peer = make_peer(api)
    peer.boot()
    node = wait_for(api, uuid, "available", "clean failed")
    assert node["provision_state"] == "available", node["last_error"]
    assert node["power_state"] == "power off" and node["clean_step"] == {}
    assert api.fake.machines["m1"].power is PowerState.POWER_OFF
    names = [(c.name, c.status) for c in peer.commands]
    assert names == [("get_clean_steps", "SUCCEEDED"), ("execute_clean_step", "SUCCEEDED")]
    data = peer.disk.read_bytes()
    mib = 1024 * 1024
    assert data[:mib] == data[-mib:] == b"\0" * mib and data[mib:-mib] == b"\xee" * (DISK - 2 * mib)
    text = history(api, uuid)
    assert "Automated cleaning: steps deploy.erase_devices_metadata" in text
    assert "Clean step deploy.erase_devices_metadata done" in text
    internal = node["driver_internal_info"]
    assert not {"clean_steps", "clean_step", "agent_secret_token", "agent_command"} & set(internal)


def test_node_automated_clean_overrides_the_setting(
    make_api: Callable[..., LiveApi],
) -> None:
    api = make_api(automated_clean=True)
    uuid = new_node(api, automated_clean=False)
    verb(api, uuid, "manage")
    assert verb(api, uuid, "provide")["provision_state"] == "available"
    assert "Automated cleaning is disabled (the node's automated_clean)" in history(api, uuid)


def test_automated_cleaning_without_ramdisk_fails_clearly(
    make_api: Callable[..., LiveApi],
) -> None:
    api = make_api(automated_clean=True, deploy_kernel=None, deploy_ramdisk=None)
    uuid = new_node(api)
    verb(api, uuid, "manage")
    node = verb(api, uuid, "provide")
    assert node["provision_state"] == "clean failed"
    assert "--deploy-kernel" in node["last_error"] and "automated_clean" in node["last_error"]


def test_manual_cleaning_erase_devices(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer]
) -> None:
    api = make_api()
    uuid = new_node(api)
    verb(api, uuid, "manage")
    steps = [{"interface": "deploy", "step": "erase_devices"}]
    node = verb(api, uuid, "clean", clean_steps=steps)
    assert node["provision_state"] == "clean wait"
    peer = make_peer(api)
    peer.boot()
    node = wait_for(api, uuid, "manageable", "clean failed")
    assert node["provision_state"] == "manageable", node["last_error"]
    assert peer.disk.read_bytes() == b"\0" * DISK
    assert "Manual cleaning: steps deploy.erase_devices" in history(api, uuid)


def test_manual_clean_steps_are_checked(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer]
) -> None:
    api = make_api()
    uuid = new_node(api)
    verb(api, uuid, "manage")
    for steps, message in (
        ([{"interface": "bios", "step": "apply_configuration"}], "interface 'bios'"),
        ([{"interface": "deploy"}], "needs a 'step'"),
        ([{"interface": "deploy", "step": "x", "priority": 3}], "unknown key(s) priority"),
        (["erase_devices"], "must be an object"),
    ):
        reply = put_verb(api, uuid, "clean", clean_steps=steps)
        assert reply.status == 400 and message in reply.fault, (steps, reply.raw)
    # a step the agent does not offer fails the cleaning when the agent says what it has
    node = verb(api, uuid, "clean", clean_steps=[{"interface": "deploy", "step": "shred"}])
    assert node["provision_state"] == "clean wait"
    make_peer(api).boot()
    node = wait_for(api, uuid, "clean failed", "manageable")
    assert "deploy.shred is not offered" in node["last_error"]
    assert "deploy.erase_devices" in node["last_error"]


def test_failed_clean_step_fails_cleaning(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer]
) -> None:
    api = make_api(automated_clean=True)
    uuid = new_node(api)
    verb(api, uuid, "manage")
    verb(api, uuid, "provide")
    peer = make_peer(api, disk_size=DISK)
    peer.disk.unlink()  # the "disk" vanished: the step fails on the agent
    peer.boot()
    node = wait_for(api, uuid, "clean failed", "available")
    assert node["last_error"].startswith("Clean step deploy.erase_devices_metadata failed:")
    assert "FileNotFoundError" in node["last_error"] or "No such file" in node["last_error"]


# ---- timeouts and dead agents ---------------------------------------------------------------


def test_clean_wait_without_heartbeat_times_out(make_api: Callable[..., LiveApi]) -> None:
    api = make_api(automated_clean=True, clean_callback_timeout=0.5,
                   check_provision_state_interval=0.2)  # fmt: skip
    uuid = new_node(api)
    verb(api, uuid, "manage")
    assert verb(api, uuid, "provide")["provision_state"] == "clean wait"
    node = wait_for(api, uuid, "clean failed", timeout=15)
    assert node["last_error"].startswith("Timeout reached while cleaning the node.")


def test_agent_dying_mid_deploy_times_out(
    make_api: Callable[..., LiveApi], make_peer: Callable[..., AgentPeer], images: str
) -> None:
    api = make_api(deploy_callback_timeout=1.5, check_provision_state_interval=0.2)
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    verb(api, uuid, "deploy")
    peer = make_peer(api, progress_interval=60)
    peer.slow_write = 0.5  # slow enough to be killed mid-write
    peer.boot()
    deadline = time.monotonic() + 10
    while not peer.commands:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    peer.close()  # the machine died: no heartbeat, no answer on port 9999
    node = wait_for(api, uuid, "deploy failed", "active", timeout=20)
    assert node["provision_state"] == "deploy failed"
    assert node["last_error"] == f"Timeout reached while waiting for callback for node {uuid}"
