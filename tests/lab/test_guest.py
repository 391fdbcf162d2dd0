"""The test guest: its /init, its initramfs, and the cached build from a kernel .deb."""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pxeforge.errors import AssetError
from pxeforge.lab import guest
from pxeforge.lab.guest import MODULES, build_guest, build_initramfs, init_script
from pxeforge.ramdisk import cpio


def test_init_loads_the_virtio_stack_in_order_and_calls_back() -> None:
    text = init_script()
    assert text.startswith("#!/bin/busybox sh\n")
    assert f"for m in {' '.join(MODULES)}; do" in text
    assert MODULES.index("virtio_ring") < MODULES.index("virtio_pci") < MODULES.index("virtio_net")
    assert "-V pxelab-guest" in text
    assert "pxelab.callback=" in text and "/_pxeforge/callback" in text
    # busybox 1.35 `wget -T` segfaults: the POST is bounded by timeout(1) instead
    assert "timeout 15 wget" in text and "wget -T" not in text
    for marker in (guest.GUEST_MARKER, guest.CALLBACK_OK_MARKER, guest.CALLBACK_FAILED_MARKER):
        assert marker in text
    assert "poweroff -f" in text


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_init_is_valid_busybox_sh(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(init_script())
    subprocess.run(["busybox", "sh", "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_callback_body_is_json_even_with_quotes_in_the_cmdline(tmp_path: Path) -> None:
    """Run the guest's own JSON-building lines under busybox sh."""
    import json

    lines = init_script().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("esc="))
    snippet = "\n".join(
        [
            "cmdline='BOOT_IMAGE=/k a=\"b c\" d=\\x pxelab.token=t1'",
            "mac=52:54:00:77:00:10",
            "ip=10.213.0.100",
            *lines[start : start + 2],
            'printf "%s" "$body"',
        ]
    )
    out = subprocess.run(
        ["busybox", "sh", "-c", snippet], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == {
        "mac": "52:54:00:77:00:10",
        "cmdline": 'BOOT_IMAGE=/k a="b c" d=\\x pxelab.token=t1',
        "ip": "10.213.0.100",
    }


def test_initramfs_layout() -> None:
    modules = {m: f"module {m}".encode() for m in MODULES}
    image = build_initramfs("#!/bin/busybox sh\necho hi\n", b"\x7fELF busybox", modules)
    assert image[:2] == b"\x1f\x8b"
    assert build_initramfs("#!/bin/busybox sh\necho hi\n", b"\x7fELF busybox", modules) == image
    entries = {e.path: e for e in cpio.read_archive(gzip.decompress(image))}
    init = entries["init"]
    assert init.is_file and init.perms == 0o755 and init.data.startswith(b"#!/bin/busybox sh")
    assert entries["bin/busybox"].perms == 0o755
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and (console.rdev_major, console.rdev_minor) == (5, 1)
    for m in MODULES:
        assert entries[f"lib/modules/{m}.ko"].data == f"module {m}".encode()
    for d in ("proc", "sys", "tmp", "etc"):
        assert entries[d].is_dir
    assert entries["etc/udhcpc.sh"].perms == 0o755
    assert len({e.ino for e in entries.values()}) == len(entries)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PXEFORGE_CACHE", str(tmp_path / "a"))
    assert guest.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PXEFORGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert guest.default_cache_dir() == tmp_path / "x" / "pxeforge"


def _fake_kernel_deb(debs: Path, *, with_modules: tuple[str, ...] = MODULES) -> str:
    """A .deb shaped like Debian's linux-image package (built with dpkg-deb)."""
    package = "linux-image-9.9.9-1-pxftest"
    tree = debs.parent / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 9.9.9-1\nArchitecture: amd64\n"
        "Maintainer: pxeforge tests <t@example.invalid>\nDescription: test kernel\n"
    )
    (tree / "boot").mkdir()
    (tree / "boot" / "vmlinuz-9.9.9-1-pxftest").write_bytes(b"MZ fake bzImage")
    kdir = tree / "lib/modules/9.9.9-1-pxftest/kernel/drivers"
    kdir.mkdir(parents=True)
    for m in with_modules:
        (kdir / f"{m}.ko").write_bytes(f"ko {m}".encode())
    (kdir / "unrelated.ko").write_bytes(b"nope")
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "-Zxz", "--root-owner-group", "--build", str(tree),
         str(debs / f"{package}_9.9.9-1_amd64.deb")],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.rmtree(tree)
    return package


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_build_guest_from_a_kernel_deb_and_cache_it(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    package = _fake_kernel_deb(tmp_path / "cache" / "debs")
    said: list[str] = []
    g = build_guest(tmp_path / "cache", kernel_package=package, busybox=busybox, log=said.append)
    assert g.kernel.read_bytes() == b"MZ fake bzImage"
    assert g.kernel_version == "9.9.9-1-pxftest"
    assert g.package == f"{package}_9.9.9-1_amd64.deb"
    entries = {e.path: e for e in cpio.read_archive(gzip.decompress(g.initrd.read_bytes()))}
    assert entries["lib/modules/virtio_net.ko"].data == b"ko virtio_net"
    assert "lib/modules/unrelated.ko" not in entries
    assert entries["bin/busybox"].data == b"\x7fELF static busybox"
    assert len(said) == 1 and "building the test guest" in said[0]
    # second time: a cache hit, nothing rebuilt
    mtime = g.initrd.stat().st_mtime_ns
    again = build_guest(
        tmp_path / "cache", kernel_package=package, busybox=busybox, log=said.append
    )
    assert again == g and len(said) == 1 and g.initrd.stat().st_mtime_ns == mtime
    # another busybox is another guest
    busybox.write_bytes(b"\x7fELF other busybox")
    other = build_guest(tmp_path / "cache", kernel_package=package, busybox=busybox)
    assert other.initrd != g.initrd


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_build_guest_names_missing_modules(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF")
    package = _fake_kernel_deb(tmp_path / "cache" / "debs", with_modules=MODULES[:-1])
    with pytest.raises(AssetError, match="virtio_net"):
        build_guest(tmp_path / "cache", kernel_package=package, busybox=busybox)
    with pytest.raises(AssetError, match="busybox"):
        build_guest(tmp_path / "cache", kernel_package=package, busybox=tmp_path / "none")
