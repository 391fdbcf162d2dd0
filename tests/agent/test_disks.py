"""Disks and root device hints: a fake /sys tree with exact values, and real loop devices."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pxeforge.agent.disks import (
    GIB,
    DiskScope,
    choose_root_device,
    list_disks,
    parse_hints,
    partitions,
)
from pxeforge.agent.errors import DeviceNotFound

from .conftest import MIB, sys_name


def _w(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_sys(root: Path) -> Path:
    """sda 20 GiB HDD (udev: serial, WWN), vda 2 GiB, vdb 8 GiB, nvme0n1 100 GiB, sdb 8 GiB,
    and a loop, an optical drive and a RAM disk that are never candidates."""
    sda = "sys/block/sda"
    _w(root, f"{sda}/size", str(20 * GIB // 512))
    _w(root, f"{sda}/dev", "8:0")
    _w(root, f"{sda}/queue/rotational", "1")
    dev = root / "sys/devices/pci0000:00/host0/target0:0:0/0:0:0:0"
    dev.mkdir(parents=True)
    (dev / "model").write_text("QEMU HARDDISK   \n")
    (dev / "vendor").write_text("ATA     \n")
    os.symlink(dev, root / sda / "device")
    _w(root, "run/udev/data/b8:0", "E:ID_SERIAL_SHORT=SER123\nE:ID_WWN=0x5000c500aa\n"
       "E:ID_PATH=pci-0000:00:05.0-ata-1\n")  # fmt: skip
    # sda1 and sda2: partitions in sysfs (start and size in 512-byte sectors)
    _w(root, f"{sda}/sda1/partition", "1")
    _w(root, f"{sda}/sda1/start", "2048")
    _w(root, f"{sda}/sda1/size", "4096")
    _w(root, f"{sda}/sda2/partition", "2")
    _w(root, f"{sda}/sda2/start", "8192")
    _w(root, f"{sda}/sda2/size", "100")
    _w(root, f"{sda}/queue/x", "not a partition")
    for name, gib, serial in (("vda", 2, "small"), ("vdb", 8, "vdb-serial"),
                              ("nvme0n1", 100, "NV-1"), ("sdb", 8, "B")):  # fmt: skip
        _w(root, f"sys/block/{name}/size", str(gib * GIB // 512))
        _w(root, f"sys/block/{name}/queue/rotational", "0")
        _w(root, f"sys/block/{name}/serial", serial)
    _w(root, "sys/block/sdb/ro", "1")
    for name in ("loop0", "sr0", "ram0"):
        _w(root, f"sys/block/{name}/size", str(50 * GIB // 512))
    return root


def _choose(root: Path, hints: dict[str, Any] | None = None, min_size: int = 4 * GIB) -> str:
    return choose_root_device(list_disks(root), hints, min_size=min_size).name


def test_list_disks_from_sysfs(tmp_path: Path) -> None:
    root = fake_sys(tmp_path)
    disks = {d.name: d for d in list_disks(root)}
    assert sorted(disks) == ["/dev/nvme0n1", "/dev/sda", "/dev/sdb", "/dev/vda", "/dev/vdb"]
    sda = disks["/dev/sda"]
    assert (sda.size, sda.model, sda.vendor, sda.serial, sda.wwn, sda.rotational) == (
        20 * GIB, "QEMU HARDDISK", "ATA", "SER123", "0x5000c500aa", True)  # fmt: skip
    assert sda.by_path == "/dev/disk/by-path/pci-0000:00:05.0-ata-1"
    assert disks["/dev/vdb"].serial == "vdb-serial" and not disks["/dev/vdb"].rotational
    assert [(p.name, p.start, p.size) for p in partitions(root, sda)] == [
        ("/dev/sda1", 2048 * 512, 4096 * 512), ("/dev/sda2", 8192 * 512, 100 * 512)]  # fmt: skip
    assert partitions(root, disks["/dev/vdb"]) == []
    # `only` picks devices by name, loop devices included
    assert [d.name for d in list_disks(root, only={"loop0", "vdb"})] == ["/dev/loop0", "/dev/vdb"]
    scope = DiskScope(root)
    assert scope.read_only(disks["/dev/sdb"]) and not scope.read_only(sda)


def test_root_device_hints(tmp_path: Path) -> None:
    root = fake_sys(tmp_path)
    # no hints: the smallest disk of at least 4 GiB (vdb and sdb are 8 GiB: by name)
    assert _choose(root) == "/dev/sdb"
    assert _choose(root, {"size": ">= 10"}) == "/dev/sda"
    assert _choose(root, {"size": "> 20"}) == "/dev/nvme0n1"
    assert _choose(root, {"size": 100}) == "/dev/nvme0n1"
    assert _choose(root, {"size": "== 8", "serial": "VDB-SERIAL"}) == "/dev/vdb"
    assert _choose(root, {"size": "<= 8", "rotational": False, "serial": "s!= b"}) == "/dev/vdb"
    assert _choose(root, {"serial": " ser123 "}) == "/dev/sda"
    assert _choose(root, {"wwn": "0x5000C500AA"}) == "/dev/sda"
    assert _choose(root, {"model": "<in> harddisk", "vendor": "ata"}) == "/dev/sda"
    assert _choose(root, {"rotational": "true"}) == "/dev/sda"
    assert _choose(root, {"name": "nvme0n1"}) == "/dev/nvme0n1"
    assert _choose(root, {"name": "/dev/disk/by-path/pci-0000:00:05.0-ata-1"}) == "/dev/sda"
    # vda matches its name but is under 4 GiB, unless the minimum is lowered
    with pytest.raises(DeviceNotFound) as info:
        _choose(root, {"name": "/dev/vda"})
    text = str(info.value)
    assert "at least 4.0 GiB" in text and "/dev/vda (2.0 GiB, serial small)" in text
    assert _choose(root, {"name": "/dev/vda"}, min_size=GIB) == "/dev/vda"
    with pytest.raises(DeviceNotFound, match="SER999"):
        _choose(root, {"serial": "SER999"})
    with pytest.raises(DeviceNotFound, match="disks found: none"):
        choose_root_device([])


@pytest.mark.parametrize(
    ("hints", "message"),
    [
        ({"size": "big"}, "not GiB"),
        ({"size": True}, "not a size"),
        ({"size": "=> 3"}, "not GiB"),
        ({"rotational": "maybe"}, "not a boolean"),
        ({"name": ""}, "not a device name"),
        ({"serial": ["a"]}, "not a string"),
        ({"colour": "red"}, "unknown root device hint 'colour'"),
    ],
)
def test_bad_hints(hints: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hints(hints)


def test_real_loop_devices(loop_device: Callable[..., str]) -> None:
    small, large = loop_device(8 * MIB), loop_device(16 * MIB)
    names = frozenset({sys_name(small), sys_name(large)})
    scope = DiskScope(only=names, min_root_size=MIB)
    disks = {d.name: d for d in scope.disks()}
    assert {n: d.size for n, d in disks.items()} == {small: 8 * MIB, large: 16 * MIB}
    assert choose_root_device(scope.disks(), min_size=MIB).name == small
    assert choose_root_device(scope.disks(), {"name": large}, min_size=MIB).name == large
    assert choose_root_device(scope.disks(), min_size=10 * MIB).name == large
    with pytest.raises(DeviceNotFound):
        choose_root_device(scope.disks(), min_size=32 * MIB)
    # the default scope skips loop devices
    assert not {small, large} & {d.name for d in list_disks("/")}
