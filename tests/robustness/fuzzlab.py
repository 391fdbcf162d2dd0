"""Helpers for the robustness tests: captured datagrams, /proc probes, the server runner.

`captured_udp` reads every UDP datagram of tests/data/*.pcap (pcapng or pcap, with dpkt).
`rss_kib`, `fd_count` and `udp_ports` look at a running process through /proc. `ServeProc`
runs serve_runner.py (TFTP and HTTP on 127.0.0.1) with its log in a file and its stats on
demand (SIGUSR1).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any

import dpkt

DATA = Path(__file__).resolve().parent.parent / "data"
RUNNER = Path(__file__).with_name("serve_runner.py")


@dataclass(frozen=True)
class Captured:
    file: str
    index: int  # 1-based position among the UDP datagrams of that file
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}"


def captured_udp() -> list[Captured]:
    """Every UDP datagram of every capture in tests/data, in capture order."""
    out: list[Captured] = []
    for path in sorted(DATA.glob("*.pcap")):
        with path.open("rb") as fh:
            magic = fh.read(4)
            fh.seek(0)
            reader = dpkt.pcapng.Reader(fh) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(fh)
            index = 0
            for _ts, frame in reader:
                ip = dpkt.ethernet.Ethernet(frame).data
                if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                    continue
                udp = ip.data
                index += 1
                src = (str(IPv4Address(ip.src)), udp.sport)
                dst = (str(IPv4Address(ip.dst)), udp.dport)
                out.append(Captured(path.name, index, src, dst, bytes(udp.data)))
    return out


def is_dhcp(c: Captured) -> bool:
    return {c.src[1], c.dst[1]} <= {67, 68}


def dhcp_requests() -> list[Captured]:
    """What the firmware sent to the DHCP server (port 67)."""
    return [c for c in captured_udp() if is_dhcp(c) and c.dst[1] == 67]


def tftp_datagrams() -> list[Captured]:
    """TFTP: requests to port 69 and what the transfers exchanged (every non-DHCP datagram)."""
    return [c for c in captured_udp() if not is_dhcp(c)]


# ----------------------------------------------------------------------------- /proc


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds(pid: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return sorted(out)


def udp_ports(pid: int) -> set[int]:
    """Local ports of the UDP sockets process ``pid`` holds open."""
    inodes = set()
    for target in fds(pid):
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes:
            ports.add(int(parts[1].split(":")[1], 16))
    return ports


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (ip netns exec → timeout → python)."""
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out += [child, *descendants(child)]
    return out


def find_python(pid: int, script: str) -> int:
    """The process under ``pid`` (or ``pid`` itself) running ``script``."""
    for candidate in (pid, *descendants(pid)):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{candidate}/cmdline").read_text().split("\0")
            if "python" in Path(argv[0]).name and any(script in arg for arg in argv):
                return candidate
    raise AssertionError(f"no process running {script} under {pid}")


# ---------------------------------------------------------------------- the log

_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) ", re.MULTILINE)


@dataclass(frozen=True)
class LogRecord:
    level: str
    logger: str
    text: str  # the message and any traceback after it

    @property
    def exception(self) -> str | None:
        """The last line of the traceback ("module.Class: message"), if there is one."""
        if "Traceback (most recent call last)" not in self.text:
            return None
        lines = [line for line in self.text.splitlines() if line and not line[0].isspace()]
        return lines[-1]


def log_records(log: str) -> list[LogRecord]:
    """A serve_runner log ("LEVEL logger message", tracebacks below) cut into records."""
    starts = list(_RECORD.finditer(log))
    out = []
    for match, after in zip(starts, [*starts[1:], None], strict=True):
        end = after.start() if after is not None else len(log)
        out.append(LogRecord(match[1], match[2], log[match.end() : end]))
    return out


# ---------------------------------------------------------------------- the server


@dataclass
class ServeProc:
    """serve_runner.py: TFTP and HTTP over ``root`` on 127.0.0.1, in its own process."""

    root: Path
    kernel: Path
    proc: subprocess.Popen[str] | None = None
    tftp_port: int = 0
    http_port: int = 0
    log: str = ""
    _errfile: IO[str] | None = None
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> ServeProc:
        self._errfile = tempfile.TemporaryFile(mode="w+")
        argv = [sys.executable, str(RUNNER), str(self.root), str(self.kernel)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,  # the runner stops when this pipe closes
            stdout=subprocess.PIPE,
            stderr=self._errfile,
            text=True,
            bufsize=1,
        )
        self._thread = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._thread.start()
        line = self._next(timeout)
        if line is None or not line.startswith("READY "):
            self.close()
            raise AssertionError(f"serve_runner did not start: {line!r}\n{self.log}")
        _, tftp, http = line.split()
        self.tftp_port, self.http_port = int(tftp), int(http)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _pump(self, stdout: Any) -> None:
        for line in stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stats(self, timeout: float = 10.0) -> dict[str, int]:
        """Ask for the stats now (SIGUSR1) and return them."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while (line := self._next(max(0.0, deadline - time.monotonic()))) is not None:
            if line.startswith("STATS "):
                stats: dict[str, int] = json.loads(line[6:])
                return stats
        raise AssertionError(f"serve_runner gave no stats within {timeout}s")

    def wait_idle(self, timeout: float) -> dict[str, int]:
        """Poll the stats until no transfer is active; return the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["active"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError("serve_runner did not stop on SIGTERM") from None
        stats: dict[str, int] = {}
        while (line := self._next(5.0)) is not None:
            if line.startswith("STATS "):
                stats = json.loads(line[6:])
        self.close()
        return stats

    def close(self) -> None:
        """Kill if still running, join the reader, keep the log (for finally blocks)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=20)
            if self._thread is not None:
                self._thread.join(timeout=20)
                self._thread = None
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None
        if self._errfile is not None:
            self._errfile.seek(0)
            self.log = self._errfile.read()
            self._errfile.close()
            self._errfile = None
