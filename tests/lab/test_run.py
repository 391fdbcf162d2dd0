"""Lab runs: configuration, console cleaning, the summary, the CLI, and teardown on failure.

The teardown tests are real: a server that refuses to start, a VM that runs out of time and
a Ctrl-C in the middle of a boot must all leave no namespace and no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from click.testing import CliRunner

from pxeforge.cli.lab import format_summary, lab
from pxeforge.config import BootMethod, load_toml
from pxeforge.errors import StartupError
from pxeforge.lab import netns
from pxeforge.lab.guest import Guest
from pxeforge.lab.qemu import VmFirmware
from pxeforge.lab.run import (
    Lab,
    LabConfig,
    LabResult,
    VmResult,
    _toml_line,
    boot_path_name,
    clean_console,
)


def test_config_defaults_and_checks() -> None:
    cfg = LabConfig()
    assert cfg.pool == (IPv4Address("10.213.0.100"), IPv4Address("10.213.0.199"))
    assert cfg.firmware is VmFirmware.BIOS and cfg.boot_method is BootMethod.PXELINUX
    assert LabConfig(address=IPv4Interface("10.50.0.1/16")).pool[0] == IPv4Address("10.50.0.100")
    for bad in ({"vms": 0}, {"vms": 33}, {"timeout": 0.0}, {"accel": "hvf"}):
        with pytest.raises(ValueError):
            LabConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="/24"):
        LabConfig(address=IPv4Interface("10.0.0.1/30"))


def _argv(cfg: LabConfig, tmp_path: Path) -> list[str]:
    handle = Lab(cfg)
    handle.guest = Guest(tmp_path / "k", tmp_path / "i", "v", "p")
    handle.root = tmp_path
    return handle.server_argv()


def test_server_settings_become_a_config_file(tmp_path: Path) -> None:
    settings: dict[str, str | int | float | bool] = {
        "deploy_callback_timeout": 45,
        "check_provision_state_interval": 2.5,
        "auto_enroll": False,
        "agent_cmdline": 'a "b c"',
    }
    argv = _argv(LabConfig(workdir=tmp_path, server_settings=settings), tmp_path)
    config = tmp_path / "serve.toml"
    assert argv[argv.index("--config") + 1] == str(config)
    config.write_text("".join(_toml_line(k, v) for k, v in settings.items()))
    assert load_toml(config) == {
        "deploy_callback_timeout": 45.0,
        "check_provision_state_interval": 2.5,
        "auto_enroll": False,
        "agent_cmdline": 'a "b c"',
    }
    assert "--config" not in _argv(LabConfig(workdir=tmp_path), tmp_path)
    with pytest.raises(ValueError, match="TOML scalar"):
        LabConfig(server_settings={"x": [1]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="name"):
        _toml_line("a = 1\nb", 1)


def test_every_path_has_a_name() -> None:
    names = {boot_path_name(fw, m) for fw in VmFirmware for m in BootMethod}
    assert len(names) == 4
    assert "shim" in boot_path_name(VmFirmware.UEFI, BootMethod.PXELINUX)
    assert "snponly.efi" in boot_path_name(VmFirmware.UEFI, BootMethod.IPXE)


def test_clean_console() -> None:
    raw = (
        "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n"
        "\x1b[=3h\x1b[=3h\r\n"
        "Configuring (net0)...\r.......... ok\r\n"
        "\x1b[0;1miPXE 1.0\x1b[0m -- \x1b[0;36mhttp://ipxe.org\x1b[0m\n"
        "\n   \r\n"
        "bell\x07 and backspace\x08 gone\n"
    )
    assert clean_console(raw) == [
        "SeaBIOS (version 1.16)",
        ".......... ok",
        "iPXE 1.0 -- http://ipxe.org",
        "bell and backspace gone",
    ]


def _result(tmp_path: Path, ok: bool) -> LabResult:
    vm = VmResult(
        name="vm0",
        mac="52:54:00:77:00:10",
        ok=ok,
        reason="" if ok else "QEMU exited (0) without a callback",
        dhcp_ack=2.54,
        kernel=18.8 if ok else None,
        callback=26.07 if ok else None,
        callback_body=None,
        serial_log=tmp_path / "vm0.serial.log",
    )
    return LabResult(
        firmware=VmFirmware.BIOS,
        boot_method=BootMethod.IPXE,
        path=boot_path_name(VmFirmware.BIOS, BootMethod.IPXE),
        namespace="pxf-1-0",
        token="abc",
        workdir=tmp_path,
        pcap=tmp_path / "lab.pcap",
        server_log=tmp_path / "server.log",
        vms=(vm,),
        accel="tcg",
    )


def test_summary(tmp_path: Path) -> None:
    text = format_summary(_result(tmp_path, ok=True))
    lines = text.splitlines()
    assert lines[0] == "== BIOS iPXE ROM → iPXE script over HTTP"
    assert "DHCP ACK" in lines[2] and "kernel" in lines[2] and "callback" in lines[2]
    assert lines[3].split() == [
        "vm0",
        "52:54:00:77:00:10",
        "ok",
        "2.5",
        "s",
        "18.8",
        "s",
        "26.1",
        "s",
    ]
    assert f"capture {tmp_path / 'lab.pcap'}" in text
    failed = format_summary(_result(tmp_path, ok=False))
    assert "FAILED" in failed and "QEMU exited (0) without a callback" in failed
    assert _result(tmp_path, ok=True).ok and not _result(tmp_path, ok=False).ok


def test_cli_help_and_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(lab, ["--help"])
    assert result.exit_code == 0
    for flag in ("--firmware", "--boot-method", "--vms", "--keep", "--timeout", "--workdir"):
        assert flag in result.output
    assert runner.invoke(lab, ["--firmware", "coreboot"]).exit_code == 2
    if os.geteuid() == 0:
        bad = runner.invoke(lab, ["--vms", "0"])
        assert bad.exit_code == 2 and "--vms must be 1-32" in bad.output
    else:
        denied = runner.invoke(lab, [])
        assert denied.exit_code == 1 and "needs root" in denied.output


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: PID 1 here may not reap, docs/lab.md)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.lab
def test_a_server_that_cannot_start_leaves_nothing_behind(tmp_path: Path) -> None:
    # `$` is refused in a kernel command line by pxeforge serve's start-up checks
    cfg = LabConfig(workdir=tmp_path, cmdline="foo=$bar", timeout=30)
    handle = Lab(cfg)
    with pytest.raises(StartupError, match="pxeforge serve exited"):
        with handle:
            pytest.fail("the lab should not have started")
    assert not netns.exists(handle.name)
    assert handle.server is not None and handle.server.poll() is not None
    assert handle.capture.proc is not None and handle.capture.proc.poll() is not None


@pytest.mark.lab
def test_a_boot_that_times_out_is_failed_and_torn_down(tmp_path: Path) -> None:
    cfg = LabConfig(workdir=tmp_path, timeout=4.0)
    lines: list[str] = []
    with Lab(cfg, report=lines.append) as handle:
        result = handle.boot()
    assert not result.ok
    assert result.vms[0].reason == "no callback within 4 s"
    assert result.vms[0].callback is None
    assert all(vm.proc is not None and vm.proc.poll() is not None for vm in handle.vms)
    assert not netns.exists(handle.name)
    assert any("SeaBIOS" in line for line in lines), "the console was not shown"


@pytest.mark.lab
def test_ctrl_c_tears_the_lab_down(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "pxeforge.cli.main", "lab", "--workdir", str(tmp_path)]
    with open(tmp_path / "out.log", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    children: list[int] = []
    ours: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until QEMU runs: server, tcpdump, qemu
            if len(_children(proc.pid)) >= 3 and (tmp_path / "vm0.serial.log").exists():
                break
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
            time.sleep(0.2)
        children = _children(proc.pid)
        assert len(children) >= 3
        namespaces = [p.name for p in netns.NETNS_DIR.iterdir()]
        ours = [n for n in namespaces if n.startswith(f"pxf-{proc.pid}-")]
        assert len(ours) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(_gone(pid) for pid in children), "a child outlived the lab"
    assert not netns.exists(ours[0])
    assert "aborted" in (tmp_path / "out.log").read_text()
