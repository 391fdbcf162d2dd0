"""QEMU virtual machines that network-boot with unmodified firmware.

Theory of operation
-------------------
`VmSpec` says what a VM is (MAC, SMBIOS UUID, tap, firmware); `qemu_argv` turns it into a
QEMU command line (pure, tested without QEMU); `Vm` starts it inside the lab namespace, talks
QMP to it and stops it. The choices come from measurements on these machines (docs/lab.md):

* BIOS: the default ``pc`` machine with SeaBIOS and QEMU's own iPXE ROM on a virtio-net NIC,
  ``-boot n``. SeaBIOS prints nothing on serial without a display unless the fw_cfg file
  ``etc/sercon-port`` holds the port (0x3f8, little-endian ``f8 03``).
* UEFI: ``q35`` with ``OVMF_CODE_4M.fd`` and a per-VM copy of ``OVMF_VARS_4M.fd``. The NIC
  gets ``romfile=`` (empty: QEMU's virtio ROM carries an iPXE EFI driver that takes over UEFI
  PXE and breaks shim) and ``bootindex=1`` (OVMF ignores ``-boot n``).
* Disks: a raw image on virtio-blk (``vda``). The network stays the first boot device; the
  disk is what a local-boot answer (pxelinux ``localboot``, GRUB, iPXE ``exit 1``) hands
  back to: SeaBIOS tries it after ``-boot n``'s network, OVMF gets ``bootindex=2``. OVMF's
  other network boot options (PXE over IPv6, HTTP boot over IPv6) are switched off through
  fw_cfg (`OVMF_NETBOOT_OFF`), else each is tried first, costing a DHCP timeout. HTTP boot
  over IPv4 stays: its fw_cfg knob turns off PXE over IPv4 too (measured).
* Power: ``paused`` starts QEMU with ``-S`` (run state ``prelaunch``): the VM is "off" until
  a power driver (`pxeforge.drivers.lab`, QMP ``cont``) turns it on.
* Acceleration: `probe_kvm` runs OVMF under KVM once; on nested hosts it dies at once with
  "KVM internal error … emulation failure", and the lab falls back to TCG.

Every VM has a fixed MAC (52:54:00:…) and a UUID derived from it, its serial console in a
file, ``-display none``, ``-no-reboot`` (a guest reboot or kernel panic ends QEMU, so a
failed boot ends fast) and a QMP socket for power control.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxeforge.errors import StartupError
from pxeforge.lab import procs
from pxeforge.lab.netns import ns_exec

__all__ = [
    "OVMF_CODE",
    "OVMF_VARS",
    "QEMU",
    "Qmp",
    "QmpError",
    "Vm",
    "VmFiles",
    "VmFirmware",
    "VmSpec",
    "probe_kvm",
    "qemu_argv",
    "vm_mac",
    "vm_uuid",
]

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
#: OVMF's network boot options the lab turns off (fw_cfg, OvmfPkg/RUNTIME_CONFIG.md): PXE over
#: IPv6 and HTTP boot over IPv4 and IPv6. Each is one more boot option on the NIC, tried before
#: the disk when PXE over IPv4 hands back (local boot), each costing a DHCP timeout.
OVMF_NETBOOT_OFF = ("IPv6PXESupport", "IPv6Support")
SERCON_PORT = b"\xf8\x03"  # COM1 = 0x3f8, little-endian, for SeaBIOS's etc/sercon-port


class VmFirmware(enum.Enum):
    BIOS = "bios"  # SeaBIOS + QEMU's iPXE option ROM
    UEFI = "uefi"  # OVMF (EDK2) with its own PXE client


def vm_mac(index: int, firmware: VmFirmware = VmFirmware.BIOS) -> str:
    """A fixed, locally administered QEMU MAC per VM index and firmware."""
    if not 0 <= index < 240:
        raise ValueError(f"VM index {index} out of range 0-239")
    fw = 0x00 if firmware is VmFirmware.BIOS else 0x01
    return f"52:54:00:77:{fw:02x}:{0x10 + index:02x}"


def vm_uuid(mac: str) -> str:
    """A stable SMBIOS UUID derived from the MAC (as in the shared captures)."""
    return "5a1ab000-0000-4000-8000-" + mac.replace(":", "")


@dataclass(frozen=True, slots=True)
class VmSpec:
    name: str
    mac: str
    tap: str
    firmware: VmFirmware
    uuid: str = ""  # default: vm_uuid(mac)
    memory_mb: int = 512
    accel: str = "tcg"  # "tcg" or "kvm"
    cpus: int = 1
    disk: Path | None = None  # a raw image attached as a virtio-blk disk (vda)
    paused: bool = False  # start powered off (``-S``: prelaunch) until QMP ``cont``

    @property
    def smbios_uuid(self) -> str:
        return self.uuid or vm_uuid(self.mac)


@dataclass(frozen=True, slots=True)
class VmFiles:
    """Where one VM keeps its files (all in the run's work directory)."""

    serial_log: Path
    qemu_log: Path
    qmp_socket: Path
    sercon: Path
    vars: Path

    @classmethod
    def in_dir(cls, workdir: Path, name: str) -> VmFiles:
        return cls(
            serial_log=workdir / f"{name}.serial.log",
            qemu_log=workdir / f"{name}.qemu.log",
            # sun_path is 108 bytes: keep the socket name short
            qmp_socket=workdir / f"{name}.qmp",
            sercon=workdir / "sercon-port.bin",
            vars=workdir / f"{name}.OVMF_VARS.fd",
        )


def qemu_argv(spec: VmSpec, files: VmFiles, *, qemu: str = QEMU) -> list[str]:
    """The QEMU command line for ``spec`` (pure)."""
    argv = [
        qemu,
        "-name", spec.name,
        "-m", str(spec.memory_mb),
        "-smp", str(spec.cpus),
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-uuid", spec.smbios_uuid,
        "-serial", f"file:{files.serial_log}",
        "-qmp", f"unix:{files.qmp_socket},server=on,wait=off",
        "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
    ]  # fmt: skip
    if spec.paused:
        argv.append("-S")
    if spec.disk is not None:
        disk = "virtio-blk-pci,drive=disk0"
        if spec.firmware is VmFirmware.UEFI:
            disk += ",bootindex=2"  # OVMF: the disk right after the network (local boot)
        argv += [
            "-drive", f"file={spec.disk},format=raw,if=none,id=disk0,cache=unsafe",
            "-device", disk,
        ]  # fmt: skip
    nic = f"virtio-net-pci,netdev=net0,mac={spec.mac}"
    if spec.firmware is VmFirmware.BIOS:
        argv += [
            "-machine", f"pc,accel={spec.accel}",
            "-fw_cfg", f"name=etc/sercon-port,file={files.sercon}",
            "-device", nic,
            "-boot", "n",
        ]  # fmt: skip
    else:
        argv += [
            "-machine", f"q35,accel={spec.accel}",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={files.vars}",
            "-device", f"{nic},romfile=,bootindex=1",
        ]  # fmt: skip
        for knob in OVMF_NETBOOT_OFF:  # PXE over IPv4 is the lab's only network boot option
            argv += ["-fw_cfg", f"name=opt/org.tianocore/{knob},string=no"]
    return argv


@functools.cache
def probe_kvm(timeout: float = 2.0) -> bool:
    """Whether firmware survives under KVM here (tried once per process)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not OVMF_CODE.is_file():
        return False
    if shutil.which(QEMU) is None:
        return False
    argv = [
        QEMU, "-machine", "q35,accel=kvm", "-nodefaults", "-display", "none", "-no-reboot",
        "-m", "128", "-serial", "none", "-monitor", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,snapshot=on,file={OVMF_VARS}",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pxelab-kvm-") as tmp:
        log = Path(tmp) / "qemu.log"
        proc = procs.start(argv, log, what="qemu (KVM probe)")
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if "KVM internal error" in procs.tail(log, lines=1000):
                    return False
                time.sleep(0.05)
            text = procs.tail(log, lines=1000)
            return proc.poll() is None and "KVM internal error" not in text
        finally:
            procs.stop(proc, grace=3.0)


class QmpError(Exception):
    """QMP refused a command or the socket failed."""


class Qmp:
    """A minimal synchronous QMP client: connect, negotiate, one command at a time."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path, self.timeout = path, timeout

    def command(self, name: str, **arguments: Any) -> Any:
        """Run ``name`` and return its ``return`` value (events are skipped)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                with sock.makefile("rwb") as stream:
                    self._read(stream)  # greeting
                    self._call(stream, "qmp_capabilities", {})
                    return self._call(stream, name, arguments)
        except OSError as exc:
            raise QmpError(f"QMP {self.path}: {exc}") from None

    def _call(self, stream: Any, name: str, arguments: dict[str, Any]) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        stream.write(json.dumps(msg).encode() + b"\n")
        stream.flush()
        while True:
            reply = self._read(stream)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QmpError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")

    @staticmethod
    def _read(stream: Any) -> dict[str, Any]:
        line = stream.readline()
        if not line:
            raise QmpError("QMP connection closed")
        reply: dict[str, Any] = json.loads(line)
        return reply


class Vm:
    """One QEMU process inside the lab namespace."""

    def __init__(self, spec: VmSpec, files: VmFiles, ns: str) -> None:
        self.spec, self.files, self.ns = spec, files, ns
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None  # wall clock (comparable with pcap times)

    def prepare(self) -> None:
        """Write the per-VM files QEMU reads (sercon port, a fresh OVMF variable store)."""
        self.files.sercon.write_bytes(SERCON_PORT)
        if self.spec.firmware is VmFirmware.UEFI:
            if not OVMF_CODE.is_file() or not OVMF_VARS.is_file():
                raise StartupError(f"lab: OVMF not found at {OVMF_CODE} (apt-get install ovmf)")
            shutil.copyfile(OVMF_VARS, self.files.vars)
        for stale in (self.files.serial_log, self.files.qmp_socket):
            stale.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        return ns_exec(self.ns, qemu_argv(self.spec, self.files))

    def start(self) -> None:
        self.prepare()
        self.started_at = time.time()
        self.proc = procs.start(self.argv(), self.files.qemu_log, what="qemu")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exited(self) -> int | None:
        """QEMU's exit status once it has ended (the guest powered off, or it failed)."""
        return self.proc.poll() if self.proc is not None else None

    def qmp(self) -> Qmp:
        return Qmp(self.files.qmp_socket)

    def wait_qmp(self, timeout: float = 20.0) -> None:
        """Wait until QEMU answers on its QMP socket (it creates the socket a little after
        it starts: a power driver asking before would find no VM). `StartupError` if QEMU
        exits or stays silent."""
        deadline = time.monotonic() + timeout
        while True:
            if self.exited() is not None:
                raise StartupError(
                    f"lab: QEMU {self.spec.name} exited ({self.exited()}):\n"
                    + procs.tail(self.files.qemu_log, 10)
                )
            try:
                self.qmp().command("query-status")
                return
            except QmpError:
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"lab: QEMU {self.spec.name} has no QMP socket after {timeout:.0f} s"
                    ) from None
            time.sleep(0.05)

    def console(self, start: int = 0) -> str:
        """The serial console from byte ``start`` on (raw: escape sequences, CRs kept)."""
        try:
            with open(self.files.serial_log, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def console_size(self) -> int:
        """Bytes on the serial console so far: a ``start`` for `wait_console`."""
        try:
            return self.files.serial_log.stat().st_size
        except OSError:
            return 0

    def wait_console(
        self, needle: str, timeout: float, *, start: int = 0, poll: float = 0.5
    ) -> str:
        """Wait until ``needle`` appears on the serial console after byte ``start``; return
        the line it is on. `TimeoutError` (with the console's tail) when it does not come in
        ``timeout`` seconds or QEMU ends first."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console(start)
            at = text.find(needle)
            if at >= 0:
                line_start = text.rfind("\n", 0, at) + 1
                line_end = text.find("\n", at)
                return text[line_start : None if line_end < 0 else line_end].strip()
            ended = self.exited()
            if ended is not None or time.monotonic() > deadline:
                why = f"QEMU exited ({ended})" if ended is not None else f"{timeout:.0f} s passed"
                tail = "\n".join(text.splitlines()[-25:])
                raise TimeoutError(
                    f"{self.spec.name}: {needle!r} not on the console ({why}); console tail:\n"
                    + tail
                )
            time.sleep(poll)

    def stop(self, grace: float = 5.0) -> None:
        """Ask QEMU to quit over QMP, then fall back to signals; always waits for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.qmp().command("quit")
                self.proc.wait(timeout=grace)
            except (QmpError, subprocess.TimeoutExpired):
                pass
        procs.stop(self.proc, grace=grace)
