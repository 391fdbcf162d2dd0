"""`pxeforge lab`: boot real firmware under QEMU against `pxeforge serve`, in a private network.

The work is `pxeforge.lab.run`; this module turns flags into a `LabConfig`, prints the live
progress and a summary, and maps the outcome to the exit code (0: every VM called back with
the right command line; 1: one did not; 130: interrupted — the lab is torn down first).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import click

from pxeforge.config import BootMethod
from pxeforge.lab.qemu import QEMU, VmFirmware
from pxeforge.lab.run import LabConfig, LabResult, run_lab

__all__ = ["format_summary", "lab"]


def _default(name: str) -> Any:
    """A `LabConfig` field's default: the one place lab defaults live."""
    return next(f.default for f in dataclasses.fields(LabConfig) if f.name == name)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def format_summary(result: LabResult) -> str:
    """The closing table: path, and per VM the seconds to DHCP ACK, kernel and callback."""
    lines = [
        f"== {result.path}",
        f"   firmware {result.firmware.value}, boot method {result.boot_method.value}, "
        f"accel {result.accel}, token {result.token}",
        f"   {'vm':<5} {'mac':<18} {'result':<7} {'DHCP ACK':>9} {'kernel':>9} {'callback':>9}",
    ]
    for vm in result.vms:
        lines.append(
            f"   {vm.name:<5} {vm.mac:<18} {'ok' if vm.ok else 'FAILED':<7} "
            f"{_secs(vm.dhcp_ack):>9} {_secs(vm.kernel):>9} {_secs(vm.callback):>9}"
        )
    for vm in result.vms:
        if not vm.ok:
            lines.append(f"   {vm.name}: {vm.reason} (console: {vm.serial_log})")
    lines.append(f"   capture {result.pcap}")
    lines.append(f"   logs    {result.workdir} (server.log, vm*.serial.log, vm*.qemu.log)")
    return "\n".join(lines)


def _check_host() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("pxeforge lab needs root (network namespaces and taps)")
    if not Path("/dev/net/tun").exists():
        raise click.ClickException("pxeforge lab needs /dev/net/tun (modprobe tun)")
    for tool, package in ((QEMU, "qemu-system-x86"), ("ip", "iproute2"), ("tcpdump", "tcpdump")):
        if shutil.which(tool) is None:
            raise click.ClickException(f"pxeforge lab needs {tool} (apt-get install {package})")


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the lab's teardown like Ctrl-C


@click.command()
@click.option(
    "--firmware",
    type=click.Choice([f.value for f in VmFirmware]),
    default=_default("firmware").value,
    show_default=True,
    help="bios: SeaBIOS + QEMU's iPXE ROM; uefi: OVMF with EDK2's own PXE.",
)
@click.option(
    "--boot-method",
    type=click.Choice([m.value for m in BootMethod]),
    default=_default("boot_method").value,
    show_default=True,
    help="pxelinux: pxelinux.0 / shim+GRUB over TFTP; ipxe: iPXE script over HTTP.",
)
@click.option("--vms", type=int, default=_default("vms"), show_default=True, help="VMs at once.")
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the namespace, server and capture running; print how to attach and tear down.",
)
@click.option(
    "--timeout",
    type=float,
    default=_default("timeout"),
    show_default=True,
    help="Seconds for every VM to call back.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where logs, consoles and lab.pcap go (default: /tmp/pxeforge-lab-<namespace>).",
)
@click.option("--cmdline", default="", help="Extra kernel parameters for the guest.")
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default=_default("accel"),
    show_default=True,
    help="auto tries KVM once and falls back to TCG (nested hosts fail under KVM).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Guest and loader cache (default: $XDG_CACHE_HOME/pxeforge or /var/cache/pxeforge).",
)
def lab(
    firmware: str,
    boot_method: str,
    vms: int,
    keep: bool,
    timeout: float,
    workdir: Path | None,
    cmdline: str,
    accel: str,
    cache_dir: Path | None,
) -> None:
    """Network-boot QEMU VMs against `pxeforge serve` in a private network namespace.

    Creates a namespace with a bridge and one tap per VM, runs `pxeforge serve` in it, builds
    a small test guest (Debian's kernel + a busybox initramfs that calls back over HTTP),
    boots the VMs with real firmware and reports, per VM, the seconds to DHCP ACK, to the
    kernel request and to the guest's callback. Everything is torn down at the end, also on
    failure or Ctrl-C, unless --keep.
    """
    _check_host()
    try:
        config = LabConfig(
            firmware=VmFirmware(firmware),
            boot_method=BootMethod(boot_method),
            vms=vms,
            timeout=timeout,
            workdir=workdir,
            cache_dir=cache_dir,
            keep=keep,
            accel=accel,
            cmdline=cmdline,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        result = run_lab(config, report=click.echo)
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(format_summary(result))
    if not result.ok:
        raise SystemExit(1)
