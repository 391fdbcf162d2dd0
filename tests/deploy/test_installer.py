"""Installer deploys end to end in-process: conductor → wait call-back → /ks file → callback.

SQLite and PostgreSQL; driver fake-hardware; `InstallerService` called directly (the HTTP
routes are exercised by tests/e2e/test_baremetal_kickstart.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pxeforge.boot.machine import Machine
from pxeforge.conductor.manager import KICKSTART_TOKEN, Conductor
from pxeforge.config import Settings
from pxeforge.deploy.installer import InstallerService
from pxeforge.inventory.booter import InventoryBooter
from pxeforge.inventory.store import Store

MAC = "52:54:00:aa:bb:02"
KS = {"deploy_interface": "kickstart", "kernel": "c/vmlinuz", "ramdisk": "c/initrd.img"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    s = Store.connect(url)
    try:
        yield s
    finally:
        s.close()


class Rig:
    def __init__(self, store: Store, **settings: float) -> None:
        self.store = store
        self.settings = Settings(boot_cache_ttl=60.0, automated_clean=False,
                                 **settings)  # type: ignore[arg-type]  # fmt: skip
        self.conductor = Conductor(store, holder="c1", settings=self.settings)
        self.booter = InventoryBooter(store, self.settings)
        self.service = InstallerService(
            store, self.settings, booter=self.booter, conductor=self.conductor
        )

    def deploy(self, **info: str) -> str:
        node = self.store.create_node("fake-hardware", provision_state="available",
                                      instance_info={**KS, **info})  # fmt: skip
        self.store.create_port(node.uuid, MAC)
        self.conductor.provision_sync(node.uuid, "active")
        self.conductor.wait_idle()
        assert self.store.get_node(node.uuid).provision_state == "wait call-back"
        return node.uuid

    def token(self, uuid: str) -> str:
        token = self.store.get_node(uuid).driver_internal_info[KICKSTART_TOKEN]
        assert isinstance(token, str) and len(token) >= 40
        return token


def test_kickstart_deploy_to_active(store: Store) -> None:
    rig = Rig(store)
    uuid = rig.deploy()
    spec = rig.booter.boot_spec(Machine(mac=MAC))
    assert spec is not None and spec.kernel == "c/vmlinuz"  # cached now (TTL 60 s)
    status, text = rig.service.render(uuid)
    assert status == 200
    token = rig.token(uuid)
    assert f"/ks/{uuid}/done?token={token}" in text
    # wrong tokens, other nodes, junk names: 404 and nothing changes
    assert rig.service.done(uuid, token[:-1] + ("A" if token[-1] != "A" else "B"))[0] == 404
    assert rig.service.done(uuid, "")[0] == 404
    assert rig.service.done("8d3c7e0a-5b1b-4bb8-9c1f-2d4b3b3c0000", token)[0] == 404
    assert rig.service.render(uuid, "../etc")[0] == 404
    assert rig.service.render(uuid, "user-data")[0] == 404  # kickstart has no user-data
    node = store.get_node(uuid)
    assert (node.provision_state, node.last_error) == ("wait call-back", None)
    # the right one
    assert rig.service.done(uuid, token) == (200, "active\n")
    node = store.get_node(uuid)
    assert node.provision_state == "active" and KICKSTART_TOKEN not in node.driver_internal_info
    events = [h.event for h in store.list_history(uuid)]
    assert any("installation complete" in e for e in events)
    assert any('"wait call-back" -> "deploying" on "resume"' in e for e in events)
    assert any('"deploying" -> "active" on "done"' in e for e in events)
    spec = rig.booter.boot_spec(Machine(mac=MAC))
    assert spec is not None and spec.localboot  # invalidated at once, despite the TTL
    # the file is gone once active; the token cannot be replayed
    assert rig.service.render(uuid)[0] == 404
    assert rig.service.done(uuid, token)[0] == 404
    # undeploy → available, the token dropped
    rig.conductor.provision_sync(uuid, "deleted")
    rig.conductor.wait_idle()
    assert store.get_node(uuid).provision_state == "available"


def test_not_served_unless_deploying_with_an_installer(store: Store) -> None:
    rig = Rig(store)
    agent = store.create_node("fake-hardware", provision_state="wait call-back")
    idle = store.create_node("fake-hardware", provision_state="available", instance_info=KS)
    for uuid in (agent.uuid, idle.uuid):
        assert rig.service.render(uuid) == (404, "not found\n")
    named = store.create_node("fake-hardware", name="n1", provision_state="wait call-back",
                              instance_info=KS)  # fmt: skip
    assert rig.service.render("n1")[0] == 404  # by UUID only
    assert rig.service.render(named.uuid)[0] == 200
    assert rig.service.render("not-a-uuid")[0] == 404


def test_autoinstall_serves_user_and_meta_data(store: Store) -> None:
    rig = Rig(store)
    uuid = rig.deploy(install_type="autoinstall")
    assert rig.service.render(uuid, "user-data")[1].startswith("#cloud-config")
    assert rig.service.render(uuid, "meta-data") == (
        200, f"instance-id: {uuid}\nlocal-hostname: {uuid}\n"
    )  # fmt: skip
    spec = rig.booter.boot_spec(Machine(mac=MAC))
    assert spec is not None and f"ds=nocloud-net;s=http://127.0.0.1:8080/ks/{uuid}/" in spec.cmdline


def test_missing_kernel_fails_the_deploy_clearly(store: Store) -> None:
    rig = Rig(store)
    node = store.create_node("fake-hardware", provision_state="available",
                             instance_info={"deploy_interface": "kickstart"})  # fmt: skip
    rig.conductor.provision_sync(node.uuid, "active")
    rig.conductor.wait_idle()
    failed = store.get_node(node.uuid)
    assert failed.provision_state == "deploy failed"
    assert failed.last_error is not None and "instance_info kernel and ramdisk" in failed.last_error


def test_template_error_is_a_500_not_a_traceback(store: Store, tmp_path: Path) -> None:
    (tmp_path / "bad.ks").write_text("{{ node.nothing_here }}")
    rig = Rig(store)
    rig.service.renderer = type(rig.service.renderer)(tmp_path)
    uuid = rig.deploy(ks_template="bad.ks")
    status, text = rig.service.render(uuid)
    assert status == 500 and "nothing_here" not in text


def test_callback_timeout_fails_the_deploy(store: Store) -> None:
    rig = Rig(store, deploy_callback_timeout=60.0)
    uuid = rig.deploy()
    later = datetime.now(UTC) + timedelta(seconds=120)
    done = store.expire_waits(holder="c1", now=later, timeouts=rig.conductor.timeouts)
    assert [d.uuid for d in done] == [uuid]
    node = store.get_node(uuid)
    assert node.provision_state == "deploy failed"
    assert node.last_error == f"Timeout reached while waiting for callback for node {uuid}"
    assert rig.service.done(uuid, rig.token(uuid))[0] == 404  # too late
