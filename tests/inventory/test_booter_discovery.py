"""InventoryBooter with discovery: an unknown MAC boots the agent ramdisk with the inspection
callback (and no node is written), nothing when discovery is off; how it meets auto_enroll."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeforge.boot.machine import Machine
from pxeforge.config import Settings
from pxeforge.errors import ConfigError
from pxeforge.inventory.booter import (
    DEPLOY_KERNEL_REF,
    DEPLOY_RAMDISK_REF,
    InventoryBooter,
    check_settings,
)
from pxeforge.inventory.store import Store

from .test_booter import settings

UNKNOWN = "52:54:00:de:ad:01"


def test_an_unknown_mac_boots_the_agent_for_discovery(store: Store, tmp_path: Path) -> None:
    booter = InventoryBooter(store, settings(tmp_path, discovery=True, agent_cmdline="quiet"))
    spec = booter.boot_spec(Machine(mac=UNKNOWN.upper()))
    assert spec is not None and not spec.localboot
    assert spec.kernel == DEPLOY_KERNEL_REF and spec.initrds == (DEPLOY_RAMDISK_REF,)
    assert spec.cmdline.split() == [
        "ipa-api-url=http://127.0.0.1:6385",
        "BOOTIF=01-52-54-00-de-ad-01",
        "ipa-inspection-callback-url=http://127.0.0.1:6385/v1/continue_inspection",
        "quiet",
    ]
    assert store.list_nodes() == []  # the agent's inventory enrolls it, not the DHCP request
    assert booter.boot_spec(Machine(mac=None)) is None  # no MAC: still nothing


def test_discovery_off_boots_unknown_macs_nothing(store: Store, tmp_path: Path) -> None:
    assert InventoryBooter(store, settings(tmp_path)).boot_spec(Machine(mac=UNKNOWN)) is None
    assert store.list_nodes() == []


def test_discovery_supersedes_auto_enroll(store: Store, tmp_path: Path) -> None:
    both = settings(tmp_path, discovery=True, auto_enroll=True)
    spec = InventoryBooter(store, both).boot_spec(Machine(mac=UNKNOWN))
    assert spec is not None and "ipa-inspection-callback-url=" in spec.cmdline
    assert store.list_nodes() == []
    # without discovery, auto_enroll still makes its empty enroll node
    InventoryBooter(store, settings(tmp_path, auto_enroll=True)).boot_spec(Machine(mac=UNKNOWN))
    assert [n.provision_state for n in store.list_nodes()] == ["enroll"]


def test_a_known_mac_is_not_discovered_again(store: Store, tmp_path: Path) -> None:
    node = store.create_node("fake-hardware", provision_state="enroll")
    store.create_port(node.uuid, UNKNOWN)
    booter = InventoryBooter(store, settings(tmp_path, discovery=True))
    assert booter.boot_spec(Machine(mac=UNKNOWN)) is None  # an idle enroll node: nothing


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_discovery_needs_the_agent_ramdisk(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--discovery .* --deploy-kernel"):
        check_settings(Settings(discovery=True))
    check_settings(settings(tmp_path, discovery=True))  # with it: fine
