"""StaticBooter: one spec for everybody, its files under stable refs, lazy disk access."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeforge.boot.booter import KERNEL_REF, Booter, StaticBooter, initrd_ref
from pxeforge.boot.files import DiskFile
from pxeforge.boot.machine import Firmware, Machine
from pxeforge.errors import ConfigError, FileNotFound


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    kernel = tmp_path / "vmlinuz-6.1"
    kernel.write_bytes(b"K" * 1000)
    first = tmp_path / "initrd.gz"
    first.write_bytes(b"I" * 300)
    second = tmp_path / "overlay.cpio"
    second.write_bytes(b"O" * 7)
    return kernel, first, second


def test_every_machine_gets_the_same_spec_under_stable_refs(
    files: tuple[Path, Path, Path],
) -> None:
    kernel, first, second = files
    booter: Booter = StaticBooter(kernel, [first, second], "console=ttyS0")
    assert booter.per_machine is False
    spec_a = booter.boot_spec(Machine(mac="52:54:00:77:00:10", firmware=Firmware.BIOS))
    spec_b = booter.boot_spec(Machine(mac=""))
    assert spec_a == spec_b
    assert spec_a is not None
    assert spec_a.kernel == KERNEL_REF == "_pxeforge/kernel"
    assert spec_a.initrds == ("_pxeforge/initrd-0", "_pxeforge/initrd-1")
    assert spec_a.initrds == (initrd_ref(0), initrd_ref(1))
    assert spec_a.cmdline == "console=ttyS0"


def test_open_file_serves_the_real_files(files: tuple[Path, Path, Path]) -> None:
    kernel, first, second = files
    booter = StaticBooter(kernel, [first, second], "")
    opened = booter.open_file("_pxeforge/initrd-1")
    assert isinstance(opened, DiskFile)
    try:
        assert opened.size == 7
        assert opened.path == second
        assert opened.read_at(0, 100) == b"O" * 7
    finally:
        opened.close()
    kfile = booter.open_file(KERNEL_REF)
    assert kfile is not None
    try:
        assert kfile.size == 1000
        assert kfile.name == KERNEL_REF
    finally:
        kfile.close()


def test_open_file_unknown_refs_are_none(files: tuple[Path, Path, Path]) -> None:
    booter = StaticBooter(files[0], [files[1]], "")
    for ref in ("_pxeforge/initrd-1", "vmlinuz-6.1", "_pxeforge/kernel/", "kernel", ""):
        assert booter.open_file(ref) is None


def test_constructor_touches_no_disk_and_validate_reports(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "vmlinuz"
    booter = StaticBooter(missing, [], "quiet")  # no error yet
    with pytest.raises(ConfigError, match=r"--kernel .*nope/vmlinuz: no such file"):
        booter.validate()
    with pytest.raises(FileNotFound):
        booter.open_file(KERNEL_REF)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    with pytest.raises(ConfigError, match=r"--initrd .*: no such file"):
        StaticBooter(kernel, [tmp_path], "").validate()  # a directory is no initrd


def test_validate_refuses_an_injecting_cmdline(files: tuple[Path, Path, Path]) -> None:
    StaticBooter(files[0], [files[1]], "console=ttyS0 quiet").validate()
    with pytest.raises(ConfigError, match="--cmdline"):
        StaticBooter(files[0], [], "quiet\nlabel evil").validate()
    with pytest.raises(ConfigError, match="--cmdline"):
        StaticBooter(files[0], [], "quiet || shell").validate()
