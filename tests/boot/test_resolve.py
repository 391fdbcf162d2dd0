"""BootFiles: the pxelinux and GRUB lookup chains as real loaders walk them."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pxeforge.boot.booter import StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.files import BootFile, DiskFile, MemoryFile
from pxeforge.boot.machine import BootSpec, Firmware, Machine
from pxeforge.boot.render import render_grub, render_ipxe_chain, render_pxelinux
from pxeforge.boot.resolve import BootFiles
from pxeforge.errors import AccessViolation, FileNotFound

HTTP = "http://192.168.77.1:8080"
# The lab's client (lab.md, captures/dhcp-fields.txt).
MAC = "52:54:00:77:00:10"
UUID = "5a1ab000-0000-4000-8000-525400770010"
IP = IPv4Address("192.168.77.145")  # C0A84D91
OTHER_MAC = "52:54:00:77:00:99"

# What pxelinux asks, in order (seed 003 capture, with the lab client's identity).
PXELINUX_CHAIN = [
    f"/pxelinux.cfg/{UUID}",
    "/pxelinux.cfg/01-52-54-00-77-00-10",
    "/pxelinux.cfg/C0A84D91",
    "/pxelinux.cfg/C0A84D9",
    "/pxelinux.cfg/C0A84D",
    "/pxelinux.cfg/C0A84",
    "/pxelinux.cfg/C0A8",
    "/pxelinux.cfg/C0A",
    "/pxelinux.cfg/C0",
    "/pxelinux.cfg/C",
    "/pxelinux.cfg/default",
]


class ToyBooter:
    """Per-machine: boots only ``MAC`` (its spec names the MAC so answers can be told apart)."""

    per_machine = True

    def __init__(self) -> None:
        self.asked: list[Machine] = []

    def boot_spec(self, machine: Machine) -> BootSpec | None:
        self.asked.append(machine)
        if machine.mac != MAC:
            return None
        return BootSpec(kernel="vmlinuz", initrds=("initrd.img",), cmdline=f"BOOTIF={MAC}")

    def open_file(self, ref: str) -> BootFile | None:
        return None


class EvilBooter(ToyBooter):
    def boot_spec(self, machine: Machine) -> BootSpec | None:
        return BootSpec(kernel="vmlinuz", cmdline="quiet\nlabel evil")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "grub" / "x86_64-efi").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"\xeb" * 4242)
    (tmp_path / "secret").write_text("outside the root")
    (root / "escape").symlink_to(tmp_path / "secret")
    return root


@pytest.fixture
def static(tmp_path: Path) -> StaticBooter:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 5000)
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(b"I" * 700)
    return StaticBooter(kernel, [initrd], "console=ttyS0 quiet")


def text(f: BootFile) -> str:
    assert isinstance(f, MemoryFile)
    return f.read_at(0, f.size).decode()


def walk(files: BootFiles, names: list[str], client: IPv4Address | None) -> list[str | None]:
    """Each name's rendered text, or None for a miss (FileNotFound), as the loader sees it."""
    out: list[str | None] = []
    for name in names:
        try:
            f = files.open(name, client)
        except FileNotFound:
            out.append(None)
        else:
            out.append(text(f))
            f.close()
    return out


def test_static_booter_pxelinux_chain_misses_until_default(
    root: Path, static: StaticBooter
) -> None:
    registry = ClientRegistry()
    registry.seen(Machine(mac=MAC, uuid=UUID, ip=IP, firmware=Firmware.BIOS))
    files = BootFiles(static, root, registry, http_base=HTTP)
    answers = walk(files, PXELINUX_CHAIN, IP)
    assert answers[:-1] == [None] * 10
    spec = static.boot_spec(Machine(mac=MAC))
    assert spec is not None
    assert answers[-1] == render_pxelinux(spec)
    assert "    kernel /_pxeforge/kernel\n" in answers[-1]
    assert "append initrd=/_pxeforge/initrd-0 console=ttyS0 quiet" in answers[-1]


def test_static_booter_default_for_unknown_client_and_under_a_prefix(
    root: Path, static: StaticBooter
) -> None:
    files = BootFiles(static, root, ClientRegistry(), http_base=HTTP)
    for name in ("pxelinux.cfg/default", "/bios/pxelinux.cfg/default", "a/b/pxelinux.cfg/default"):
        f = files.open(name, IPv4Address("10.9.9.9"))
        assert "kernel /_pxeforge/kernel" in text(f)
        assert f.name == name.lstrip("/")
    assert walk(files, ["pxelinux.cfg/01-52-54-00-77-00-10"], None) == [None]


def test_per_machine_booter_answers_at_uuid_when_registry_knows_it(root: Path) -> None:
    booter = ToyBooter()
    registry = ClientRegistry()
    registry.seen(Machine(mac=MAC, uuid=UUID, ip=IP, firmware=Firmware.BIOS))
    files = BootFiles(booter, root, registry, http_base=HTTP)
    first = walk(files, PXELINUX_CHAIN[:1], IP)[0]
    assert first is not None and f"BOOTIF={MAC}" in first
    assert booter.asked[-1].mac == MAC and booter.asked[-1].firmware is Firmware.BIOS
    # every per-machine name and default answer the same machine
    assert (
        walk(files, [PXELINUX_CHAIN[1], PXELINUX_CHAIN[2], PXELINUX_CHAIN[-1]], IP) == [first] * 3
    )
    # subnet prefixes are not machines
    assert walk(files, PXELINUX_CHAIN[3:10], IP) == [None] * 7


def test_per_machine_booter_answers_at_01_mac_when_registry_is_empty(root: Path) -> None:
    booter = ToyBooter()
    files = BootFiles(booter, root, ClientRegistry(), http_base=HTTP)
    answers = walk(files, PXELINUX_CHAIN, IP)
    assert answers[0] is None  # uuid alone does not name a MAC
    assert booter.asked[0] == Machine(mac="", uuid=UUID, ip=IP)
    assert answers[1] is not None and f"BOOTIF={MAC}" in answers[1]
    assert answers[2:] == [None] * 9  # unknown IP and default: Machine(mac="") declined
    assert booter.asked[-1] == Machine(mac="", ip=IP)


def test_per_machine_name_of_another_machine_is_refused(root: Path) -> None:
    booter = ToyBooter()
    registry = ClientRegistry()
    registry.seen(Machine(mac=OTHER_MAC, uuid="00000000-0000-4000-8000-000000000099", ip=IP))
    files = BootFiles(booter, root, registry, http_base=HTTP)
    stolen = ["pxelinux.cfg/01-52-54-00-77-00-10", f"pxelinux.cfg/{UUID}", "grub.cfg-01-" + MAC]
    assert walk(files, stolen, IP) == [None, None, None]
    assert booter.asked == []  # refused before the booter is asked
    # the hex-IP name of another address is no way round it either
    assert walk(files, ["pxelinux.cfg/C0A84D92"], IP) == [None]


def test_real_file_in_root_wins_over_virtual(root: Path, static: StaticBooter) -> None:
    (root / "pxelinux.cfg").mkdir()
    (root / "pxelinux.cfg" / "default").write_text("default local\n")
    (root / "grub" / "grub.cfg").write_text("set timeout=3\n")
    files = BootFiles(static, root, ClientRegistry(), http_base=HTTP)
    f = files.open("/pxelinux.cfg/default", IP)
    assert isinstance(f, DiskFile)
    assert f.read_at(0, 100) == b"default local\n"
    f.close()
    g = files.open("/grub/grub.cfg", IP)
    assert g.read_at(0, 100) == b"set timeout=3\n"
    g.close()
    # the other names stay virtual
    assert "linux /_pxeforge/kernel" in text(files.open("grub.cfg", IP))


def test_grub_names(root: Path, static: StaticBooter) -> None:
    registry = ClientRegistry()
    registry.seen(Machine(mac=MAC, uuid=UUID, ip=IP, firmware=Firmware.EFI_X64))
    always = ["/grub/grub.cfg", "/grub.cfg", "efi/grub.cfg", "EFI/debian/grub.cfg"]
    per_mac = [
        "/grub/grub.cfg-01-52-54-00-77-00-10",
        "/grub.cfg-52-54-00-77-00-10",
        "grub/grub.cfg-52:54:00:77:00:10",
        f"grub/grub.cfg-{UUID}",
        "grub/grub.cfg-C0A84D91",
    ]
    misses = ["/grub/x86_64-efi/command.lst", "/grub/grub.cfg-C0A84D", "/grub/grub.cfg-x"]
    spec = static.boot_spec(Machine(mac=MAC))
    assert spec is not None
    files = BootFiles(static, root, registry, http_base=HTTP)
    assert walk(files, always, IP) == [render_grub(spec)] * len(always)
    assert walk(files, per_mac + misses, IP) == [None] * (len(per_mac) + len(misses))

    toy = BootFiles(ToyBooter(), root, registry, http_base=HTTP)
    answers = walk(toy, always + per_mac + misses, IP)
    toy_spec = ToyBooter().boot_spec(Machine(mac=MAC))
    assert toy_spec is not None
    assert answers == [render_grub(toy_spec)] * (len(always) + len(per_mac)) + [None] * 3


def test_boot_ipxe_is_virtual(root: Path, static: StaticBooter) -> None:
    files = BootFiles(static, root, ClientRegistry(), http_base=HTTP)
    assert text(files.open("boot.ipxe", None)) == render_ipxe_chain(HTTP)
    assert text(files.open("/ipxe/boot.ipxe", None)) == render_ipxe_chain(HTTP)


def test_booter_files_then_root_files(root: Path, static: StaticBooter) -> None:
    files = BootFiles(static, root, ClientRegistry(), http_base=HTTP)
    kernel = files.open("/_pxeforge/kernel", IP)
    assert isinstance(kernel, DiskFile) and kernel.size == 5000
    kernel.close()
    initrd = files.open("_pxeforge/initrd-0", IP)
    assert initrd.size == 700
    initrd.close()
    loader = files.open("/pxelinux.0", IP)
    assert loader.size == 4242
    loader.close()
    for missing in ("_pxeforge/initrd-1", "vmlinuz", "ldlinux.c32", "grub", "/", ""):
        with pytest.raises(FileNotFound):
            files.open(missing, IP)
    for forbidden in ("../secret", "/grub/../../secret", "escape", "a\x00b", "pxelinux.cfg/\n"):
        with pytest.raises(AccessViolation):
            files.open(forbidden, IP)


def test_booter_declining_or_injecting_is_a_miss(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = BootFiles(ToyBooter(), root, ClientRegistry(), http_base=HTTP)
    with pytest.raises(FileNotFound):
        files.open("pxelinux.cfg/default", IP)
    evil = BootFiles(EvilBooter(), root, ClientRegistry(), http_base=HTTP)
    with caplog.at_level(logging.ERROR, logger="pxeforge.boot.resolve"):
        for name in ("pxelinux.cfg/default", "grub/grub.cfg"):
            with pytest.raises(FileNotFound):
                evil.open(name, IP)
    assert "refused" in caplog.text
