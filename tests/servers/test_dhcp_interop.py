"""Real DHCP clients against our server: busybox udhcpc and ISC dhclient.

The server runs in one network namespace (dhcp_runner.py), the client in another, joined by
a veth pair (dhcp_lab.py). Both namespaces are deleted whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypeVar

import pytest

from .dhcp_lab import SERVER_IP, Lab, ServerProc, dhcp_lab, full_settings, have_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.interop,
    pytest.mark.skipif(not have_netns(), reason="needs root and iproute2 (network namespaces)"),
]

need_busybox = pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not found")
need_dhclient = pytest.mark.skipif(shutil.which("dhclient") is None, reason="dhclient not found")

POOL = (IPv4Address("10.77.0.100"), IPv4Address("10.77.0.119"))
PXE_BIOS = "PXEClient:Arch:00000:UNDI:002001"
T = TypeVar("T")


def in_pool(ip: str) -> bool:
    return POOL[0] <= IPv4Address(ip) <= POOL[1]


def _dedup(items: Iterable[T]) -> list[T]:
    """Collapse consecutive repeats (a retransmitted request answered twice)."""
    out: list[T] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


# ------------------------------------------------------------------------ udhcpc


def udhcpc(lab: Lab, tmp: Path, *extra: str, pxe: bool = True) -> dict[str, str] | None:
    """One udhcpc run to a lease (or failure); returns the environment of its ``bound`` call."""
    out = tmp / f"udhcpc-{time.monotonic_ns()}"
    script = tmp / "udhcpc.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    argv = ["busybox", "udhcpc", "-i", lab.cli_if, "-n", "-q", "-f", "-s", str(script)]
    argv += ["-t", "3", "-T", "1", "-O", "bootfile"]
    if pxe:
        argv += ["-V", PXE_BIOS, "-x", "0x5d:0000"]  # option 93: x86 BIOS
    argv += list(extra)
    done = subprocess.run(
        ["timeout", "20", "ip", "netns", "exec", lab.cli, *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        return None
    return read_env(out)


@need_busybox
def test_udhcpc_pxe_clients_get_addresses_and_boot_file(tmp_path: Path) -> None:
    with dhcp_lab() as lab:
        server = ServerProc(lab, full_settings(), db=tmp_path / "leases.db").start()
        try:
            first_mac = lab.client_mac()
            env = udhcpc(lab, tmp_path)
            assert env is not None, "udhcpc got no lease"
            assert in_pool(env["ip"])
            assert env["boot_file"] == "pxelinux.0"  # BOOTP file field
            assert env["bootfile"] == "pxelinux.0"  # option 67
            assert env["siaddr"] == SERVER_IP  # next-server
            assert env["serverid"] == SERVER_IP
            assert env["subnet"] == "255.255.255.0" and env["router"] == SERVER_IP
            assert env["lease"] == "600"
            # unicast OFFER/ACK to the new address: we added an ARP entry for it
            neigh = lab.in_srv("ip", "neigh", "show", env["ip"], "dev", lab.srv_if)
            assert first_mac in neigh
            # a second machine gets another address; this one asks for broadcast replies
            lab.set_client_mac("02:00:00:00:00:02")
            env2 = udhcpc(lab, tmp_path, "-B")
            assert env2 is not None and in_pool(env2["ip"]) and env2["ip"] != env["ip"]
            stats = server.stop()
            # restart: the first machine comes back (fresh DISCOVER) and gets its address
            server.start()
            lab.set_client_mac(first_mac)
            env3 = udhcpc(lab, tmp_path)
            assert env3 is not None and env3["ip"] == env["ip"]
            stats2 = server.stop()
        finally:
            server.close()
    # (">=": a client on a loaded machine may retransmit)
    assert stats["stats"]["DISCOVER:offer"] >= 2 and stats["stats"]["REQUEST:ack"] >= 2
    assert stats2["stats"]["REQUEST:ack"] >= 1
    acks = [e for e in server.events if e["outcome"] == "ack"]
    assert _dedup(e["ip"] for e in acks) == [env["ip"], env2["ip"], env["ip"]]
    assert all(e["loader"] == "pxelinux.0" and e["arch"] == 0 for e in acks)


@need_busybox
def test_udhcpc_plain_client_is_ignored_with_netboot_only(tmp_path: Path) -> None:
    with dhcp_lab() as lab:
        server = ServerProc(lab, full_settings()).start()
        try:
            assert udhcpc(lab, tmp_path, pxe=False) is None
            stats = server.stop()
            # without netboot_only it gets an address, but no boot file. No --interface here,
            # and the client asks for broadcast replies (-B): they must leave by the interface
            # the DISCOVER came in on (IP_PKTINFO), as the namespace has no default route
            server = ServerProc(lab, full_settings(netboot_only=False, interface=None)).start()
            env = udhcpc(lab, tmp_path, "-B", pxe=False)
            server.stop()
        finally:
            server.close()
    assert stats["stats"]["DISCOVER:ignored:not-for-us"] >= 1
    assert "DISCOVER:offer" not in stats["stats"]
    assert env is not None and in_pool(env["ip"])
    assert "bootfile" not in env and env.get("boot_file", "") == ""


# ---------------------------------------------------------------------- dhclient

DHCLIENT_CONF = """\
option pxe-arch code 93 = unsigned integer 16;
send vendor-class-identifier "PXEClient:Arch:00007:UNDI:003000";
send pxe-arch 7;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,
        bootfile-name, tftp-server-name;
"""


class Dhclient:
    """ISC dhclient in the client namespace with its own config, script and lease file."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.conf = tmp / "dhclient.conf"
        self.conf.write_text(DHCLIENT_CONF)
        self.leases = tmp / "dhclient.leases"
        self.out = tmp / "dhclient-out"
        self.out.mkdir(exist_ok=True)
        self.script = tmp / "dhclient.sh"
        # dhclient runs its script with a clean environment: the path is written in
        self.script.write_text(f'#!/bin/sh\nenv > "{self.out}/$reason"\nexit 0\n')
        self.script.chmod(0o755)

    def _argv(self, *extra: str) -> list[str]:
        return [
            "timeout", "30", "ip", "netns", "exec", self.lab.cli, "dhclient", "-v",
            "-cf", str(self.conf), "-sf", str(self.script), "-lf", str(self.leases),
            "-pf", str(self.tmp / "dhclient.pid"), *extra, self.lab.cli_if,
        ]  # fmt: skip

    def bind(self, timeout: float = 15.0) -> tuple[str, dict[str, str]]:
        """Run until bound; returns (reason, environment) of the BOUND/REBOOT script call."""
        for old in self.out.iterdir():
            old.unlink()
        proc = subprocess.Popen(
            self._argv("-1", "-d"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for reason in ("BOUND", "REBOOT"):
                    path = self.out / reason
                    if path.exists() and "new_ip_address=" in path.read_text():
                        env = read_env(path)
                        # dhclient runs the script first and writes its lease file after:
                        # killing it in between would lose the lease the next run reboots from
                        if self._lease_written(env["new_ip_address"], deadline):
                            return reason, env
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
            raise AssertionError(f"dhclient did not bind: {proc.poll()}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=10)

    def _lease_written(self, ip: str, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.leases.exists() and f"fixed-address {ip};" in self.leases.read_text():
                return True
            time.sleep(0.02)
        return False

    def release(self) -> None:
        subprocess.run(self._argv("-r"), capture_output=True, timeout=40, check=True)


@need_dhclient
def test_dhclient_lease_boot_file_and_init_reboot_after_restart(tmp_path: Path) -> None:
    with dhcp_lab() as lab:
        server = ServerProc(lab, full_settings(), db=tmp_path / "leases.db").start()
        client = Dhclient(lab, tmp_path)
        try:
            reason, env = client.bind()
            assert reason == "BOUND"
            ip = env["new_ip_address"]
            assert in_pool(ip)
            assert env["new_filename"] == "bootx64.efi"  # arch 7 → x64 UEFI loader
            assert env["new_bootfile_name"] == "bootx64.efi"
            assert env["new_next_server"] == SERVER_IP
            assert env["new_dhcp_server_identifier"] == SERVER_IP
            assert env["new_dhcp_renewal_time"] == "300"
            assert env["new_dhcp_rebinding_time"] == "525"
            assert env["new_domain_name"] == "lab.test"
            server.stop()
            before = len(server.events)
            # restart the server: dhclient comes back with its lease file (INIT-REBOOT)
            server.start()
            reason, env = client.bind()
            assert reason == "REBOOT" and env["new_ip_address"] == ip
            # configure the address as dhclient-script would, so the RELEASE can be unicast
            lab.in_cli("ip", "addr", "add", f"{ip}/24", "dev", lab.cli_if)
            client.release()
            server.wait_event("released")
            stats = server.stop()
        finally:
            server.close()
    after = _dedup((e["type"], e["outcome"], e["ip"]) for e in server.events[before:])
    assert after == [
        ("REQUEST", "ack", ip),  # no DISCOVER: the REQUEST was ACKed from the lease on disk
        ("RELEASE", "released", ip),
    ]
    assert stats["dropped"] == 0
