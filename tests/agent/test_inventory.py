"""The inventory collector on a fake /proc+/sys tree (exact values) and on this host."""

from __future__ import annotations

import os
from pathlib import Path

from pxeforge.agent.inventory import collect, override_mac

CPUINFO = """processor\t: 0
physical id\t: 0
model name\t: Test CPU @ 2.00GHz
cpu MHz\t\t: 1999.999
flags\t\t: fpu vme sse2

processor\t: 1
physical id\t: 1
model name\t: Test CPU @ 2.00GHz
cpu MHz\t\t: 1999.999
flags\t\t: fpu vme sse2
"""


def _w(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_tree(root: Path) -> Path:
    _w(root, "proc/cpuinfo", CPUINFO)
    _w(root, "proc/meminfo", "MemTotal:        2000000 kB\nMemFree: 1 kB\n")
    _w(root, "proc/sys/kernel/arch", "x86_64\n")
    _w(root, "proc/sys/kernel/hostname", "ramdisk\n")
    mem = "sys/devices/system/memory"
    _w(root, f"{mem}/block_size_bytes", "8000000\n")  # 128 MiB, hex
    for i in range(16):
        _w(root, f"{mem}/memory{i}/online", "1\n")
    _w(root, f"{mem}/memory16/online", "0\n")
    # a SCSI disk with udev data, a virtio disk, and devices to skip
    sda = "sys/block/sda"
    _w(root, f"{sda}/size", str(20 * 1024**3 // 512))
    _w(root, f"{sda}/dev", "8:0")
    _w(root, f"{sda}/queue/rotational", "1")
    _w(root, f"{sda}/queue/logical_block_size", "512")
    _w(root, f"{sda}/queue/physical_block_size", "4096")
    hctl = root / "sys/devices/pci0000:00/host0/target0:0:0/0:0:0:0"
    hctl.mkdir(parents=True)
    (hctl / "model").write_text("QEMU HARDDISK   \n")
    (hctl / "vendor").write_text("QEMU    \n")
    os.symlink(hctl, root / sda / "device")
    _w(root, "run/udev/data/b8:0",
       "S:disk/by-id/x\nE:ID_SERIAL_SHORT=SER123\nE:ID_WWN=0x5000c500\n"
       "E:ID_PATH=pci-0000:00:05.0-scsi-0:0:0:0\nE:ID_BUS=ata\n")  # fmt: skip
    _w(root, "sys/block/vda/size", str(2 * 1024**3 // 512))
    _w(root, "sys/block/vda/queue/rotational", "0")
    _w(root, "sys/block/vda/serial", "vdserial")
    _w(root, "sys/block/loop0/size", "100")
    _w(root, "sys/block/sr0/size", "100")
    _w(root, "sys/block/vdb/size", "0")  # empty
    # NICs: one with carrier and a lease, one without, loopback, a non-Ethernet one
    for name, mac, carrier, kind in (
        ("eth0", "52:54:00:AA:BB:CC", "1", "1"),
        ("eth1", "52:54:00:aa:bb:cd", "0", "1"),
        ("lo", "00:00:00:00:00:00", "1", "772"),
        ("ib0", "80:00:00:00:00:00", "1", "32"),
    ):
        _w(root, f"sys/class/net/{name}/address", mac + "\n")
        _w(root, f"sys/class/net/{name}/carrier", carrier + "\n")
        _w(root, f"sys/class/net/{name}/type", kind + "\n")
    _w(root, "sys/class/net/eth0/device/vendor", "0x1af4\n")
    _w(root, "sys/class/net/eth0/device/device", "0x1000\n")
    _w(root, "run/pxeforge/network", "interface=eth0\nmac=52:54:00:aa:bb:cc\nip=10.0.0.50\n")
    dmi = "sys/class/dmi/id"
    for name, value in (("product_name", "Standard PC"), ("product_serial", "S1"),
                        ("sys_vendor", "QEMU"), ("bios_vendor", "SeaBIOS"),
                        ("bios_version", "1.16"), ("bios_date", "04/01/2014")):  # fmt: skip
        _w(root, f"{dmi}/{name}", value + "\n")
    return root


def test_fake_tree(tmp_path: Path) -> None:
    inv = collect(fake_tree(tmp_path))
    assert inv["cpu"] == {
        "model_name": "Test CPU @ 2.00GHz",
        "frequency": "1999.999",
        "count": 2,
        "architecture": "x86_64",
        "flags": ["fpu", "vme", "sse2"],
        "socket_count": 2,
    }
    assert inv["memory"] == {"total": 2000000 * 1024, "physical_mb": 2048}
    assert [d["name"] for d in inv["disks"]] == ["/dev/sda", "/dev/vda"]
    sda, vda = inv["disks"]
    assert sda["size"] == 20 * 1024**3 and sda["rotational"] is True
    assert sda["serial"] == "SER123" and sda["wwn"] == "0x5000c500"
    assert sda["model"] == "QEMU HARDDISK" and sda["vendor"] == "QEMU"
    assert sda["hctl"] == "0:0:0:0" and sda["tran"] == "sata"
    assert sda["by_path"] == "/dev/disk/by-path/pci-0000:00:05.0-scsi-0:0:0:0"
    assert (sda["logical_sectors"], sda["physical_sectors"]) == (512, 4096)
    assert vda["size"] == 2 * 1024**3 and vda["rotational"] is False
    assert vda["serial"] == "vdserial" and vda["tran"] == "virtio"
    names = [i["name"] for i in inv["interfaces"]]
    assert names == ["eth0", "eth1"]
    eth0, eth1 = inv["interfaces"]
    assert eth0["mac_address"] == "52:54:00:aa:bb:cc" and eth0["has_carrier"] is True
    assert eth0["ipv4_address"] == "10.0.0.50"
    assert (eth0["vendor"], eth0["product"]) == ("0x1af4", "0x1000")
    assert eth1["has_carrier"] is False and eth1["ipv4_address"] is None
    assert inv["system_vendor"] == {
        "product_name": "Standard PC",
        "serial_number": "S1",
        "manufacturer": "QEMU",
        "firmware": {"vendor": "SeaBIOS", "version": "1.16", "build_date": "04/01/2014"},
    }
    assert inv["boot"] == {"current_boot_mode": "bios", "pxe_interface": "52:54:00:aa:bb:cc"}
    assert inv["hostname"] == "ramdisk" and inv["bmc_address"] is None
    (tmp_path / "sys/firmware/efi").mkdir(parents=True)
    uefi = collect(tmp_path, bootif="52:54:00:aa:bb:cd")
    assert uefi["boot"] == {"current_boot_mode": "uefi", "pxe_interface": "52:54:00:aa:bb:cd"}
    moved = override_mac(uefi, "52:54:00:00:00:01")
    assert moved["interfaces"][1]["mac_address"] == "52:54:00:00:00:01"
    assert moved["boot"]["pxe_interface"] == "52:54:00:00:00:01"


def test_empty_tree_does_not_crash(tmp_path: Path) -> None:
    inv = collect(tmp_path)
    assert inv["disks"] == [] and inv["interfaces"] == [] and inv["cpu"]["count"] == 1


def test_this_host() -> None:
    inv = collect("/")
    assert inv["cpu"]["count"] == os.cpu_count()
    assert inv["cpu"]["architecture"] == os.uname().machine
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert inv["memory"]["total"] == total
    assert total <= inv["memory"]["physical_mb"] * 1024 * 1024 < total * 1.5
    host_nics = {
        p.name: (p / "address").read_text().strip()
        for p in Path("/sys/class/net").iterdir()
        if (p / "type").read_text().strip() == "1"
    }
    found = {i["name"]: i["mac_address"] for i in inv["interfaces"]}
    assert found == host_nics
    for disk in inv["disks"]:
        name = disk["name"].removeprefix("/dev/")
        assert disk["size"] == int(Path(f"/sys/block/{name}/size").read_text()) * 512
    assert inv["boot"]["current_boot_mode"] == (
        "uefi" if Path("/sys/firmware/efi").is_dir() else "bios"
    )
