"""A private network for the lab: one namespace, one bridge, one tap per VM.

Theory of operation
-------------------
Everything the lab sends stays inside a network namespace it creates (``ip netns add``). In
it, a bridge with a fixed MAC, STP off and forward delay 0 (so a port forwards the moment QEMU
opens its tap) holds the server's address; each VM gets a persistent tap enslaved to the
bridge. There is no veth to the host and no route out, and IPv6 is switched off in the
namespace before any device exists, so no router advertisement or link-local chatter reaches
the firmware (iPXE otherwise waits ~13 s for an RA, see docs/lab.md).

`LabNetwork` is a plain description; `setup_commands` / `teardown_commands` turn it into the
``ip`` invocations (pure, tested without root) and `create` / `delete` run them. Processes are
started *inside* the namespace with ``ip netns exec NS cmd…``, which execs, so the PID we get
is the program's own. `netns_call` runs a function on a thread that has joined the namespace
(``setns(2)``), which is how the lab opens sockets to the server without a subprocess: a
socket stays in the namespace it was created in.

Names are ``pxf-<pid>-<n>``: unique per process, and a leftover from a dead process is
recognisable (`stale_namespaces`).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import TypeVar

from pxeforge.errors import StartupError

__all__ = [
    "LabNetwork",
    "create",
    "delete",
    "exists",
    "netns_call",
    "ns_exec",
    "setup_commands",
    "stale_namespaces",
    "teardown_commands",
    "unique_name",
]

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_NAME_RE = re.compile(r"^pxf-(\d+)-\d+$")


def unique_name(prefix: str = "pxf") -> str:
    """``pxf-<pid>-<n>``: unique within this process, and tells which process made it."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@dataclass(frozen=True, slots=True)
class LabNetwork:
    """A namespace with a bridge holding ``address`` and the taps ``taps`` on it."""

    name: str
    taps: tuple[str, ...] = ()
    bridge: str = "pxfbr0"
    bridge_mac: str = "52:54:00:fe:00:01"
    address: IPv4Interface = IPv4Interface("10.213.0.1/24")

    def __post_init__(self) -> None:
        # IFNAMSIZ is 16 with the NUL; netns names become file names under /run/netns.
        for dev in (self.bridge, *self.taps):
            if not dev or len(dev) > 15 or "/" in dev or " " in dev:
                raise ValueError(f"bad interface name {dev!r} (1-15 chars, no '/' or space)")
        if not self.name or "/" in self.name or len(self.name) > 64:
            raise ValueError(f"bad namespace name {self.name!r}")


def ns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside namespace ``ns`` (``ip netns exec`` execs it)."""
    return ["ip", "netns", "exec", ns, *argv]


def setup_commands(net: LabNetwork) -> list[list[str]]:
    """The ``ip``/``sysctl`` commands that build ``net``, in order."""
    ns = net.name
    cmds: list[list[str]] = [
        ["ip", "netns", "add", ns],
        ns_exec(
            ns,
            [
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        ),
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "add", net.bridge, "address", net.bridge_mac, "type", "bridge"]
        + ["stp_state", "0", "forward_delay", "0"],
        ["ip", "-n", ns, "addr", "add", str(net.address), "dev", net.bridge],
        ["ip", "-n", ns, "link", "set", net.bridge, "up"],
    ]
    for tap in net.taps:
        cmds += [
            ["ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"],
            ["ip", "-n", ns, "link", "set", tap, "master", net.bridge],
            ["ip", "-n", ns, "link", "set", tap, "up"],
        ]
    return cmds


def teardown_commands(net: LabNetwork) -> list[list[str]]:
    """Deleting the namespace deletes the bridge and the taps with it."""
    return [["ip", "netns", "del", net.name]]


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _run(argv: Sequence[str]) -> None:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise StartupError(
            f"lab: {argv[0]} is not installed (Debian: apt-get install iproute2 procps)"
        ) from None
    if proc.returncode != 0:
        raise StartupError(
            f"lab: `{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )


def create(net: LabNetwork) -> None:
    """Build the namespace; on any failure delete what was built and raise `StartupError`."""
    if os.geteuid() != 0:
        raise StartupError("lab: creating network namespaces needs root")
    if exists(net.name):
        raise StartupError(f"lab: network namespace {net.name} already exists")
    try:
        for argv in setup_commands(net):
            _run(argv)
    except BaseException:
        delete(net)
        raise


def delete(net: LabNetwork) -> None:
    """Remove the namespace if it exists (idempotent; never raises for a missing one).

    Processes still inside keep the kernel object alive: stop them first.
    """
    if exists(net.name):
        for argv in teardown_commands(net):
            subprocess.run(argv, capture_output=True, timeout=30, check=False)


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (empty cmdline, see docs/lab.md) counts as dead."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


def stale_namespaces() -> list[str]:
    """Lab namespaces (``pxf-<pid>-<n>``) whose creating process is gone."""
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []
    stale = []
    for name in names:
        match = _NAME_RE.match(name)
        if match and not _alive(int(match.group(1))):
            stale.append(name)
    return stale


def netns_call(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread that has joined namespace ``ns``; return its result.

    Network namespaces are per thread (setns(2)), so the caller's thread stays where it was;
    sockets ``fn`` creates belong to ``ns`` for their whole life.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    box: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            error.append(StartupError(f"lab: no network namespace {ns}: {exc.strerror}"))
            return
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                error.append(StartupError(f"lab: setns({ns}) failed: {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return box[0]
