"""HTTP server against the real curl client on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from pxeforge.boot.booter import Booter, StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.files import BootFile
from pxeforge.boot.machine import BootSpec, Firmware, Machine
from pxeforge.boot.render import render_ipxe, render_ipxe_chain, render_pxelinux
from pxeforge.boot.resolve import BootFiles
from pxeforge.servers.http import (
    CALLBACK_HISTORY,
    HttpServer,
    firmware_from_ipxe,
    parse_callback,
    start_http,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl client"),
]

MAC = "52:54:00:77:00:10"
UNKNOWN_MAC = "52:54:00:77:00:99"
DATA = os.urandom(300 * 1024 + 17)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def curl(url: str, *args: str) -> Reply:
    """One request with the real curl; headers of the last response, body bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        head, body = Path(tmp, "head"), Path(tmp, "body")
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-D",
            str(head),
            "-o",
            str(body),
            "-w",
            "%{http_code}",
            *args,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        headers = {}
        for line in head.read_text().splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return Reply(int(out), headers, body.read_bytes() if body.exists() else b"")


class ToyBooter:
    """Per-machine: knows only MAC; local boot when asked with ``localboot`` set."""

    per_machine = True

    def __init__(self, spec: BootSpec) -> None:
        self.spec = spec
        self.asked: list[Machine] = []

    def boot_spec(self, machine: Machine) -> BootSpec | None:
        self.asked.append(machine)
        return self.spec if machine.mac == MAC else None

    def open_file(self, ref: str) -> BootFile | None:
        return None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(DATA)
    (root / "sub" / "file.txt").write_text("hello\n")
    (tmp_path / "secret").write_text("SECRET outside the root")
    (root / "escape").symlink_to(tmp_path / "secret")
    (tmp_path / "vmlinuz").write_bytes(b"K" * 4096)
    (tmp_path / "initrd.gz").write_bytes(b"I" * 1000)
    return tmp_path


@contextlib.asynccontextmanager
async def serving(
    tree: Path, booter: Booter | None = None, registry: ClientRegistry | None = None
) -> AsyncIterator[HttpServer]:
    booter = booter or StaticBooter(tree / "vmlinuz", [tree / "initrd.gz"], "console=ttyS0")
    registry = registry or ClientRegistry()
    files = BootFiles(booter, tree / "root", registry, http_base="http://unused")
    server = await start_http("127.0.0.1", 0, files, booter=booter, registry=registry)
    try:
        yield server
    finally:
        await server.close()


def run(
    tree: Path,
    scenario: Callable[[str, HttpServer], Awaitable[None]],
    booter: Booter | None = None,
    registry: ClientRegistry | None = None,
) -> None:
    async def main() -> None:
        async with serving(tree, booter, registry) as server:
            assert server.port > 0
            assert server.http_base == f"http://127.0.0.1:{server.port}"
            await scenario(server.http_base, server)

    asyncio.run(main())


def test_disk_file_length_head_and_range(tree: Path) -> None:
    async def scenario(base: str, server: HttpServer) -> None:
        got = await curl(f"{base}/big.bin")
        assert got.status == 200
        assert got.headers["content-length"] == str(len(DATA))
        assert got.body == DATA
        head = await curl(f"{base}/big.bin", "--head")
        assert head.status == 200
        assert head.headers["content-length"] == str(len(DATA))
        assert head.headers["accept-ranges"] == "bytes"
        part = await curl(f"{base}/big.bin", "-r", "100-199")
        assert part.status == 206
        assert part.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
        assert part.body == DATA[100:200]
        tail = await curl(f"{base}/big.bin", "-r", "-17")
        assert tail.status == 206 and tail.body == DATA[-17:]
        text = await curl(f"{base}/sub//file.txt")
        assert text.status == 200 and text.body == b"hello\n"
        assert text.headers["content-type"].startswith("text/plain")

    run(tree, scenario)


def test_booter_files_and_rendered_configs(tree: Path) -> None:
    async def scenario(base: str, server: HttpServer) -> None:
        kernel = await curl(f"{base}/_pxeforge/kernel")
        assert kernel.status == 200 and kernel.body == b"K" * 4096
        initrd = await curl(f"{base}/_pxeforge/initrd-0", "-r", "10-19")
        assert initrd.status == 206 and initrd.body == b"I" * 10
        cfg = await curl(f"{base}/pxelinux.cfg/default")
        assert cfg.status == 200
        booter = StaticBooter(tree / "vmlinuz", [tree / "initrd.gz"], "console=ttyS0")
        spec = booter.boot_spec(Machine(mac=MAC))
        assert spec is not None
        assert cfg.body.decode() == render_pxelinux(spec)
        assert cfg.headers["content-length"] == str(len(cfg.body))
        head = await curl(f"{base}/grub/grub.cfg", "--head")
        assert head.status == 200 and int(head.headers["content-length"]) > 0

    run(tree, scenario)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/missing", 404),
        ("/sub/missing.txt", 404),
        ("/", 404),
        ("/pxelinux.cfg/01-52-54-00-77-00-10", 404),  # static booter: per-machine names miss
        ("/_pxeforge/initrd-1", 404),
        ("/../secret", 403),
        ("/sub/../../secret", 403),
        ("/%2e%2e/secret", 403),
        ("/sub/%2E%2E/%2e%2e/secret", 403),
        ("/..%2fsecret", 403),
        ("/big.bin%00.txt", 403),
        ("/sub%0afile.txt", 403),
        ("/escape", 403),
        ("/%ff", 400),
    ],
)
def test_refusals(tree: Path, path: str, status: int) -> None:
    async def scenario(base: str, server: HttpServer) -> None:
        for extra in ((), ("--head",)):
            got = await curl(f"{base}{path}", "--path-as-is", *extra)
            assert got.status == status
            assert str(tree) not in got.body.decode(errors="replace")
            assert b"SECRET" not in got.body
        got = await curl(f"{base}{path}", "--path-as-is")
        assert got.body in (b"not found\n", b"forbidden\n", b"bad request: path is not UTF-8\n")

    run(tree, scenario)


def test_boot_ipxe_chain_script(tree: Path) -> None:
    async def scenario(base: str, server: HttpServer) -> None:
        got = await curl(f"{base}/boot.ipxe")
        assert got.status == 200
        assert got.body.decode() == render_ipxe_chain(base)
        chain = f"chain --replace --autofree {base}/ipxe?mac=${{net${{idx}}/mac}}"
        assert chain in got.body.decode()

    run(tree, scenario)


SPEC = BootSpec(kernel="vmlinuz", initrds=("initrd.gz",), cmdline="console=ttyS0")


@pytest.mark.parametrize(
    ("arch", "platform", "firmware"),
    [("i386", "pcbios", Firmware.BIOS), ("x86_64", "efi", Firmware.EFI_X64)],
)
def test_ipxe_script_for_bios_and_efi(
    tree: Path, arch: str, platform: str, firmware: Firmware
) -> None:
    booter = ToyBooter(SPEC)

    async def scenario(base: str, server: HttpServer) -> None:
        query = f"mac={MAC}&uuid=5a1ab000-0000-4000-8000-525400770010"
        got = await curl(f"{base}/ipxe?{query}&arch={arch}&platform={platform}")
        assert got.status == 200
        assert got.body.decode() == (
            "#!ipxe\n"
            f"kernel {base}/vmlinuz initrd=initrd.gz console=ttyS0\n"
            f"initrd {base}/initrd.gz\n"
            "boot\n"
        )
        asked = booter.asked[-1]
        assert asked.mac == MAC and asked.firmware is firmware and asked.ipxe
        assert asked.uuid == "5a1ab000-0000-4000-8000-525400770010"

    run(tree, scenario, booter=booter)


def test_ipxe_localboot_sanboot_only_on_bios(tree: Path) -> None:
    booter = ToyBooter(BootSpec(kernel="", localboot=True))

    async def scenario(base: str, server: HttpServer) -> None:
        bios = await curl(f"{base}/ipxe?mac={MAC}&arch=x86_64&platform=pcbios")
        assert bios.body.decode() == render_ipxe(
            booter.spec, http_base=base, firmware=Firmware.BIOS
        )
        assert "sanboot --no-describe --drive 0x80" in bios.body.decode()
        efi = await curl(f"{base}/ipxe?mac={MAC}&arch=x86_64&platform=efi")
        assert efi.body.decode() == "#!ipxe\nexit 1\n"

    run(tree, scenario, booter=booter)


def test_ipxe_uses_registry_machine_and_refuses_unknown(tree: Path) -> None:
    booter = ToyBooter(SPEC)
    registry = ClientRegistry()
    registry.seen(Machine(mac=MAC, arch=7, firmware=Firmware.EFI_X64, uuid="u"))

    async def scenario(base: str, server: HttpServer) -> None:
        got = await curl(f"{base}/ipxe?mac=52-54-00-77-00-10&arch=i386&platform=pcbios")
        assert got.status == 200
        asked = booter.asked[-1]
        assert asked.arch == 7 and asked.firmware is Firmware.EFI_X64 and asked.ipxe
        unknown = await curl(f"{base}/ipxe?mac={UNKNOWN_MAC}&arch=x86_64&platform=efi")
        assert unknown.status == 404
        script = unknown.body.decode()
        assert script.startswith("#!ipxe\n")
        assert f"no boot configuration for {UNKNOWN_MAC}" in script
        assert "sleep 10\n" in script
        bad = await curl(f"{base}/ipxe?mac=nonsense")
        assert bad.status == 400 and b"sleep" in bad.body
        missing = await curl(f"{base}/ipxe")
        assert missing.status == 400

    run(tree, scenario, booter=booter, registry=registry)


def test_callback_post_then_list(tree: Path) -> None:
    async def scenario(base: str, server: HttpServer) -> None:
        url = f"{base}/_pxeforge/callback"
        body = json.dumps({"mac": "52-54-00-77-00-10", "cmdline": "console=ttyS0 quiet"})
        ok = await curl(url, "--data", body, "-H", "Content-Type: application/json")
        assert ok.status == 200 and json.loads(ok.body) == {"ok": True}
        # busybox wget --post-data: a form, no JSON
        form = await curl(url, "--data", f"mac={MAC}&cmdline=root=/dev/ram0 ip=dhcp&cpus=2")
        assert form.status == 200
        lines = await curl(url, "--data-binary", "mac=52:54:00:77:00:11\ncmdline=quiet\n")
        assert lines.status == 200
        query = await curl(f"{url}?mac=525400770012&cmdline=x", "--data", "")
        assert query.status == 200
        for bad in ("not json at all", '{"cmdline": "no mac"}', "[1, 2]", '{"mac": "zz"}', "{"):
            refused = await curl(url, "--data", bad)
            assert refused.status == 400, bad
            assert refused.body.startswith(b"bad callback: ")
        listed = await curl(f"{base}/_pxeforge/callbacks")
        assert listed.status == 200
        records = json.loads(listed.body)
        assert [r["mac"] for r in records] == [MAC, MAC, "52:54:00:77:00:11", "52:54:00:77:00:12"]
        assert records[0]["cmdline"] == "console=ttyS0 quiet"
        assert records[1]["cmdline"] == "root=/dev/ram0 ip=dhcp" and records[1]["cpus"] == "2"
        assert records[2]["cmdline"] == "quiet"
        assert records[3]["cmdline"] == "x"
        assert all(r["remote"] == "127.0.0.1" and r["time"] > 0 for r in records)

    run(tree, scenario)


def test_callback_history_is_bounded(tree: Path) -> None:
    async def scenario(base: str, server: HttpServer) -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(CALLBACK_HISTORY + 5):
                mac = f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"
                async with session.post(f"{base}/_pxeforge/callback", json={"mac": mac}) as r:
                    assert r.status == 200
        listed = json.loads((await curl(f"{base}/_pxeforge/callbacks")).body)
        assert len(listed) == CALLBACK_HISTORY
        assert listed[0]["mac"] == "52:54:00:00:00:05"
        assert listed[-1]["mac"] == "52:54:00:00:03:ec"

    run(tree, scenario)


def test_parse_callback_pure() -> None:
    assert parse_callback(b'{"mac": "52-54-00-77-00-10", "disks": [1]}', {}) == {
        "mac": MAC,
        "disks": [1],
    }
    assert parse_callback(b"cmdline=a+b", {"mac": MAC}) == {"mac": MAC, "cmdline": "a b"}
    for bad in (b"\xff", b"", b"mac", b'{"mac": 1}'):
        with pytest.raises(ValueError):
            parse_callback(bad, {})


def test_firmware_from_ipxe_settings() -> None:
    assert firmware_from_ipxe("i386", "pcbios") is Firmware.BIOS
    assert firmware_from_ipxe("x86_64", "pcbios") is Firmware.BIOS
    assert firmware_from_ipxe("x86_64", "efi") is Firmware.EFI_X64
    assert firmware_from_ipxe("arm64", "efi") is Firmware.EFI_ARM64
    assert firmware_from_ipxe("", "") is Firmware.UNKNOWN
