"""The lab network: the commands (pure), and one real namespace when we are root."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from ipaddress import IPv4Interface

import pytest

from pxeforge.errors import StartupError
from pxeforge.lab import netns
from pxeforge.lab.netns import LabNetwork, setup_commands, teardown_commands, unique_name

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def test_unique_names_carry_the_pid() -> None:
    a, b = unique_name(), unique_name()
    assert a != b
    assert a.startswith(f"pxf-{os.getpid()}-") and b.startswith(f"pxf-{os.getpid()}-")


def test_setup_commands() -> None:
    net = LabNetwork("pxf-1-0", taps=("tap0", "tap1"), address=IPv4Interface("10.9.0.1/24"))
    cmds = [" ".join(c) for c in setup_commands(net)]
    assert cmds[0] == "ip netns add pxf-1-0"
    # IPv6 off before any device exists: no RA or link-local chatter for iPXE to wait on
    assert "net.ipv6.conf.default.disable_ipv6=1" in cmds[1]
    assert cmds[1].startswith("ip netns exec pxf-1-0 sysctl")
    assert (
        "ip -n pxf-1-0 link add pxfbr0 address 52:54:00:fe:00:01 type bridge stp_state 0 "
        "forward_delay 0" in cmds
    )
    assert "ip -n pxf-1-0 addr add 10.9.0.1/24 dev pxfbr0" in cmds
    for tap in ("tap0", "tap1"):
        assert f"ip -n pxf-1-0 tuntap add dev {tap} mode tap" in cmds
        assert f"ip -n pxf-1-0 link set {tap} master pxfbr0" in cmds
        assert cmds.index(f"ip -n pxf-1-0 link set {tap} up") > cmds.index(
            f"ip -n pxf-1-0 link set {tap} master pxfbr0"
        )
    # no veth, no route: nothing leaves the namespace
    assert not any("veth" in c or "route" in c for c in cmds)
    assert teardown_commands(net) == [["ip", "netns", "del", "pxf-1-0"]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"taps": ("a-very-long-tap-name",)},
        {"bridge": ""},
        {"taps": ("tap/0",)},
        {"name": "a/b"},
    ],
)
def test_bad_names_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"name": "pxf-1-0", **kwargs}
    with pytest.raises(ValueError):
        LabNetwork(**args)  # type: ignore[arg-type]


def _bind(address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))


@needs_root
@pytest.mark.root
def test_real_namespace_round_trip() -> None:
    net = LabNetwork(unique_name(), taps=("tap0", "tap1"), address=IPv4Interface("10.213.7.1/24"))
    netns.create(net)
    try:
        assert netns.exists(net.name)
        with pytest.raises(StartupError, match="already exists"):
            netns.create(net)
        # the address exists in the namespace only; netns_call's thread is in it
        netns.netns_call(net.name, lambda: _bind("10.213.7.1"))
        with pytest.raises(OSError) as exc:
            _bind("10.213.7.1")
        assert exc.value.errno == errno.EADDRNOTAVAIL
        link = subprocess.run(
            ["ip", "-n", net.name, "-d", "link", "show", net.bridge],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "stp_state 0" in link and "forward_delay 0" in link
        assert "52:54:00:fe:00:01" in link
        for tap in net.taps:
            shown = subprocess.run(
                ["ip", "-n", net.name, "link", "show", tap],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert f"master {net.bridge}" in shown
        v6 = subprocess.run(
            netns.ns_exec(net.name, ["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"]),
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert v6.strip() == "1"
        # errors raised inside the namespace thread reach the caller
        with pytest.raises(ZeroDivisionError):
            netns.netns_call(net.name, lambda: 1 // 0)
    finally:
        netns.delete(net)
    assert not netns.exists(net.name)
    netns.delete(net)  # idempotent
    with pytest.raises(StartupError, match="no network namespace"):
        netns.netns_call(net.name, lambda: None)


@needs_root
@pytest.mark.root
def test_stale_namespaces_are_those_of_dead_processes() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    dead = LabNetwork(f"pxf-{child.pid}-0")
    live = LabNetwork(unique_name())
    if netns.exists(dead.name):  # pragma: no cover - a PID reused since
        pytest.skip("PID reused")
    netns.create(dead)
    netns.create(live)
    try:
        stale = netns.stale_namespaces()
        assert dead.name in stale
        assert live.name not in stale
    finally:
        netns.delete(dead)
        netns.delete(live)
