"""One lab run: network, capture, ``pxeforge serve``, VMs, a verdict, and a clean teardown.

Theory of operation
-------------------
`Lab` owns everything a run starts and tears it all down in `close` — VMs (QMP ``quit``, then
signals), the server, tcpdump (each by PID, each waited for), then the namespace — also when a
step fails or the user presses Ctrl-C. Nothing is left but the work directory (logs, serial
consoles, the pcap), unless ``keep`` asks to leave the lab up for exploration.

`Lab.start` builds the guest (`pxeforge.lab.guest`), fills the boot root with loaders,
creates the namespace (`pxeforge.lab.netns`), starts the capture on the bridge and then
``ip netns exec NS pxeforge serve --interface <bridge> --dhcp full …`` — the real product, as a
user would run it — and waits until its sockets are bound (read from ``/proc/<pid>/net``,
which shows the server's namespace).

`Lab.boot` starts the VMs and watches three sources until every VM has a verdict: the growing
pcap (DHCP, TFTP, HTTP events, see `pxeforge.lab.capture`), each serial console (the guest
prints markers), and the server's ``GET /_pxeforge/callbacks`` list, fetched through a socket
opened inside the namespace. A VM passes only when a callback arrived with its MAC and with
the run's unique token in the kernel command line — proof that the kernel pxeforge served ran
with the parameters pxeforge set. Timings (DHCP ACK, kernel request, callback) are read from
the capture, relative to the moment its QEMU started.

Lifecycle tests drive the VMs through pxeforge's own API instead (`Lab.start_vms`, `Lab.api`):
the VMs start powered off (``paused``) with a disk (``disk_mb``, or a copy of ``disk_image``),
the ``lab`` power driver turns them on through their QMP sockets (`Lab.driver_info`), deploy
images come from `Lab.serve_directory` (an HTTP server in the namespace), the server takes
extra `Settings` (``server_settings``: short wait timeouts), and `pxeforge.lab.ra` answers
iPXE's router solicitations (``router_advertisements``) so each iPXE boot is ~15 s shorter.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from pxeforge.assets.fetch import MANIFEST, fetch_assets
from pxeforge.boot.booter import KERNEL_REF
from pxeforge.config import BootMethod
from pxeforge.errors import StartupError
from pxeforge.lab import guest as guest_mod
from pxeforge.lab import netns, procs
from pxeforge.lab.capture import (
    CALLBACK_PATH,
    Capture,
    NetEvent,
    PcapReader,
    frame_events,
    milestones,
    read_events,
)
from pxeforge.lab.qemu import Vm, VmFiles, VmFirmware, VmSpec, probe_kvm, vm_mac
from pxeforge.lab.ra import RouterAdvertiser

__all__ = [
    "CALLBACKS_PATH",
    "Lab",
    "LabConfig",
    "LabResult",
    "Reporter",
    "VmResult",
    "boot_path_name",
    "clean_console",
    "fetch_callbacks",
    "prepare_root",
    "run_lab",
]

CALLBACKS_PATH = "/_pxeforge/callbacks"
Reporter = Callable[[str], None]

_POLL_INTERVAL = 0.2  # seconds between looks at the pcap and the serial logs
_CALLBACK_POLL = 1.0  # seconds between GET /_pxeforge/callbacks
_EXIT_GRACE = 2.0  # after QEMU exits, how long a late callback may still count


def boot_path_name(firmware: VmFirmware, method: BootMethod) -> str:
    """A human name of the chain a VM walks for this firmware and boot method."""
    return {
        (VmFirmware.BIOS, BootMethod.PXELINUX): (
            "BIOS iPXE ROM → pxelinux.0 (TFTP) → pxelinux.cfg → kernel+initrd over TFTP"
        ),
        (VmFirmware.BIOS, BootMethod.IPXE): "BIOS iPXE ROM → iPXE script over HTTP",
        (VmFirmware.UEFI, BootMethod.PXELINUX): (
            "UEFI OVMF → shim (bootx64.efi) → GRUB (grubx64.efi) → kernel+initrd over TFTP"
        ),
        (VmFirmware.UEFI, BootMethod.IPXE): "UEFI OVMF → snponly.efi → iPXE script over HTTP",
    }[(firmware, method)]


@dataclass(frozen=True, slots=True)
class LabConfig:
    """What to boot and how; every lab default lives here."""

    firmware: VmFirmware = VmFirmware.BIOS
    boot_method: BootMethod = BootMethod.PXELINUX
    vms: int = 1
    timeout: float = 240.0  # seconds, from the first VM start to the last verdict
    workdir: Path | None = None  # default: a new /tmp/pxeforge-lab-* directory
    cache_dir: Path | None = None  # default: guest.default_cache_dir()
    keep: bool = False  # leave the lab running for exploration
    accel: str = "auto"  # "auto" (probe KVM once), "kvm" or "tcg"
    cmdline: str = ""  # extra kernel parameters
    token: str | None = None  # default: random; must appear in the guest's /proc/cmdline
    address: IPv4Interface = IPv4Interface("10.213.0.1/24")
    http_port: int = 8080
    memory_mb: int = 512
    # boot these instead of the test guest (e.g. `pxeforge ramdisk build`'s output); both or
    # neither. The image must POST to pxelab.callback= like the guest does.
    kernel: Path | None = None
    initrd: Path | None = None
    # inventory boot: serve without --kernel; kernel/initrd become --deploy-kernel/
    # --deploy-ramdisk, the boot plane follows the nodes of the REST API (noauth, api_port),
    # and kernel_cmdline() goes to --agent-cmdline
    inventory: bool = False
    api_port: int = 6385
    cpus: int = 1
    disk_mb: int = 0  # > 0: each VM gets a sparse raw disk of this size (virtio-blk, vda)
    # each VM's disk starts as a copy of this raw image (grown to disk_mb when that is larger)
    disk_image: Path | None = None
    # VMs start powered off (QEMU -S, run state prelaunch) and wait for a power driver (the
    # `lab` driver, QMP: `Lab.driver_info`) to power them on
    paused: bool = False
    # more `Settings` for the server (written to a TOML file passed as --config), e.g.
    # {"deploy_callback_timeout": 60, "check_provision_state_interval": 2}
    server_settings: dict[str, str | int | float | bool] = field(default_factory=dict)
    # answer iPXE's IPv6 router solicitations (`pxeforge.lab.ra`): ~15 s less per iPXE boot
    router_advertisements: bool = False

    def __post_init__(self) -> None:
        if (self.kernel is None) != (self.initrd is None):
            raise ValueError("give both kernel and initrd, or neither")
        if self.inventory and self.kernel is None:
            raise ValueError("inventory boot needs kernel and initrd (the agent ramdisk)")
        if not 1 <= self.cpus <= 8 or self.disk_mb < 0:
            raise ValueError(f"cpus must be 1-8 and disk_mb >= 0, not {self.cpus}/{self.disk_mb}")
        if not 1 <= self.vms <= 32:
            raise ValueError(f"--vms must be 1-32, not {self.vms}")
        if self.timeout <= 0:
            raise ValueError("--timeout must be positive")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise ValueError(f"accel must be auto, kvm or tcg, not {self.accel!r}")
        for key, value in self.server_settings.items():
            if not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"server setting {key}: {value!r} is not a TOML scalar")
        if self.address.network.num_addresses < 256:
            raise ValueError(f"the lab wants at least a /24, not {self.address.network}")

    @property
    def pool(self) -> tuple[IPv4Address, IPv4Address]:
        base = self.address.network.network_address
        return base + 100, base + 199


@dataclass(frozen=True, slots=True)
class VmResult:
    name: str
    mac: str
    ok: bool
    reason: str  # why it failed, or "" when it passed
    dhcp_ack: float | None  # seconds from QEMU start, from the capture
    kernel: float | None
    callback: float | None
    callback_body: dict[str, Any] | None
    serial_log: Path


@dataclass(frozen=True, slots=True)
class LabResult:
    firmware: VmFirmware
    boot_method: BootMethod
    path: str  # boot_path_name()
    namespace: str
    token: str
    workdir: Path
    pcap: Path  # the capture of the whole run (kept)
    server_log: Path
    vms: tuple[VmResult, ...]
    accel: str
    events: tuple[NetEvent, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return bool(self.vms) and all(v.ok for v in self.vms)


_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[@-~])")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_console(text: str) -> list[str]:
    """Serial output → readable lines: escape sequences and control characters removed, a
    carriage return keeps what was drawn last, blank lines dropped."""
    out = []
    for raw in text.split("\n"):
        line = _ANSI.sub("", raw)
        parts = [p for p in line.split("\r") if p.strip()]
        line = _CTRL.sub("", parts[-1] if parts else "").rstrip()
        if line.strip():
            out.append(line)
    return out


def fetch_callbacks(ns: str, host: str, port: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    """``GET /_pxeforge/callbacks`` from the server inside namespace ``ns``."""

    def get() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", CALLBACKS_PATH)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    status, body = netns.netns_call(ns, get)
    if status != 200:
        raise StartupError(f"GET {CALLBACKS_PATH} answered HTTP {status}")
    data = json.loads(body)
    if not isinstance(data, list):
        raise StartupError(f"GET {CALLBACKS_PATH} did not return a JSON list")
    return [item for item in data if isinstance(item, dict)]


def prepare_root(cache_dir: Path, log: Reporter = lambda _m: None) -> Path:
    """The lab's boot root, filled as by ``pxeforge assets fetch --root`` (cached .debs;
    a warm run only re-checks them)."""
    root = cache_dir / "root"
    if not (root / MANIFEST).is_file():
        log(f"fetching boot loaders into {root} (once)")
    fetch_assets(root, cache_dir)
    return root


def _listening_ports(pid: int) -> tuple[set[int], set[int]]:
    """(TCP ports in LISTEN, bound UDP ports) in the network namespace of ``pid``."""
    result: list[set[int]] = []
    for table, want_state in (("tcp", "0A"), ("udp", None)):
        ports: set[int] = set()
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            lines = []
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and (want_state is None or cols[3] == want_state):
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        result.append(ports)
    return result[0], result[1]


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Hold off SIGINT while tearing down (a second Ctrl-C must not leave a half-cleaned lab)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Watch:
    """What the watch loop knows about one VM."""

    vm: Vm
    serial_pos: int = 0
    serial_tail: str = ""
    verdict: tuple[bool, str] | None = None
    callback: dict[str, Any] | None = None
    exited_at: float | None = None
    marker_failed: str = ""


class Lab:
    """A lab run; use as a context manager (``with Lab(cfg) as lab: lab.boot()``)."""

    def __init__(self, config: LabConfig, report: Reporter = lambda _m: None) -> None:
        self.config = config
        self.report = report
        self.name = netns.unique_name()
        self.token = config.token or secrets.token_hex(6)
        # created by start(), not here: a constructor touches no disk
        self.workdir = config.workdir or Path(tempfile.gettempdir(), f"pxeforge-lab-{self.name}")
        self.cache_dir = config.cache_dir or guest_mod.default_cache_dir()
        self.net = netns.LabNetwork(
            self.name, taps=tuple(f"tap{i}" for i in range(config.vms)), address=config.address
        )
        self.pcap = self.workdir / "lab.pcap"
        self.server_log = self.workdir / "server.log"
        self.capture = Capture(self.name, self.net.bridge, self.pcap, self.workdir / "tcpdump.log")
        self.server: subprocess.Popen[bytes] | None = None
        self.server_config = self.workdir / "serve.toml"
        self.helpers: list[subprocess.Popen[bytes]] = []  # serve_directory's HTTP servers
        self.ra: RouterAdvertiser | None = None
        self.vms: list[Vm] = []
        self.guest: guest_mod.Guest | None = None
        self.root: Path | None = None
        self.accel = config.accel
        self._created = False

    # ----------------------------------------------------------------------------- set-up

    @property
    def server_ip(self) -> str:
        return str(self.config.address.ip)

    @property
    def callback_url(self) -> str:
        return f"http://{self.server_ip}:{self.config.http_port}{CALLBACK_PATH}"

    def kernel_cmdline(self) -> str:
        parts = [
            "console=ttyS0,115200",
            "quiet",
            "panic=-1",
            f"pxelab.token={self.token}",
            f"pxelab.callback={self.callback_url}",
        ]
        if self.config.cmdline:
            parts.append(self.config.cmdline)
        return " ".join(parts)

    def server_argv(self) -> list[str]:
        """``pxeforge serve`` as a user would run it, inside the namespace."""
        assert self.guest is not None and self.root is not None
        first, last = self.config.pool
        return netns.ns_exec(
            self.name,
            [sys.executable, "-m", "pxeforge.cli.main", "-v", "serve"]
            + ["--interface", self.net.bridge, "--address", self.server_ip]
            + ["--dhcp", "full", "--pool", f"{first}-{last}", "--all-clients"]
            + ["--http-port", str(self.config.http_port)]
            + ["--root", str(self.root), "--data-dir", str(self.workdir / "data")]
            + self._boot_args()
            + ["--boot-method", self.config.boot_method.value]
            + (["--config", str(self.server_config)] if self.config.server_settings else []),
        )

    def _boot_args(self) -> list[str]:
        assert self.guest is not None
        kernel, initrd = str(self.guest.kernel), str(self.guest.initrd)
        if not self.config.inventory:
            return ["--kernel", kernel, "--initrd", initrd, "--cmdline", self.kernel_cmdline()]
        return (
            ["--deploy-kernel", kernel, "--deploy-ramdisk", initrd]
            + ["--agent-cmdline", self.kernel_cmdline()]
            + ["--api-port", str(self.config.api_port), "--api-auth", "noauth"]
        )

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One REST API call to the server inside the namespace (inventory boot, noauth):
        the decoded JSON answer (None when empty); HTTP errors raise `StartupError`."""

        def call() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection(self.server_ip, self.config.api_port, timeout=timeout)
            headers = {"X-OpenStack-Ironic-API-Version": "latest"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        status, raw = netns.netns_call(self.name, call)
        if status >= 400:
            raise StartupError(f"{method} {path} answered HTTP {status}: {raw[:500]!r}")
        return json.loads(raw) if raw.strip() else None

    def _say(self, source: str, text: str, t: float | None = None, who: str = "lab") -> None:
        stamp = f"{t:6.1f}s" if t is not None else " " * 7
        self.report(f"{stamp} {who:<4} {source:<6} {text}")

    def start(self) -> None:
        """Guest, boot root, namespace, capture, server — in that order."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config.kernel is not None and self.config.initrd is not None:
            self.guest = guest_mod.Guest(self.config.kernel, self.config.initrd, "custom", "custom")
        else:
            self.guest = guest_mod.build_guest(self.cache_dir, log=lambda m: self._say("setup", m))
        self.root = prepare_root(self.cache_dir, log=lambda m: self._say("setup", m))
        if self.accel == "auto":
            self.accel = "kvm" if probe_kvm() else "tcg"
        stale = netns.stale_namespaces()
        if stale:
            self._say("setup", f"left over by dead lab runs (ip netns del NAME): {' '.join(stale)}")
        netns.create(self.net)
        self._created = True
        self._say("setup", f"namespace {self.name}: {self.net.bridge} {self.config.address}")
        if self.config.router_advertisements:
            self.ra = RouterAdvertiser(self.name, self.net.bridge, self.net.bridge_mac)
            self.ra.start()
        self.capture.start()
        self._start_server()

    def _start_server(self, timeout: float = 20.0) -> None:
        if self.config.server_settings:
            self.server_config.write_text(
                "".join(_toml_line(k, v) for k, v in self.config.server_settings.items())
            )
        self.server = procs.start(self.server_argv(), self.server_log, what="pxeforge serve")
        want_udp = {67, 69}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise StartupError(
                    f"lab: pxeforge serve exited ({self.server.returncode}):\n"
                    + procs.tail(self.server_log, 15)
                )
            tcp, udp = _listening_ports(self.server.pid)
            want_tcp = {self.config.http_port}
            if self.config.inventory:
                want_tcp.add(self.config.api_port)
            if want_tcp <= tcp and want_udp <= udp:
                self._say("setup", f"pxeforge serve (pid {self.server.pid}) ready")
                return
            time.sleep(0.1)
        raise StartupError(
            f"lab: pxeforge serve did not bind HTTP {self.config.http_port}, DHCP 67 and TFTP "
            f"69 within {timeout:.0f} s:\n" + procs.tail(self.server_log, 15)
        )

    def serve_directory(self, directory: Path, port: int = 8081, timeout: float = 20.0) -> str:
        """Serve ``directory`` over HTTP on the bridge address (Python's ``http.server``,
        inside the namespace, stopped by `close`): test images for deploys. Returns the base
        URL (no trailing slash)."""
        if not self._created:
            raise StartupError("lab: start() first")
        argv = netns.ns_exec(
            self.name,
            [sys.executable, "-m", "http.server", str(port)]
            + ["--bind", self.server_ip, "--directory", str(directory)],
        )
        log = self.workdir / f"http-{port}.log"
        proc = procs.start(argv, log, what="python3 -m http.server")
        self.helpers.append(proc)
        deadline = time.monotonic() + timeout
        while port not in _listening_ports(proc.pid)[0]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StartupError(
                    f"lab: the HTTP server for {directory} did not listen on {port}:\n"
                    + procs.tail(log, 15)
                )
            time.sleep(0.1)
        self._say("setup", f"serving {directory} at http://{self.server_ip}:{port}/")
        return f"http://{self.server_ip}:{port}"

    @staticmethod
    def driver_info(vm: Vm) -> dict[str, str]:
        """A node's ``driver_info`` for the ``lab`` power driver (QMP) of ``vm``."""
        return {"lab_qmp_socket": str(vm.files.qmp_socket.resolve())}

    # ----------------------------------------------------------------------------- boot

    def _make_vms(self) -> None:
        fw = self.config.firmware
        for i in range(self.config.vms):
            name = f"vm{i}"
            spec = VmSpec(
                name=name,
                mac=vm_mac(i, fw),
                tap=self.net.taps[i],
                firmware=fw,
                memory_mb=self.config.memory_mb,
                accel=self.accel,
                cpus=self.config.cpus,
                disk=self._make_disk(name),
                paused=self.config.paused,
            )
            self.vms.append(Vm(spec, VmFiles.in_dir(self.workdir, name), self.name))

    def _make_disk(self, name: str) -> Path | None:
        if not self.config.disk_mb and self.config.disk_image is None:
            return None
        disk = self.workdir / f"{name}.disk.raw"
        size = self.config.disk_mb * 1024 * 1024
        if self.config.disk_image is not None:
            shutil.copyfile(self.config.disk_image, disk)
            size = max(size, disk.stat().st_size)
        with open(disk, "r+b" if disk.exists() else "wb") as f:  # sparse: costs no space
            f.truncate(size)
        return disk

    def start_vms(self) -> list[Vm]:
        """Start the VMs and return them once each answers on its QMP socket (a power driver
        may drive them at once), without watching (the caller judges the run)."""
        if self.server is None:
            raise StartupError("lab: start() first")
        self._make_vms()
        for vm in self.vms:
            vm.start()
            self._say("qemu", f"started (pid {vm.pid}, mac {vm.spec.mac})", 0.0, vm.spec.name)
        for vm in self.vms:
            vm.wait_qmp()
        return list(self.vms)

    def boot(self) -> LabResult:
        """Start the VMs and watch them until each has a verdict (or the timeout)."""
        if self.server is None:
            raise StartupError("lab: start() first")
        self._make_vms()
        path = boot_path_name(self.config.firmware, self.config.boot_method)
        self._say("lab", f"{path}; {len(self.vms)} VM(s), {self.accel}, token {self.token}")
        watches = {vm.spec.mac: _Watch(vm) for vm in self.vms}
        for vm in self.vms:
            vm.start()
            self._say("qemu", f"started (pid {vm.pid}, mac {vm.spec.mac})", 0.0, vm.spec.name)
        self._watch(watches)
        for w in watches.values():  # a guest that called back powers itself off
            if w.verdict is not None and w.verdict[0] and w.vm.proc is not None:
                try:
                    w.vm.proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:  # still running: stopped below
                    pass
        if not self.config.keep:
            for vm in self.vms:
                vm.stop()
        for w in watches.values():  # the console's last words (power down, panic)
            if w.exited_at is None and w.vm.exited() is not None:
                w.exited_at = time.monotonic()
            self._read_serial(w)
        return self._result(watches, path)

    def _watch(self, watches: dict[str, _Watch]) -> None:
        server = self.server
        assert server is not None
        reader = PcapReader()
        pcap_pos = 0
        deadline = time.monotonic() + self.config.timeout
        next_poll = 0.0
        while True:
            now = time.monotonic()
            # 1. the capture
            try:
                with open(self.pcap, "rb") as f:
                    f.seek(pcap_pos)
                    chunk = f.read()
            except OSError:
                chunk = b""
            pcap_pos += len(chunk)
            for ts, frame in reader.feed(chunk):
                for ev in frame_events(
                    ts,
                    frame,
                    http_port=self.config.http_port,
                    server_mac=self.net.bridge_mac,
                ):
                    w = watches.get(ev.mac)
                    if w is None:
                        continue
                    self._say(
                        "net", ev.text, ev.time - (w.vm.started_at or ev.time), w.vm.spec.name
                    )
                    if ev.name == "POST" and ev.path.startswith(CALLBACK_PATH):
                        next_poll = 0.0
            # 2. the serial consoles and QEMU itself
            for w in watches.values():
                self._read_serial(w)
                if w.exited_at is None and w.vm.exited() is not None:
                    w.exited_at = now
                    self._say("qemu", f"exited ({w.vm.exited()})", self._t(w), w.vm.spec.name)
                    next_poll = 0.0
            # 3. the server's callback list
            if now >= next_poll:
                next_poll = now + _CALLBACK_POLL
                self._poll_callbacks(watches)
            # 4. verdicts
            server_dead = server.poll() is not None
            for w in watches.values():
                if w.verdict is not None:
                    continue
                if w.callback is not None:
                    w.verdict = self._judge(w)
                    ok, why = w.verdict
                    self._say(
                        "lab",
                        "callback OK: kernel ran with our command line" if ok else why,
                        self._t(w),
                        w.vm.spec.name,
                    )
                elif server_dead:
                    w.verdict = (False, f"pxeforge serve died ({server.returncode})")
                elif w.marker_failed:
                    w.verdict = (False, f"guest: {w.marker_failed}")
                elif w.exited_at is not None and now - w.exited_at > _EXIT_GRACE:
                    w.verdict = (False, f"QEMU exited ({w.vm.exited()}) without a callback")
                elif now > deadline:
                    w.verdict = (False, f"no callback within {self.config.timeout:.0f} s")
            if all(w.verdict is not None for w in watches.values()):
                return
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _t(w: _Watch) -> float:
        return time.time() - (w.vm.started_at or time.time())

    def _read_serial(self, w: _Watch) -> None:
        try:
            with open(w.vm.files.serial_log, "rb") as f:
                f.seek(w.serial_pos)
                chunk = f.read()
        except OSError:
            return
        w.serial_pos += len(chunk)
        text = w.serial_tail + chunk.decode("utf-8", "replace")
        if w.exited_at is not None:  # nothing more will come: flush the partial line too
            text += "\n"
        complete, _, w.serial_tail = text.rpartition("\n")
        for line in clean_console(complete):
            self._say("serial", line, self._t(w), w.vm.spec.name)
            if guest_mod.CALLBACK_FAILED_MARKER in line:
                w.marker_failed = line.split(guest_mod.CALLBACK_FAILED_MARKER, 1)[1].strip()

    def _poll_callbacks(self, watches: dict[str, _Watch]) -> None:
        try:
            callbacks = fetch_callbacks(self.name, self.server_ip, self.config.http_port)
        except (OSError, StartupError, ValueError) as exc:
            self._say("lab", f"GET {CALLBACKS_PATH}: {exc}")
            return
        for body in callbacks:
            mac = str(body.get("mac", "")).lower()
            w = watches.get(mac)
            if w is not None and w.callback is None:
                w.callback = body

    def _judge(self, w: _Watch) -> tuple[bool, str]:
        body = w.callback or {}
        cmdline = str(body.get("cmdline", ""))
        if f"pxelab.token={self.token}" not in cmdline.split():
            return False, f"callback's cmdline lacks pxelab.token={self.token}: {cmdline!r}"
        return True, ""

    def _result(self, watches: dict[str, _Watch], path: str) -> LabResult:
        try:
            events = read_events(
                self.pcap, http_port=self.config.http_port, server_mac=self.net.bridge_mac
            )
        except (OSError, ValueError):
            events = []
        assert self.guest is not None
        kernel_names = {KERNEL_REF, self.guest.kernel.name}
        results = []
        for w in watches.values():
            m = milestones(events, w.vm.spec.mac, kernel_names)
            t0 = w.vm.started_at or 0.0
            ok, why = w.verdict or (False, "not watched")
            results.append(
                VmResult(
                    name=w.vm.spec.name,
                    mac=w.vm.spec.mac,
                    ok=ok,
                    reason=why,
                    dhcp_ack=None if m.dhcp_ack is None else m.dhcp_ack - t0,
                    kernel=None if m.kernel is None else m.kernel - t0,
                    callback=None if m.callback is None else m.callback - t0,
                    callback_body=w.callback,
                    serial_log=w.vm.files.serial_log,
                )
            )
        return LabResult(
            firmware=self.config.firmware,
            boot_method=self.config.boot_method,
            path=path,
            namespace=self.name,
            token=self.token,
            workdir=self.workdir,
            pcap=self.pcap,
            server_log=self.server_log,
            vms=tuple(results),
            accel=self.accel,
            events=tuple(events),
        )

    # ----------------------------------------------------------------------------- teardown

    def close(self) -> None:
        """Stop VMs, server and capture by PID (each waited for), then delete the namespace."""
        with _no_interrupts():
            for vm in self.vms:
                vm.stop()
            for helper in self.helpers:
                procs.stop(helper, grace=5.0)
            if self.server is not None:
                procs.stop(self.server, grace=5.0)
            self.capture.stop()
            if self.ra is not None:
                self.ra.stop()
            if self._created:
                netns.delete(self.net)
                self._created = False

    def keep_notes(self) -> str:
        """How to reach a kept lab, and a teardown script written to the work directory."""
        pids = [p.proc.pid for p in self.vms if p.proc is not None and p.exited() is None]
        if self.server is not None:
            pids.append(self.server.pid)
        if self.capture.proc is not None:
            pids.append(self.capture.proc.pid)
        pids += [h.pid for h in self.helpers if h.poll() is None]
        script = self.workdir / "teardown.sh"
        script.write_text(
            "#!/bin/sh\n# stop what `pxeforge lab --keep` left running, then remove its namespace\n"
            + "".join(f"kill {pid} 2>/dev/null\n" for pid in pids)
            + f"sleep 2\nip netns del {self.name}\n"
        )
        script.chmod(0o755)
        lines = [
            f"lab kept running in namespace {self.name} (work directory {self.workdir}):",
            f"  shell in it:   ip netns exec {self.name} bash",
            f"  server:        pid {self.server.pid if self.server else '-'}, "
            f"http://{self.server_ip}:{self.config.http_port}, log {self.server_log}",
            f"  capture:       {self.pcap} (tcpdump -r {self.pcap})",
            f"  callbacks:     ip netns exec {self.name} curl -s "
            f"http://{self.server_ip}:{self.config.http_port}{CALLBACKS_PATH}",
        ]
        for vm in self.vms:
            state = f"pid {vm.pid}" if vm.exited() is None else "powered off"
            lines.append(
                f"  {vm.spec.name}:           {state}; serial {vm.files.serial_log}; "
                f"QMP {vm.files.qmp_socket}"
            )
            lines.append(f"    boot again:  {' '.join(vm.argv())}")
        lines.append(f"  tear down:     sh {script}")
        return "\n".join(lines)

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.config.keep and exc_type is None:
            self.report(self.keep_notes())
            return
        self.close()


def _toml_line(key: str, value: str | int | float | bool) -> str:
    """One ``key = value`` TOML line (a JSON string is a valid TOML basic string here: the
    values are ours, printable)."""
    if not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"server setting name {key!r}")
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}\n"
    if isinstance(value, str):
        return f"{key} = {json.dumps(value)}\n"
    return f"{key} = {value!r}\n"


def run_lab(config: LabConfig, report: Reporter = lambda _m: None) -> LabResult:
    """Set up, boot, judge and tear down (unless ``config.keep``): one call."""
    with Lab(config, report) as lab:
        return lab.boot()
