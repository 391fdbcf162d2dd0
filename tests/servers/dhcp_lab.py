"""Network namespaces for the DHCP tests: a server namespace and a client namespace on a veth.

`dhcp_lab()` creates ``pxf-<pid>-<n>-srv`` and ``pxf-<pid>-<n>-cli`` joined by a veth pair
(``srv0`` holds 10.77.0.1/24, ``cli0`` has no address) and always deletes both. `ServerProc`
runs ``dhcp_runner.py`` inside the server namespace. Every subprocess runs under `timeout`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("dhcp_runner.py")
SERVER_IP = "10.77.0.1"
_counter = itertools.count()


def have_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def sh(*argv: str, timeout: float = 20) -> str:
    """Run a command, fail loudly, return stdout."""
    done = subprocess.run(
        ["timeout", str(timeout), *argv], capture_output=True, text=True, timeout=timeout + 5
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


@dataclass
class Lab:
    srv: str
    cli: str
    srv_if: str = "srv0"
    cli_if: str = "cli0"
    server_ip: str = SERVER_IP

    def in_srv(self, *argv: str, timeout: float = 20) -> str:
        return sh("ip", "netns", "exec", self.srv, *argv, timeout=timeout)

    def in_cli(self, *argv: str, timeout: float = 20) -> str:
        return sh("ip", "netns", "exec", self.cli, *argv, timeout=timeout)

    def set_client_mac(self, mac: str) -> None:
        self.in_cli("ip", "link", "set", self.cli_if, "address", mac)

    def client_mac(self) -> str:
        out = self.in_cli("cat", f"/sys/class/net/{self.cli_if}/address")
        return out.strip()


@contextmanager
def dhcp_lab() -> Iterator[Lab]:
    n = next(_counter)
    lab = Lab(srv=f"pxf-{os.getpid()}-{n}-srv", cli=f"pxf-{os.getpid()}-{n}-cli")
    created: list[str] = []
    try:
        for ns in (lab.srv, lab.cli):
            sh("ip", "netns", "add", ns)
            created.append(ns)
        sh(
            "ip", "link", "add", lab.srv_if, "netns", lab.srv, "type", "veth",
            "peer", "name", lab.cli_if, "netns", lab.cli,
        )  # fmt: skip
        for ns, ifname in ((lab.srv, lab.srv_if), (lab.cli, lab.cli_if)):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        sh("ip", "-n", lab.srv, "addr", "add", f"{SERVER_IP}/24", "dev", lab.srv_if)
        yield lab
    finally:
        for ns in created:
            subprocess.run(["timeout", "20", "ip", "netns", "del", ns], capture_output=True)


@dataclass
class ServerProc:
    """dhcp_runner.py inside the server namespace; `stop` returns its final stats."""

    lab: Lab
    settings: dict[str, Any]
    db: Path | None = None
    commit: str = "thread"
    ignore: Sequence[str] = ()
    events: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    proxy_port: int | None = None
    log_level: str = "INFO"
    report_events: bool = True
    stderr: str = ""
    _errfile: Any = None
    _thread: threading.Thread | None = None
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start(self, timeout: float = 20.0, *, lifetime: float = 300.0) -> ServerProc:
        argv = [
            "ip", "netns", "exec", self.lab.srv, "timeout", str(lifetime),
            sys.executable, str(RUNNER), json.dumps(self.settings),
            "--commit", self.commit, "--log", self.log_level,
        ]  # fmt: skip
        if self.report_events:
            argv.append("--events")
        if self.db is not None:
            argv += ["--db", str(self.db)]
        for mac in self.ignore:
            argv += ["--ignore", mac]
        # the log goes to a file: a pipe nobody reads would fill up and block the server
        self._errfile = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._errfile,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: `_stop_hard` kills all of it
        )
        self._lines = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._thread.start()
        line = self._readline(timeout)
        if line is None or not line.startswith("READY "):
            err = self._stop_hard()
            raise AssertionError(f"DHCP runner did not start: {line!r} {err}")
        _, port, proxy = line.split()
        self.port = int(port)
        self.proxy_port = None if proxy == "None" else int(proxy)
        return self

    def _pump(self, stdout: Any) -> None:
        """Reader thread: every stdout line into the queue (a full pipe would block the
        server), then None at EOF."""
        for line in stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _readline(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout) if timeout > 0 else self._lines.get_nowait()
        except queue.Empty:
            return None

    def _take(self, line: str | None) -> dict[str, Any] | None:
        if line is not None and line.startswith("EVENT "):
            self.events.append(json.loads(line[6:]))
        elif line is not None and line.startswith("STATS "):
            stats: dict[str, Any] = json.loads(line[6:])
            return stats
        return None

    def poll_events(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Read the EVENT lines printed so far (waiting up to ``timeout`` for the first)."""
        line = self._readline(timeout)
        while line is not None:
            self._take(line)
            line = self._readline(0.05)
        return self.events

    def wait_event(self, outcome: str, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the server reports a decision with this outcome; return it."""
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while time.monotonic() < deadline:
            self.poll_events(0.1)
            for event in self.events[seen:]:
                if event["outcome"] == outcome:
                    return event
        raise AssertionError(f"no {outcome!r} event within {timeout}s: {self.events[seen:]}")

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._stop_hard()
            raise AssertionError("DHCP runner did not stop on SIGTERM") from None
        self._join()
        err = self._read_log()
        stats: dict[str, Any] = {}
        while (line := self._readline(0)) is not None:
            stats = self._take(line) or stats
        self.proc = None
        if not stats:
            raise AssertionError(f"DHCP runner printed no stats; stderr: {err}")
        return stats

    def _stop_hard(self) -> str:
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        self._join()
        self.proc = None
        return self._read_log()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=20)
            self._thread = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def _read_log(self) -> str:
        if self._errfile is None:
            return ""
        self._errfile.seek(0)
        text: str = self._errfile.read()
        self._errfile.close()
        self._errfile = None
        self.stderr = text
        return text

    def close(self) -> None:
        """Stop if still running (for finally blocks)."""
        if self.proc is not None:
            self._stop_hard()


@contextmanager
def dhcp_server(lab: Lab, settings: dict[str, Any], **kw: Any) -> Iterator[ServerProc]:
    server = ServerProc(lab, settings, **kw).start()
    try:
        yield server
    finally:
        server.close()


def full_settings(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "address": SERVER_IP,
        "interface": "srv0",
        "pool": "10.77.0.100-10.77.0.119",
        "subnet": "10.77.0.0/24",
        "router": SERVER_IP,
        "dns": [SERVER_IP],
        "domain": "lab.test",
        "lease_time": 600,
        "dhcp_mode": "full",
    }
    s.update(over)
    return s
