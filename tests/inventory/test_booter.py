"""InventoryBooter: every provision state → its boot answer, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pxeforge.boot.machine import BootSpec, Machine
from pxeforge.boot.render import render_grub, render_ipxe, render_pxelinux
from pxeforge.config import IdleBoot, Settings
from pxeforge.errors import ConfigError
from pxeforge.inventory.booter import (
    DEPLOY_KERNEL_REF,
    DEPLOY_RAMDISK_REF,
    InventoryBooter,
    check_settings,
)
from pxeforge.inventory.states import ALL_STATES
from pxeforge.inventory.store import Store

MAC = "52:54:00:aa:bb:01"
KS = {"deploy_interface": "kickstart", "kernel": "centos/vmlinuz", "ramdisk": "centos/initrd.img"}


def settings(tmp_path: Path, **changes: Any) -> Settings:
    kernel, ramdisk = tmp_path / "ipa.kernel", tmp_path / "ipa.initramfs"
    kernel.write_bytes(b"k" * 100)
    ramdisk.write_bytes(b"r" * 100)
    base = Settings(
        address=None,
        http_port=8080,
        api_port=6385,
        deploy_kernel=kernel,
        deploy_ramdisk=ramdisk,
        boot_cache_ttl=0.0,
    )
    return base.replace(**changes)


def node_in(store: Store, state: str, **fields: Any) -> str:
    node = store.create_node("fake-hardware", provision_state=state, **fields)
    store.create_port(node.uuid, MAC)
    return node.uuid


def spec_in(store: Store, tmp_path: Path, state: str, **fields: Any) -> BootSpec | None:
    node_in(store, state, **fields)
    return InventoryBooter(store, settings(tmp_path)).boot_spec(Machine(mac=MAC))


AGENT = ["inspecting", "inspect wait", "cleaning", "clean wait", "rescuing", "rescue wait",
         "rescue", "deploying", "wait call-back"]  # fmt: skip
NOTHING = ["enroll", "manageable", "available", "verifying", "deploy failed", "clean failed",
           "inspect failed", "error", "deleting", "adopting", "deploy hold", "clean hold",
           "unrescuing", "servicing", "service wait"]  # fmt: skip


def test_every_state_is_covered() -> None:
    assert set(AGENT) | set(NOTHING) | {"active"} >= ALL_STATES - {
        "adopt failed", "rescue failed", "unrescue failed", "service failed", "service hold"
    }  # fmt: skip


@pytest.mark.parametrize("state", AGENT)
def test_agent_states_boot_the_agent_ramdisk(store: Store, tmp_path: Path, state: str) -> None:
    spec = spec_in(store, tmp_path, state, driver_info={"kernel_append_params": "console=ttyS0"})
    assert spec is not None and not spec.localboot
    assert spec.kernel == DEPLOY_KERNEL_REF and spec.initrds == (DEPLOY_RAMDISK_REF,)
    words = spec.cmdline.split()
    assert "ipa-api-url=http://127.0.0.1:6385" in words
    assert "BOOTIF=01-52-54-00-aa-bb-01" in words
    assert words[-1] == "console=ttyS0"
    assert ("ipa-inspection-callback-url=http://127.0.0.1:6385/v1/continue_inspection" in words) \
        == (state in ("inspecting", "inspect wait"))  # fmt: skip


@pytest.mark.parametrize("state", NOTHING)
def test_other_states_boot_nothing(store: Store, tmp_path: Path, state: str) -> None:
    assert spec_in(store, tmp_path, state) is None


def test_active_boots_the_local_disk_in_every_loader(store: Store, tmp_path: Path) -> None:
    spec = spec_in(store, tmp_path, "active")
    assert spec is not None and spec.localboot
    assert "localboot 0" in render_pxelinux(spec)
    assert "chainloader" in render_grub(spec)
    assert "exit" in render_ipxe(spec, http_base="http://x")


def test_idle_boot_local(store: Store, tmp_path: Path) -> None:
    node_in(store, "available")
    booter = InventoryBooter(store, settings(tmp_path, idle_boot=IdleBoot.LOCAL))
    spec = booter.boot_spec(Machine(mac=MAC))
    assert spec is not None and spec.localboot


@pytest.mark.parametrize("state", ["deploying", "wait call-back"])
def test_kickstart_deploy_boots_the_installer(store: Store, tmp_path: Path, state: str) -> None:
    uuid = node_in(store, state, instance_info=KS)
    spec = InventoryBooter(store, settings(tmp_path)).boot_spec(Machine(mac=MAC))
    assert spec is not None
    assert (spec.kernel, spec.initrds) == ("centos/vmlinuz", ("centos/initrd.img",))
    assert f"inst.ks=http://127.0.0.1:8080/ks/{uuid}" in spec.cmdline.split()
    config = render_pxelinux(spec)
    assert "kernel /centos/vmlinuz" in config
    assert f"append initrd=/centos/initrd.img inst.ks=http://127.0.0.1:8080/ks/{uuid}" in config


def test_kickstart_seed_style_ks_param(store: Store, tmp_path: Path) -> None:
    uuid = node_in(store, "wait call-back", instance_info={**KS, "ks_param": "ks"})
    spec = InventoryBooter(store, settings(tmp_path)).boot_spec(Machine(mac=MAC))
    assert spec is not None
    # the seed's line: append initrd=initrd.img ks=http://…
    assert f"append initrd=/centos/initrd.img ks=http://127.0.0.1:8080/ks/{uuid} " \
        in render_pxelinux(spec)  # fmt: skip


def test_node_deploy_interface_field_also_selects_the_installer(
    store: Store, tmp_path: Path
) -> None:
    info = {k: v for k, v in KS.items() if k != "deploy_interface"}
    spec = spec_in(store, tmp_path, "deploying", deploy_interface="anaconda", instance_info=info)
    assert spec is not None and spec.kernel == "centos/vmlinuz"


@pytest.mark.parametrize(
    "fields",
    [
        {"instance_info": {**KS, "kernel_append_params": "quiet\nlabel evil"}},
        {"instance_info": {**KS, "kernel": "vmlinuz initrd=/evil"}},
        {"instance_info": {"deploy_interface": "kickstart"}},  # no kernel/ramdisk
        {"instance_info": {**KS, "install_type": "windows"}},
        {"instance_info": KS, "driver_info": {"kernel_append_params": "a ; reboot"}},
    ],
)
def test_unsafe_or_incomplete_node_data_boots_nothing(
    store: Store, tmp_path: Path, fields: dict[str, Any]
) -> None:
    assert spec_in(store, tmp_path, "wait call-back", **fields) is None


def test_agent_states_without_a_deploy_ramdisk_boot_nothing(store: Store, tmp_path: Path) -> None:
    node_in(store, "cleaning")
    plain = settings(tmp_path, deploy_kernel=None, deploy_ramdisk=None)
    assert InventoryBooter(store, plain).boot_spec(Machine(mac=MAC)) is None


def test_unknown_and_disabled_macs(store: Store, tmp_path: Path) -> None:
    booter = InventoryBooter(store, settings(tmp_path))
    assert booter.boot_spec(Machine(mac="52:54:00:00:00:99")) is None
    assert booter.boot_spec(Machine(mac="")) is None
    node = store.create_node("fake-hardware", provision_state="active")
    store.create_port(node.uuid, "52:54:00:00:00:98", pxe_enabled=False)
    assert booter.boot_spec(Machine(mac="52:54:00:00:00:98")) is None
    assert store.list_nodes() and len(store.list_nodes()) == 1  # nothing enrolled


def test_auto_enroll_creates_one_node_and_discovery_hook(store: Store, tmp_path: Path) -> None:
    seen: list[str] = []

    def discovery(machine: Machine) -> BootSpec | None:
        seen.append(machine.mac)
        return BootSpec(kernel="inspector/vmlinuz")

    booter = InventoryBooter(store, settings(tmp_path, auto_enroll=True), discovery=discovery)
    spec = booter.boot_spec(Machine(mac=MAC))
    assert spec == BootSpec(kernel="inspector/vmlinuz") and seen == [MAC]
    nodes = store.list_nodes()
    assert [(n.driver, n.provision_state) for n in nodes] == [("manual-management", "enroll")]
    assert [p.address for p in store.list_ports(node=nodes[0].uuid)] == [MAC]
    assert "Auto-enrolled" in store.list_history(nodes[0].uuid)[-1].event
    # known now: enroll boots nothing, and no second node appears
    assert booter.boot_spec(Machine(mac=MAC)) is None
    assert len(store.list_nodes()) == 1


def test_cache_and_invalidate(store: Store, tmp_path: Path) -> None:
    now = [100.0]
    uuid = node_in(store, "active")
    booter = InventoryBooter(store, settings(tmp_path, boot_cache_ttl=1.0), clock=lambda: now[0])
    for _ in range(100):
        assert booter.boot_spec(Machine(mac=MAC.upper())) is not None
    assert booter.lookups == 1
    with store.lock(uuid, "test") as node:
        store.save_transition(
            node.id,
            holder="test",
            expected_state="active",
            provision_state="deploying",
            target_provision_state="active",
        )
    spec = booter.boot_spec(Machine(mac=MAC))
    assert spec is not None and spec.localboot  # cached
    now[0] += 1.5
    spec = booter.boot_spec(Machine(mac=MAC))
    assert spec is not None and spec.kernel == DEPLOY_KERNEL_REF and booter.lookups == 2
    booter.invalidate([MAC])
    booter.boot_spec(Machine(mac=MAC))
    assert booter.lookups == 3


def test_deploy_files_are_served_under_their_refs(tmp_path: Path, store: Store) -> None:
    booter = InventoryBooter(store, settings(tmp_path))
    opened = booter.open_file(DEPLOY_KERNEL_REF)
    assert opened is not None
    try:
        assert opened.read_at(0, 10) == b"k" * 10
    finally:
        opened.close()
    assert booter.open_file("_pxeforge/kernel") is None


def test_check_settings(tmp_path: Path) -> None:
    check_settings(settings(tmp_path))
    with pytest.raises(ConfigError, match="go together"):
        check_settings(settings(tmp_path, deploy_ramdisk=None))
    with pytest.raises(ConfigError, match="no such file"):
        check_settings(settings(tmp_path, deploy_kernel=tmp_path / "nope"))
    with pytest.raises(ConfigError, match="agent-cmdline"):
        check_settings(settings(tmp_path, agent_cmdline="a\nb"))
