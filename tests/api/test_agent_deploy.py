"""Image deploy and cleaning through the agent, end to end over HTTP: the live API and
conductor (`LiveApi`), the real agent (``python -m pxeforge.agent``, a subprocess: looks the
node up, heartbeats, serves its command API on loopback and writes to a loop device), and the
image served by pxeforge's own boot-plane HTTP server (``/images/<name>``, uploaded with
``PUT /v1/images/<name>``).

Covers the spec's heartbeat table (docs/agent-protocol.md) — deploy with and without power
control, automated and manual cleaning — and what goes wrong: wrong checksum, unreachable
image, disk too small, refusals at the verb, heartbeats without a token, progress, wait
timeouts and an agent that dies. Loop devices need root: skipped otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
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
from pxeforge.recording import HistoryRecorder
from pxeforge.servers.http import start_http

from .conftest import LiveApi

# the agent tests' loop devices and slow image server (tests/agent/conftest.py, by path:
# conftest modules are not importable by name across test directories)
_path = Path(__file__).resolve().parent.parent / "agent" / "conftest.py"
_spec = importlib.util.spec_from_file_location("pxeforge_tests_agent_fixtures", _path)
assert _spec is not None and _spec.loader is not None
_agent_fixtures = sys.modules.get(_spec.name) or importlib.util.module_from_spec(_spec)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = _agent_fixtures
    _spec.loader.exec_module(_agent_fixtures)
loop_device = _agent_fixtures.loop_device
image_server = _agent_fixtures.image_server
qemu_img = _agent_fixtures.qemu_img
ImageServer = _agent_fixtures.ImageServer

MAC = "52:54:00:aa:bb:01"
MIB = 1024 * 1024
DISK = 8 * MIB
IMAGE = os.urandom(3 * MIB + 123)  # a "raw whole-disk image"


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
        "agent_command_timeout": 30.0,
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Agent:
    """``python -m pxeforge.agent`` for the node with `MAC`, working on loop device ``dev``
    only (``--power-log``: reboot/poweroff are written down, not done)."""

    def __init__(self, api: LiveApi, dev: str, tmp: Path) -> None:
        self.dev = dev
        n = len(list(tmp.glob("agent*.log")))
        cmdline = tmp / f"cmdline{n}"
        cmdline.write_text(f"ipa-api-url=http://127.0.0.1:{api.port} "
                           f"BOOTIF=01-{MAC.replace(':', '-')}\n")  # fmt: skip
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.power_log = tmp / f"power{n}.log"
        self.log_path = tmp / f"agent{n}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pxeforge.agent", "--cmdline", str(cmdline), "--mac", MAC,
             "--listen", f"127.0.0.1:{port}", "--callback-url", self.url,
             "--disks", os.path.basename(dev), "--min-root-size", str(MIB),
             "--power-log", str(self.power_log),
             "--lookup-attempts", "150", "--lookup-interval", "0.2"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def power(self) -> list[str]:
        return self.power_log.read_text().split() if self.power_log.exists() else []

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def make_agent(tmp_path: Path, loop_device: Callable[..., str]) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(api: LiveApi, disk_size: int = DISK) -> Agent:
        agent = Agent(api, loop_device(disk_size, fill=b"\xee"), tmp_path)
        agents.append(agent)
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            agent.close()


def read(dev: str, offset: int = 0, length: int = -1) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


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


def wait_for(api: LiveApi, uuid: str, *states: str, timeout: float = 60) -> dict[str, Any]:
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
    make_agent: Callable[..., Agent],
    images: str,
) -> None:
    api = make_api(request.getfixturevalue("pg_url") if db == "postgresql" else None)
    api.store.observers.append(HistoryRecorder(api.ctx.timeline, api.store))  # as serve does
    uuid = new_node(api)
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
    assert machine.boot == BootSetting(BootDevice.PXE, False)
    assert machine.power is PowerState.POWER_ON

    agent = make_agent(api)  # the machine boots the agent ramdisk
    # root device hints reach the agent: the loop device by name
    api.store.update_node(uuid, {"properties": {"root_device": {"name": agent.dev}}})
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", (node["last_error"], agent.output())
    assert node["last_error"] is None and node["power_state"] == "power on"
    # the image is on the disk, the rest of the disk untouched
    assert read(agent.dev, 0, len(IMAGE)) == IMAGE
    assert read(agent.dev, len(IMAGE)) == b"\xee" * (DISK - len(IMAGE))
    # boot device disk (persistent), powered off then on through the driver, no agent reboot
    assert machine.boot == BootSetting(BootDevice.DISK, True)
    assert machine.power is PowerState.POWER_ON
    assert agent.power() == []
    internal = node["driver_internal_info"]
    result = internal["deploy_result"]
    assert result["root_device"] == agent.dev and result["bytes_written"] == len(IMAGE)
    assert result["os_hash_value"] == stored["sha256"]
    for gone in ("agent_secret_token", "agent_url", "agent_command"):
        assert gone not in internal, gone
    text = history(api, uuid)
    assert "The agent writes" in text and f"Image written to {agent.dev}" in text
    assert '"deploying" -> "active" on "done"' in text
    # the conductor's own power actions are in the history, hence on the node's timeline
    assert 'Boot device set to "pxe"' in text
    assert 'to "power on" ("power on" asked)' in text
    timeline = api.request("GET", f"/v1/nodes/{uuid}/timeline").json["events"]
    power = [(e["kind"], e["data"].get("result")) for e in timeline if e["source"] == "power"]
    assert ("on", "power on") in power and ("boot-device", "pxe") in power, power
    # undeploy: back to available (automated cleaning off in these settings)
    assert verb(api, uuid, "undeploy")["provision_state"] == "available"
    assert "deploy_result" not in api.node(uuid)["driver_internal_info"]


def test_image_deploy_manual_management_reboots_through_the_agent(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent], images: str
) -> None:
    api = make_api()
    uuid = new_node(api, driver="manual-management")
    available(api, uuid)
    sha512 = hashlib.sha512(IMAGE).hexdigest()
    set_image(api, uuid, image_fields(images, image_os_hash_algo="sha512",
                                      image_os_hash_value=sha512))  # fmt: skip
    assert verb(api, uuid, "deploy")["provision_state"] == "wait call-back"
    agent = make_agent(api)
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", (node["last_error"], agent.output())
    deadline = time.monotonic() + 30
    while agent.power() != ["reboot"]:
        assert time.monotonic() < deadline, (agent.power(), agent.output())
        time.sleep(0.1)
    assert read(agent.dev, 0, len(IMAGE)) == IMAGE
    assert "reboots the machine into the instance" in history(api, uuid)


def test_qcow2_image_deploy(
    make_api: Callable[..., LiveApi],
    make_agent: Callable[..., Agent],
    images: str,
    qemu_img: str,
    tmp_path: Path,
) -> None:
    raw, qcow2 = tmp_path / "src.raw", tmp_path / "src.qcow2"
    raw.write_bytes(IMAGE)
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    api = make_api()
    reply = api.request("PUT", "/v1/images/disk.qcow2", raw=qcow2.read_bytes(),
                        headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert reply.status == 201, reply.raw
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images, image_source=f"{images}/disk.qcow2",
                                      image_disk_format="qcow2",
                                      image_os_hash_value=reply.json["sha256"]))  # fmt: skip
    verb(api, uuid, "deploy")
    agent = make_agent(api)
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", (node["last_error"], agent.output())
    assert read(agent.dev, 0, len(IMAGE)) == IMAGE  # converted onto the disk


def test_image_checksum_accepted_as_image_checksum(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    digest = hashlib.sha256(IMAGE).hexdigest()
    set_image(api, uuid, image_fields(images, image_os_hash_algo=None, image_os_hash_value=None,
                                      image_checksum=f"sha256:{digest}"))  # fmt: skip
    verb(api, uuid, "deploy")
    make_agent(api)
    assert wait_for(api, uuid, "active", "deploy failed")["provision_state"] == "active"


def test_wrong_checksum_fails_with_the_agents_error(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    wrong = hashlib.sha256(b"another image").hexdigest()
    set_image(api, uuid, image_fields(images, image_os_hash_value=wrong))
    verb(api, uuid, "deploy")
    agent = make_agent(api)
    node = wait_for(api, uuid, "deploy failed", "active")
    assert node["provision_state"] == "deploy failed"
    error = node["last_error"]
    assert "prepare_image failed" in error and "ImageChecksumError" in error, error
    assert wrong in error and hashlib.sha256(IMAGE).hexdigest() in error, error
    assert node["target_provision_state"] == "active"
    assert agent.power() == []  # never rebooted into a bad image
    assert api.fake.machines["m1"].boot == BootSetting(BootDevice.PXE, False)
    assert "the disk was not touched" in error, error  # checked in RAM before writing
    assert read(agent.dev, 0, len(IMAGE)) == b"\xee" * len(IMAGE)  # the disk as it was
    # retry with the right checksum: deploy again from "deploy failed", a new agent boot
    agent.close()
    set_image(api, uuid, image_fields(images))
    assert verb(api, uuid, "active")["provision_state"] == "wait call-back"
    assert "agent_secret_token" not in api.node(uuid)["driver_internal_info"]
    make_agent(api)
    assert wait_for(api, uuid, "active", "deploy failed")["provision_state"] == "active"


def test_unreachable_image_fails_the_deploy(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images, image_source=f"{images}/missing.raw"))
    verb(api, uuid, "deploy")
    make_agent(api)
    node = wait_for(api, uuid, "deploy failed", "active")
    assert "ImageDownloadError" in node["last_error"] and "missing.raw" in node["last_error"]


def test_disk_too_small_fails_the_deploy(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent], images: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields(images))
    verb(api, uuid, "deploy")
    agent = make_agent(api, disk_size=MIB)
    node = wait_for(api, uuid, "deploy failed", "active")
    error = node["last_error"]
    assert error.startswith("Deploy failed: the agent's prepare_image failed: "), error
    assert str(len(IMAGE)) in error and str(MIB) in error, error
    assert read(agent.dev) == b"\xee" * MIB  # refused before writing


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
    make_api: Callable[..., LiveApi], changes: dict[str, Any], message: str
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields("http://127.0.0.1:9/images", **changes))
    reply = put_verb(api, uuid, "deploy")
    assert reply.status == 400 and message in reply.fault, reply.raw
    deploy = api.get(f"/v1/nodes/{uuid}/validate").json["deploy"]
    assert deploy["result"] is False and message in deploy["reason"]
    node = api.node(uuid)
    assert node["provision_state"] == "available" and api.fake.machines["m1"].boots == 0


def test_verb_refuses_image_deploys_without_an_agent_ramdisk(
    make_api: Callable[..., LiveApi],
) -> None:
    api = make_api(deploy_kernel=None, deploy_ramdisk=None)
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields("http://127.0.0.1:9/images"))
    reply = put_verb(api, uuid, "deploy")
    assert reply.status == 400 and "--deploy-kernel" in reply.fault
    assert api.node(uuid)["provision_state"] == "available"


def test_heartbeat_without_token_is_refused_and_nothing_runs(
    make_api: Callable[..., LiveApi],
) -> None:
    api = make_api()
    uuid = new_node(api)
    available(api, uuid)
    set_image(api, uuid, image_fields("http://127.0.0.1:9/images"))
    verb(api, uuid, "deploy")
    lookup = api.get(f"/v1/lookup?addresses={MAC}", auth=False)
    assert lookup.status == 200 and len(lookup.json["config"]["agent_token"]) == 128
    url = "http://127.0.0.1:9"  # nobody there: any call to it would fail the deploy
    missing = api.post(f"/v1/heartbeat/{uuid}", {"callback_url": url}, auth=False)
    assert missing.status == 400 and "token is required" in missing.fault
    wrong = api.post(f"/v1/heartbeat/{uuid}", {"callback_url": url, "agent_token": "y" * 128},
                     auth=False)  # fmt: skip
    assert wrong.status == 400 and "Invalid or missing agent token" in wrong.fault
    api.wait_idle()
    node = api.node(uuid)
    assert node["provision_state"] == "wait call-back" and node["last_error"] is None
    assert "agent_url" not in node["driver_internal_info"]


def test_progress_is_visible_and_heartbeats_keep_the_wait_alive(
    make_api: Callable[..., LiveApi],
    make_agent: Callable[..., Agent],
    image_server: Any,
) -> None:
    # the write (1 MiB/s) takes longer than deploy_callback_timeout: only silence times out;
    # the agent heartbeats every 5 s while it works
    data = os.urandom(12 * MIB)
    image_server.add("slow.raw", data)
    api = make_api(deploy_callback_timeout=8.0, check_provision_state_interval=0.2)
    uuid = new_node(api)
    available(api, uuid)
    slow, digest = image_server.url("slow.raw", "slow"), hashlib.sha256(data).hexdigest()
    set_image(api, uuid, image_fields("", image_source=slow, image_os_hash_value=digest))
    verb(api, uuid, "deploy")
    agent = make_agent(api, disk_size=16 * MIB)
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while (node := api.node(uuid))["provision_state"] in ("wait call-back", "deploying"):
        message = node["driver_internal_info"].get("agent_status_message")
        if message and message not in seen:
            seen.append(message)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    node = wait_for(api, uuid, "active", "deploy failed")
    assert node["provision_state"] == "active", (node["last_error"], agent.output())
    progress = [m for m in seen if m.startswith("prepare_image: ") and "MiB downloaded" in m]
    assert progress, seen
    assert read(agent.dev, 0, len(data)) == data


# ---- cleaning -------------------------------------------------------------------------------


def test_automated_cleaning_on_provide(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent]
) -> None:
    api = make_api(automated_clean=True)
    uuid = new_node(api)
    verb(api, uuid, "manage")
    node = verb(api, uuid, "provide")
    assert node["provision_state"] == "clean wait" and node["power_state"] == "power on"
    agent = make_agent(api)
    node = wait_for(api, uuid, "available", "clean failed")
    assert node["provision_state"] == "available", (node["last_error"], agent.output())
    assert node["power_state"] == "power off" and node["clean_step"] == {}
    assert api.fake.machines["m1"].power is PowerState.POWER_OFF
    data = read(agent.dev)
    assert data[:MIB] == data[-MIB:] == b"\0" * MIB
    assert data[MIB:-MIB] == b"\xee" * (DISK - 2 * MIB)
    text = history(api, uuid)
    assert "Automated cleaning: steps deploy.erase_devices_metadata" in text
    assert "Clean step deploy.erase_devices_metadata done" in text
    internal = node["driver_internal_info"]
    assert not {"clean_steps", "clean_step", "agent_secret_token", "agent_command"} & set(internal)


def test_node_automated_clean_overrides_the_setting(make_api: Callable[..., LiveApi]) -> None:
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
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent]
) -> None:
    api = make_api()
    uuid = new_node(api)
    verb(api, uuid, "manage")
    steps = [{"interface": "deploy", "step": "erase_devices_metadata"},
             {"interface": "deploy", "step": "erase_devices", "args": {}}]  # fmt: skip
    node = verb(api, uuid, "clean", clean_steps=steps)
    assert node["provision_state"] == "clean wait"
    agent = make_agent(api)
    node = wait_for(api, uuid, "manageable", "clean failed")
    assert node["provision_state"] == "manageable", (node["last_error"], agent.output())
    assert read(agent.dev) == b"\0" * DISK
    text = history(api, uuid)
    assert "Manual cleaning: steps deploy.erase_devices_metadata, deploy.erase_devices" in text
    assert "Clean step deploy.erase_devices started (2/2)" in text


def test_manual_clean_steps_are_checked(
    make_api: Callable[..., LiveApi], make_agent: Callable[..., Agent]
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
    # a step the agent does not offer fails the cleaning once the agent says what it has
    node = verb(api, uuid, "clean", clean_steps=[{"interface": "deploy", "step": "shred"}])
    assert node["provision_state"] == "clean wait"
    agent = make_agent(api)
    node = wait_for(api, uuid, "clean failed", "manageable")
    assert "deploy.shred is not offered" in node["last_error"]
    assert "deploy.erase_devices" in node["last_error"]
    assert read(agent.dev) == b"\xee" * DISK


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
    make_api: Callable[..., LiveApi],
    make_agent: Callable[..., Agent],
    image_server: Any,
) -> None:
    data = os.urandom(12 * MIB)
    image_server.add("slow.raw", data)
    api = make_api(deploy_callback_timeout=6.0, check_provision_state_interval=0.2)
    uuid = new_node(api)
    available(api, uuid)
    slow, digest = image_server.url("slow.raw", "slow"), hashlib.sha256(data).hexdigest()
    set_image(api, uuid, image_fields("", image_source=slow, image_os_hash_value=digest))
    verb(api, uuid, "deploy")
    agent = make_agent(api, disk_size=16 * MIB)
    deadline = time.monotonic() + 60
    while "agent_command" not in api.node(uuid)["driver_internal_info"]:
        assert time.monotonic() < deadline, agent.output()
        time.sleep(0.05)
    agent.kill()  # the machine died mid-write: no heartbeat, nothing on its port
    node = wait_for(api, uuid, "deploy failed", "active", timeout=30)
    assert node["last_error"] == f"Timeout reached while waiting for callback for node {uuid}"
    assert read(agent.dev, len(data)) == b"\xee" * (4 * MIB)
